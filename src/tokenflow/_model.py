"""The values that flow through tokenflow: requests, credentials, decisions, events.

All are frozen, slotted dataclasses matched by type; every reason is an Enum.
A host builds a :class:`Request`, asks a flow for a decision, and matches on it::

    match flow.decide(request):
        case Process() | Reissue() as ok:  ...  # serve; send ok.set_cookies
        case LoggedOut() as out:           ...  # 200 after a logout; send out.set_cookies
        case Unauthorized() as no:         ...  # 401; send no.set_cookies
        case Forbidden():                  ...  # 403
        case TooManyRequests() as slow:    ...  # 429; send Retry-After: slow.retry_after
        case Unavailable() as down:        ...  # 503; log down.error
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from ._dbsc import ProofFailure, instructions_json
from ._errors import ConfigError, InvalidTokenReason
from ._http import RequestFacts, TrustedProxies, read_asgi, read_headers, read_wsgi
from ._token import Purpose

__all__ = [
    "AmbiguousCookie",
    "AuthenticatorCloned",
    "AuthorizationCodeCredentials",
    "BareRefreshRefused",
    "ButtonCredentials",
    "Credentials",
    "CrossOriginRejected",
    "Decision",
    "DeviceBound",
    "DeviceProofRejected",
    "DeviceProofRequired",
    "DeviceRegistered",
    "Event",
    "ExternalTokenCredentials",
    "Forbidden",
    "LoggedIn",
    "LoggedOut",
    "LoginFailed",
    "LoginFailedReason",
    "LoginThrottled",
    "PasskeyCredentials",
    "PasskeyReplayed",
    "PasswordCredentials",
    "PortFailed",
    "Process",
    "ProviderRedirect",
    "RefreshEnded",
    "RefreshEndedReason",
    "Refreshed",
    "Reissue",
    "Request",
    "Requirement",
    "ReuseDetected",
    "ReuseDetectedReason",
    "SecondFactorChallenged",
    "SecondFactorCredentials",
    "SecondFactorRequired",
    "SecondFactorVerified",
    "SessionRevoked",
    "SessionRevokedReason",
    "StepUpRequired",
    "SteppedUp",
    "TokenRejected",
    "TooManyRequests",
    "Unauthorized",
    "UnauthorizedReason",
    "Unavailable",
    "route_request",
]

_NO_METADATA: Mapping[str, str] = MappingProxyType({})

# -- credentials ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordCredentials:
    """A username and password from a login form. The password never appears in ``repr``."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ExternalTokenCredentials:
    """A token from an external identity provider (an OIDC ID token...).

    ``provider`` names the verifier registered with the flow (``"google"``,
    ``"okta"``...). The token never appears in ``repr``.
    """

    provider: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PasskeyCredentials:
    """A passkey assertion: the JSON of ``navigator.credentials.get()`` (see
    :mod:`tokenflow.passkeys`). The response never appears in ``repr``."""

    response: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecondFactorCredentials:
    """A second-factor code (a TOTP code, or a recovery code), for the second step
    of a login or for a step-up. The code never appears in ``repr``.

    For a login, the request must also carry the partial-login cookie that the
    first step's :class:`SecondFactorRequired` set.
    """

    code: str = field(repr=False)


# -- OpenID Connect authorization-code flow (issue 20) ------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationCodeCredentials:
    """What a provider's redirect back to the callback carries: its query (or, for
    ``response_mode=form_post``, its form) parameters, as the client sent them.

    ``provider`` names the code-flow client registered with the flow. ``code``,
    ``state``, ``issuer`` (the RFC 9207 ``iss`` parameter) and ``error`` are
    None when absent. The code never appears in ``repr``.
    """

    provider: str
    code: str | None = field(default=None, repr=False)
    state: str | None = field(default=None, repr=False)
    issuer: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ButtonCredentials:
    """An ID token posted by a provider's sign-in button: Google Identity Services
    posts ``credential`` and ``g_csrf_token`` to your login URI.

    ``csrf`` is the body's ``g_csrf_token``; the flow compares it with the
    request's ``g_csrf_token`` cookie (double submit). Neither appears in ``repr``.
    """

    provider: str
    token: str = field(repr=False)
    csrf: str | None = field(default=None, repr=False)


# -- end of the OpenID Connect block ------------------------------------------------

Credentials = (
    PasswordCredentials
    | ExternalTokenCredentials
    | AuthorizationCodeCredentials
    | ButtonCredentials
    | PasskeyCredentials
    | SecondFactorCredentials
)
"""What a login presents: annotate a handler's credentials with this union."""

# -- request -------------------------------------------------------------------

_MAX_AGE_LIMIT = 366 * 86400
_SKEW = 60
"""Seconds an ``auth_time`` may lie ahead of ``now`` (another server's clock)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a route requires of the session's authentication (step-up).

    ``aal`` is the least authenticator assurance level (1: one factor; 2: two
    factors, such as a password and a TOTP code); ``max_age`` (seconds, or
    None) the longest time since the user last authenticated (``auth_time``).
    Give one as :attr:`Request.requirement`: a session that falls short gets
    :class:`StepUpRequired` instead of Process or Reissue. A token without
    ``aal`` counts as level 1, and one without ``auth_time`` fails any
    ``max_age`` (fail closed).
    """

    aal: int = 1
    max_age: int | None = None

    def __post_init__(self) -> None:
        if type(self.aal) is not int or self.aal not in (1, 2):
            raise ConfigError(f"Requirement.aal must be 1 or 2, not {self.aal!r}")
        max_age = self.max_age
        if max_age is not None and (type(max_age) is not int or not 0 < max_age <= _MAX_AGE_LIMIT):
            raise ConfigError(
                f"Requirement.max_age must be whole seconds between 1 and {_MAX_AGE_LIMIT}, "
                f"or None, not {max_age!r}"
            )

    def is_met(self, aal: int, auth_time: int | None, now: float) -> bool:
        """Whether a session of assurance level ``aal``, last authenticated at
        ``auth_time`` (None: unknown), meets this requirement at ``now``."""
        if aal < self.aal:
            return False
        if self.max_age is None:
            return True
        # Servers' clocks may differ by up to a minute (FlowConfig.leeway); an
        # auth_time further in the future than that is refused.
        return auth_time is not None and -_SKEW <= now - auth_time <= self.max_age


@dataclass(frozen=True, slots=True)
class Request:
    """What tokenflow needs to know about one HTTP request.

    Give the cookies either as the raw ``Cookie`` header (``cookie_header``,
    parsed by tokenflow's own strict parser, which detects duplicated auth
    cookies) or as a mapping your framework already parsed (``cookies``).
    ``sec_fetch_site``, ``origin`` and ``host`` are the raw header values
    (``None`` when absent) that the cross-origin check needs; ``host`` must be
    the Host the client sent, not a value from ``X-Forwarded-Host`` unless your
    proxy is trusted to set it. ``client_address`` is the client's IP address,
    which the login throttle counts failures under: the peer address of the
    connection, or the address your trusted proxy reports (trusting proxy
    headers is your decision; an untrusted ``X-Forwarded-For`` lets a guesser
    pick a fresh address for every attempt). ``metadata`` (user agent,
    address...) is stored with sessions created by this request.
    """

    method: str = "GET"
    # Cookies carry bearer tokens: kept out of repr, so a logged request leaks none.
    cookie_header: str | None = field(default=None, repr=False)
    cookies: Mapping[str, str] | None = field(default=None, repr=False)
    credentials: Credentials | None = None
    sec_fetch_site: str | None = None
    origin: str | None = None
    host: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _NO_METADATA)
    client_address: str | None = None
    # Device-bound sessions: the raw Secure-Session-Response header (a proof
    # JWT) and Sec-Secure-Session-Id header, for register/refresh_device.
    session_response: str | None = field(default=None, repr=False)
    session_id_header: str | None = None
    # Step-up: what the route requires of the session (None: a signed-in user).
    requirement: Requirement | None = None

    def __post_init__(self) -> None:
        # The host's adapter builds a Request, so a wrong type here is an
        # integration mistake (ASGI hands headers over as bytes): it raises
        # at once, on every request, instead of only on the first POST.
        if type(self.method) is not str:
            raise TypeError(f"Request.method must be str, not {type(self.method).__name__}")
        for name in (
            "cookie_header",
            "sec_fetch_site",
            "origin",
            "host",
            "client_address",
            "session_response",
            "session_id_header",
        ):
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                raise TypeError(
                    f"Request.{name} must be str or None, not {type(value).__name__} "
                    "(decode header bytes as latin-1)"
                )
        if self.requirement is not None and type(self.requirement) is not Requirement:
            raise TypeError("Request.requirement must be a Requirement or None")
        if self.cookies is not None and not isinstance(self.cookies, Mapping):
            raise TypeError("Request.cookies must be a mapping of cookie names to values")
        if not isinstance(self.metadata, Mapping) or not all(
            type(k) is str and type(v) is str for k, v in self.metadata.items()
        ):
            raise TypeError("Request.metadata must be a mapping of str to str")

    @classmethod
    def from_asgi(
        cls,
        scope: Mapping[str, Any],
        *,
        credentials: Credentials | None = None,
        proxies: TrustedProxies | None = None,
    ) -> Request:
        """The request an ASGI server describes in ``scope`` (an ``"http"`` scope).

        Reads the method, every header the decision needs (``Cookie``, several
        fields joined with ``"; "``; ``Sec-Fetch-Site``, ``Origin``, ``Host``),
        the peer address (``scope["client"]``) as ``client_address``, and the
        ``User-Agent`` and address into ``metadata``. Forwarded headers count
        only when ``proxies`` is given and the peer is one of them (see
        :class:`~tokenflow.web.TrustedProxies`). Whatever the client sent, the
        result is a Request (malformed values fail closed in the decision);
        a scope that is not an HTTP scope raises :class:`TypeError`.
        """
        return cls._of(read_asgi(scope, proxies=proxies), credentials)

    @classmethod
    def from_wsgi(
        cls,
        environ: Mapping[str, Any],
        *,
        credentials: Credentials | None = None,
        proxies: TrustedProxies | None = None,
    ) -> Request:
        """The request a WSGI server describes in ``environ`` (see :meth:`from_asgi`).

        ``REMOTE_ADDR`` is the peer address; headers come from the ``HTTP_*``
        keys.
        """
        return cls._of(read_wsgi(environ, proxies=proxies), credentials)

    @classmethod
    def from_headers(
        cls,
        method: str | bytes,
        headers: Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str],
        *,
        peer: str | None = None,
        credentials: Credentials | None = None,
        proxies: TrustedProxies | None = None,
    ) -> Request:
        """The request with this method and these header fields (see :meth:`from_asgi`).

        ``headers`` are ``(name, value)`` pairs of str or bytes (bytes are
        decoded as latin-1; names are matched case-insensitively; a repeated
        field is kept, not overwritten), or a mapping. ``peer`` is the
        connection's peer IP address.
        """
        return cls._of(read_headers(method, headers, peer=peer, proxies=proxies), credentials)

    @classmethod
    def _of(cls, facts: RequestFacts, credentials: Credentials | None) -> Request:
        return cls(
            method=facts.method,
            cookie_header=facts.cookie_header,
            credentials=credentials,
            sec_fetch_site=facts.sec_fetch_site,
            origin=facts.origin,
            host=facts.host,
            metadata=facts.metadata,
            client_address=facts.client_address,
        )


def draft_of(cls: type) -> type:
    """A plain class with ``cls``'s memory layout: the same base and the same slots.

    The hot path builds its frozen values in one: its slots are written by
    plain attribute stores (the interpreter's cheapest), then the finished
    object becomes a ``cls`` (``__class__`` assignment, which CPython allows
    between classes of identical layout and refuses otherwise). The frozen
    dataclass's ``__init__`` calls ``object.__setattr__`` once a field, and
    even the slots' own descriptors cost a call each: a :class:`Request`
    made through its twelve descriptors took about 9,700 instructions, made
    in a draft about 3,000 (callgrind). The swap is tried here, at import:
    a layout that ever differs fails loudly, not on the first request.
    """
    slots = cls.__dict__["__slots__"]
    draft = type(f"_{cls.__name__}Draft", (cls.__mro__[1],), {"__slots__": slots})
    draft().__class__ = cls
    return draft


_RequestDraft: Any = draft_of(Request)


def route_request(
    method: str,
    cookie_header: str | None,
    sec_fetch_site: str | None,
    origin: str | None,
    host: str | None,
    requirement: Requirement | None = None,
) -> Request:
    """A Request from what :func:`tokenflow._http.read_asgi_route` read: the middleware's hot path.

    Every value there was decoded by :mod:`tokenflow._http` itself (a str or
    None), so the type checks of ``Request.__post_init__``, which cost about
    as much as opening the token, are skipped; anything else must use the
    ordinary constructor. The request carries no credentials, metadata or
    client address: it serves ``decide`` only, never a login. ``requirement``
    is the route's (a :class:`Requirement` the middleware built, or None).
    """
    self = _RequestDraft()
    self.method = method
    self.cookie_header = cookie_header
    self.cookies = None
    self.credentials = None
    self.sec_fetch_site = sec_fetch_site
    self.origin = origin
    self.host = host
    self.metadata = _NO_METADATA
    self.client_address = None
    self.session_response = None
    self.session_id_header = None
    self.requirement = requirement
    # Every field written: from here on a frozen Request like any other.
    self.__class__ = Request
    return self  # type: ignore[no-any-return]


# -- events ----------------------------------------------------------------------


class LoginFailedReason(enum.Enum):
    """Why a login attempt failed."""

    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason name, not a password
    """Unknown user or wrong password (deliberately not distinguished)."""
    BAD_EXTERNAL_TOKEN = "bad_external_token"  # noqa: S105 - a reason name
    """The provider's verifier refused the token."""
    UNKNOWN_PROVIDER = "unknown_provider"
    """No verifier is registered under the requested provider name."""
    NOT_LINKED = "not_linked"
    """The user directory refused to map the external identity to a user."""
    USER_DISABLED = "user_disabled"
    """The credentials were right but the user directory has no active user."""
    BAD_PASSKEY = "bad_passkey"
    """The passkey verifier refused the assertion (see :class:`tokenflow.ports.PasskeyFailure`)."""
    PASSKEY_REPLAYED = "passkey_replayed"
    """The assertion's challenge was already used (see :class:`PasskeyReplayed`)."""
    PASSKEY_CLONED = "passkey_cloned"
    """The authenticator's counter went backwards (see :class:`AuthenticatorCloned`)."""
    BAD_TRANSACTION = "bad_transaction"
    """A provider callback whose state names no live sign-in transaction of this
    browser for this provider (missing, forged, expired, or started elsewhere)."""
    BAD_CSRF_TOKEN = "bad_csrf_token"  # noqa: S105 - a reason name
    """A sign-in button's post whose ``g_csrf_token`` body field and cookie differ."""
    PROVIDER_ERROR = "provider_error"
    """The provider answered the sign-in with ``error=`` (the user declined...)."""
    BAD_SECOND_FACTOR = "bad_second_factor"
    """The second-factor code was wrong or malformed, or the account has no second
    factor (see :class:`tokenflow.ports.SecondFactorFailure`)."""
    SECOND_FACTOR_REPLAYED = "second_factor_replayed"
    """A right TOTP code whose time step was already used: a replayed code."""
    NO_PARTIAL_LOGIN = "no_partial_login"
    """A second-factor code came without a live partial-login cookie (none,
    several, forged, or past ``FlowConfig.second_factor_ttl``)."""
    WRONG_USER = "wrong_user"
    """A step-up's credentials named another user than the session's."""


class ReuseDetectedReason(enum.Enum):
    """How a refresh token reuse was recognised."""

    PREDECESSOR_AFTER_GRACE = "predecessor_after_grace"
    """The immediate predecessor came back after the grace window."""
    OLDER_GENERATION = "older_generation"
    """A generation older than the predecessor came back."""
    NEWER_THAN_STORE = "newer_than_store"
    """The token was issued at a generation the store has not reached: the
    store lost rotations (an asynchronous replica promoted after a failover,
    a restored backup), not a replay of an older token. The session is
    revoked all the same; see docs/scaling-out.md."""


class SessionRevokedReason(enum.Enum):
    """Why a session was revoked."""

    LOGOUT = "logout"
    """The request was a logout."""
    REPLACED = "replaced"
    """A login on the same browser (perhaps as another user) replaced the session."""
    REUSE = "reuse"
    """A refresh token was reused (see :class:`ReuseDetected`)."""
    USER_DISABLED = "user_disabled"
    """The user directory no longer has an active user."""
    ADMIN = "admin"
    """Revoked through the flow's session management calls."""
    BARE_REFRESH = "bare_refresh"
    """A device-bound session's refresh cookie came without a proof, and the
    flow is configured to revoke for it (see :class:`BareRefreshRefused`)."""


class RefreshEndedReason(enum.Enum):
    """Why a refresh found no session to continue."""

    EXPIRED = "expired"
    """The session's idle or absolute lifetime is over."""
    REVOKED = "revoked"
    """The store holds no live session for a refresh token that is still valid:
    the session was revoked (logout, a revocation, revoke-all, reuse detection,
    a disabled user), or the store dropped it. The token opened, so the session
    existed: it was ended, not invented."""


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A new session was opened. ``method``: ``"password"``, ``"passkey"`` or the provider name."""

    user_id: str
    session_id: str
    method: str


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """Credentials were presented and refused. ``username`` is set for password logins."""

    reason: LoginFailedReason
    method: str
    username: str | None = None


@dataclass(frozen=True, slots=True)
class LoginThrottled:
    """A login attempt was refused unverified: too many recent failures.

    ``username`` is set for password logins (clipped); ``retry_after`` is the
    wait, in seconds, that the client was told.
    """

    method: str
    username: str | None
    retry_after: int


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A refresh token was rotated (``grace=False``) or replayed inside the grace window."""

    user_id: str
    session_id: str
    generation: int
    grace: bool


@dataclass(frozen=True, slots=True)
class ReuseDetected:
    """A refresh token was reused: the session has been revoked."""

    user_id: str
    session_id: str
    reason: ReuseDetectedReason


@dataclass(frozen=True, slots=True)
class SessionRevoked:
    """A session was revoked by this request."""

    user_id: str
    session_id: str
    reason: SessionRevokedReason


@dataclass(frozen=True, slots=True)
class TokenRejected:
    """A token cookie failed to open. ``TAG_MISMATCH`` and ``BAD_CLAIMS`` suggest tampering."""

    purpose: Purpose
    reason: InvalidTokenReason


@dataclass(frozen=True, slots=True)
class RefreshEnded:
    """A valid refresh token named a session that is over."""

    user_id: str
    session_id: str
    reason: RefreshEndedReason


@dataclass(frozen=True, slots=True)
class AmbiguousCookie:
    """An auth cookie name appeared more than once (cookie tossing): both copies ignored."""

    name: str


@dataclass(frozen=True, slots=True)
class CrossOriginRejected:
    """An unsafe cross-origin browser request was refused (CSRF protection)."""

    method: str
    origin: str | None
    sec_fetch_site: str | None


@dataclass(frozen=True, slots=True)
class PortFailed:
    """A port raised; the request was answered with Unavailable."""

    port: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class DeviceBound:
    """A session was bound to a device key (a device-bound session registration)."""

    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class DeviceProofRejected:
    """A device registration or refresh proof was refused. Nothing was minted or revoked."""

    session_id: str
    reason: ProofFailure


@dataclass(frozen=True, slots=True)
class BareRefreshRefused:
    """A device-bound session's refresh cookie came without a proof of the device key.

    The signature of a copied cookie (cookie theft), or a browser that lost
    its key. ``revoked`` says whether the flow was configured to revoke the
    session for it (``DeviceBinding.revoke_on_bare_refresh``).
    """

    user_id: str
    session_id: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class PasskeyReplayed:
    """A passkey assertion came back with a challenge already used: refused (401).

    A captured assertion replayed, or a client that posted twice.
    ``credential_id`` (base64url) names the passkey it was signed with.
    """

    user_id: str | None
    credential_id: str | None


@dataclass(frozen=True, slots=True)
class AuthenticatorCloned:
    """A passkey's signature counter did not move forward: refused (401).

    An authenticator that counts (a counter that is not always 0) never
    repeats or lowers it, so two devices holding the same private key are
    the likely cause. ``stored`` is the highest count seen, ``presented``
    the one this assertion carried. Consider removing the passkey
    (:meth:`tokenflow.passkeys.Passkeys.remove`) and telling the user.
    """

    user_id: str
    credential_id: str
    stored: int
    presented: int


@dataclass(frozen=True, slots=True)
class SecondFactorChallenged:
    """A first factor was right and the account has a second factor: the login
    waits for it (:class:`SecondFactorRequired`). ``method`` is the first
    factor's (``"password"`` or the provider name), ``factors`` the account's."""

    user_id: str
    method: str
    factors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SecondFactorVerified:
    """A second-factor code was accepted (and used up) for a login or a step-up.

    ``method`` names the factor that matched (``"totp"`` or ``"recovery"``);
    ``recovery_codes_left`` is set when a recovery code was used.
    """

    user_id: str
    method: str
    recovery_codes_left: int | None = None


@dataclass(frozen=True, slots=True)
class SteppedUp:
    """A session's assurance was raised by a re-authentication (a step-up): its
    refresh token was rotated with the new ``aal``, ``amr`` and ``auth_time``.
    ``method`` is how the user re-authenticated (``"second_factor"``,
    ``"password"`` or ``"passkey"``)."""

    user_id: str
    session_id: str
    aal: int
    method: str


Event = (
    LoggedIn
    | LoginFailed
    | LoginThrottled
    | Refreshed
    | ReuseDetected
    | SessionRevoked
    | TokenRejected
    | RefreshEnded
    | AmbiguousCookie
    | CrossOriginRejected
    | PortFailed
    | DeviceBound
    | DeviceProofRejected
    | BareRefreshRefused
    | PasskeyReplayed
    | AuthenticatorCloned
    | SecondFactorChallenged
    | SecondFactorVerified
    | SteppedUp
)
"""Every security event a decision can carry: match on the type, log what you need."""

# -- decisions -------------------------------------------------------------------


class UnauthorizedReason(enum.Enum):
    """Why a request got 401. For logs and tests; clients should just log in again."""

    NO_CREDENTIALS = "no_credentials"
    """Nothing valid was presented (no cookies, or only invalid/expired ones)."""
    LOGIN_FAILED = "login_failed"
    """Credentials were presented and refused."""
    REFRESH_REUSED = "refresh_reused"
    """A refresh token was reused; the session was revoked."""
    SESSION_ENDED = "session_ended"
    """The refresh session expired, was revoked, or does not exist."""
    USER_DISABLED = "user_disabled"
    """The user was disabled or deleted; the session was revoked."""
    MALFORMED_REQUEST = "malformed_request"
    """The Cookie header was too large to parse."""
    DEVICE_BOUND = "device_bound"
    """The session is bound to a device key and only a proof of it refreshes it."""
    DEVICE_PROOF = "device_proof"
    """A device registration or refresh proof was refused."""


class _Authenticated:
    """What the two 200 decisions share: who the request is from."""

    __slots__ = ()
    claims: Mapping[str, Any]

    @property
    def user_id(self) -> str:
        """The authenticated user's id (the ``sub`` claim)."""
        return str(self.claims["sub"])

    @property
    def session_id(self) -> str:
        """The session the access token belongs to (the ``sid`` claim)."""
        return str(self.claims["sid"])

    @property
    def aal(self) -> int:
        """The session's authenticator assurance level: 2 after two factors, else 1
        (a token sealed without the ``aal`` claim counts as 1)."""
        return aal_of(self.claims)

    @property
    def amr(self) -> tuple[str, ...]:
        """How the user authenticated (RFC 8176 method references, the ``amr``
        claim: ``("pwd", "otp")``...); empty for a token sealed without it."""
        value = self.claims.get("amr")
        if type(value) is not list or not all(type(v) is str for v in value):
            return ()
        return tuple(value)

    @property
    def auth_time(self) -> int | None:
        """When the user last authenticated (seconds since the epoch, the
        ``auth_time`` claim), or None for a token sealed without it."""
        return auth_time_of(self.claims)


def aal_of(claims: Mapping[str, Any]) -> int:
    """The ``aal`` claim of sealed claims: 2 only when it says exactly 2, else 1."""
    return 2 if type(claims.get("aal")) is int and claims["aal"] == 2 else 1


def auth_time_of(claims: Mapping[str, Any]) -> int | None:
    """The ``auth_time`` claim of sealed claims, or None when absent or not a whole number."""
    value = claims.get("auth_time")
    return value if type(value) is int and value >= 0 else None


@dataclass(frozen=True, slots=True)
class Process(_Authenticated):
    """200: a valid access token; serve the request. No cookies to send.

    ``claims`` are the access token's claims: ``sub`` (the user id), ``sid``
    (the session id), ``iat``, ``exp`` and the application claims.
    """

    claims: Mapping[str, Any]
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[200]] = 200
    set_cookies: ClassVar[tuple[str, ...]] = ()


_ProcessDraft: Any = draft_of(Process)
"""Where the flow's access path builds its one Process a request (see :func:`draft_of`)."""


@dataclass(frozen=True, slots=True)
class Reissue(_Authenticated):
    """200: the user is authenticated and new tokens were minted; serve the request
    and send every ``set_cookies`` value as a ``Set-Cookie`` header."""

    claims: Mapping[str, Any]
    # Fresh bearer tokens: kept out of repr, so a logged decision leaks none.
    set_cookies: tuple[str, ...] = field(repr=False)
    events: tuple[Event, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    """Other response headers to send: ``Secure-Session-Registration`` after a
    login, ``Secure-Session-Challenge`` after a device-proof refresh."""
    status: ClassVar[Literal[200]] = 200


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """401: not authenticated. Send ``set_cookies`` (they clear stale auth cookies)."""

    reason: UnauthorizedReason
    set_cookies: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[401]] = 401


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """200: a logout succeeded. Send ``set_cookies`` (they clear both auth cookies).

    The sessions the request's cookies named are revoked (see ``events``).
    A logout succeeds even when the cookies named no live session: the
    browser's cookies are cleared either way.
    """

    set_cookies: tuple[str, ...]
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[200]] = 200


@dataclass(frozen=True, slots=True)
class Forbidden:
    """403: an unsafe cross-origin browser request. Nothing was rotated, revoked or minted."""

    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[403]] = 403
    set_cookies: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class TooManyRequests:
    """429: too many failed logins; the credentials were not even checked.

    Send ``Retry-After: <retry_after>`` (whole seconds). Nothing was minted,
    revoked or cleared.
    """

    retry_after: int
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[429]] = 429
    set_cookies: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class Unavailable:
    """503: a port failed. Nothing was minted and no cookie is cleared; log ``error``.

    ``port`` names the port that failed: ``"store"`` (the session store),
    ``"users"`` (the user directory; also claims it supplied that cannot be
    sealed into a token), ``"passwords"`` (the password verifier),
    ``"external"`` (an external token verifier), ``"throttle"`` (the login
    throttle), ``"passkeys"`` (the passkey verifier, its repository or
    ledger) or ``"second_factors"`` (the second-factor verifier). A port
    that answers with a value of the wrong type counts as failed too:
    ``error`` is then a :class:`TypeError` saying what was expected.
    """

    error: BaseException
    port: str
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[503]] = 503
    set_cookies: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class DeviceRegistered(_Authenticated):
    """200: a device key was bound to the session (device-bound session registration).

    Send ``set_cookies`` (the fresh bound cookie), every ``headers`` pair
    (the next ``Secure-Session-Challenge``, ``Cache-Control: no-store``) and
    :attr:`body` with ``Content-Type: application/json``.
    """

    claims: Mapping[str, Any]
    set_cookies: tuple[str, ...] = field(repr=False)
    instructions: Mapping[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[200]] = 200

    @property
    def body(self) -> bytes:
        """The session instructions as JSON, the response body."""
        return instructions_json(self.instructions)


@dataclass(frozen=True, slots=True)
class DeviceProofRequired:
    """403: a device-bound session must prove its key: send ``headers`` (a fresh
    ``Secure-Session-Challenge``) and the browser retries with a signed proof.

    403 and not 401: a browser ends its device-bound session on a 401.
    Nothing was minted, rotated or revoked.
    """

    headers: tuple[tuple[str, str], ...]
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[403]] = 403
    set_cookies: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class ProviderRedirect:
    """302: send the browser to ``location`` (a provider's authorization endpoint)
    with every ``set_cookies`` value (the sealed sign-in transaction)."""

    location: str
    set_cookies: tuple[str, ...] = field(repr=False)
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[302]] = 302


@dataclass(frozen=True, slots=True)
class SecondFactorRequired:
    """401: the first factor was right and the account has a second factor.

    Send ``set_cookies`` (the short-lived partial-login cookie) and ask the
    user for a code of one of ``methods`` (``("totp",)``...); then call
    :meth:`tokenflow.Flow.login` with :class:`SecondFactorCredentials` and
    that cookie. No session exists yet: nothing else was minted or revoked.
    ``next_path`` is where a provider sign-in meant to go afterwards (None
    for other logins).
    """

    methods: tuple[str, ...]
    set_cookies: tuple[str, ...] = field(repr=False)
    events: tuple[Event, ...] = ()
    next_path: str | None = None
    status: ClassVar[Literal[401]] = 401


@dataclass(frozen=True, slots=True)
class StepUpRequired:
    """401: the user is signed in, but the session falls short of the request's
    :class:`Requirement` (too low an assurance level, or too long since the
    last authentication).

    Send ``set_cookies`` (a refresh may have rotated the tokens: they are
    never dropped) and :attr:`www_authenticate` as ``WWW-Authenticate``, or
    send a browser to your step-up page; :meth:`tokenflow.Flow.step_up`
    raises the session's assurance.
    """

    requirement: Requirement
    set_cookies: tuple[str, ...] = field(default=(), repr=False)
    events: tuple[Event, ...] = ()
    status: ClassVar[Literal[401]] = 401

    @property
    def www_authenticate(self) -> str:
        """The RFC 9470 challenge: ``Bearer error="insufficient_user_authentication"``,
        with ``acr_values="aal2"`` and/or ``max_age``."""
        requirement = self.requirement
        parts = ['Bearer error="insufficient_user_authentication"']
        if requirement.aal > 1:
            parts.append(
                'error_description="A second factor is required"'
                if requirement.max_age is None
                else 'error_description="A recent authentication with a second factor is required"'
            )
            parts.append(f'acr_values="aal{requirement.aal}"')
        else:
            parts.append('error_description="A more recent authentication is required"')
        if requirement.max_age is not None:
            parts.append(f"max_age={requirement.max_age}")
        return ", ".join(parts)


Decision = (
    Process
    | Reissue
    | LoggedOut
    | Unauthorized
    | Forbidden
    | TooManyRequests
    | Unavailable
    | DeviceRegistered
    | DeviceProofRequired
    | ProviderRedirect
    | SecondFactorRequired
    | StepUpRequired
)
"""Every answer a flow gives. Match on the type; each carries ``status``,
``set_cookies`` (send them all, whatever the status) and ``events``."""
