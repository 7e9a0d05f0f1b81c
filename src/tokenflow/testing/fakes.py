"""Fakes of the identity ports, for tests and demos.

:class:`FakeUserDirectory`, :class:`FakePasswordVerifier`,
:class:`FakeExternalTokenVerifier`, :class:`FakeSecondFactors`, and their async
faces (``AsyncFake...``).
Each can be switched to ``unavailable`` to act out an outage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..ports import (
    ExternalIdentity,
    Identity,
    SecondFactorAccepted,
    SecondFactorFailure,
    SecondFactorRefused,
)

__all__ = [
    "AsyncFakeExternalTokenVerifier",
    "AsyncFakePasswordVerifier",
    "AsyncFakeSecondFactors",
    "AsyncFakeUserDirectory",
    "FakeExternalTokenVerifier",
    "FakePasswordVerifier",
    "FakeSecondFactors",
    "FakeUserDirectory",
]


def _unavailable(fake: object) -> ConnectionError:
    return ConnectionError(f"{type(fake).__name__} is unavailable (its 'unavailable' flag is set)")


class FakeUserDirectory:
    """An in-memory :class:`~tokenflow.ports.UserDirectory` for tests and demos.

    Users are added with claims, can be disabled (``load_user`` then returns
    ``None``, as for a deleted user) and deleted. External identities map to
    local users through :meth:`link`; with ``allow_signup``, an unlinked
    identity gets a new user ``"<provider>:<subject>"``. It never links an
    identity to an existing user on its own (linking by e-mail address is how
    accounts are taken over through a rogue identity provider).

    Set ``unavailable`` to make every port call raise :class:`ConnectionError`,
    as a directory that is down would. Thread-safe.
    """

    def __init__(self, *, allow_signup: bool = False) -> None:
        self.allow_signup = allow_signup
        self.unavailable = False
        self._lock = threading.Lock()
        self._users: dict[str, Identity] = {}
        self._disabled: set[str] = set()
        self._links: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"FakeUserDirectory(users={len(self._users)}, links={len(self._links)})"

    def add_user(self, user_id: str, claims: Mapping[str, Any] | None = None) -> Identity:
        """Add (or replace) an enabled user; the identity ``load_user`` will return."""
        identity = Identity(user_id, MappingProxyType(dict(claims or {})))
        with self._lock:
            self._users[user_id] = identity
            self._disabled.discard(user_id)
        return identity

    def set_claims(self, user_id: str, claims: Mapping[str, Any]) -> None:
        """Change a user's claims (roles...): the next access token carries them."""
        identity = Identity(user_id, MappingProxyType(dict(claims)))
        with self._lock:
            self._require(user_id)
            self._users[user_id] = identity

    def disable(self, user_id: str) -> None:
        """Make ``load_user`` return ``None`` for the user until :meth:`enable`."""
        with self._lock:
            self._require(user_id)
            self._disabled.add(user_id)

    def enable(self, user_id: str) -> None:
        """Undo :meth:`disable`."""
        with self._lock:
            self._require(user_id)
            self._disabled.discard(user_id)

    def delete(self, user_id: str) -> None:
        """Remove the user and every external identity linked to them."""
        with self._lock:
            self._require(user_id)
            del self._users[user_id]
            self._disabled.discard(user_id)
            for key in [k for k, v in self._links.items() if v == user_id]:
                del self._links[key]

    def link(self, provider: str, subject: str, user_id: str) -> None:
        """Map an external identity (provider, subject) to an existing local user."""
        with self._lock:
            self._require(user_id)
            self._links[(provider, subject)] = user_id

    def _require(self, user_id: str) -> None:
        if user_id not in self._users:
            raise KeyError(f"no user {user_id!r} in this FakeUserDirectory")

    def load_user(self, user_id: str) -> Identity | None:
        """The user's identity, or ``None`` if unknown, disabled or deleted."""
        with self._lock:
            if self.unavailable:
                raise _unavailable(self)
            if user_id in self._disabled:
                return None
            return self._users.get(user_id)

    def link_external(self, identity: ExternalIdentity) -> str | None:
        """The linked user's id; a new user's with ``allow_signup``; else ``None``.

        Also ``None`` when the linked user is disabled: refuse at login rather
        than open a session that the next refresh would end.
        """
        key = (identity.provider, identity.subject)
        with self._lock:
            if self.unavailable:
                raise _unavailable(self)
            user_id = self._links.get(key)
            if user_id is None and self.allow_signup:
                user_id = f"{identity.provider}:{identity.subject}"
                if user_id in self._users:
                    return None  # taken by an unlinked local user: never merge silently
                self._users[user_id] = Identity(user_id)
                self._links[key] = user_id
            if user_id is None or user_id in self._disabled:
                return None
            return user_id


class AsyncFakeUserDirectory:
    """The async face of :class:`FakeUserDirectory`; manage users through ``sync``."""

    def __init__(self, sync: FakeUserDirectory | None = None) -> None:
        self.sync: FakeUserDirectory = sync if sync is not None else FakeUserDirectory()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def load_user(self, user_id: str) -> Identity | None:
        """See :meth:`FakeUserDirectory.load_user`."""
        return self.sync.load_user(user_id)

    async def link_external(self, identity: ExternalIdentity) -> str | None:
        """See :meth:`FakeUserDirectory.link_external`."""
        return self.sync.link_external(identity)


@dataclass(frozen=True, slots=True)
class _PasswordRecord:
    user_id: str
    salt: bytes = dataclasses.field(repr=False)
    digest: bytes = dataclasses.field(repr=False)


# Deliberately cheap parameters: this is a fake for fast tests, not a way to
# store real passwords (use a real password hash library for that).
_SCRYPT = {"n": 2**10, "r": 8, "p": 1, "dklen": 32}
_PBKDF2_ITERATIONS = 2_000


def _hash_password(password: str, salt: bytes) -> bytes:
    # surrogatepass: a password is untrusted input, and a lone surrogate
    # (valid in a JSON string) must be a wrong password, not an exception.
    secret = password.encode("utf-8", "surrogatepass")
    if hasattr(hashlib, "scrypt"):  # absent when OpenSSL lacks it (some FIPS builds)
        return hashlib.scrypt(secret, salt=salt, **_SCRYPT)
    return hashlib.pbkdf2_hmac("sha256", secret, salt, _PBKDF2_ITERATIONS)


class FakePasswordVerifier:
    """An in-memory :class:`~tokenflow.ports.PasswordVerifier` for tests and demos.

    Keeps a salted scrypt hash per username (PBKDF2-HMAC-SHA256 where the
    platform has no scrypt), never the password, with parameters cheap enough
    for tests. An unknown username is hashed against a dummy record, so that
    it takes as long as a wrong password. ``passwords`` maps usernames to
    passwords to start with (each user id equal to its username).

    Set ``unavailable`` to make :meth:`verify_password` raise
    :class:`ConnectionError`. Thread-safe.
    """

    def __init__(self, passwords: Mapping[str, str] | None = None) -> None:
        self.unavailable = False
        self._lock = threading.Lock()
        self._records: dict[str, _PasswordRecord] = {}
        dummy_salt = secrets.token_bytes(16)
        self._dummy = _PasswordRecord(
            "", dummy_salt, _hash_password(secrets.token_urlsafe(16), dummy_salt)
        )
        for username, password in (passwords or {}).items():
            self.set_password(username, password)

    def __repr__(self) -> str:
        return f"FakePasswordVerifier(users={len(self._records)})"

    def set_password(self, username: str, password: str, *, user_id: str | None = None) -> None:
        """Set a user's password; ``user_id`` (default: the username) is what a match returns."""
        salt = secrets.token_bytes(16)
        record = _PasswordRecord(
            user_id if user_id is not None else username, salt, _hash_password(password, salt)
        )
        with self._lock:
            self._records[username] = record

    def remove(self, username: str) -> None:
        """Forget a username (no error if unknown)."""
        with self._lock:
            self._records.pop(username, None)

    def verify_password(self, username: str, password: str) -> str | None:
        """The user id if the pair matches, else ``None``; same work either way."""
        with self._lock:
            if self.unavailable:
                raise _unavailable(self)
            record = self._records.get(username)
        known = record is not None
        checked = record if record is not None else self._dummy
        match = hmac.compare_digest(_hash_password(password, checked.salt), checked.digest)
        return checked.user_id if known and match else None


class AsyncFakePasswordVerifier:
    """The async face of :class:`FakePasswordVerifier`; set passwords through ``sync``.

    Hashing runs inline: the fake's parameters are cheap enough not to stall
    an event loop in tests.
    """

    def __init__(self, sync: FakePasswordVerifier | None = None) -> None:
        self.sync: FakePasswordVerifier = sync if sync is not None else FakePasswordVerifier()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def verify_password(self, username: str, password: str) -> str | None:
        """See :meth:`FakePasswordVerifier.verify_password`."""
        return self.sync.verify_password(username, password)


@dataclass(frozen=True, slots=True)
class _IssuedToken:
    identity: ExternalIdentity
    expires_at: float


class FakeExternalTokenVerifier:
    """A :class:`~tokenflow.ports.ExternalTokenVerifier` that knows the tokens it issued.

    Tokens are opaque strings mapped to an :class:`~tokenflow.ports.ExternalIdentity`
    of ``provider``: mint one with :meth:`issue`, or :meth:`register` a string
    of your choice (a malformed one, say). ``verify_token`` accepts a token
    while ``now < expires_at``. The identity's claims are the given ones plus
    ``sub`` and ``exp``, as a verified ID token would carry.

    Set ``unavailable`` to make :meth:`verify_token` raise
    :class:`ConnectionError`, as a verifier whose key set is unreachable
    would. Thread-safe.
    """

    def __init__(self, provider: str = "fake-idp") -> None:
        self.provider = provider
        self.unavailable = False
        self._lock = threading.Lock()
        self._tokens: dict[str, _IssuedToken] = {}

    def __repr__(self) -> str:
        return f"FakeExternalTokenVerifier({self.provider!r}, tokens={len(self._tokens)})"

    def register(
        self,
        token: str,
        subject: str,
        *,
        expires_at: float,
        claims: Mapping[str, Any] | None = None,
    ) -> ExternalIdentity:
        """Make ``token`` verify as ``subject`` until ``expires_at``; the identity it yields."""
        all_claims = {**(claims or {}), "sub": subject, "exp": expires_at}
        identity = ExternalIdentity(self.provider, subject, MappingProxyType(all_claims))
        with self._lock:
            self._tokens[token] = _IssuedToken(identity, expires_at)
        return identity

    def issue(
        self, subject: str, *, expires_at: float, claims: Mapping[str, Any] | None = None
    ) -> str:
        """A fresh random token for ``subject``, valid until ``expires_at``."""
        token = f"fake-{secrets.token_urlsafe(24)}"
        self.register(token, subject, expires_at=expires_at, claims=claims)
        return token

    def revoke(self, token: str) -> None:
        """Make ``token`` unknown (no error if it already is)."""
        with self._lock:
            self._tokens.pop(token, None)

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """The identity of a known token that has not expired at ``now``, else ``None``."""
        with self._lock:
            if self.unavailable:
                raise _unavailable(self)
            issued = self._tokens.get(token)
        if issued is None or not now < issued.expires_at:
            return None
        return issued.identity


class AsyncFakeExternalTokenVerifier:
    """The async face of :class:`FakeExternalTokenVerifier`; issue tokens through ``sync``."""

    def __init__(self, sync: FakeExternalTokenVerifier | None = None) -> None:
        self.sync: FakeExternalTokenVerifier = (
            sync if sync is not None else FakeExternalTokenVerifier()
        )

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """See :meth:`FakeExternalTokenVerifier.verify_token`."""
        return self.sync.verify_token(token, now=now)


_TOTP_PERIOD = 30
_RECOVERY_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


class FakeSecondFactors:
    """An in-memory :class:`~tokenflow.ports.SecondFactorVerifier` for flow tests,
    without ``pyotp``.

    :meth:`enroll` gives a user a TOTP factor (a random per-user secret) and
    recovery codes. :meth:`code_at` computes the user's right code for a
    time (an HOTP of the 30-second time step, RFC 6238 style), so a test
    never hard-codes one. It honours the port's contract: a code is accepted
    for the current time step or one either side, each time step at most
    once per user (only steps after the last one used: a replay is
    ``REPLAYED``), each recovery code once; every check is atomic (one lock).
    ``verified`` counts the calls of :meth:`verify_second_factor`. Set
    ``unavailable`` to make every call raise :class:`ConnectionError`.
    """

    def __init__(self) -> None:
        self.unavailable = False
        self.verified: int = 0
        self._lock = threading.Lock()
        self._secrets: dict[str, bytes] = {}
        self._last_step: dict[str, int] = {}
        self._recovery: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"FakeSecondFactors(users={len(self._secrets)})"

    def enroll(
        self, user_id: str, *, recovery_codes: int = 10, secret: bytes | None = None
    ) -> tuple[str, ...]:
        """Give ``user_id`` a TOTP factor and ``recovery_codes`` fresh recovery codes,
        returned (16 base32 characters each, shown as ``xxxx-xxxx-xxxx-xxxx``).
        ``secret`` (default: 20 random bytes) lets two fakes agree on codes."""
        alphabet = sorted(_RECOVERY_ALPHABET)
        codes = tuple(
            "".join(secrets.choice(alphabet) for _ in range(16)) for _ in range(recovery_codes)
        )
        with self._lock:
            self._secrets[user_id] = secret if secret is not None else secrets.token_bytes(20)
            self._last_step.pop(user_id, None)
            self._recovery[user_id] = set(codes)
        return tuple("-".join(c[i : i + 4] for i in range(0, 16, 4)) for c in codes)

    def remove(self, user_id: str) -> None:
        """Take every second factor of ``user_id`` away."""
        with self._lock:
            self._secrets.pop(user_id, None)
            self._last_step.pop(user_id, None)
            self._recovery.pop(user_id, None)

    def code_at(self, user_id: str, now: float) -> str:
        """The user's right TOTP code at ``now`` (KeyError if not enrolled)."""
        with self._lock:
            secret = self._secrets[user_id]
        return self._code(secret, int(now // _TOTP_PERIOD))

    @staticmethod
    def _code(secret: bytes, step: int) -> str:
        digest = hmac.digest(secret, step.to_bytes(8, "big"), "sha1")
        offset = digest[-1] & 0x0F
        value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
        return f"{value % 1_000_000:06d}"

    def factors_of(self, user_id: str) -> tuple[str, ...]:
        """``("totp",)`` for an enrolled user, else ``()``."""
        if self.unavailable:
            raise _unavailable(self)
        with self._lock:
            return ("totp",) if user_id in self._secrets else ()

    def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """Check a TOTP or recovery code and consume it (see the class docstring)."""
        if self.unavailable:
            raise _unavailable(self)
        with self._lock:
            self.verified += 1
            secret = self._secrets.get(user_id)
            if secret is None:
                return SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)
            if len(code) == 6 and code.isascii() and code.isdigit():
                step = int(now // _TOTP_PERIOD)
                for candidate in (step - 1, step, step + 1):
                    if hmac.compare_digest(self._code(secret, candidate), code):
                        if candidate <= self._last_step.get(user_id, -1):
                            return SecondFactorRefused(SecondFactorFailure.REPLAYED)
                        self._last_step[user_id] = candidate
                        return SecondFactorAccepted("totp", ("otp",))
                return SecondFactorRefused(SecondFactorFailure.WRONG)
            compact = code.replace("-", "").replace(" ", "").upper()
            if len(compact) != 16 or not set(compact) <= _RECOVERY_ALPHABET:
                return SecondFactorRefused(SecondFactorFailure.MALFORMED)
            left = self._recovery[user_id]
            if compact not in left:
                return SecondFactorRefused(SecondFactorFailure.WRONG)
            left.discard(compact)
            return SecondFactorAccepted("recovery", ("otp",), len(left))


class AsyncFakeSecondFactors:
    """The async face of a :class:`FakeSecondFactors` (shared state)."""

    def __init__(self, sync: FakeSecondFactors | None = None) -> None:
        self.sync: FakeSecondFactors = sync if sync is not None else FakeSecondFactors()

    def __repr__(self) -> str:
        return f"AsyncFakeSecondFactors({self.sync!r})"

    async def factors_of(self, user_id: str) -> tuple[str, ...]:
        """See :meth:`FakeSecondFactors.factors_of`."""
        return self.sync.factors_of(user_id)

    async def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """See :meth:`FakeSecondFactors.verify_second_factor`."""
        return self.sync.verify_second_factor(user_id, code, now=now)
