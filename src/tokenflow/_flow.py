"""The decision core: every authentication decision tokenflow makes, in one place.

For each request (:meth:`FlowCore.begin`, then :meth:`FlowCore.resume`), in this order::

    0. cross-origin browser request that is unsafe,
       or carries credentials (a login)                -> Forbidden (403)
         except a provider's own answer (explicit login only): a code
         callback by its provider's method (GET; POST for form_post), a
         sign-in button's POST whose double-submitted CSRF token matches
       Cookie header over 16 KiB                       -> Unauthorized (401), clear both
    1. access cookie opens and names a session         -> Process   (200, no store)
         falls short of request.requirement (aal,
         max_age since auth_time)                      -> StepUpRequired (401)
    2. refresh cookie opens, user still active, store rotates
         ROTATED                                       -> Reissue   (new access + refresh)
         GRACE   (predecessor inside the window)       -> Reissue   (the SAME successor)
         REUSED_PREVIOUS / REUSED_UNKNOWN              -> session revoked, go on to 3
           (the token's sealed generation newer than
            the store's: named NEWER_THAN_STORE, a
            store that lost rotations, not a replay)
         EXPIRED / UNKNOWN_SESSION                     -> go on to 3
         DEVICE_BOUND (bound session, no device proof) -> go on to 3; refresh cookie kept
       user disabled or deleted                        -> session revoked, go on to 3
    3. credentials presented:
         password: the account the username names (lookup), for the throttle keys
         provider callback (authorization code): the sealed transaction the
           state names, for this provider, state equal (constant time), else
           refused; the provider's error= refused; then the throttle, and the
           code exchanged once (PKCE verifier, nonce; the client checks iss)
         sign-in button (Google Identity Services): its g_csrf_token body
           field equal to its cookie (constant time), else refused; then as
           an external token
         too many recent failures (throttle)           -> TooManyRequests (429), nothing verified
         attempt reserved (counted as a failure first; a lost race re-checks)
         verify, user active                           -> reservation undone, new session, Reissue
         refused, or right but the user disabled       -> reservation kept (a failure), go on to 4
       passkey: the verifier checks the challenge (issued here, fresh), the
         signature, then consumes the challenge (replayed -> refused, event)
         and moves the counter (backwards -> refused, cloned-authenticator event)
       second factor (the flow has second_factors): once the first factor is
         right and the user active (never before: a wrong password is the
         ordinary 401), an account with factors_of != ()  -> SecondFactorRequired
         (401, the partial-login cookie, purpose PARTIAL_LOGIN); passkeys excepted
       second factor code: the one live partial-login cookie, the throttle
         (per account, its own key), verify_second_factor (consumes the code),
         user active                                   -> new session, aal 2
       every login seals ``amr`` (how the user signed in), ``aal`` and
       ``auth_time`` into both tokens; a rotation carries the refresh token's
       into the new ones unchanged
       a Reissue of steps 2 and 3 that falls short of
         request.requirement                           -> StepUpRequired (401, its cookies kept)
    4. otherwise                                       -> Unauthorized (401), clear sent cookies
    any port raises, or answers the wrong type         -> Unavailable (503), nothing minted/cleared

Two explicit operations sit beside it (three with provider sign-in:
:meth:`FlowCore.start_provider_login` seals a transaction and answers
ProviderRedirect, 302 to the provider). :meth:`FlowCore.login` runs step 0
and step 3 whatever cookies the request carries: on success the new session
replaces the ones the cookies named (revoked, so switching accounts works
and no session is fixed), on failure they are left alone. :meth:`FlowCore.logout`
runs step 0, revokes every session the cookies name and answers LoggedOut.
With device binding on, a login or logout leaves alone a bound session that
only a refresh cookie names (no live access cookie of it): BareRefreshRefused.

:meth:`FlowCore.step_up` runs step 0, opens the one refresh cookie,
verifies credentials for its user (a second-factor code: aal 2; the
password: auth_time renewed; a passkey), throttled like a login, then
rotates that session (step 2) with the raised claims: Reissue, the same
session; refused credentials are Unauthorized and clear nothing.

With device-bound sessions on (``FlowConfig.device_binding``), a login's
Reissue carries ``Secure-Session-Registration``, and two more operations sit
beside them. :meth:`FlowCore.register_device` (step 0, the refresh cookie,
the session not yet bound, a ``dbsc+jwt`` signed by the key it carries over
a registration challenge sealed for that session and refresh token, the user
still active, then the store binds the key unless one is already bound)
answers DeviceRegistered. :meth:`FlowCore.refresh_device` (step 0, the
refresh cookie, the session id header matching it, no proof ->
DeviceProofRequired (403 + challenge), the stored key verifies the proof,
the challenge names this session and refresh token and is fresh (else 403
again), then step 2 with that key; a GRACE repeat needs a challenge issued
after the rotation it repeats, else 403) answers Reissue with the next
challenge, which names the new refresh token. A bound session is refused by
the store to any rotation that does not carry its key (DEVICE_BOUND above).

Tokens are sealed before the store is asked to change anything, so claims
that cannot be sealed end in Unavailable with the client's tokens still good.

The core is sans-IO: it reads no clock (``now`` is passed in), draws no
randomness of its own (a ``random(n)`` callable is passed in), and performs no
I/O. Step 1 needs nothing, so :meth:`FlowCore.begin` answers it as a plain
call: the hot path creates no generator. Everything after it is a generator
that *yields* what it needs (:class:`LoadUser`, :class:`RotateSession`...)
and receives the answers; :class:`tokenflow.Flow` and
:class:`tokenflow.AsyncFlow` are the two drivers that answer through the
ports. When a port raises, the driver throws :class:`PortError` into the
generator, which ends in Unavailable.
"""

from __future__ import annotations

import enum
import functools
import hmac
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

from ._base64url import b64url_decode, b64url_encode
from ._config import FlowConfig
from ._cookies import (
    CookieFault,
    CookiePolicy,
    SameSite,
    auth_cookie_candidates,
    find_cookie,
    read_refresh_cookie,
    render_clear_cookie,
    render_set_cookie,
)
from ._csrf import check_cross_origin
from ._dbsc import (
    ChallengeVerdict,
    DeviceBinding,
    DeviceProof,
    ProofFailure,
    challenge_header,
    open_challenge,
    parse_session_id_header,
    parse_session_response_header,
    registration_header,
    seal_challenge,
    session_instructions,
)
from ._errors import InvalidToken, InvalidTokenReason, TokenTooLarge
from ._http import SAFE_METHODS
from ._model import (
    AmbiguousCookie,
    AuthenticatorCloned,
    AuthorizationCodeCredentials,
    BareRefreshRefused,
    ButtonCredentials,
    Credentials,
    CrossOriginRejected,
    Decision,
    DeviceBound,
    DeviceProofRejected,
    DeviceProofRequired,
    DeviceRegistered,
    Event,
    ExternalTokenCredentials,
    Forbidden,
    LoggedIn,
    LoggedOut,
    LoginFailed,
    LoginFailedReason,
    LoginThrottled,
    PasskeyCredentials,
    PasskeyReplayed,
    PasswordCredentials,
    PortFailed,
    Process,
    ProviderRedirect,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    Reissue,
    Request,
    Requirement,
    ReuseDetected,
    ReuseDetectedReason,
    SecondFactorChallenged,
    SecondFactorCredentials,
    SecondFactorRequired,
    SecondFactorVerified,
    SessionRevoked,
    SessionRevokedReason,
    SteppedUp,
    StepUpRequired,
    TokenRejected,
    TooManyRequests,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
    _ProcessDraft,
    aal_of,
    auth_time_of,
)
from ._sessions import (
    SALT_BYTES,
    SECRET_BYTES,
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    derive_successor,
    verifier_of,
)
from ._throttle import (
    FailureCount,
    account_key,
    address_key,
    is_username_key,
    second_factor_key,
    username_key,
)
from ._token import Purpose, TokenCodec
from ._transactions import (
    TRANSACTION_TTL,
    Transaction,
    open_transaction,
    pkce_challenge,
    safe_next,
    seal_transaction,
    transaction_cookie_name,
)
from .ports import (
    ExternalIdentity,
    Identity,
    PasskeyFailure,
    PasskeyLogin,
    PasskeyRefused,
    SecondFactorAccepted,
    SecondFactorFailure,
    SecondFactorRefused,
)

__all__ = ["FlowCore", "Need", "PortError"]

_ACCESS: Final = Purpose.ACCESS
_REFRESH: Final = Purpose.REFRESH
_PARTIAL: Final = Purpose.PARTIAL_LOGIN
_SESSION_ID_BYTES: Final = 16
_MAX_NOW: Final = 2.0**62
_OVERSIZE: Final = CookieFault.OVERSIZE  # a global load on the hot path, not a class attribute
_RESERVE_TRIES: Final = 16
"""Reservations an attempt may lose to concurrent ones before it is answered 429.

Each lost race means another attempt on a shared key was counted, so the
counts move towards the limit; past this many, the attempt is refused
rather than verified (fail closed)."""

# -- needs: what the core asks its driver for ------------------------------------


@dataclass(frozen=True, slots=True)
class LoadUser:
    """Ask the user directory for a user's current identity (or None)."""

    user_id: str
    port: str = "users"


@dataclass(frozen=True, slots=True)
class LinkExternal:
    """Ask the user directory to map a verified external identity to a user id."""

    identity: ExternalIdentity
    port: str = "users"


@dataclass(frozen=True, slots=True)
class VerifyPassword:
    """Ask the password verifier for the user id behind a username and password."""

    username: str
    password: str = field(repr=False)
    port: str = "passwords"


@dataclass(frozen=True, slots=True)
class VerifyExternalToken:
    """Ask the named provider's verifier to verify a token."""

    provider: str
    token: str = field(repr=False)
    now: float
    port: str = "external"


@dataclass(frozen=True, slots=True)
class CreateSession:
    """Ask the store to create a session."""

    session: NewSession
    port: str = "store"


@dataclass(frozen=True, slots=True)
class RotateSession:
    """Ask the store to rotate a refresh token atomically."""

    rotation: Rotation
    port: str = "store"


@dataclass(frozen=True, slots=True)
class RevokeSession:
    """Ask the store to delete a session."""

    session_id: str
    port: str = "store"


@dataclass(frozen=True, slots=True)
class CheckThrottle:
    """Ask the login throttle for the failure counts of some keys."""

    keys: tuple[str, ...]
    now: float
    port: str = "throttle"


@dataclass(frozen=True, slots=True)
class ReserveAttempt:
    """Ask the login throttle to count an attempt as a failure if its counts are ``expected``."""

    keys: tuple[str, ...]
    expected: tuple[int, ...]
    now: float
    window: float
    port: str = "throttle"


@dataclass(frozen=True, slots=True)
class ReleaseAttempt:
    """Ask the login throttle to take back one reserved attempt from some keys."""

    keys: tuple[str, ...]
    now: float
    port: str = "throttle"


@dataclass(frozen=True, slots=True)
class FindAccount:
    """Ask the password verifier which account a username names (a stable key, or None)."""

    username: str
    port: str = "passwords"


@dataclass(frozen=True, slots=True)
class ResetThrottle:
    """Ask the login throttle to forget some keys' failures."""

    keys: tuple[str, ...]
    port: str = "throttle"


@dataclass(frozen=True, slots=True)
class BindDevice:
    """Ask the store to bind a live, unbound session to a device key."""

    session_id: str
    device_key: str
    now: float
    port: str = "store"


@dataclass(frozen=True, slots=True)
class LoadDeviceKey:
    """Ask the store for the device key of a live session."""

    session_id: str
    now: float
    port: str = "store"


@dataclass(frozen=True, slots=True)
class VerifyDeviceProof:
    """Ask the proof verifier to verify a ``dbsc+jwt`` (``key`` None: a registration)."""

    token: str = field(repr=False)
    key: str | None
    algorithms: frozenset[str]
    port: str = "proofs"


# -- passkeys (issue 21) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyPasskey:
    """Ask the passkey verifier to verify an assertion (and consume its challenge)."""

    response: str = field(repr=False)
    now: float
    port: str = "passkeys"


_AMR_PASSWORD: Final = ("pwd",)
"""RFC 8176: a password login."""
_AMR_LIMIT: Final = 8
"""At most this many method references, each a short token: they ride in every cookie."""


def _amr_of(value: object) -> tuple[str, ...] | None:
    """A sealed ``amr`` claim as a tuple, or None when it is not a short list of short strings."""
    if (
        type(value) is not list
        or len(value) > _AMR_LIMIT
        or not all(type(v) is str and 0 < len(v) <= 16 for v in value)
    ):
        return None
    return tuple(value)


# -- end passkeys ----------------------------------------------------------------

# -- second factors (issue 22) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FactorsOf:
    """Ask the second-factor verifier which confirmed second factors an account has."""

    user_id: str
    port: str = "second_factors"


@dataclass(frozen=True, slots=True)
class VerifySecondFactor:
    """Ask the second-factor verifier to check a code and consume it, atomically."""

    user_id: str
    code: str = field(repr=False)
    now: float
    port: str = "second_factors"


@dataclass(frozen=True, slots=True)
class RunAttempt:
    """Run a second-factor check the caller supplies (``attempt(now)``), after the
    throttle reserved it: how a code is checked outside a login, such as the
    first code that confirms an enrolment."""

    attempt: Callable[[float], Any] = field(repr=False)
    now: float
    port: str = "second_factors"


_AMR_OTP: Final = ("otp",)
_MAX_SECOND_FACTOR_CHARS: Final = 64
"""The longest code sent on to the verifier (a recovery code with separators is ~20)."""
_PARTIAL_COOKIE: Final = "tf-2fa"


@dataclass(frozen=True, slots=True)
class _Assurance:
    """How a session's user authenticated, sealed into both of its tokens.

    ``amr`` (RFC 8176 method references; None for a token sealed before
    tokens carried it), ``aal`` (1 or 2; 1 for a token without it) and
    ``auth_time`` (the last authentication, whole seconds; None when unknown).
    Every rotation carries it over unchanged; only a login or a step-up
    makes a new one.
    """

    amr: tuple[str, ...] | None
    aal: int = 1
    auth_time: int | None = None


_UNKNOWN_ASSURANCE: Final = _Assurance(None)


def _merged_amr(first: tuple[str, ...] | None, added: tuple[str, ...]) -> tuple[str, ...]:
    """``first`` then the methods of ``added`` it lacks, at most _AMR_LIMIT of them."""
    merged = list(first or ())
    merged.extend(m for m in added if m not in merged)
    return tuple(merged[:_AMR_LIMIT])


def _raised(current: _Assurance, amr: tuple[str, ...], level: int, stamp: int) -> _Assurance:
    """A session's assurance after a re-authentication at ``level`` at ``stamp``.

    The level never drops. ``auth_time`` is when the session last
    authenticated at its level: a re-authentication below it (a password on
    an aal-2 session) leaves it as it was, or a password alone would satisfy
    ``Requirement(aal=2, max_age=...)``, which asks for both factors recently.
    """
    if level < current.aal:
        return _Assurance(amr, current.aal, current.auth_time)
    return _Assurance(amr, level, stamp)


# -- end second factors ---------------------------------------------------------------


# OpenID Connect authorization-code flow (issue 20) ------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """Ask a provider's code-flow client for the URL that starts a sign-in."""

    provider: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_challenge: str = field(repr=False)
    port: str = "external"


@dataclass(frozen=True, slots=True)
class ExchangeCode:
    """Ask a provider's code-flow client to redeem a code and verify the ID token it
    returns (nonce, and the ``iss`` parameter when the provider sends it)."""

    provider: str
    code: str = field(repr=False)
    code_verifier: str = field(repr=False)
    nonce: str = field(repr=False)
    issuer: str | None
    now: float
    port: str = "external"


# end of the OpenID Connect needs ----------------------------------------------------

Need: TypeAlias = (
    LoadUser
    | LinkExternal
    | VerifyPassword
    | VerifyExternalToken
    | CreateSession
    | RotateSession
    | RevokeSession
    | CheckThrottle
    | ReserveAttempt
    | ReleaseAttempt
    | ResetThrottle
    | FindAccount
    | BindDevice
    | LoadDeviceKey
    | VerifyDeviceProof
    | VerifyPasskey
    | AuthorizationRequest
    | ExchangeCode
    | FactorsOf
    | VerifySecondFactor
    | RunAttempt
)
Steps: TypeAlias = Generator[Need, Any, Decision]


class _Replayed(enum.Enum):
    """A rotation's outcome that is neither a decision nor a reason to end it."""

    PROOF = "proof"
    """A device proof repeating the rotation it already made: ask for a fresh one."""


class PortError(Exception):
    """Thrown into the core by a driver when the port answering a need raised."""

    def __init__(self, need: Need, error: Exception) -> None:
        super().__init__(f"the {need.port} port failed")
        self.port = need.port
        self.error = error


@dataclass(slots=True)
class Pending:
    """State carried from :meth:`FlowCore.begin` into :meth:`FlowCore.resume`."""

    refresh: str | None = field(repr=False)
    sent: tuple[bool, bool]
    events: list[Event]


_ANONYMOUS: Final = Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
"""A request with no cookie and no credentials: one shared, immutable decision."""

# -- the core --------------------------------------------------------------------


class FlowCore:
    """The sans-IO decision logic, shared by both drivers. Holds no mutable state."""

    __slots__ = (
        "_access_key",
        "_accounts",
        "_clear",
        "_code_providers",
        "_codec",
        "_config",
        "_form_post_providers",
        "_names",
        "_passkeys",
        "_passwords",
        "_policy",
        "_providers",
        "_second_factors",
        "_throttle",
        "_transaction_policy",
        "_transaction_post_policy",
        "_transaction_prefix",
    )

    def __init__(
        self,
        codec: TokenCodec,
        config: FlowConfig,
        *,
        passwords: bool,
        providers: frozenset[str],
        throttle: bool = False,
        accounts: bool = False,
        passkeys: bool = False,
        code_providers: frozenset[str] = frozenset(),
        form_post_providers: frozenset[str] = frozenset(),
        second_factors: bool = False,
    ) -> None:
        self._codec = codec
        self._config = config
        policy = self._policy = config.cookies
        self._access_key = policy._access_key
        self._names = (policy.access_name, policy.refresh_name)
        self._clear = tuple(render_clear_cookie(name, policy) for name in self._names)
        self._passwords = passwords
        self._providers = providers
        self._throttle = throttle
        # Whether the password verifier names the account a username resolves
        # to (``account_key``): the throttle then counts per account.
        self._accounts = accounts
        self._passkeys = passkeys
        self._second_factors = second_factors
        # Providers whose client runs the authorization-code flow. Their
        # transaction cookies are always SameSite=Lax: the callback is a
        # cross-site navigation from the provider, which Strict would strip.
        self._code_providers = code_providers
        self._transaction_policy = replace(policy, same_site=SameSite.LAX)
        # A provider that answers with response_mode=form_post (Sign in with
        # Apple) comes back by a cross-site POST, which carries only
        # SameSite=None cookies; None needs Secure (ConfigError here otherwise).
        self._form_post_providers = form_post_providers & code_providers
        self._transaction_post_policy = (
            replace(policy, same_site=SameSite.NONE) if self._form_post_providers else None
        )
        access_name = policy.access_name
        self._transaction_prefix = next(
            (p for p in ("__Host-", "__Secure-") if access_name.startswith(p)), ""
        )

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._config

    @property
    def code_providers(self) -> frozenset[str]:
        """The providers whose client runs the authorization-code flow."""
        return self._code_providers

    @property
    def providers(self) -> frozenset[str]:
        """Every provider with a verifier (``external``)."""
        return self._providers

    @property
    def form_post_providers(self) -> frozenset[str]:
        """The code-flow providers whose callback is a POST (``response_mode=form_post``)."""
        return self._form_post_providers

    # 0 and 1: no I/O, answered directly --------------------------------------

    def begin(self, request: Request, now: float) -> Decision | Pending:
        """Steps 0 and 1. A decision, or the state :meth:`resume` continues from."""
        # Inlined _check_now: a host's clock bug raises here, before any parsing.
        if not (type(now) is float or type(now) is int) or not 0.0 <= now < _MAX_NOW:
            _check_now(now)
        # A login is state-changing whatever its method: credentials on a GET
        # from another site get the same cross-origin check as a POST.
        if request.method not in SAFE_METHODS or request.credentials is not None:
            forbidden = self._cross_origin(request)
            if forbidden is not None:
                return forbidden
        cookies = request.cookies
        header = request.cookie_header
        if cookies is not None:
            access: object = cookies.get(self._names[0])
        elif header:
            access = find_cookie(header, self._access_key)
            if access is _OVERSIZE:
                # Cookie bloat: clear ours so the browser can recover.
                return Unauthorized(UnauthorizedReason.MALFORMED_REQUEST, self._clear)
        elif request.credentials is None:
            # No cookie and nothing to log in with: step 4 at once, no port.
            return _ANONYMOUS
        else:
            return Pending(None, (False, False), [])
        rejected: TokenRejected | None = None
        if type(access) is str:
            try:
                claims = self._codec.open(_ACCESS, access, now=now)
            except InvalidToken as exc:
                rejected = TokenRejected(_ACCESS, exc.reason)
            else:
                # Only tokens this flow minted name a session; any other
                # access-purpose token sealed with the same ring is refused.
                if type(claims.get("sid")) is str:
                    requirement = request.requirement
                    if requirement is None or requirement.is_met(
                        aal_of(claims), auth_time_of(claims), now
                    ):
                        # Process(claims), built in a draft (see _model.draft_of).
                        done = _ProcessDraft()
                        done.claims = claims
                        done.events = ()
                        done.__class__ = Process
                        return done  # type: ignore[no-any-return]
                    # Signed in, but not well enough for this route: step up.
                    return StepUpRequired(requirement)
                rejected = TokenRejected(_ACCESS, InvalidTokenReason.BAD_CLAIMS)
        # Past the hot path: the event list is only built for requests that go on.
        events: list[Event] = [] if rejected is None else [rejected]
        # Only now, past the hot path, look for the refresh cookie.
        if cookies is not None:
            refresh: object = cookies.get(self._names[1])
        else:
            refresh = read_refresh_cookie(header or "", self._policy)
        sent = (access is not None, refresh is not None)
        for name, value in zip(self._names, (access, refresh), strict=True):
            if value is CookieFault.AMBIGUOUS:
                events.append(AmbiguousCookie(name))
        if type(refresh) is not str and request.credentials is None:
            # Nothing left that needs a port (no refresh token, no
            # credentials): step 4 here, so the driver runs no generator and
            # an event loop sends no thread a request it could answer itself.
            return self._unauthorized(UnauthorizedReason.NO_CREDENTIALS, sent, events)
        return Pending(refresh if type(refresh) is str else None, sent, events)

    def _cross_origin(self, request: Request) -> Forbidden | None:
        method = request.method
        verdict = check_cross_origin(
            # Safe methods reach here only for logins and logouts, which
            # change state: check them as the unsafe requests they are.
            "POST" if method in SAFE_METHODS else method,
            request.sec_fetch_site,
            request.origin,
            request.host,
            self._config.trusted_origins,  # type: ignore[arg-type]
        )
        if verdict.allowed:
            return None
        event = CrossOriginRejected(
            _clip(method), _clip_optional(request.origin), _clip_optional(request.sec_fetch_site)
        )
        return Forbidden((event,))

    # 2 to 4: the steps that need ports ---------------------------------------

    def resume(
        self, pending: Pending, request: Request, now: float, random: Callable[[int], bytes]
    ) -> Steps:
        """Steps 2 to 4, as a generator of needs that returns the decision."""
        events = pending.events
        reason = UnauthorizedReason.NO_CREDENTIALS
        try:
            if pending.refresh is not None:
                outcome = yield from self._refresh(pending.refresh, now, random, events)
                if not isinstance(outcome, UnauthorizedReason):
                    return self._required(request, outcome, now)
                reason = outcome
            if request.credentials is not None:
                login = yield from self._login(request, now, random, events)
                if isinstance(login, Reissue):
                    if isinstance(request.credentials, SecondFactorCredentials):
                        # The partial login is spent: its cookie goes.
                        cookies = (*login.set_cookies, self.partial_clearing())
                        login = replace(login, set_cookies=cookies)
                    return self._required(request, login, now)
                if not isinstance(login, UnauthorizedReason):
                    return login
                reason = login
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))
        return self._unauthorized(reason, pending.sent, events)

    @staticmethod
    def _required(request: Request, reissue: Reissue, now: float) -> Reissue | StepUpRequired:
        """A Reissue, or StepUpRequired when its claims fall short of the request's
        requirement. The new tokens go out either way: a rotation happened, and
        dropping its cookies would leave the browser holding a spent token."""
        requirement = request.requirement
        claims = reissue.claims
        if requirement is None or requirement.is_met(aal_of(claims), auth_time_of(claims), now):
            return reissue
        return StepUpRequired(requirement, reissue.set_cookies, reissue.events)

    @staticmethod
    def require(
        decision: Process | Reissue, requirement: Requirement, now: float
    ) -> Process | Reissue | StepUpRequired:
        """``decision``, or StepUpRequired (with its cookies) when its claims fall
        short of ``requirement`` at ``now``: the check of step 1 and of a Reissue,
        for a requirement known only once the user is (an enrolment endpoint's)."""
        claims = decision.claims
        if requirement.is_met(aal_of(claims), auth_time_of(claims), now):
            return decision
        return StepUpRequired(requirement, decision.set_cookies, decision.events)

    def second_factor_attempt(
        self, user_id: str, address: str | None, attempt: Callable[[float], Any], now: float
    ) -> Generator[Need, Any, Any]:
        """A second-factor code checked outside a login (the first code of an
        enrolment), throttled like a login's second step, under the same keys:
        too many recent failures -> TooManyRequests, nothing checked; else the
        attempt is reserved (counted as a failure first), ``attempt(now)`` runs
        (RunAttempt), and unless it answers SecondFactorRefused the account's
        count starts over. Its answer is returned as it is; a port that fails
        (the throttle, the attempt) -> Unavailable."""
        events: list[Event] = []
        try:
            keys = self._second_factor_keys(user_id, address)
            if keys:
                wait = yield from self._reserve(keys, now)
                if wait:
                    events.append(LoginThrottled("second_factor", None, wait))
                    return TooManyRequests(wait, tuple(events))
            outcome = yield RunAttempt(attempt, now)
            if keys and type(outcome) is not SecondFactorRefused:
                yield from self._succeeded(keys, now)
            return outcome
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))

    def _unauthorized(
        self, reason: UnauthorizedReason, sent: tuple[bool, bool], events: list[Event]
    ) -> Unauthorized:
        """Step 4: 401, clearing the auth cookies the request sent."""
        if reason is UnauthorizedReason.DEVICE_BOUND:
            # The session is alive and bound: its browser refreshes through
            # the device-bound endpoint. Keep its refresh cookie.
            sent = (sent[0], False)
        clear = tuple(c for c, was_sent in zip(self._clear, sent, strict=True) if was_sent)
        return Unauthorized(reason, clear, tuple(events))

    def _refresh(
        self, token: str, now: float, random: Callable[[int], bytes], events: list[Event]
    ) -> Generator[Need, Any, Reissue | UnauthorizedReason]:
        opened = self._open_refresh_generation(token, now, events)
        if opened is None:
            return UnauthorizedReason.NO_CREDENTIALS
        user_id, session_id, secret, generation, assurance = opened
        rotated = yield from self._rotate(
            user_id, session_id, secret, now, random, events, None,
            generation=generation, assurance=assurance,
        )  # fmt: skip
        if isinstance(rotated, UnauthorizedReason):
            return rotated
        assert not isinstance(rotated, _Replayed)  # only a device proof can be replayed
        return rotated[0]

    def _open_refresh_generation(
        self, token: str, now: float, events: list[Event]
    ) -> tuple[str, str, bytes, int | None, _Assurance] | None:
        """``(user id, session id, secret, generation, assurance)`` of a refresh
        token, or None (event added).

        The generation (``gen``) is None for a token sealed before tokens
        carried it; it is authenticated like every claim, so a token proves
        that its session reached that generation. ``amr`` (how the session's
        login was made) is None for a token sealed before tokens carried it;
        so are ``aal`` (then 1) and ``auth_time`` (then None). Present but
        malformed, any of them refuses the token (BAD_CLAIMS).
        """
        try:
            claims = self._codec.open(_REFRESH, token, now=now)
        except InvalidToken as exc:
            events.append(TokenRejected(_REFRESH, exc.reason))
            return None
        user_id: str = claims["sub"]
        session_id = claims.get("sid")
        secret = _decode_secret(claims.get("rs"))
        generation = claims.get("gen")
        sealed_amr = claims.get("amr")
        amr = None if sealed_amr is None else _amr_of(sealed_amr)
        aal = claims.get("aal", 1)
        auth_time = claims.get("auth_time")
        if (
            type(session_id) is not str
            or secret is None
            or (generation is not None and (type(generation) is not int or generation < 0))
            or (sealed_amr is not None and amr is None)
            or type(aal) is not int
            or aal not in (1, 2)
            or (auth_time is not None and (type(auth_time) is not int or auth_time < 0))
        ):
            events.append(TokenRejected(_REFRESH, InvalidTokenReason.BAD_CLAIMS))
            return None
        return user_id, session_id, secret, generation, _Assurance(amr, aal, auth_time)

    def _rotate(
        self,
        user_id: str,
        session_id: str,
        secret: bytes,
        now: float,
        random: Callable[[int], bytes],
        events: list[Event],
        device_key: str | None,
        proof_issued: float | None = None,
        *,
        generation: int | None = None,
        assurance: _Assurance = _UNKNOWN_ASSURANCE,
    ) -> Generator[Need, Any, tuple[Reissue, bytes] | UnauthorizedReason | _Replayed]:
        """Step 2 past the token: reload the user, rotate, map the store's outcome.

        ``device_key`` is the key a device proof was verified against (None
        for a bare refresh cookie); the store refuses a bound session without it.
        ``generation`` is the one the presented token was issued at (None if
        unknown): it tells a store that lost rotations from a replayed token.
        ``proof_issued`` is when that proof's challenge was issued: a repeat
        of a rotation (GRACE) is only answered to a proof over a challenge
        issued after that rotation, so replaying the request that made it
        yields nothing. Success is the decision and the verifier of the
        refresh token it hands out.
        ``assurance`` (``amr``, ``aal``, ``auth_time``) is the refresh token's,
        sealed into both new tokens unchanged (a step-up passes a raised one).
        """
        # Reload the user before rotating: a disabled user's session ends here,
        # and a directory failure leaves the session untouched.
        identity = yield from self._load_user(user_id)
        if identity is None:
            if (yield from self._revoke(session_id)):
                events.append(
                    SessionRevoked(user_id, session_id, SessionRevokedReason.USER_DISABLED)
                )
            return UnauthorizedReason.USER_DISABLED

        config = self._config
        salt = random(SALT_BYTES)
        successor = derive_successor(secret, salt)
        # Seal before the store changes: claims that cannot be sealed (too
        # large, not JSON) must fail while the client's token still works. The
        # expiries assumed here are the usual ones; a session near its absolute
        # end gets its tokens sealed again below with the store's figures.
        iat = int(now)
        # The successor's generation, if the store is where the token says.
        expected = None if generation is None else generation + 1
        minted = self._mint(
            identity, user_id, session_id, successor, iat,
            iat + config.access_ttl, int(now + config.refresh_idle_ttl), expected, assurance,
        )  # fmt: skip
        rotation = Rotation(
            session_id=session_id,
            presented=verifier_of(secret),
            successor=verifier_of(successor),
            salt=salt,
            now=now,
            idle_seconds=config.refresh_idle_ttl,
            grace_seconds=config.grace_seconds,
            device_key=device_key,
        )
        need = RotateSession(rotation)
        result = _checked_rotation(need, (yield need))
        outcome = result.outcome
        if outcome is RotationOutcome.ROTATED or outcome is RotationOutcome.GRACE:
            session = result.session
            assert session is not None  # _checked_rotation saw to it
            grace = outcome is RotationOutcome.GRACE
            if grace:
                # Same successor as the rotation being replayed: parallel tabs converge.
                assert result.salt is not None  # _checked_rotation saw to it
                successor = derive_successor(secret, result.salt)
                if proof_issued is not None and proof_issued <= session.refreshed_at:
                    # The same proof as the rotation it repeats: a replay of
                    # captured headers (a browser whose answer was lost signs
                    # the fresh challenge it is sent now, which is later).
                    events.append(DeviceProofRejected(session_id, ProofFailure.CHALLENGE_STALE))
                    return _Replayed.PROOF
            access_exp, refresh_exp = self._expiries(session, iat)
            if (
                grace
                or minted.claims["exp"] != access_exp
                or minted.refresh_exp != refresh_exp
                or expected != session.generation
            ):
                minted = self._mint(
                    identity, user_id, session_id, successor, iat, access_exp, refresh_exp,
                    session.generation, assurance,
                )  # fmt: skip
            events.append(Refreshed(user_id, session_id, session.generation, grace))
            return Reissue(minted.claims, minted.cookies, tuple(events)), verifier_of(successor)
        if outcome is RotationOutcome.REUSED_PREVIOUS or outcome is RotationOutcome.REUSED_UNKNOWN:
            if outcome is RotationOutcome.REUSED_PREVIOUS:
                cause = ReuseDetectedReason.PREDECESSOR_AFTER_GRACE
            elif (
                generation is not None
                and result.generation is not None
                and generation > result.generation
            ):
                # The sealed token proves the session reached a generation the
                # store has not: the store lost rotations (a failover to a
                # replica behind), not a replay of an older token. Revoked all
                # the same: the store cannot tell this token from a copy.
                cause = ReuseDetectedReason.NEWER_THAN_STORE
            else:
                cause = ReuseDetectedReason.OLDER_GENERATION
            events.append(ReuseDetected(user_id, session_id, cause))
            events.append(SessionRevoked(user_id, session_id, SessionRevokedReason.REUSE))
            return UnauthorizedReason.REFRESH_REUSED
        if outcome is RotationOutcome.DEVICE_BOUND:
            # Only a proof of the device key refreshes a bound session. The
            # session survives a bare cookie unless the host asked otherwise:
            # whoever copied the cookie cannot log the user out with it.
            binding = config.device_binding
            revoked = False
            if binding is not None and binding.revoke_on_bare_refresh and device_key is None:
                revoked = yield from self._revoke(session_id)
            events.append(BareRefreshRefused(user_id, session_id, revoked))
            if revoked:
                events.append(
                    SessionRevoked(user_id, session_id, SessionRevokedReason.BARE_REFRESH)
                )
            return UnauthorizedReason.DEVICE_BOUND
        why = (
            RefreshEndedReason.EXPIRED
            if outcome is RotationOutcome.EXPIRED
            else RefreshEndedReason.REVOKED
        )
        events.append(RefreshEnded(user_id, session_id, why))
        return UnauthorizedReason.SESSION_ENDED

    def _login(
        self, request: Request, now: float, random: Callable[[int], bytes], events: list[Event]
    ) -> Generator[
        Need, Any, Reissue | TooManyRequests | SecondFactorRequired | UnauthorizedReason
    ]:
        credentials: Credentials | None = request.credentials
        if isinstance(credentials, SecondFactorCredentials):
            return (yield from self._second_factor_login(request, credentials, now, random, events))
        need: Need
        username: str | None = None
        # Headers for a successful login: where a provider sign-in returns to.
        after: tuple[tuple[str, str], ...] = ()
        if isinstance(credentials, PasswordCredentials):
            method, username = "password", credentials.username
            if (
                not self._passwords
                or type(username) is not str
                or type(credentials.password) is not str
            ):
                events.append(LoginFailed(LoginFailedReason.BAD_PASSWORD, method, None))
                return UnauthorizedReason.LOGIN_FAILED
            need = VerifyPassword(username, credentials.password)
        elif isinstance(credentials, ExternalTokenCredentials):
            provider = credentials.provider
            # Type checks first: client-supplied values may be unhashable.
            if type(provider) is not str or provider not in self._providers:
                events.append(LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, _clip(provider)))
                return UnauthorizedReason.LOGIN_FAILED
            method = provider
            if type(credentials.token) is not str:
                events.append(LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            need = VerifyExternalToken(method, credentials.token, now)
        # -- passkeys (issue 21) --
        elif isinstance(credentials, PasskeyCredentials):
            method = "passkey"
            if not self._passkeys or type(credentials.response) is not str:
                events.append(LoginFailed(LoginFailedReason.BAD_PASSKEY, method))
                return UnauthorizedReason.LOGIN_FAILED
            need = VerifyPasskey(credentials.response, now)
        # -- end passkeys --
        elif isinstance(credentials, ButtonCredentials):
            provider = credentials.provider
            if type(provider) is not str or provider not in self._providers:
                events.append(LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, _clip(provider)))
                return UnauthorizedReason.LOGIN_FAILED
            method = provider
            if not self._double_submitted(request, credentials):
                events.append(LoginFailed(LoginFailedReason.BAD_CSRF_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            if type(credentials.token) is not str:
                events.append(LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            need = VerifyExternalToken(method, credentials.token, now)
        elif isinstance(credentials, AuthorizationCodeCredentials):
            provider = credentials.provider
            if type(provider) is not str or provider not in self._code_providers:
                events.append(LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, _clip(provider)))
                return UnauthorizedReason.LOGIN_FAILED
            method = provider
            transaction = self._transaction(request, credentials, now)
            if transaction is None:
                # No transaction of this browser, for this provider, has this
                # state: a forged or replayed callback, or login CSRF.
                events.append(LoginFailed(LoginFailedReason.BAD_TRANSACTION, method))
                return UnauthorizedReason.LOGIN_FAILED
            if credentials.error is not None:
                events.append(LoginFailed(LoginFailedReason.PROVIDER_ERROR, method))
                return UnauthorizedReason.LOGIN_FAILED
            code = credentials.code
            if type(code) is not str or not code or len(code) > _MAX_CODE_CHARS:
                events.append(LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            issuer = credentials.issuer if type(credentials.issuer) is str else None
            need = ExchangeCode(
                method, code, transaction.code_verifier, transaction.nonce, issuer, now
            )
            after = (("Location", transaction.next),)
        else:
            events.append(
                LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, type(credentials).__name__)
            )
            return UnauthorizedReason.LOGIN_FAILED

        # The throttle comes before any verification: a throttled guess costs
        # no hash and no call to an identity provider. The attempt is counted
        # as a failure before it is verified (a reservation), so simultaneous
        # guesses cannot all pass the check before any of them is counted.
        account: str | None = None
        if self._throttle and self._accounts and username is not None:
            find = FindAccount(username)
            account = yield find
            if account is not None and (type(account) is not str or not account):
                raise PortError(find, TypeError("account_key must return a non-empty str or None"))
        keys = self._throttle_keys(username, account, request.client_address)
        if keys:
            wait = yield from self._reserve(keys, now)
            if wait:
                events.append(LoginThrottled(method, _clip_optional(username), wait))
                return TooManyRequests(wait, tuple(events))

        amr: tuple[str, ...] | None = None
        if isinstance(need, VerifyPassword):
            amr = _AMR_PASSWORD
            user_id = yield need
            if user_id is None:
                # The reservation stands: it was this failure's count.
                events.append(
                    LoginFailed(LoginFailedReason.BAD_PASSWORD, method, _clip(need.username))
                )
                return UnauthorizedReason.LOGIN_FAILED
        # -- passkeys (issue 21) --
        elif isinstance(need, VerifyPasskey):
            verified = yield need
            if isinstance(verified, PasskeyRefused) and isinstance(verified.reason, PasskeyFailure):
                events.extend(_passkey_refusal_events(verified))
                return UnauthorizedReason.LOGIN_FAILED
            if (
                type(verified) is not PasskeyLogin
                or type(verified.amr) is not tuple
                or _amr_of(list(verified.amr)) is None
            ):
                raise PortError(
                    need, TypeError("verify_assertion must return a PasskeyLogin or PasskeyRefused")
                )
            user_id, amr = verified.user_id, verified.amr
        # -- end passkeys --
        else:
            external = yield need
            if external is not None and not isinstance(external, ExternalIdentity):
                raise PortError(need, TypeError("verify_token must return an ExternalIdentity"))
            if external is None:
                events.append(LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            # A verifier vouches for its own provider only: the identity is
            # labelled with the name it is registered under, whatever it says,
            # so it can never be linked as another provider's user.
            if external.provider != method:
                external = replace(external, provider=method)
            need = LinkExternal(external)
            user_id = yield need
            if user_id is None:
                # Counted too (the reservation stands): else one valid token of
                # an unlinked identity would buy unthrottled provider calls.
                events.append(LoginFailed(LoginFailedReason.NOT_LINKED, method))
                return UnauthorizedReason.LOGIN_FAILED
        if type(user_id) is not str or not user_id:
            raise PortError(need, TypeError("a user id must be a non-empty str"))

        identity = yield from self._load_user(user_id)
        if identity is None:
            # Right credentials, refused account: answered, counted and timed
            # like a wrong password (the reservation stands, nothing is reset),
            # or the next attempt's 429-or-401 would say the password was right.
            # Only the server-side event names the reason.
            events.append(LoginFailed(LoginFailedReason.USER_DISABLED, method))
            return UnauthorizedReason.LOGIN_FAILED
        if keys:
            yield from self._succeeded(keys, now)
        if self._second_factors and not isinstance(need, VerifyPasskey):
            # Asked only now, once the first factor is right: a wrong password
            # is answered, counted and timed as it always was, and an account
            # without a second factor gets exactly the answers it always got.
            factors = yield from self._factors_of(user_id)
            if factors:
                return self._challenge_second_factor(
                    user_id, method, amr, factors, after, now, events
                )
        aal = 1
        if (
            amr is not None
            and "user" in amr
            and isinstance(need, VerifyPasskey)
            and self._config.passkey_user_verification_is_second_factor
        ):
            # A passkey the authenticator unlocked with a PIN or biometrics is
            # two factors in one: something held, and something known or been.
            aal = 2
        return (
            yield from self._open_session(
                identity, user_id, method, _Assurance(amr, aal, int(now)), request, now,
                random, events, after,
            )
        )  # fmt: skip

    # -- second factors (issue 22) ------------------------------------------------

    def _factors_of(self, user_id: str) -> Generator[Need, Any, tuple[str, ...]]:
        need = FactorsOf(user_id)
        factors = yield need
        if type(factors) is not tuple or not all(type(f) is str and f for f in factors):
            raise PortError(need, TypeError("factors_of must return a tuple of str"))
        return factors

    @property
    def partial_cookie_name(self) -> str:
        """The cookie a partial login travels in (``__Host-tf-2fa`` by default)."""
        return self._transaction_prefix + _PARTIAL_COOKIE

    def partial_clearing(self) -> str:
        """The ``Set-Cookie`` value that deletes the partial-login cookie."""
        return render_clear_cookie(self.partial_cookie_name, self._policy)

    def _challenge_second_factor(
        self,
        user_id: str,
        method: str,
        amr: tuple[str, ...] | None,
        factors: tuple[str, ...],
        after: tuple[tuple[str, str], ...],
        now: float,
        events: list[Event],
    ) -> SecondFactorRequired:
        """Step one of two: seal the partial login into its own cookie.

        Sealed under its own purpose (PARTIAL_LOGIN in the associated data):
        it never opens as an access or refresh token, nor they as it. It
        names the user and the first factor, and lives second_factor_ttl.
        """
        iat = int(now)
        ttl = self._config.second_factor_ttl
        claims = {"sub": user_id, "iat": iat, "exp": iat + ttl, "m": method, "amr": list(amr or ())}
        try:
            value = self._codec.seal(_PARTIAL, claims)
        except (TokenTooLarge, TypeError, ValueError, OverflowError) as exc:
            raise PortError(FactorsOf(user_id), exc) from exc
        cookie = render_set_cookie(
            self.partial_cookie_name, value, max_age=ttl, policy=self._policy
        )
        events.append(SecondFactorChallenged(user_id, method, factors))
        next_path = after[0][1] if after else None
        return SecondFactorRequired(factors, (cookie,), tuple(events), next_path)

    def _partial(self, request: Request, now: float) -> tuple[str, str, tuple[str, ...]] | None:
        """``(user id, first factor's method, its amr)`` of the request's one live
        partial-login cookie; None if none, several, forged or expired."""
        values = list(dict.fromkeys(self._candidates(request, self.partial_cookie_name)))
        if len(values) != 1:
            return None
        try:
            claims = self._codec.open(_PARTIAL, values[0], now=now)
        except InvalidToken:
            return None
        method, amr = claims.get("m"), _amr_of(claims.get("amr"))
        if type(method) is not str or amr is None:
            return None
        return claims["sub"], method, amr

    def _second_factor_keys(self, user_id: str, address: str | None) -> tuple[str, ...]:
        if not self._throttle:
            return ()
        keys = [second_factor_key(user_id)]
        if address:
            keys.append(address_key(address))
        return tuple(keys)

    def _verify_code(
        self,
        user_id: str,
        code: object,
        address: str | None,
        method: str,
        now: float,
        events: list[Event],
    ) -> Generator[Need, Any, SecondFactorAccepted | TooManyRequests | UnauthorizedReason]:
        """A second-factor code for ``user_id``: throttled per account, checked and
        consumed by the verifier. The throttle reserves the attempt before the
        code is checked, so simultaneous guesses are verified at most as often
        as the policy allows."""
        if (
            not self._second_factors
            or type(code) is not str
            or not code
            or len(code) > _MAX_SECOND_FACTOR_CHARS
        ):
            events.append(LoginFailed(LoginFailedReason.BAD_SECOND_FACTOR, method))
            return UnauthorizedReason.LOGIN_FAILED
        keys = self._second_factor_keys(user_id, address)
        if keys:
            wait = yield from self._reserve(keys, now)
            if wait:
                events.append(LoginThrottled(method, None, wait))
                return TooManyRequests(wait, tuple(events))
        need = VerifySecondFactor(user_id, code, now)
        verdict = yield need
        if type(verdict) is SecondFactorRefused and isinstance(verdict.reason, SecondFactorFailure):
            # The reservation stands: it was this failure's count.
            reason = (
                LoginFailedReason.SECOND_FACTOR_REPLAYED
                if verdict.reason is SecondFactorFailure.REPLAYED
                else LoginFailedReason.BAD_SECOND_FACTOR
            )
            events.append(LoginFailed(reason, method))
            return UnauthorizedReason.LOGIN_FAILED
        if (
            type(verdict) is not SecondFactorAccepted
            or verdict.method not in ("totp", "recovery")
            or type(verdict.amr) is not tuple
            or _amr_of(list(verdict.amr)) is None
        ):
            raise PortError(
                need,
                TypeError("verify_second_factor must return SecondFactorAccepted or ...Refused"),
            )
        if keys:
            yield from self._succeeded(keys, now)
        left = verdict.recovery_codes_left
        events.append(
            SecondFactorVerified(user_id, verdict.method, left if type(left) is int else None)
        )
        return verdict

    def _second_factor_login(
        self,
        request: Request,
        credentials: SecondFactorCredentials,
        now: float,
        random: Callable[[int], bytes],
        events: list[Event],
    ) -> Generator[Need, Any, Reissue | TooManyRequests | UnauthorizedReason]:
        """Step two of two: the partial-login cookie and a code open the session."""
        partial = self._partial(request, now)
        if partial is None:
            events.append(LoginFailed(LoginFailedReason.NO_PARTIAL_LOGIN, "second_factor"))
            return UnauthorizedReason.LOGIN_FAILED
        user_id, method, first_amr = partial
        verdict = yield from self._verify_code(
            user_id, credentials.code, request.client_address, method, now, events
        )
        if not isinstance(verdict, SecondFactorAccepted):
            return verdict
        identity = yield from self._load_user(user_id)
        if identity is None:
            events.append(LoginFailed(LoginFailedReason.USER_DISABLED, method))
            return UnauthorizedReason.LOGIN_FAILED
        assurance = _Assurance(_merged_amr(first_amr, verdict.amr), 2, int(now))
        return (
            yield from self._open_session(
                identity, user_id, method, assurance, request, now, random, events, ()
            )
        )

    # -- end second factors ----------------------------------------------------

    def _succeeded(self, keys: tuple[str, ...], now: float) -> Generator[Need, Any, None]:
        """A verified attempt: the account's count starts over, and the address gets
        back the attempt it reserved (successes never slow an address)."""
        user_keys = tuple(k for k in keys if is_username_key(k))
        if user_keys:
            yield ResetThrottle(user_keys)
        yield from self._release(tuple(k for k in keys if not is_username_key(k)), now)

    def _open_session(
        self,
        identity: Identity,
        user_id: str,
        method: str,
        assurance: _Assurance,
        request: Request,
        now: float,
        random: Callable[[int], bytes],
        events: list[Event],
        after: tuple[tuple[str, str], ...],
    ) -> Generator[Need, Any, Reissue]:
        """The end of every login: a new session, both tokens, LoggedIn."""
        # A login always opens a fresh session under a fresh id: it never
        # continues or upgrades a session the client may already hold.
        config = self._config
        secret = random(SECRET_BYTES)
        session = SessionInfo(
            session_id=b64url_encode(random(_SESSION_ID_BYTES)),
            user_id=user_id,
            created_at=now,
            refreshed_at=now,
            idle_expires_at=now + min(config.refresh_idle_ttl, config.refresh_absolute_ttl),
            absolute_expires_at=now + config.refresh_absolute_ttl,
            generation=0,
            metadata=dict(request.metadata),
        )
        # Sealed before the session is stored: a failure leaves no orphan session.
        iat = int(now)
        minted = self._mint(
            identity,
            user_id,
            session.session_id,
            secret,
            iat,
            *self._expiries(session, iat),
            0,
            assurance,
        )
        yield CreateSession(NewSession(session, verifier_of(secret)))
        events.append(LoggedIn(user_id, session.session_id, method))
        headers: tuple[tuple[str, str], ...] = after
        binding = config.device_binding
        if binding is not None:
            # Invite the browser to bind the new session to a device key.
            challenge = seal_challenge(
                self._codec.keyring,
                session.session_id,
                verifier_of(secret),
                now,
                purpose="register",
            )
            headers += (("Secure-Session-Registration", registration_header(binding, challenge)),)
        return Reissue(minted.claims, minted.cookies, tuple(events), headers)

    def _throttle_keys(
        self, username: str | None, account: str | None, address: str | None
    ) -> tuple[str, ...]:
        """The keys a login's failures count under: its account and its client address.

        The account is the one the password verifier says the username names,
        so every spelling the host's lookup accepts shares one count; a
        username that names no account is counted as typed (normalised).
        """
        if not self._throttle:
            return ()
        keys = []
        if account is not None:
            keys.append(account_key(account))
        elif username is not None:
            keys.append(username_key(username))
        if address:
            keys.append(address_key(address))
        return tuple(keys)

    def _reserve(self, keys: tuple[str, ...], now: float) -> Generator[Need, Any, int]:
        """Reserve an attempt on every key: 0 when reserved, else the seconds to wait.

        A compare-and-set: the counts read are the ones the policy allowed,
        and the reservation is taken only if no other attempt was counted in
        between; a lost race reads again. So with a limit of N, at most N of
        any number of simultaneous attempts are verified.
        """
        policy = self._config.throttle
        for _ in range(_RESERVE_TRIES):
            check = CheckThrottle(keys, now)
            counts = yield check
            _check_counts(check, counts)
            wait = policy.retry_after(keys, counts, now)
            if wait:
                return wait
            reserved = yield from self._reserve_counts(keys, tuple(c.count for c in counts), now)
            if reserved:
                return 0
        return 1

    def _reserve_counts(
        self, keys: tuple[str, ...], expected: tuple[int, ...], now: float
    ) -> Generator[Need, Any, bool]:
        """Count one attempt on every key if their counts are still ``expected``.

        Keys remembered for different windows (an account's second-factor
        count, a day; its address, an hour) are reserved in one port call per
        window, in key order. If a later call loses the race, the attempts
        already reserved are taken back before answering False, as the port's
        contract allows a backend to do: no count is left raised, and every
        attempt let through still holds a reservation on every key.
        """
        policy = self._config.throttle
        groups: dict[float, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(policy.window_of(key), []).append(index)
        taken: list[tuple[str, ...]] = []
        for window, indexes in groups.items():
            group = tuple(keys[i] for i in indexes)
            need = ReserveAttempt(group, tuple(expected[i] for i in indexes), now, window)
            reserved = yield need
            if type(reserved) is not bool:
                raise PortError(need, TypeError("reserve must return a bool"))
            if not reserved:
                for earlier in taken:
                    yield ReleaseAttempt(earlier, now)
                return False
            taken.append(group)
        return True

    def _release(self, keys: tuple[str, ...], now: float) -> Generator[Need, Any, None]:
        if keys:
            yield ReleaseAttempt(keys, now)

    def _revoke(self, session_id: str) -> Generator[Need, Any, bool]:
        """Revoke a session through the store; whether it existed."""
        need = RevokeSession(session_id)
        existed = yield need
        if type(existed) is not bool:
            raise PortError(need, TypeError("revoke must return a bool"))
        return existed

    def _load_user(self, user_id: str) -> Generator[Need, Any, Identity | None]:
        need = LoadUser(user_id)
        identity = yield need
        if identity is not None and not isinstance(identity, Identity):
            raise PortError(need, TypeError("load_user must return an Identity or None"))
        return identity

    def _expiries(self, session: SessionInfo, iat: int) -> tuple[int, int]:
        """Access and refresh ``exp``: no token outlives its session."""
        access_exp = min(iat + self._config.access_ttl, int(session.absolute_expires_at))
        return access_exp, int(session.idle_expires_at)

    def _mint(
        self,
        identity: Identity,
        user_id: str,
        session_id: str,
        secret: bytes,
        iat: int,
        access_exp: int,
        refresh_exp: int,
        generation: int | None,
        assurance: _Assurance = _UNKNOWN_ASSURANCE,
    ) -> _Minted:
        """Seal both tokens and render their cookies.

        ``generation`` is the refresh token's (``gen``), sealed in so that a
        later rotation can tell a store that lost rotations from a replay;
        None leaves it out (sealed again once the store has answered).
        ``assurance`` is sealed into both tokens: ``aal`` always, ``amr`` and
        ``auth_time`` when known. The refresh token carries them to every
        later access token.

        The application claims come from the user directory, so claims that
        cannot be sealed (too large for the cookie, not JSON-serialisable) are
        that port's failure: Unavailable, with the exception for the host's log.
        """
        access_claims = {
            **identity.claims,
            "sub": user_id,
            "sid": session_id,
            "iat": iat,
            "exp": access_exp,
        }
        refresh_claims: dict[str, object] = {
            "sub": user_id,
            "sid": session_id,
            "rs": b64url_encode(secret),
            "iat": iat,
            "exp": refresh_exp,
        }
        if generation is not None:
            refresh_claims["gen"] = generation
        _seal_assurance(assurance, access_claims, refresh_claims)
        codec, policy = self._codec, self._policy
        try:
            access = codec.seal(_ACCESS, access_claims)
            refresh = codec.seal(_REFRESH, refresh_claims)
        except (TokenTooLarge, TypeError, ValueError, OverflowError) as exc:
            raise PortError(LoadUser(user_id), exc) from exc
        cookies = (
            render_set_cookie(self._names[0], access, max_age=access_exp - iat, policy=policy),
            render_set_cookie(self._names[1], refresh, max_age=refresh_exp - iat, policy=policy),
        )
        return _Minted(access_claims, cookies, refresh_exp)

    # explicit login and logout -----------------------------------------------

    def login(self, request: Request, now: float, random: Callable[[int], bytes]) -> Steps:
        """Log in with the request's credentials, whatever cookies it carries.

        On success a new session starts and every session the request's
        cookies named is revoked (reason REPLACED): logging in as someone else
        works, and no session survives a login on the same browser. On
        failure those sessions are left alone and no cookie is cleared.
        """
        _check_now(now)
        # A provider sends the browser to the callback: a cross-site GET
        # navigation by design, or for a form_post provider a cross-site POST.
        # Its CSRF defence is the state, which must name a transaction sealed
        # into this browser's own cookie. Only that method, for that provider,
        # is admitted; anything else stays under the cross-origin check.
        if request.method != self._callback_method(request):
            forbidden = self._cross_origin(request)
            if forbidden is not None:
                return forbidden
        if request.credentials is None:
            return Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
        events: list[Event] = []
        # The transaction cookie a callback names is cleared whatever the outcome.
        clear: tuple[str, ...] = ()
        if isinstance(request.credentials, AuthorizationCodeCredentials):
            clear = self.transaction_clearing(request.credentials)
        carried = self._carried_sessions(request, now)
        try:
            outcome = yield from self._login(request, now, random, events)
            if isinstance(outcome, UnauthorizedReason):
                return Unauthorized(outcome, clear, tuple(events))
            if isinstance(outcome, TooManyRequests):
                return outcome
            if isinstance(outcome, SecondFactorRequired):
                # Half a login: the sessions the cookies name stay as they are.
                return replace(outcome, set_cookies=outcome.set_cookies + clear)
            if isinstance(request.credentials, SecondFactorCredentials):
                # The partial login is spent: its cookie goes.
                clear = (self.partial_clearing(),)
            # Revoked after the new session exists: if the store fails here,
            # the answer is Unavailable and the old session is still whole.
            yield from self._end_carried(carried, SessionRevokedReason.REPLACED, now, events)
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))
        return Reissue(outcome.claims, outcome.set_cookies + clear, tuple(events), outcome.headers)

    def step_up(self, request: Request, now: float, random: Callable[[int], bytes]) -> Steps:
        """Raise the assurance of the request's session by re-authenticating its user.

        The request carries the session's refresh cookie and credentials for
        its user: a second-factor code (``aal`` 2, ``amr`` gains ``otp``), the
        password (``aal`` kept) or a passkey (``aal`` 2 when its user
        verification counts as a second factor, else kept). ``auth_time`` is
        renewed only by a re-authentication at the session's level: a
        password on an ``aal`` 2 session leaves it as it was.
        Guesses are throttled like logins. The SAME session's refresh token is
        rotated with the new ``aal``, ``amr`` and ``auth_time`` and a new
        access token minted: Reissue (event SteppedUp). No session is created
        and no other device is logged out. Refused credentials, or credentials
        of another user, are Unauthorized with no cookie cleared: the session
        stays as it was. A device-bound session also needs its live access
        cookie (as a logout does); the Reissue then carries the challenge for
        the refresh token it hands out.
        """
        _check_now(now)
        forbidden = self._cross_origin(request)  # a step-up changes state, whatever its method
        if forbidden is not None:
            return forbidden
        events: list[Event] = []
        credentials = request.credentials
        if credentials is None:
            return Unauthorized(UnauthorizedReason.NO_CREDENTIALS)
        carried = self._carried_refresh(request, now, events)
        if carried is None:
            return Unauthorized(UnauthorizedReason.NO_CREDENTIALS, (), tuple(events))
        user_id, session_id, secret, generation, assurance = carried
        try:
            raised = yield from self._reauthenticate(request, user_id, assurance, now, events)
            if isinstance(raised, TooManyRequests):
                return raised
            if isinstance(raised, UnauthorizedReason):
                return Unauthorized(raised, (), tuple(events))
            how, assurance = raised
            # A session bound to a device key rotates only with that key. Its
            # live access cookie (the bound cookie only the device's proofs
            # renew) stands for a recent proof, as it does for a logout: with
            # it, the step-up rotates under the stored key; a refresh cookie
            # alone (a copied jar) is refused by the store, DEVICE_BOUND.
            device_key = None
            if self._config.device_binding is not None and any(
                carried_session == session_id and by_access
                for _, carried_session, by_access in self._carried_sessions(request, now)
            ):
                device_key = yield from self._device_key(session_id, now)
            outcome = yield from self._rotate(
                user_id, session_id, secret, now, random, events, device_key,
                generation=generation, assurance=assurance,
            )  # fmt: skip
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))
        if isinstance(outcome, UnauthorizedReason):
            return Unauthorized(outcome, (), tuple(events))
        assert not isinstance(outcome, _Replayed)  # only a device proof can be replayed
        reissue, successor = outcome
        events.append(SteppedUp(user_id, session_id, assurance.aal, how))
        if device_key is None:
            return Reissue(reissue.claims, reissue.set_cookies, tuple(events))
        # The device's next proof signs a challenge for the refresh token handed out now.
        headers = (self._challenge(session_id, successor, now), ("Cache-Control", "no-store"))
        return Reissue(reissue.claims, reissue.set_cookies, tuple(events), headers)

    def _reauthenticate(
        self,
        request: Request,
        user_id: str,
        current: _Assurance,
        now: float,
        events: list[Event],
    ) -> Generator[Need, Any, tuple[str, _Assurance] | TooManyRequests | UnauthorizedReason]:
        """Verify a step-up's credentials for ``user_id``: how, and the raised assurance."""
        credentials = request.credentials
        stamp = int(now)
        if isinstance(credentials, SecondFactorCredentials):
            verdict = yield from self._verify_code(
                user_id, credentials.code, request.client_address, "second_factor", now, events
            )
            if not isinstance(verdict, SecondFactorAccepted):
                return verdict
            return "second_factor", _Assurance(_merged_amr(current.amr, verdict.amr), 2, stamp)
        if isinstance(credentials, PasswordCredentials):
            username, password = credentials.username, credentials.password
            if not self._passwords or type(username) is not str or type(password) is not str:
                events.append(LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", None))
                return UnauthorizedReason.LOGIN_FAILED
            account: str | None = None
            if self._throttle and self._accounts:
                find = FindAccount(username)
                account = yield find
                if account is not None and (type(account) is not str or not account):
                    raise PortError(
                        find, TypeError("account_key must return a non-empty str or None")
                    )
            keys = self._throttle_keys(username, account, request.client_address)
            if keys:
                wait = yield from self._reserve(keys, now)
                if wait:
                    events.append(LoginThrottled("password", _clip(username), wait))
                    return TooManyRequests(wait, tuple(events))
            need = VerifyPassword(username, password)
            verified = yield need
            if verified is not None and (type(verified) is not str or not verified):
                raise PortError(need, TypeError("a user id must be a non-empty str"))
            if verified is None:
                events.append(
                    LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", _clip(username))
                )
                return UnauthorizedReason.LOGIN_FAILED
            if verified != user_id:
                # Someone else's right password: counted as a failure (the
                # reservation stands), and the session is left as it was.
                events.append(
                    LoginFailed(LoginFailedReason.WRONG_USER, "password", _clip(username))
                )
                return UnauthorizedReason.LOGIN_FAILED
            if keys:
                yield from self._succeeded(keys, now)
            amr = _merged_amr(current.amr, _AMR_PASSWORD)
            return "password", _raised(current, amr, 1, stamp)
        if isinstance(credentials, PasskeyCredentials):
            if not self._passkeys or type(credentials.response) is not str:
                events.append(LoginFailed(LoginFailedReason.BAD_PASSKEY, "passkey"))
                return UnauthorizedReason.LOGIN_FAILED
            passkey = VerifyPasskey(credentials.response, now)
            login = yield passkey
            if isinstance(login, PasskeyRefused) and isinstance(login.reason, PasskeyFailure):
                events.extend(_passkey_refusal_events(login))
                return UnauthorizedReason.LOGIN_FAILED
            if (
                type(login) is not PasskeyLogin
                or type(login.amr) is not tuple
                or _amr_of(list(login.amr)) is None
            ):
                raise PortError(
                    passkey,
                    TypeError("verify_assertion must return a PasskeyLogin or PasskeyRefused"),
                )
            if login.user_id != user_id:
                events.append(LoginFailed(LoginFailedReason.WRONG_USER, "passkey"))
                return UnauthorizedReason.LOGIN_FAILED
            level = 1
            if "user" in login.amr and self._config.passkey_user_verification_is_second_factor:
                level = 2
            return "passkey", _raised(current, _merged_amr(current.amr, login.amr), level, stamp)
        events.append(LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, type(credentials).__name__))
        return UnauthorizedReason.LOGIN_FAILED

    # OpenID Connect authorization-code flow (issue 20) ------------------------

    def start_provider_login(
        self,
        request: Request,
        provider: str,
        next_path: object,
        now: float,
        random: Callable[[int], bytes],
    ) -> Generator[Need, Any, ProviderRedirect | Unauthorized | Unavailable]:
        """Start a sign-in with ``provider``: seal a new transaction (state, nonce,
        PKCE verifier, the same-site ``next_path``) into its own cookie and answer
        ProviderRedirect to the URL the provider's client builds.

        A ``next_path`` that is not a same-site path becomes ``/``; an unknown
        provider is Unauthorized (LOGIN_FAILED). Starting changes no session,
        so it is not under the cross-origin check: a page elsewhere that links
        here only sends the user to their provider.
        """
        _check_now(now)
        if type(provider) is not str or provider not in self._code_providers:
            event = LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, _clip(provider))
            return Unauthorized(UnauthorizedReason.LOGIN_FAILED, (), (event,))
        transaction = Transaction.new(provider, safe_next(next_path), now, random)
        name = transaction_cookie_name(transaction.state, self._transaction_prefix)
        assert name is not None  # a fresh state is always well-formed
        value = seal_transaction(self._codec.keyring, transaction, name, random)
        cookie = render_set_cookie(
            name, value, max_age=TRANSACTION_TTL, policy=self._policy_for(provider)
        )
        need = AuthorizationRequest(
            provider,
            transaction.state,
            transaction.nonce,
            pkce_challenge(transaction.code_verifier),
        )
        try:
            location = yield need
            if type(location) is not str or not location.startswith(("https://", "http://")):
                raise PortError(need, TypeError("authorization_url must return an http(s) URL"))
        except PortError as failure:
            return Unavailable(
                failure.error, failure.port, (PortFailed(failure.port, failure.error),)
            )
        return ProviderRedirect(location, (cookie,))

    def _callback_method(self, request: Request) -> str | None:
        """The one method a provider's answer may arrive by cross-site, or None.

        A sign-in button's POST is admitted only when its double-submitted CSRF
        token matches; a code-flow callback by its provider's method.
        """
        credentials = request.credentials
        if isinstance(credentials, ButtonCredentials):
            return "POST" if self._double_submitted(request, credentials) else None
        if not isinstance(credentials, AuthorizationCodeCredentials):
            return None
        provider = credentials.provider
        if type(provider) is not str or provider not in self._code_providers:
            return None
        return "POST" if provider in self._form_post_providers else "GET"

    def _double_submitted(self, request: Request, credentials: ButtonCredentials) -> bool:
        """Google Identity Services' CSRF check: the body's ``g_csrf_token`` equals
        the one ``g_csrf_token`` cookie (constant time), and neither is empty."""
        body = credentials.csrf
        cookies = list(dict.fromkeys(self._candidates(request, _BUTTON_CSRF_COOKIE)))
        if type(body) is not str or not body or len(cookies) != 1 or not cookies[0]:
            return False
        return hmac.compare_digest(
            body.encode("utf-8", "surrogatepass"), cookies[0].encode("utf-8", "surrogatepass")
        )

    def _policy_for(self, provider: str) -> CookiePolicy:
        post = self._transaction_post_policy
        if post is not None and provider in self._form_post_providers:
            return post
        return self._transaction_policy

    def transaction_clearing(self, credentials: AuthorizationCodeCredentials) -> tuple[str, ...]:
        """The ``Set-Cookie`` value that deletes the transaction cookie a callback's
        state names (empty for a malformed state, which names none)."""
        name = transaction_cookie_name(credentials.state, self._transaction_prefix)
        if name is None:
            return ()
        provider = credentials.provider
        if type(provider) is not str or provider not in self._code_providers:
            return ()
        return (render_clear_cookie(name, self._policy_for(provider)),)

    def _transaction(
        self, request: Request, credentials: AuthorizationCodeCredentials, now: float
    ) -> Transaction | None:
        """The live transaction the callback's state names, started for its provider."""
        name = transaction_cookie_name(credentials.state, self._transaction_prefix)
        if name is None:
            return None
        values = list(dict.fromkeys(self._candidates(request, name)))
        if len(values) != 1:
            # None, or planted copies beside the real one: fail closed.
            return None
        transaction = open_transaction(
            self._codec.keyring, values[0], name, now, self._config.leeway
        )
        if (
            transaction is None
            or transaction.provider != credentials.provider
            or not transaction.state_matches(credentials.state)
        ):
            return None
        return transaction

    # end of the OpenID Connect block ----------------------------------------

    def logout(self, request: Request, now: float) -> Steps:
        """Revoke the sessions the request's cookies name and clear both cookies.

        Sessions are found through the refresh token, else the access token
        (while it opens). A duplicated or oversized cookie does not stop a
        logout: every copy within the first 64 KiB of the Cookie header is
        tried, so whatever session any of them names ends.

        With device-bound sessions on, a session bound to a device key ends
        (here and on a login that replaces it) only when the request also
        carries its live access cookie, the bound
        cookie that only the device's proofs renew (the browser refreshes it
        before any request in its scope). A bound session named by its
        refresh cookie alone (a copied cookie jar whose access cookie has
        expired) is not revoked: BareRefreshRefused is reported, and the
        answer clears the sender's cookies all the same.
        """
        _check_now(now)
        forbidden = self._cross_origin(request)  # a logout changes state, whatever its method
        if forbidden is not None:
            return forbidden
        events: list[Event] = []
        carried = self._carried_sessions(request, now)
        try:
            yield from self._end_carried(carried, SessionRevokedReason.LOGOUT, now, events)
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))
        return LoggedOut(self._clear, tuple(events))

    def _end_carried(
        self,
        carried: list[tuple[str, str, bool]],
        reason: SessionRevokedReason,
        now: float,
        events: list[Event],
    ) -> Generator[Need, Any, None]:
        """Revoke the sessions a request's cookies name (a logout, or a login replacing them).

        A session bound to a device key is left alone unless a live access
        token named it: a copied refresh cookie cannot end a bound session.
        """
        bindable = self._config.device_binding is not None
        for user_id, session_id, by_access in carried:
            if (
                bindable
                and not by_access
                and (yield from self._device_key(session_id, now)) is not None
            ):
                events.append(BareRefreshRefused(user_id, session_id, False))
                continue
            if (yield from self._revoke(session_id)):
                events.append(SessionRevoked(user_id, session_id, reason))

    def _carried_sessions(self, request: Request, now: float) -> list[tuple[str, str, bool]]:
        """``(user id, session id, named by a live access token)`` of every session
        the request's auth cookies name.

        Every copy of each cookie is opened (duplicates included: a planted
        second cookie must not shield the real one), refresh tokens first.
        """
        found: dict[str, str] = {}
        by_access: set[str] = set()
        for purpose, name in ((_REFRESH, self._names[1]), (_ACCESS, self._names[0])):
            # dict.fromkeys: each distinct value is opened once.
            for token in dict.fromkeys(self._candidates(request, name)):
                try:
                    claims = self._codec.open(purpose, token, now=now)
                except InvalidToken:
                    continue
                session_id = claims.get("sid")
                if type(session_id) is not str:
                    continue
                found.setdefault(session_id, claims["sub"])
                if purpose is _ACCESS:
                    by_access.add(session_id)
        return [(user, sid, sid in by_access) for sid, user in found.items()]

    @staticmethod
    def _candidates(request: Request, name: str) -> list[str]:
        if request.cookies is not None:
            value = request.cookies.get(name)
            return [value] if type(value) is str else []
        if request.cookie_header:
            return auth_cookie_candidates(request.cookie_header, name)
        return []

    # device-bound sessions (DBSC) --------------------------------------------

    def register_device(self, request: Request, now: float) -> Steps:
        """Bind the session of the request's refresh cookie to the key of a DBSC proof.

        The proof (``request.session_response``) must be a ``dbsc+jwt`` signed by
        the key in its own ``jwk`` header, over a challenge this server sealed
        for that session within the window. The first key stays: a session
        already bound to another key is refused. Success is DeviceRegistered
        (the instructions, a fresh bound cookie, the next challenge).
        """
        binding = self._binding()
        _check_now(now)
        forbidden = self._cross_origin(request)
        if forbidden is not None:
            return forbidden
        events: list[Event] = []
        carried = self._carried_refresh(request, now, events)
        if carried is None:
            return Unauthorized(UnauthorizedReason.NO_CREDENTIALS, (), tuple(events))
        user_id, session_id, secret, _, assurance = carried
        presented = verifier_of(secret)
        token = parse_session_response_header(request.session_response)
        if token is None:
            events.append(DeviceProofRejected(session_id, ProofFailure.MISSING))
            return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
        try:
            bound = yield from self._device_key(session_id, now)
            if bound is not None:
                # A session registers once. A repeated registration (a replay of
                # captured headers, or the device's own retry) mints nothing.
                events.append(DeviceProofRejected(session_id, ProofFailure.ALREADY_BOUND))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            proof = yield from self._verify_proof(token, None, binding)
            checked = (
                proof
                if isinstance(proof, ProofFailure)
                else self._check_proof(
                    proof,
                    request,
                    binding.registration_path,
                    session_id,
                    presented,
                    now,
                    "register",
                )
            )
            failure = checked if isinstance(checked, ProofFailure) else None
            if failure is not None:
                events.append(DeviceProofRejected(session_id, failure))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            assert isinstance(proof, DeviceProof)
            identity = yield from self._load_user(user_id)
            if identity is None:
                if (yield from self._revoke(session_id)):
                    events.append(
                        SessionRevoked(user_id, session_id, SessionRevokedReason.USER_DISABLED)
                    )
                return Unauthorized(UnauthorizedReason.USER_DISABLED, (), tuple(events))
            bind = BindDevice(session_id, proof.key, now)
            info = yield bind
            if info is not None and type(info) is not SessionInfo:
                raise PortError(bind, TypeError("bind_device must return a SessionInfo or None"))
            if info is None:
                events.append(RefreshEnded(user_id, session_id, RefreshEndedReason.REVOKED))
                return Unauthorized(UnauthorizedReason.SESSION_ENDED, (), tuple(events))
            if info.device_key != proof.key:
                events.append(DeviceProofRejected(session_id, ProofFailure.ALREADY_BOUND))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            iat = int(now)
            access_exp = min(iat + self._config.access_ttl, int(info.absolute_expires_at))
            claims, cookie = self._mint_access(
                identity, user_id, session_id, iat, access_exp, assurance
            )
        except PortError as failure_:
            events.append(PortFailed(failure_.port, failure_.error))
            return Unavailable(failure_.error, failure_.port, tuple(events))
        events.append(DeviceBound(user_id, session_id))
        policy = self._policy
        instructions = session_instructions(
            binding, session_id, policy.access_name, policy._attributes.lstrip("; ")
        )
        return DeviceRegistered(
            claims,
            (cookie,),
            instructions,
            # Registration rotates nothing: the next proof comes with the same refresh token.
            (self._challenge(session_id, presented, now), ("Cache-Control", "no-store")),
            tuple(events),
        )

    def refresh_device(self, request: Request, now: float, random: Callable[[int], bytes]) -> Steps:
        """Refresh a device-bound session with a proof of its key.

        Without a proof, or with one over a stale or foreign challenge, the
        answer is DeviceProofRequired (403 and a fresh challenge: the browser
        signs it and retries). A proof that verifies with the session's stored
        key rotates the refresh token like step 2 and answers Reissue with the
        next challenge; anything else is Unauthorized, which ends the
        browser's device-bound session, and nothing is revoked.
        """
        binding = self._binding()
        _check_now(now)
        forbidden = self._cross_origin(request)
        if forbidden is not None:
            return forbidden
        events: list[Event] = []
        carried = self._carried_refresh(request, now, events)
        if carried is None:
            return Unauthorized(UnauthorizedReason.NO_CREDENTIALS, (), tuple(events))
        user_id, session_id, secret, generation, assurance = carried
        presented = verifier_of(secret)
        if request.session_id_header is not None and (
            parse_session_id_header(request.session_id_header) != session_id
        ):
            # The browser refreshes a session this cookie does not belong to
            # (one it registered before logging in again): let it end that one.
            events.append(DeviceProofRejected(session_id, ProofFailure.WRONG_SESSION))
            return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
        token = parse_session_response_header(request.session_response)
        if token is None:
            return DeviceProofRequired(
                (self._challenge(session_id, presented, now),), tuple(events)
            )
        try:
            key = yield from self._device_key(session_id, now)
            if key is None:
                events.append(DeviceProofRejected(session_id, ProofFailure.NOT_BOUND))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            proof = yield from self._verify_proof(token, key, binding)
            if isinstance(proof, ProofFailure):
                events.append(DeviceProofRejected(session_id, proof))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            checked = self._check_proof(
                proof, request, binding.refresh_path, session_id, presented, now, "refresh"
            )
            if checked is ProofFailure.CHALLENGE_STALE or checked is ProofFailure.CHALLENGE_INVALID:
                # A genuine key over an old challenge, or one issued for another
                # of the session's refresh tokens: ask again with a challenge
                # for this one; the browser signs it and retries once.
                events.append(DeviceProofRejected(session_id, checked))
                return DeviceProofRequired(
                    (self._challenge(session_id, presented, now),), tuple(events)
                )
            if isinstance(checked, ProofFailure):
                events.append(DeviceProofRejected(session_id, checked))
                return Unauthorized(UnauthorizedReason.DEVICE_PROOF, (), tuple(events))
            outcome = yield from self._rotate(
                user_id,
                session_id,
                secret,
                now,
                random,
                events,
                proof.key,
                checked,
                generation=generation,
                assurance=assurance,
            )
        except PortError as failure_:
            events.append(PortFailed(failure_.port, failure_.error))
            return Unavailable(failure_.error, failure_.port, tuple(events))
        if isinstance(outcome, UnauthorizedReason):
            return Unauthorized(outcome, (), tuple(events))
        if isinstance(outcome, _Replayed):
            return DeviceProofRequired(
                (self._challenge(session_id, presented, now),), tuple(events)
            )
        reissue, successor = outcome
        return Reissue(
            reissue.claims,
            reissue.set_cookies,
            reissue.events,
            # The next proof comes with the refresh token handed out now: its challenge names it.
            (self._challenge(session_id, successor, now), ("Cache-Control", "no-store")),
        )

    def _binding(self) -> DeviceBinding:
        binding = self._config.device_binding
        if binding is None:
            raise RuntimeError("device-bound sessions are off: set FlowConfig.device_binding")
        return binding

    def _challenge(self, session_id: str, token: bytes, now: float) -> tuple[str, str]:
        """A refresh challenge for the session's refresh token whose verifier is ``token``."""
        challenge = seal_challenge(self._codec.keyring, session_id, token, now)
        return ("Secure-Session-Challenge", challenge_header(challenge, session_id))

    def _device_key(self, session_id: str, now: float) -> Generator[Need, Any, str | None]:
        need = LoadDeviceKey(session_id, now)
        key = yield need
        if key is not None and type(key) is not str:
            raise PortError(need, TypeError("device_key_of must return a str or None"))
        return key

    def _carried_refresh(
        self, request: Request, now: float, events: list[Event]
    ) -> tuple[str, str, bytes, int | None, _Assurance] | None:
        """The one refresh token the request carries, opened (user, session, secret,
        generation, assurance); None if none or several."""
        candidates = list(dict.fromkeys(self._candidates(request, self._names[1])))
        if len(candidates) != 1:
            if candidates:
                events.append(AmbiguousCookie(self._names[1]))
            return None
        return self._open_refresh_generation(candidates[0], now, events)

    def _verify_proof(
        self, token: str, key: str | None, binding: DeviceBinding
    ) -> Generator[Need, Any, DeviceProof | ProofFailure]:
        need = VerifyDeviceProof(token, key, _offered(binding.algorithms))
        proof = yield need
        if type(proof) is not DeviceProof and not isinstance(proof, ProofFailure):
            raise PortError(need, TypeError("verify must return a DeviceProof or ProofFailure"))
        return proof

    def _check_proof(
        self,
        proof: DeviceProof,
        request: Request,
        path: str,
        session_id: str,
        presented: bytes,
        now: float,
        purpose: str,
    ) -> ProofFailure | float:
        """The claims of a verified proof: its audience (when sent) and its
        challenge, which must be for ``presented`` (the verifier of the refresh
        token sent with it). When its challenge was issued, or why it is refused."""
        if proof.audience is not None and (
            request.host is None or proof.audience != f"https://{request.host}{path}"
        ):
            return ProofFailure.AUDIENCE
        binding = self._binding()
        verdict, issued = open_challenge(
            self._codec.keyring,
            session_id,
            presented,
            proof.challenge,
            now,
            window=(
                binding.window
                if purpose == "register"
                else binding.refresh_window(self._config.access_ttl)
            ),
            leeway=self._config.leeway,
            purpose=purpose,
        )
        if verdict is ChallengeVerdict.VALID:
            return issued
        if verdict is ChallengeVerdict.STALE:
            return ProofFailure.CHALLENGE_STALE
        return ProofFailure.CHALLENGE_INVALID

    def _mint_access(
        self,
        identity: Identity,
        user_id: str,
        session_id: str,
        iat: int,
        access_exp: int,
        assurance: _Assurance,
    ) -> tuple[dict[str, Any], str]:
        """A fresh access token alone (the bound cookie), and its Set-Cookie value."""
        claims: dict[str, Any] = {
            **identity.claims,
            "sub": user_id,
            "sid": session_id,
            "iat": iat,
            "exp": access_exp,
        }
        _seal_assurance(assurance, claims)
        try:
            access = self._codec.seal(_ACCESS, claims)
        except (TokenTooLarge, TypeError, ValueError, OverflowError) as exc:
            raise PortError(LoadUser(user_id), exc) from exc
        cookie = render_set_cookie(
            self._names[0], access, max_age=access_exp - iat, policy=self._policy
        )
        return claims, cookie


@dataclass(frozen=True, slots=True)
class _Minted:
    """Both tokens of a Reissue, sealed and rendered."""

    claims: dict[str, Any]
    cookies: tuple[str, str] = field(repr=False)
    refresh_exp: int


_EVENT_TEXT_LIMIT: Final = 200
_BUTTON_CSRF_COOKIE: Final = "g_csrf_token"
_MAX_CODE_CHARS: Final = 2048
"""The longest authorization code sent on to a token endpoint."""


def _clip(value: object) -> str:
    """Client-supplied text for an event: a string, and never a long one."""
    text = value if type(value) is str else type(value).__name__
    return text if len(text) <= _EVENT_TEXT_LIMIT else text[:_EVENT_TEXT_LIMIT] + "…"


def _clip_optional(value: str | None) -> str | None:
    return None if value is None else _clip(value)


def _check_now(now: float) -> None:
    """``now`` comes from the host's clock: a non-number, non-finite or absurd one is its bug."""
    # Written so that NaN fails: every comparison with NaN is false.
    if not (type(now) is float or type(now) is int) or not 0 <= now < _MAX_NOW:
        raise ValueError(
            f"now must be seconds since the epoch, a finite int or float; got {_clip(repr(now))}"
        )


def _checked_rotation(need: RotateSession, result: object) -> RotationResult:
    """The store's rotation answer, or a port failure if it is not a well-formed one."""
    if type(result) is not RotationResult:
        raise PortError(need, TypeError("rotate must return a RotationResult"))
    outcome = result.outcome
    if outcome is RotationOutcome.ROTATED or outcome is RotationOutcome.GRACE:
        if type(result.session) is not SessionInfo:
            raise PortError(need, TypeError(f"a {outcome.name} result must carry the session"))
        if outcome is RotationOutcome.GRACE and (
            type(result.salt) is not bytes or len(result.salt) != SALT_BYTES
        ):
            raise PortError(
                need, TypeError(f"a GRACE result must carry its {SALT_BYTES}-byte salt")
            )
    elif not isinstance(outcome, RotationOutcome):
        raise PortError(need, TypeError("a RotationResult's outcome must be a RotationOutcome"))
    generation = result.generation
    if generation is not None and (type(generation) is not int or generation < 0):
        raise PortError(need, TypeError("a RotationResult's generation must be an int >= 0"))
    return result


def _passkey_refusal_events(refused: PasskeyRefused) -> list[Event]:
    """The events of a refused passkey login: the refusal, and a replay or clone named."""
    reason = refused.reason
    user_id = _clip_optional(refused.user_id) if type(refused.user_id) is str else None
    credential = (
        _clip_optional(refused.credential_id) if type(refused.credential_id) is str else None
    )
    if reason is PasskeyFailure.REPLAYED:
        return [
            LoginFailed(LoginFailedReason.PASSKEY_REPLAYED, "passkey"),
            PasskeyReplayed(user_id, credential),
        ]
    counters = refused.counters
    if (
        reason is PasskeyFailure.CLONED
        and user_id is not None
        and credential is not None
        and type(counters) is tuple
        and len(counters) == 2
        and all(type(c) is int for c in counters)
    ):
        return [
            LoginFailed(LoginFailedReason.PASSKEY_CLONED, "passkey"),
            AuthenticatorCloned(user_id, credential, counters[0], counters[1]),
        ]
    return [LoginFailed(LoginFailedReason.BAD_PASSKEY, "passkey")]


def _seal_assurance(assurance: _Assurance, *claim_sets: dict[str, Any]) -> None:
    """Put ``aal`` (always), ``amr`` and ``auth_time`` (when known) into claim sets."""
    for claims in claim_sets:
        claims["aal"] = assurance.aal
        if assurance.amr is not None:
            claims["amr"] = list(assurance.amr)
        if assurance.auth_time is not None:
            claims["auth_time"] = assurance.auth_time


def _check_counts(need: CheckThrottle, counts: object) -> None:
    """The throttle's answer: one FailureCount per key, or a port failure."""
    if (
        not isinstance(counts, (list, tuple))
        or len(counts) != len(need.keys)
        or not all(type(c) is FailureCount for c in counts)
    ):
        raise PortError(need, TypeError("the throttle must return one FailureCount per key"))


@functools.lru_cache(maxsize=16)
def _offered(algorithms: tuple[str, ...]) -> frozenset[str]:
    """A binding's algorithms as the set a verifier pins (configuration: a handful)."""
    return frozenset(algorithms)


def _decode_secret(text: object) -> bytes | None:
    """The refresh secret from its claim: exactly 43 canonical base64url characters."""
    if type(text) is not str or len(text) != 43:
        return None
    raw = b64url_decode(text)
    if raw is None or len(raw) != SECRET_BYTES:
        return None
    return raw
