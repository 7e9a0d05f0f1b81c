"""The passkey ceremonies, verified by the ``webauthn`` package (py_webauthn)."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from .._errors import ConfigError
from .._keyring import KeyRing
from ..ports import PasskeyFailure, PasskeyLogin, PasskeyRefused
from ._challenge import HANDLE_BYTES, Verdict, expiry_of, issue, ledger_key, open_challenge
from ._types import (
    ChallengeLedger,
    PasskeyConfig,
    PasskeyRepository,
    RegistrationFailure,
    RemoveOutcome,
    StoredPasskey,
)

_LOGIN: Final = "login"
_REGISTER: Final = "register"
_NAME_LIMIT: Final = 64
_TRANSPORTS: Final = frozenset(t.value for t in AuthenticatorTransport)
_REPOSITORY_METHODS: Final = (
    "add",
    "find",
    "passkeys_of",
    "user_handle_of",
    "record_use",
    "rename",
    "remove",
)


class _Malformed(Exception):
    """The browser's response is not a well-formed credential."""


def _client_data(credential: Mapping[str, Any]) -> tuple[bytes, str]:
    """The challenge and origin the browser put in clientDataJSON (not yet trusted)."""
    response = credential.get("response")
    if not isinstance(response, dict) or type(response.get("clientDataJSON")) is not str:
        raise _Malformed
    try:
        data = json.loads(base64url_to_bytes(response["clientDataJSON"]))
        challenge = base64url_to_bytes(data["challenge"])
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise _Malformed from exc
    origin = data.get("origin") if isinstance(data, dict) else None
    if type(origin) is not str:
        raise _Malformed
    return challenge, origin


def _parse(response: object, limit: int) -> dict[str, Any]:
    if type(response) is not str or len(response) > limit:
        raise _Malformed
    try:
        credential = json.loads(response)
    except (ValueError, RecursionError) as exc:
        raise _Malformed from exc
    if not isinstance(credential, dict):
        raise _Malformed
    return credential


def _credential_id(credential: Mapping[str, Any]) -> bytes:
    raw, named = credential.get("rawId"), credential.get("id")
    if type(raw) is not str or raw != named or not 1 <= len(raw) <= 1400:
        raise _Malformed
    try:
        return base64url_to_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise _Malformed from exc


class Passkeys:
    """Passkey registration and login: the ``passkeys=`` port of :class:`~tokenflow.Flow`.

    ``keyring`` authenticates the challenges (use the flow's own);
    ``repository`` keeps the passkeys and ``ledger`` the used challenges
    (the same backend as the sessions on a deployment of several servers).
    ``other_sign_in(user_id)`` says whether a user can sign in some other
    way (a password, an identity provider): without it, a user's last
    passkey can never be removed. ``clock`` and ``random`` are seams for
    tests.
    """

    def __init__(
        self,
        config: PasskeyConfig,
        keyring: KeyRing,
        repository: PasskeyRepository,
        ledger: ChallengeLedger,
        *,
        other_sign_in: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not isinstance(config, PasskeyConfig):
            raise ConfigError("Passkeys needs a PasskeyConfig")
        if not isinstance(keyring, KeyRing):
            raise ConfigError("Passkeys needs the flow's KeyRing to authenticate its challenges")
        for method in _REPOSITORY_METHODS:
            if not callable(getattr(repository, method, None)):
                raise ConfigError(
                    f"repository ({type(repository).__name__}) has no {method}() method; "
                    "see tokenflow.passkeys.PasskeyRepository"
                )
        if not callable(getattr(ledger, "use", None)):
            raise ConfigError(
                f"ledger ({type(ledger).__name__}) has no use() method; "
                "see tokenflow.passkeys.ChallengeLedger"
            )
        if other_sign_in is not None and not callable(other_sign_in):
            raise ConfigError("other_sign_in must be a callable taking a user id")
        self._config = config
        self._keyring = keyring
        self._repository = repository
        self._ledger = ledger
        self._other_sign_in = other_sign_in
        self._clock = clock
        self._random = random
        self._uv = UserVerificationRequirement(config.user_verification)

    @property
    def config(self) -> PasskeyConfig:
        """The validated configuration."""
        return self._config

    @property
    def repository(self) -> PasskeyRepository:
        """The passkey repository given at construction."""
        return self._repository

    def origin_for(self, origin: str | None) -> str | None:
        """The configured origin a ceremony is bound to: the request's ``Origin`` when it
        is one of them, the only one when the request sent none, else None (refuse)."""
        if origin is None:
            return self._config.origins[0] if len(self._config.origins) == 1 else None
        return origin if origin in self._config.origins else None

    # -- registration: a signed-in user adds a passkey ----------------------------

    def registration_options(
        self,
        user_id: str,
        session_id: str,
        *,
        user_name: str,
        origin: str,
        display_name: str | None = None,
        now: float | None = None,
    ) -> str:
        """The JSON for ``navigator.credentials.create()``, for a signed-in user.

        The challenge is bound to this session and ``origin`` (one of the
        configured origins: see :meth:`origin_for`). The user handle is the
        user's existing one or a fresh random one, never the user id; the
        user's passkeys are excluded, so an authenticator cannot register twice.
        """
        config = self._config
        if origin not in config.origins:
            raise ValueError("origin is not one of PasskeyConfig.origins")
        now = self._clock() if now is None else now
        handle = self._repository.user_handle_of(user_id) or self._random(HANDLE_BYTES)
        existing = self._repository.passkeys_of(user_id)
        challenge = issue(
            self._keyring, purpose=_REGISTER, rp_id=config.rp_id, origin=origin,
            subject=session_id, now=now, ttl=config.challenge_ttl, random=self._random,
            user_handle=handle,
        )  # fmt: skip
        options = generate_registration_options(
            rp_id=config.rp_id,
            rp_name=config.rp_name,
            user_id=handle,
            user_name=user_name,
            user_display_name=display_name or user_name,
            challenge=challenge,
            timeout=config.challenge_ttl * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED, user_verification=self._uv
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(
                    id=p.credential_id,
                    transports=[AuthenticatorTransport(t) for t in p.transports],
                )
                for p in existing
            ],
        )
        return options_to_json(options)

    def verify_registration(
        self,
        user_id: str,
        session_id: str,
        response: str,
        *,
        name: str = "",
        now: float | None = None,
    ) -> StoredPasskey | RegistrationFailure:
        """Verify ``navigator.credentials.create()``'s JSON and store the new passkey.

        The challenge must be one :meth:`registration_options` issued for
        this session, unexpired and unused (it is consumed here). Returns
        the stored passkey or why it was refused.
        """
        config = self._config
        now = self._clock() if now is None else now
        try:
            credential = _parse(response, config.max_response)
            credential_id = _credential_id(credential)
            challenge, origin = _client_data(credential)
        except _Malformed:
            return RegistrationFailure.MALFORMED
        if origin not in config.origins:
            return RegistrationFailure.CHALLENGE_INVALID
        opened = open_challenge(
            self._keyring, challenge, purpose=_REGISTER, rp_id=config.rp_id, origin=origin,
            subject=session_id, now=now, with_handle=True,
        )  # fmt: skip
        if opened.verdict is Verdict.EXPIRED:
            return RegistrationFailure.CHALLENGE_EXPIRED
        if opened.verdict is not Verdict.VALID or opened.user_handle is None:
            return RegistrationFailure.CHALLENGE_INVALID
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=config.rp_id,
                expected_origin=origin,
                require_user_verification=config.user_verification == "required",
            )
        except Exception:
            # The library raises several types for what the client sent;
            # every one of them is a refusal, never a traceback.
            return RegistrationFailure.ATTESTATION
        if verified.credential_id != credential_id:
            return RegistrationFailure.ATTESTATION
        if not self._ledger.use(ledger_key(challenge), expiry_of(challenge), now):
            return RegistrationFailure.REPLAYED
        existing = self._repository.user_handle_of(user_id)
        handle = existing if existing is not None else opened.user_handle
        transports = credential.get("response", {}).get("transports", [])
        passkey = StoredPasskey(
            credential_id=verified.credential_id,
            user_id=user_id,
            user_handle=handle,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            name=_clean_name(name) or "Passkey",
            created_at=now,
            transports=tuple(sorted({t for t in transports if type(t) is str and t in _TRANSPORTS}))
            if isinstance(transports, list)
            else (),
            backup_eligible=verified.credential_device_type is CredentialDeviceType.MULTI_DEVICE,
            backed_up=verified.credential_backed_up,
            user_verified=verified.user_verified,
            aaguid=verified.aaguid,
        )
        try:
            self._repository.add(passkey)
        except ValueError:
            return RegistrationFailure.ALREADY_REGISTERED
        return passkey

    # -- authentication: a login with a passkey ------------------------------------

    def authentication_options(self, *, origin: str, now: float | None = None) -> str:
        """The JSON for ``navigator.credentials.get()``: discoverable credentials
        (no list of ids, so the browser can offer passkeys in the username
        field's autofill), the challenge bound to a login at ``origin``."""
        config = self._config
        if origin not in config.origins:
            raise ValueError("origin is not one of PasskeyConfig.origins")
        now = self._clock() if now is None else now
        challenge = issue(
            self._keyring, purpose=_LOGIN, rp_id=config.rp_id, origin=origin, subject="",
            now=now, ttl=config.challenge_ttl, random=self._random,
        )  # fmt: skip
        options = generate_authentication_options(
            rp_id=config.rp_id,
            challenge=challenge,
            timeout=config.challenge_ttl * 1000,
            user_verification=self._uv,
        )
        return options_to_json(options)

    def verify_assertion(self, response: str, *, now: float) -> PasskeyLogin | PasskeyRefused:
        """Verify ``navigator.credentials.get()``'s JSON: the flow's passkey port.

        In this order: the size and shape; the challenge (this server's, for
        a login, at the origin the browser names, unexpired); the passkey
        (registered); the signature and the ceremony's checks (py_webauthn);
        the user handle; then the challenge is consumed (a replay stops
        here) and the counter moved forward atomically (a clone stops here).
        """
        config = self._config
        try:
            credential = _parse(response, config.max_response)
            credential_id = _credential_id(credential)
            challenge, origin = _client_data(credential)
        except _Malformed:
            return PasskeyRefused(PasskeyFailure.MALFORMED)
        if origin not in config.origins:
            return PasskeyRefused(PasskeyFailure.CHALLENGE_INVALID)
        opened = open_challenge(
            self._keyring, challenge, purpose=_LOGIN, rp_id=config.rp_id, origin=origin,
            subject="", now=now, with_handle=False,
        )  # fmt: skip
        if opened.verdict is Verdict.EXPIRED:
            return PasskeyRefused(PasskeyFailure.CHALLENGE_EXPIRED)
        if opened.verdict is not Verdict.VALID:
            return PasskeyRefused(PasskeyFailure.CHALLENGE_INVALID)
        passkey = self._repository.find(credential_id)
        if passkey is None:
            return PasskeyRefused(PasskeyFailure.UNKNOWN_CREDENTIAL)
        user_id, named = passkey.user_id, bytes_to_base64url(credential_id)
        uv_required = config.user_verification == "required"
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=config.rp_id,
                expected_origin=origin,
                credential_public_key=passkey.public_key,
                # The counter is checked below, where a regression is told
                # apart from other failures and recorded atomically.
                credential_current_sign_count=0,
                require_user_verification=uv_required,
            )
        except Exception:
            failure = PasskeyFailure.SIGNATURE
            if uv_required and _uv_missing(credential):
                failure = PasskeyFailure.USER_VERIFICATION
            return PasskeyRefused(failure, user_id, named)
        handle = credential["response"].get("userHandle")
        if handle is not None and handle != "":
            try:
                presented = base64url_to_bytes(handle) if type(handle) is str else b""
            except (ValueError, TypeError):
                presented = b""
            # Both are public values, but compared in constant time all the same.
            if not hmac.compare_digest(presented, passkey.user_handle):
                return PasskeyRefused(PasskeyFailure.USER_HANDLE, user_id, named)
        if not self._ledger.use(ledger_key(challenge), expiry_of(challenge), now):
            return PasskeyRefused(PasskeyFailure.REPLAYED, user_id, named)
        count = verified.new_sign_count
        if not self._repository.record_use(
            credential_id, count, verified.credential_backed_up, now
        ):
            # The repository refused to move the counter: it did not go
            # forward (or another login with the same count won the race).
            return PasskeyRefused(
                PasskeyFailure.CLONED, user_id, named, (passkey.sign_count, count)
            )
        amr: tuple[str, ...] = ("swk" if passkey.backup_eligible else "hwk",)
        if verified.user_verified:
            amr += ("user",)
        return PasskeyLogin(user_id, named, amr, verified.user_verified)

    # -- the user's own passkeys -----------------------------------------------------

    def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """The user's passkeys, oldest first."""
        return self._repository.passkeys_of(user_id)

    def rename(self, user_id: str, credential_id: str, name: str) -> bool:
        """Rename one of the user's passkeys (``credential_id`` in base64url)."""
        raw = _decode_id(credential_id)
        cleaned = _clean_name(name)
        if raw is None or not cleaned:
            return False
        return self._repository.rename(user_id, raw, cleaned)

    def remove(self, user_id: str, credential_id: str) -> RemoveOutcome:
        """Remove one of the user's passkeys, unless it is their last way to sign in."""
        raw = _decode_id(credential_id)
        owned = self._repository.passkeys_of(user_id)
        if raw is None or not any(p.credential_id == raw for p in owned):
            return RemoveOutcome.NOT_FOUND
        if len(owned) == 1 and not (
            self._other_sign_in is not None and self._other_sign_in(user_id)
        ):
            return RemoveOutcome.LAST_SIGN_IN
        return (
            RemoveOutcome.REMOVED
            if self._repository.remove(user_id, raw)
            else (RemoveOutcome.NOT_FOUND)
        )


def _uv_missing(credential: Mapping[str, Any]) -> bool:
    """Whether the authenticator data's UV flag is clear (for the refusal's reason only)."""
    try:
        data = base64url_to_bytes(credential["response"]["authenticatorData"])
    except (ValueError, TypeError, KeyError):
        return False
    return len(data) > 32 and not data[32] & 0x04


def _decode_id(text: object) -> bytes | None:
    if type(text) is not str or not 1 <= len(text) <= 1400:
        return None
    try:
        return base64url_to_bytes(text)
    except (ValueError, TypeError):
        return None


def _clean_name(name: object) -> str:
    """A display name: printable, trimmed, at most 64 characters."""
    if type(name) is not str:
        return ""
    return "".join(c for c in name if c.isprintable()).strip()[:_NAME_LIMIT]


class AsyncPasskeys:
    """The async face of :class:`Passkeys`, for :class:`~tokenflow.AsyncFlow`.

    Each call runs the sync one in a worker thread (the repository and the
    ledger may block), so the event loop never waits on them.
    """

    def __init__(self, passkeys: Passkeys) -> None:
        if not isinstance(passkeys, Passkeys):
            raise ConfigError("AsyncPasskeys wraps a tokenflow.passkeys.Passkeys")
        self._passkeys = passkeys

    @property
    def config(self) -> PasskeyConfig:
        """The validated configuration."""
        return self._passkeys.config

    def origin_for(self, origin: str | None) -> str | None:
        """See :meth:`Passkeys.origin_for` (no I/O: answered in place)."""
        return self._passkeys.origin_for(origin)

    async def verify_assertion(self, response: str, *, now: float) -> PasskeyLogin | PasskeyRefused:
        """See :meth:`Passkeys.verify_assertion`."""
        return await asyncio.to_thread(self._passkeys.verify_assertion, response, now=now)

    async def registration_options(
        self, user_id: str, session_id: str, *, user_name: str, origin: str
    ) -> str:
        """See :meth:`Passkeys.registration_options`."""
        return await asyncio.to_thread(
            self._passkeys.registration_options,
            user_id,
            session_id,
            user_name=user_name,
            origin=origin,
        )

    async def verify_registration(
        self, user_id: str, session_id: str, response: str, *, name: str = ""
    ) -> StoredPasskey | RegistrationFailure:
        """See :meth:`Passkeys.verify_registration`."""
        return await asyncio.to_thread(
            self._passkeys.verify_registration, user_id, session_id, response, name=name
        )

    async def authentication_options(self, *, origin: str) -> str:
        """See :meth:`Passkeys.authentication_options`."""
        return await asyncio.to_thread(self._passkeys.authentication_options, origin=origin)

    async def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """See :meth:`Passkeys.passkeys_of`."""
        return await asyncio.to_thread(self._passkeys.passkeys_of, user_id)

    async def rename(self, user_id: str, credential_id: str, name: str) -> bool:
        """See :meth:`Passkeys.rename`."""
        return await asyncio.to_thread(self._passkeys.rename, user_id, credential_id, name)

    async def remove(self, user_id: str, credential_id: str) -> RemoveOutcome:
        """See :meth:`Passkeys.remove`."""
        return await asyncio.to_thread(self._passkeys.remove, user_id, credential_id)
