"""The ports: what tokenflow asks of the host's storage and identity systems.

Each port is a small :class:`typing.Protocol` with a sync and an async
variant; :class:`tokenflow.Flow` drives the sync ones and
:class:`tokenflow.AsyncFlow` the async ones. The docstrings are contracts:
:mod:`tokenflow.testing` checks session stores against them.

Failure rule for every port: raise on infrastructure failure (database down,
identity provider unreachable). tokenflow turns any exception into an
``Unavailable`` (503) decision that mints nothing and clears nothing. Return
``None`` (never raise) for a plain "no": wrong password, unknown user.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from ._dbsc import DeviceProof, ProofFailure
from ._errors import ConfigError
from ._sessions import NewSession, Rotation, RotationResult, SessionInfo
from ._throttle import FailureCount

__all__ = [
    "AsyncDeviceBindingStore",
    "AsyncExternalTokenVerifier",
    "AsyncLoginThrottle",
    "AsyncPasskeyVerifier",
    "AsyncPasswordVerifier",
    "AsyncSecondFactorVerifier",
    "AsyncSessionStore",
    "AsyncUserDirectory",
    "DeviceBindingStore",
    "DeviceProof",
    "DeviceProofVerifier",
    "ExternalIdentity",
    "ExternalTokenVerifier",
    "FailureCount",
    "Identity",
    "LoginThrottle",
    "PasskeyFailure",
    "PasskeyLogin",
    "PasskeyRefused",
    "PasskeyVerifier",
    "PasswordVerifier",
    "SecondFactorAccepted",
    "SecondFactorFailure",
    "SecondFactorRefused",
    "SecondFactorVerifier",
    "SessionInfo",
    "SessionStore",
    "UserDirectory",
]

RESERVED_CLAIMS = frozenset({"sub", "sid", "iat", "exp", "rs", "amr", "aal", "auth_time"})
"""Claim names tokenflow sets itself; application claims may not use them."""

_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    """A user as the application knows them right now.

    ``claims`` are application claims (roles, tenant...) copied into every
    access token. They must be JSON-serialisable and may not use the names
    tokenflow reserves (``sub``, ``sid``, ``iat``, ``exp``, ``rs``, ``amr``,
    ``aal``, ``auth_time``).
    """

    user_id: str
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id:
            raise ConfigError("Identity.user_id must be a non-empty string")
        clash = RESERVED_CLAIMS.intersection(self.claims)
        if clash:
            raise ConfigError(
                f"application claims {sorted(clash)} clash with claims tokenflow sets itself; "
                "rename them"
            )


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """An identity vouched for by a verified external token (an OIDC ID token...).

    ``provider`` is the name the verifier is registered under: the flow sets
    it to that name before the identity reaches the user directory, whatever
    the verifier put there, so a verifier can only vouch for its own
    provider. ``subject`` is the provider's stable user id (the ``sub`` claim;
    the object id for Microsoft Entra ID) and ``issuer`` the exact issuer that
    signed the token: together they name the user, and are what
    :meth:`UserDirectory.link_external` should key on. ``email`` is set only
    when the provider marked the address as verified. ``claims`` are the
    verified claims.
    """

    provider: str
    subject: str
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)
    issuer: str | None = None
    email: str | None = None


# -- passkeys: what a passkey verifier answers (tokenflow.passkeys implements it) ----


class PasskeyFailure(enum.Enum):
    """Why a passkey assertion was refused. For events and tests; the client sees 401."""

    MALFORMED = "malformed"
    """The response is not a well-formed assertion (or is over the size limit)."""
    CHALLENGE_INVALID = "challenge_invalid"
    """The challenge was not issued by this server for a login at this rp id and origin."""
    CHALLENGE_EXPIRED = "challenge_expired"
    """The challenge was issued by this server, longer ago than its time to live."""
    UNKNOWN_CREDENTIAL = "unknown_credential"
    """No passkey is registered under the credential id (or it was removed)."""
    SIGNATURE = "signature"
    """The ceremony's checks failed (signature, rp id hash, origin, type, user presence)."""
    USER_VERIFICATION = "user_verification"
    """User verification is required by the configuration and was not performed."""
    USER_HANDLE = "user_handle"
    """The assertion names another user handle than the credential's."""
    REPLAYED = "replayed"
    """The challenge was already used: a replayed (captured) assertion."""
    CLONED = "cloned"
    """The signature counter did not move forward: a cloned authenticator."""


@dataclass(frozen=True, slots=True)
class PasskeyLogin:
    """A verified passkey assertion: who signed in, and how.

    ``amr`` are the authentication method references (RFC 8176) recorded in
    the session's access tokens: ``hwk`` for a device-bound key, ``swk`` for
    a synced (backup-eligible) one, and ``user`` when the authenticator
    verified the user (PIN, biometrics).
    """

    user_id: str
    credential_id: str
    amr: tuple[str, ...]
    user_verified: bool


@dataclass(frozen=True, slots=True)
class PasskeyRefused:
    """A refused passkey assertion. ``user_id`` and ``credential_id`` are set
    once the credential is known (always for ``CLONED``); ``counters`` is the
    stored and the presented signature count of a ``CLONED`` refusal."""

    reason: PasskeyFailure
    user_id: str | None = None
    credential_id: str | None = None
    counters: tuple[int, int] | None = None


class PasskeyVerifier(Protocol):
    """Verifies a passkey assertion (the JSON of ``navigator.credentials.get()``).

    :class:`tokenflow.passkeys.Passkeys` is the implementation. Contract: a
    :class:`PasskeyLogin` only for an assertion whose challenge this server
    issued for a login, unused until now and consumed atomically by this
    call (so it never verifies twice, on any number of servers), signed by a
    registered credential whose counter moved forward (recorded); a
    :class:`PasskeyRefused` for anything the client sent wrong; an exception
    only when it cannot decide (a store down).
    """

    def verify_assertion(self, response: str, *, now: float) -> PasskeyLogin | PasskeyRefused:
        """The verified login, or why it was refused."""
        ...


class AsyncPasskeyVerifier(Protocol):
    """The async variant of :class:`PasskeyVerifier`."""

    async def verify_assertion(self, response: str, *, now: float) -> PasskeyLogin | PasskeyRefused:
        """The verified login, or why it was refused."""
        ...


# -- second factors: what a second-factor verifier answers (tokenflow.mfa implements it) --


class SecondFactorFailure(enum.Enum):
    """Why a second-factor code was refused. For events and tests; the client sees 401."""

    WRONG = "wrong"
    """No factor of the account matched the code."""
    REPLAYED = "replayed"
    """A right TOTP code whose time step was already used (a replayed code)."""
    NOT_ENROLLED = "not_enrolled"
    """The account has no confirmed second factor."""
    MALFORMED = "malformed"
    """Not the shape of any code (a TOTP code is 6 ASCII digits; a recovery code
    16 base32 characters, dashes and spaces ignored)."""


@dataclass(frozen=True, slots=True)
class SecondFactorAccepted:
    """A second-factor code that was right, and has now been used up.

    ``method`` says which factor matched (``"totp"`` or ``"recovery"``);
    ``amr`` are the method references (RFC 8176) it adds to the session
    (``("otp",)``: a one-time password, for both). ``recovery_codes_left`` is
    set when a recovery code was used: how many the account has left.
    """

    method: Literal["totp", "recovery"]
    amr: tuple[str, ...]
    recovery_codes_left: int | None = None


@dataclass(frozen=True, slots=True)
class SecondFactorRefused:
    """A refused second-factor code, and why."""

    reason: SecondFactorFailure


class SecondFactorVerifier(Protocol):
    """An account's second factors (TOTP, recovery codes); :class:`tokenflow.mfa.SecondFactors`
    is the implementation. Contract:

    - ``factors_of`` names the account's *confirmed* second factors (``("totp",)``),
      ``()`` when it has none: the flow then logs the user in on the first
      factor alone, exactly as without second factors.
    - ``verify_second_factor`` checks a TOTP or recovery code and **consumes it
      atomically**: a TOTP time step is accepted at most once per account
      (on any number of servers), a recovery code at most once. It returns
      :class:`SecondFactorAccepted` or :class:`SecondFactorRefused`, and raises
      only when it cannot decide (a store down).
    - The flow throttles guesses per account before it calls
      ``verify_second_factor``; the verifier need not count them.
    """

    def factors_of(self, user_id: str) -> tuple[str, ...]:
        """The account's confirmed second factors, e.g. ``("totp",)``; ``()`` when it has none."""
        ...

    def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """Check a TOTP or recovery code and consume it, atomically."""
        ...


class AsyncSecondFactorVerifier(Protocol):
    """The async variant of :class:`SecondFactorVerifier`, with the same contract."""

    async def factors_of(self, user_id: str) -> tuple[str, ...]:
        """The account's confirmed second factors, e.g. ``("totp",)``; ``()`` when it has none."""
        ...

    async def verify_second_factor(
        self, user_id: str, code: str, *, now: float
    ) -> SecondFactorAccepted | SecondFactorRefused:
        """Check a TOTP or recovery code and consume it, atomically."""
        ...


class SessionStore(Protocol):
    """Server-side refresh sessions. Contract:

    - ``create`` stores a new session under a fresh id (tokenflow draws 128
      random bits). An id that already exists must raise ``ValueError`` and
      leave the existing session untouched: overwriting would hand one user's
      session to another.
    - ``rotate`` applies :func:`tokenflow.stores.apply_rotation`'s rule
      **atomically**: concurrent rotations of one session are serialised, so
      that of N parallel calls presenting the current verifier exactly one
      gets ROTATED and the others GRACE (inside the window). It deletes the
      session on EXPIRED, REUSED_PREVIOUS and REUSED_UNKNOWN.
    - ``revoke`` deletes one session, ``revoke_user`` all of a user's; both
      report how many existed. Revocation is immediate for refresh.
    - ``sessions_of`` lists a user's live sessions at ``now``, oldest first
      (``created_at``, ties broken by ``session_id``).
    - Every ``SessionInfo`` field, times and metadata included, round-trips
      exactly. Times are compared with the ``now`` of each call, never the
      store's own clock.
    - A session past its expiry may already be gone (a TTL, a purge): it may
      answer UNKNOWN_SESSION instead of EXPIRED. Stores that keep dead
      sessions also offer ``purge(now) -> int``.
    - The store holds verifiers (SHA-256 digests) and salts, never secrets.
    """

    def create(self, session: NewSession) -> None:
        """Store a new session."""
        ...

    def rotate(self, rotation: Rotation) -> RotationResult:
        """Atomically compare-and-set the session's refresh verifier."""
        ...

    def revoke(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        ...

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of the user; the number deleted."""
        ...

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """The user's live sessions, oldest first."""
        ...


class AsyncSessionStore(Protocol):
    """The async variant of :class:`SessionStore`, with the same contract."""

    async def create(self, session: NewSession) -> None:
        """Store a new session."""
        ...

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """Atomically compare-and-set the session's refresh verifier."""
        ...

    async def revoke(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        ...

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of the user; the number deleted."""
        ...

    async def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """The user's live sessions, oldest first."""
        ...


class DeviceBindingStore(SessionStore, Protocol):
    """A :class:`SessionStore` that can bind sessions to a device key (device-bound sessions).

    - ``bind_device`` sets the session's ``device_key`` **atomically, only if
      none is set** and the session is live at ``now``; it returns the session
      as it is after the call (so a session registered twice reports its first
      key), or ``None`` when no live session has that id.
    - ``device_key_of`` returns the key of a live session, ``None`` when the
      session is unbound, over or unknown.
    - ``rotate`` answers DEVICE_BOUND, changing nothing, when the session has a
      key and the rotation does not carry that same key.
    """

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        """Bind a live, unbound session to ``device_key``; the session after the call."""
        ...

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        ...


class AsyncDeviceBindingStore(AsyncSessionStore, Protocol):
    """The async variant of :class:`DeviceBindingStore`, with the same contract."""

    async def bind_device(
        self, session_id: str, device_key: str, *, now: float
    ) -> SessionInfo | None:
        """Bind a live, unbound session to ``device_key``; the session after the call."""
        ...

    async def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        ...


class DeviceProofVerifier(Protocol):
    """Verifies device-bound-session proofs (``dbsc+jwt``); :mod:`tokenflow.dbsc` has one.

    ``verify`` is called synchronously by both drivers (it is CPU work, no
    I/O). With ``key=None`` (a registration) the proof must carry its public
    key in the ``jwk`` header and be signed by it; with a key (a refresh) the
    proof must carry none and be signed by ``key``. It returns the verified
    :class:`~tokenflow.ports.DeviceProof`, or a :class:`~tokenflow.events.ProofFailure`
    for a proof it refuses; it raises only for its own faults.
    """

    def verify(
        self, token: str, *, key: str | None, algorithms: frozenset[str]
    ) -> DeviceProof | ProofFailure:
        """Verify one proof JWT."""
        ...


class PasswordVerifier(Protocol):
    """Checks a username and password.

    Returns the user id on success, ``None`` otherwise. Should take the same
    time for unknown users as for wrong passwords (hash a dummy), so that
    timing does not reveal which usernames exist.

    Optionally, an ``account_key(username) -> str | None`` method names the
    account a username resolves to under the host's rules (trimming, case,
    accents...), or ``None`` when it names none: the login throttle then
    counts failures per account, so no spelling of a username gets guesses
    of its own. :class:`tokenflow.passwords.PasswordVerifier` has one.
    """

    def verify_password(self, username: str, password: str) -> str | None:
        """The user id if the pair is valid, else ``None``."""
        ...


class AsyncPasswordVerifier(Protocol):
    """The async variant of :class:`PasswordVerifier`."""

    async def verify_password(self, username: str, password: str) -> str | None:
        """The user id if the pair is valid, else ``None``."""
        ...


class ExternalTokenVerifier(Protocol):
    """Verifies one provider's tokens (an ID token from Google, Okta, Cognito...).

    Registered under a provider name: ``Flow(..., external={"google": v})``. Returns the
    verified identity, or ``None`` for an invalid, expired or foreign token.
    Raises only when it cannot decide (key set unreachable).
    """

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """The verified identity, or ``None``."""
        ...


class AsyncExternalTokenVerifier(Protocol):
    """The async variant of :class:`ExternalTokenVerifier`."""

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """The verified identity, or ``None``."""
        ...


class UserDirectory(Protocol):
    """The application's users.

    ``load_user`` is called at every login and every refresh, so that role
    changes reach the next access token and a disabled or deleted user
    (``None``) loses their session at its next refresh: within one access
    token lifetime. ``link_external`` maps a verified external identity to a
    local user id (creating the user if the application allows sign-up), or
    ``None`` to refuse.
    """

    def load_user(self, user_id: str) -> Identity | None:
        """The user's current identity, or ``None`` if disabled or deleted."""
        ...

    def link_external(self, identity: ExternalIdentity) -> str | None:
        """The local user id for a verified external identity, or ``None``."""
        ...


class AsyncUserDirectory(Protocol):
    """The async variant of :class:`UserDirectory`."""

    async def load_user(self, user_id: str) -> Identity | None:
        """The user's current identity, or ``None`` if disabled or deleted."""
        ...

    async def link_external(self, identity: ExternalIdentity) -> str | None:
        """The local user id for a verified external identity, or ``None``."""
        ...


class LoginThrottle(Protocol):
    """Counts failed logins per key, for the flow's throttle. Contract:

    - Keys are short strings made by tokenflow (a digest of an account or a
      username, or a client address); a store treats them as opaque. The
      keys of one call are distinct.
    - ``failures`` reports each key's :class:`FailureCount` at ``now``, in
      key order: count 0 (and ``last_failure_at`` 0.0) for a key never seen,
      reset, or whose window ran out.
    - ``reserve`` counts an attempt before it is verified. If every key's
      count at ``now`` still equals the ``expected`` one (the counts the
      flow read and let through), it adds one failure to every key (last
      failure ``now``; a key whose window ran out restarts from 1) and
      returns True; otherwise it returns False and leaves every count as it
      was. It is **exact under concurrency**: of any number of simultaneous
      reservations with the same expected counts, at most one succeeds, so
      with a limit of N at most N attempts are ever verified. A backend that
      cannot change several keys in one atomic step may raise a count and
      take it back before answering False; it never leaves one raised.
    - ``release`` takes one reserved attempt back from every key (the count
      drops by one, never below 0; ``last_failure_at`` stays): an attempt
      that turned out not to be a guess (a success, for the address).
    - ``reset`` forgets the keys' failures (a successful login's account).
    - Times are the ``now`` passed in, never the store's own clock. A store
      may drop a key once its window has run out (a TTL). A call's ``window``
      applies to every key of that call; the flow reserves keys remembered
      for different windows (an account's second-factor count, a day; its
      client address, an hour) in separate calls, taking the first back if
      the second loses.

    :mod:`tokenflow.testing` checks throttles against this contract
    (:func:`~tokenflow.testing.check_login_throttle`), simultaneous
    reservations included. The delay policy is not the store's business:
    the flow computes it from the counts (:class:`~tokenflow.ThrottlePolicy`).
    """

    def failures(self, keys: Sequence[str], *, now: float) -> Sequence[FailureCount]:
        """Each key's failure count at ``now``."""
        ...

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``, atomically."""
        ...

    def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key."""
        ...

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        ...


class AsyncLoginThrottle(Protocol):
    """The async variant of :class:`LoginThrottle`, with the same contract."""

    async def failures(self, keys: Sequence[str], *, now: float) -> Sequence[FailureCount]:
        """Each key's failure count at ``now``."""
        ...

    async def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``, atomically."""
        ...

    async def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key."""
        ...

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        ...
