"""SecondFactors: TOTP enrolment and verification, and recovery codes, over a store.

What each call does, in order (the flow throttles and calls
``verify_second_factor``; the web edge calls the enrolment methods):

- ``verify_second_factor``: the code's shape first (``MALFORMED``, nothing
  read), then the account's confirmed secret (``NOT_ENROLLED``), then the
  code: a TOTP is matched within one step either side of ``now`` in
  constant time (``WRONG``) and its step consumed by the store's
  compare-and-set (``REPLAYED`` if the step or a later one was used); a
  recovery code is hashed and deleted by the store (``WRONG`` if it was not
  there).
- ``begin_totp`` draws a 160-bit secret, seals it with the key ring (purpose
  and user id in the associated data) and keeps it pending; nothing changes
  for a factor already confirmed.
- ``confirm_totp`` checks a code against the pending secret; a right one
  turns it into the account's factor (replacing any earlier one), with the
  code's step already used, and ten fresh recovery codes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

from .._errors import ConfigError, InvalidToken
from .._keyring import KeyRing
from ..ports import SecondFactorAccepted, SecondFactorFailure, SecondFactorRefused
from ._codes import (
    RECOVERY_COUNT,
    CodeKind,
    match_step,
    new_recovery_code,
    new_secret,
    parse_code,
    provisioning_uri,
    qr_svg,
    recovery_hash,
    secret_base32,
    show_recovery_code,
)
from ._types import RecoveryCodes, SecondFactorStore, TotpEnrolment

__all__ = ["AsyncSecondFactors", "SecondFactors"]

SEAL_PURPOSE: Final = "mfa/totp-secret"
"""The purpose a TOTP secret is sealed under (bound into the associated data)."""
_OTP: Final = ("otp",)
_MAX_USER_ID: Final = 1024


def _check_user(user_id: object) -> bytes:
    if type(user_id) is not str or not user_id or len(user_id) > _MAX_USER_ID:
        raise ValueError("a user id is a non-empty str of at most 1024 characters")
    return user_id.encode("utf-8", "surrogatepass")


def _check_label(value: object, what: str) -> str:
    # The otpauth label is "issuer:account": a colon inside either would
    # move the boundary, and apps disagree about how to read one.
    if type(value) is not str or not value.strip() or ":" in value or len(value) > 200:
        raise ValueError(f"{what} must be a non-empty str without ':' of at most 200 characters")
    return value


class SecondFactors:
    """TOTP (RFC 6238) and recovery codes for a :class:`~tokenflow.Flow`.

    ``keyring`` is the application's key ring (secrets are sealed with it at
    rest: a leaked database holds no usable seed; keep retired keys in the
    ring while secrets sealed under them exist). ``store`` keeps the sealed
    secrets, the used steps and the recovery-code hashes. ``issuer`` names
    the application in authenticator apps. ``pending_ttl`` is how long an
    enrolment may wait for its first code (seconds, 60 to 3600)::

        factors = SecondFactors(keyring, SQLiteSecondFactorStore("app.db"), issuer="Example")
        flow = Flow(keyring, store, users, passwords=..., second_factors=factors)

    It implements :class:`tokenflow.ports.SecondFactorVerifier`. A secret
    that no longer opens (its key was removed from the ring) raises
    ``RuntimeError``, which the flow turns into a 503.
    """

    def __init__(
        self,
        keyring: KeyRing,
        store: SecondFactorStore,
        *,
        issuer: str,
        pending_ttl: int = 600,
    ) -> None:
        if not isinstance(keyring, KeyRing):
            raise ConfigError("SecondFactors needs the application's KeyRing to seal secrets")
        if store is None:
            raise ConfigError("SecondFactors needs a SecondFactorStore")
        try:
            self._issuer = _check_label(issuer, "issuer")
        except ValueError as exc:
            raise ConfigError(f"SecondFactors: {exc}") from None
        if isinstance(pending_ttl, bool) or not isinstance(pending_ttl, int):
            raise ConfigError("SecondFactors.pending_ttl must be whole seconds")
        if not 60 <= pending_ttl <= 3600:
            raise ConfigError("SecondFactors.pending_ttl must be between 60 and 3600 seconds")
        self._keyring = keyring
        self._store = store
        self._pending_ttl = pending_ttl
        # The randomness source: os.urandom. Only tests replace it.
        self._random: Callable[[int], bytes] = os.urandom

    def __repr__(self) -> str:
        return f"SecondFactors(issuer={self._issuer!r}, store={self._store!r})"

    # -- the verifier port -----------------------------------------------------

    def factors_of(self, user_id: str) -> tuple[str, ...]:
        """The account's confirmed second factors: ``("totp",)``, or ``()``."""
        _check_user(user_id)
        return ("totp",) if self._store.totp_of(user_id) is not None else ()

    def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """Check a TOTP or recovery code and consume it (see the module documentation).

        Never raises for any ``code``: a value of the wrong type or shape is
        ``MALFORMED``. Does not throttle: the flow does, per account.
        """
        context = _check_user(user_id)
        parsed = parse_code(code)
        if parsed is None:
            return SecondFactorRefused(SecondFactorFailure.MALFORMED)
        sealed = self._store.totp_of(user_id)
        if sealed is None:
            return SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)
        kind, normal = parsed
        if kind is CodeKind.RECOVERY:
            left = self._store.use_recovery_code(user_id, recovery_hash(user_id, normal))
            if left is None:
                return SecondFactorRefused(SecondFactorFailure.WRONG)
            return SecondFactorAccepted("recovery", _OTP, recovery_codes_left=left)
        step = match_step(self._open(sealed, context), normal, now=now)
        if step is None:
            return SecondFactorRefused(SecondFactorFailure.WRONG)
        if not self._store.use_step(user_id, step):
            return SecondFactorRefused(SecondFactorFailure.REPLAYED)
        return SecondFactorAccepted("totp", _OTP)

    # -- enrolment -------------------------------------------------------------

    def begin_totp(self, user_id: str, *, account_name: str, now: float) -> TotpEnrolment:
        """Start a TOTP enrolment: a fresh secret, kept pending (sealed) until confirmed.

        ``account_name`` is what the app shows under the issuer (an email or
        user name). A confirmed factor stays in force until
        :meth:`confirm_totp` replaces it: the web edge must require a session
        at assurance level 2 to re-enrol an account that has one. Show the
        returned secret, URI and QR code once, to that user only.
        """
        context = _check_user(user_id)
        _check_label(account_name, "account_name")
        secret = new_secret(self._random)
        expires_at = float(now) + self._pending_ttl
        sealed = self._keyring.seal_bytes(secret, purpose=SEAL_PURPOSE, context=context)
        self._store.begin(user_id, sealed, expires_at)
        uri = provisioning_uri(secret, issuer=self._issuer, account_name=account_name)
        return TotpEnrolment(
            secret=secret_base32(secret), uri=uri, qr_svg=qr_svg(uri), expires_at=expires_at
        )

    def confirm_totp(
        self, user_id: str, code: str, *, now: float
    ) -> RecoveryCodes | SecondFactorRefused:
        """Confirm the pending enrolment with a first code from the app.

        A right code makes the pending secret the account's TOTP factor (an
        earlier one is replaced, its recovery codes too) and returns ten new
        recovery codes, shown once. A wrong code (``WRONG``) leaves the
        enrolment pending; no live enrolment is ``NOT_ENROLLED``; a code
        that is not six digits is ``MALFORMED``; losing a race to another
        confirmation of the same enrolment is ``REPLAYED``.
        """
        context = _check_user(user_id)
        parsed = parse_code(code)
        if parsed is None or parsed[0] is not CodeKind.TOTP:
            return SecondFactorRefused(SecondFactorFailure.MALFORMED)
        sealed = self._store.pending_of(user_id, now=now)
        if sealed is None:
            return SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)
        step = match_step(self._open(sealed, context), parsed[1], now=now)
        if step is None:
            return SecondFactorRefused(SecondFactorFailure.WRONG)
        codes, hashes = self._new_codes(user_id)
        if not self._store.confirm(user_id, sealed, step, hashes):
            return SecondFactorRefused(SecondFactorFailure.REPLAYED)
        return codes

    def regenerate_recovery_codes(self, user_id: str) -> RecoveryCodes | SecondFactorRefused:
        """Ten new recovery codes replacing all earlier ones (used or not); shown once.

        ``NOT_ENROLLED`` if the account has no confirmed TOTP factor. The web
        edge should require a session at assurance level 2.
        """
        _check_user(user_id)
        codes, hashes = self._new_codes(user_id)
        if not self._store.replace_recovery_codes(user_id, hashes):
            return SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)
        return codes

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the account has."""
        _check_user(user_id)
        return self._store.recovery_codes_left(user_id)

    def remove(self, user_id: str) -> bool:
        """Remove the account's second factors (secret, pending enrolment, recovery codes).

        Whether there was anything. The web edge should require aal 2 (or an
        administrator) for this: it brings the account back to passwords alone.
        """
        _check_user(user_id)
        return self._store.remove(user_id)

    # -- helpers ---------------------------------------------------------------

    def _open(self, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._keyring.open_bytes(sealed, purpose=SEAL_PURPOSE, context=context)
        except InvalidToken:
            # Not the user's fault and not theirs to learn about: an operator
            # removed a key still in use, or the row was tampered with.
            raise RuntimeError(
                "a stored TOTP secret does not open with this key ring "
                "(a removed key, or a row altered or copied between accounts)"
            ) from None

    def _new_codes(self, user_id: str) -> tuple[RecoveryCodes, list[bytes]]:
        normal = [new_recovery_code(self._random) for _ in range(RECOVERY_COUNT)]
        shown = RecoveryCodes(tuple(show_recovery_code(c) for c in normal))
        return shown, [recovery_hash(user_id, c) for c in normal]


class AsyncSecondFactors:
    """The async face of :class:`SecondFactors`, for :class:`~tokenflow.AsyncFlow`.

    Each call runs the sync one in a worker thread (``asyncio.to_thread``);
    it implements :class:`tokenflow.ports.AsyncSecondFactorVerifier`.
    """

    def __init__(self, factors: SecondFactors) -> None:
        if not isinstance(factors, SecondFactors):
            raise ConfigError("AsyncSecondFactors wraps a tokenflow.mfa.SecondFactors")
        self._factors = factors

    def __repr__(self) -> str:
        return f"AsyncSecondFactors({self._factors!r})"

    async def factors_of(self, user_id: str) -> tuple[str, ...]:
        """See :meth:`SecondFactors.factors_of`."""
        return await asyncio.to_thread(self._factors.factors_of, user_id)

    async def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """See :meth:`SecondFactors.verify_second_factor`."""
        return await asyncio.to_thread(self._factors.verify_second_factor, user_id, code, now=now)

    async def begin_totp(self, user_id: str, *, account_name: str, now: float) -> TotpEnrolment:
        """See :meth:`SecondFactors.begin_totp`."""
        return await asyncio.to_thread(
            self._factors.begin_totp, user_id, account_name=account_name, now=now
        )

    async def confirm_totp(
        self, user_id: str, code: str, *, now: float
    ) -> RecoveryCodes | SecondFactorRefused:
        """See :meth:`SecondFactors.confirm_totp`."""
        return await asyncio.to_thread(self._factors.confirm_totp, user_id, code, now=now)

    async def regenerate_recovery_codes(self, user_id: str) -> RecoveryCodes | SecondFactorRefused:
        """See :meth:`SecondFactors.regenerate_recovery_codes`."""
        return await asyncio.to_thread(self._factors.regenerate_recovery_codes, user_id)

    async def recovery_codes_left(self, user_id: str) -> int:
        """See :meth:`SecondFactors.recovery_codes_left`."""
        return await asyncio.to_thread(self._factors.recovery_codes_left, user_id)

    async def remove(self, user_id: str) -> bool:
        """See :meth:`SecondFactors.remove`."""
        return await asyncio.to_thread(self._factors.remove, user_id)
