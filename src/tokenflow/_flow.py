"""The decision core: every authentication decision tokenflow makes, in one place.

For each request, in this order::

    0. cross-origin browser request that is unsafe,
       or carries credentials (a login)                -> Forbidden (403)
       Cookie header over 16 KiB                       -> Unauthorized (401), clear both
    1. access cookie opens and names a session         -> Process   (200, no store)
    2. refresh cookie opens, user still active, store rotates
         ROTATED                                       -> Reissue   (new access + refresh)
         GRACE   (predecessor inside the window)       -> Reissue   (the SAME successor)
         REUSED_PREVIOUS / REUSED_UNKNOWN              -> session revoked, go on to 3
         EXPIRED / UNKNOWN_SESSION                     -> go on to 3
       user disabled or deleted                        -> session revoked, go on to 3
    3. credentials verify, user active                 -> new session, Reissue
    4. otherwise                                       -> Unauthorized (401), clear sent cookies
    any port raises                                    -> Unavailable (503), nothing minted/cleared

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

import base64
import binascii
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from ._config import FlowConfig
from ._cookies import (
    CookieFault,
    auth_cookie_candidates,
    read_access_cookie,
    read_refresh_cookie,
    render_clear_cookie,
    render_set_cookie,
)
from ._csrf import check_cross_origin
from ._errors import InvalidToken, InvalidTokenReason, TokenTooLarge
from ._model import (
    AmbiguousCookie,
    CrossOriginRejected,
    Decision,
    Event,
    ExternalTokenCredentials,
    Forbidden,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    PasswordCredentials,
    PortFailed,
    Process,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    Reissue,
    Request,
    ReuseDetected,
    ReuseDetectedReason,
    SessionRevoked,
    SessionRevokedReason,
    TokenRejected,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
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
from ._token import Purpose, TokenCodec
from .ports import ExternalIdentity, Identity

__all__ = ["FlowCore", "Need", "PortError"]

_ACCESS: Final = Purpose.ACCESS
_REFRESH: Final = Purpose.REFRESH
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_ID_BYTES: Final = 16

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


Need: TypeAlias = (
    LoadUser
    | LinkExternal
    | VerifyPassword
    | VerifyExternalToken
    | CreateSession
    | RotateSession
    | RevokeSession
)
Steps: TypeAlias = Generator[Need, Any, Decision]


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


# -- the core --------------------------------------------------------------------


class FlowCore:
    """The sans-IO decision logic, shared by both drivers. Holds no mutable state."""

    __slots__ = ("_clear", "_codec", "_config", "_names", "_passwords", "_policy", "_providers")

    def __init__(
        self,
        codec: TokenCodec,
        config: FlowConfig,
        *,
        passwords: bool,
        providers: frozenset[str],
    ) -> None:
        self._codec = codec
        self._config = config
        policy = self._policy = config.cookies
        self._names = (policy.access_name, policy.refresh_name)
        self._clear = tuple(render_clear_cookie(name, policy) for name in self._names)
        self._passwords = passwords
        self._providers = providers

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._config

    # 0 and 1: no I/O, answered directly --------------------------------------

    def begin(self, request: Request, now: float) -> Decision | Pending:
        """Steps 0 and 1. A decision, or the state :meth:`resume` continues from."""
        # A login is state-changing whatever its method: credentials on a GET
        # from another site get the same cross-origin check as a POST.
        if request.method not in _SAFE_METHODS or request.credentials is not None:
            forbidden = self._cross_origin(request)
            if forbidden is not None:
                return forbidden
        cookies = request.cookies
        header = request.cookie_header
        if cookies is not None:
            access: object = cookies.get(self._names[0])
        elif header:
            access = read_access_cookie(header, self._policy)
            if access is CookieFault.OVERSIZE:
                # Cookie bloat: clear ours so the browser can recover.
                return Unauthorized(UnauthorizedReason.MALFORMED_REQUEST, self._clear)
        else:
            return Pending(None, (False, False), [])
        rejected: TokenRejected | None = None
        if type(access) is str:
            try:
                claims = self._codec.open(_ACCESS, access, now)
            except InvalidToken as exc:
                rejected = TokenRejected(_ACCESS, exc.reason)
            else:
                # Only tokens this flow minted name a session; any other
                # access-purpose token sealed with the same ring is refused.
                if type(claims.get("sid")) is str:
                    return Process(claims)
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
        return Pending(refresh if type(refresh) is str else None, sent, events)

    def _cross_origin(self, request: Request) -> Forbidden | None:
        method = request.method
        verdict = check_cross_origin(
            # Safe methods reach here only for logins and logouts, which
            # change state: check them as the unsafe requests they are.
            "POST" if method in _SAFE_METHODS else method,
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
        _check_now(now)
        events = pending.events
        reason = UnauthorizedReason.NO_CREDENTIALS
        try:
            if pending.refresh is not None:
                outcome = yield from self._refresh(pending.refresh, now, random, events)
                if not isinstance(outcome, UnauthorizedReason):
                    return outcome
                reason = outcome
            if request.credentials is not None:
                outcome = yield from self._login(request, now, random, events)
                if not isinstance(outcome, UnauthorizedReason):
                    return outcome
                reason = outcome
        except PortError as failure:
            events.append(PortFailed(failure.port, failure.error))
            return Unavailable(failure.error, failure.port, tuple(events))
        clear = tuple(c for c, was_sent in zip(self._clear, pending.sent, strict=True) if was_sent)
        return Unauthorized(reason, clear, tuple(events))

    def _refresh(
        self, token: str, now: float, random: Callable[[int], bytes], events: list[Event]
    ) -> Generator[Need, Any, Reissue | UnauthorizedReason]:
        try:
            claims = self._codec.open(_REFRESH, token, now)
        except InvalidToken as exc:
            events.append(TokenRejected(_REFRESH, exc.reason))
            return UnauthorizedReason.NO_CREDENTIALS
        user_id: str = claims["sub"]
        session_id = claims.get("sid")
        secret = _decode_secret(claims.get("rs"))
        if type(session_id) is not str or secret is None:
            events.append(TokenRejected(_REFRESH, InvalidTokenReason.BAD_CLAIMS))
            return UnauthorizedReason.NO_CREDENTIALS

        # Reload the user before rotating: a disabled user's session ends here,
        # and a directory failure leaves the session untouched.
        identity = yield from self._load_user(user_id)
        if identity is None:
            if (yield RevokeSession(session_id)):
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
        minted = self._mint(
            identity, user_id, session_id, successor, iat,
            iat + config.access_ttl, int(now + config.refresh_idle_ttl),
        )  # fmt: skip
        rotation = Rotation(
            session_id=session_id,
            presented=verifier_of(secret),
            successor=verifier_of(successor),
            salt=salt,
            now=now,
            idle_seconds=config.refresh_idle_ttl,
            grace_seconds=config.grace_seconds,
        )
        result: RotationResult = yield RotateSession(rotation)
        outcome = result.outcome
        if outcome is RotationOutcome.ROTATED or outcome is RotationOutcome.GRACE:
            session = result.session
            assert session is not None
            grace = outcome is RotationOutcome.GRACE
            if grace:
                # Same successor as the rotation being replayed: parallel tabs converge.
                assert result.salt is not None
                successor = derive_successor(secret, result.salt)
            access_exp, refresh_exp = self._expiries(session, iat)
            if grace or minted.claims["exp"] != access_exp or minted.refresh_exp != refresh_exp:
                minted = self._mint(
                    identity, user_id, session_id, successor, iat, access_exp, refresh_exp
                )
            events.append(Refreshed(user_id, session_id, session.generation, grace))
            return Reissue(minted.claims, minted.cookies, tuple(events))
        if outcome is RotationOutcome.REUSED_PREVIOUS or outcome is RotationOutcome.REUSED_UNKNOWN:
            cause = (
                ReuseDetectedReason.PREDECESSOR_AFTER_GRACE
                if outcome is RotationOutcome.REUSED_PREVIOUS
                else ReuseDetectedReason.OLDER_GENERATION
            )
            events.append(ReuseDetected(user_id, session_id, cause))
            events.append(SessionRevoked(user_id, session_id, SessionRevokedReason.REUSE))
            return UnauthorizedReason.REFRESH_REUSED
        why = (
            RefreshEndedReason.EXPIRED
            if outcome is RotationOutcome.EXPIRED
            else RefreshEndedReason.UNKNOWN
        )
        events.append(RefreshEnded(user_id, session_id, why))
        return UnauthorizedReason.SESSION_ENDED

    def _login(
        self, request: Request, now: float, random: Callable[[int], bytes], events: list[Event]
    ) -> Generator[Need, Any, Reissue | UnauthorizedReason]:
        credentials = request.credentials
        need: Need
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
            user_id = yield need
            if user_id is None:
                events.append(LoginFailed(LoginFailedReason.BAD_PASSWORD, method, _clip(username)))
                return UnauthorizedReason.LOGIN_FAILED
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
            external = yield need
            if external is not None and not isinstance(external, ExternalIdentity):
                raise PortError(need, TypeError("verify_token must return an ExternalIdentity"))
            # A verifier vouches for its own provider only: an identity it
            # labels as another provider's would log in that provider's user.
            if external is None or external.provider != method:
                events.append(LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            need = LinkExternal(external)
            user_id = yield need
            if user_id is None:
                events.append(LoginFailed(LoginFailedReason.NOT_LINKED, method))
                return UnauthorizedReason.LOGIN_FAILED
        else:
            events.append(
                LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, type(credentials).__name__)
            )
            return UnauthorizedReason.LOGIN_FAILED
        if type(user_id) is not str or not user_id:
            raise PortError(need, TypeError("a user id must be a non-empty str"))

        identity = yield from self._load_user(user_id)
        if identity is None:
            events.append(LoginFailed(LoginFailedReason.USER_DISABLED, method))
            return UnauthorizedReason.LOGIN_FAILED
        # A login always opens a fresh session under a fresh id: it never
        # continues or upgrades a session the client may already hold.
        config = self._config
        secret = random(SECRET_BYTES)
        session = SessionInfo(
            session_id=_b64(random(_SESSION_ID_BYTES)),
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
            identity, user_id, session.session_id, secret, iat, *self._expiries(session, iat)
        )
        yield CreateSession(NewSession(session, verifier_of(secret)))
        events.append(LoggedIn(user_id, session.session_id, method))
        return Reissue(minted.claims, minted.cookies, tuple(events))

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
    ) -> _Minted:
        """Seal both tokens and render their cookies.

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
        refresh_claims = {
            "sub": user_id,
            "sid": session_id,
            "rs": _b64(secret),
            "iat": iat,
            "exp": refresh_exp,
        }
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

    # logout ------------------------------------------------------------------

    def logout(self, request: Request, now: float) -> Steps:
        """Revoke the sessions the request's cookies name and clear both cookies.

        Sessions are found through the refresh token, else the access token
        (while it opens). A duplicated or oversized cookie does not stop a
        logout: every copy is tried, so whatever session any of them names ends.
        """
        forbidden = self._cross_origin(request)  # a logout changes state, whatever its method
        if forbidden is not None:
            return forbidden
        _check_now(now)
        events: list[Event] = []
        revoked: set[str] = set()
        for purpose, name in ((_REFRESH, self._names[1]), (_ACCESS, self._names[0])):
            for token in self._candidates(request, name):
                try:
                    claims = self._codec.open(purpose, token, now)
                except InvalidToken:
                    continue
                session_id = claims.get("sid")
                if type(session_id) is not str or session_id in revoked:
                    continue
                revoked.add(session_id)
                try:
                    existed = yield RevokeSession(session_id)
                except PortError as failure:
                    events.append(PortFailed(failure.port, failure.error))
                    return Unavailable(failure.error, failure.port, tuple(events))
                if existed:
                    events.append(
                        SessionRevoked(claims["sub"], session_id, SessionRevokedReason.LOGOUT)
                    )
        return Unauthorized(UnauthorizedReason.LOGGED_OUT, self._clear, tuple(events))

    @staticmethod
    def _candidates(request: Request, name: str) -> list[str]:
        if request.cookies is not None:
            value = request.cookies.get(name)
            return [value] if type(value) is str else []
        if request.cookie_header:
            return auth_cookie_candidates(request.cookie_header, name)
        return []


@dataclass(frozen=True, slots=True)
class _Minted:
    """Both tokens of a Reissue, sealed and rendered."""

    claims: dict[str, Any]
    cookies: tuple[str, str] = field(repr=False)
    refresh_exp: int


_EVENT_TEXT_LIMIT: Final = 200


def _clip(value: object) -> str:
    """Client-supplied text for an event: a string, and never a long one."""
    text = value if type(value) is str else type(value).__name__
    return text if len(text) <= _EVENT_TEXT_LIMIT else text[:_EVENT_TEXT_LIMIT] + "…"


def _clip_optional(value: str | None) -> str | None:
    return None if value is None else _clip(value)


def _check_now(now: float) -> None:
    """``now`` comes from the host's clock: a non-finite or absurd one is its bug."""
    # Written so that NaN fails: every comparison with NaN is false.
    if not (type(now) is float or type(now) is int) or not 0 <= now < 2.0**62:
        raise ValueError(f"now must be seconds since the epoch, a finite number; got {now!r}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_secret(text: object) -> bytes | None:
    """The refresh secret from its claim: exactly 43 canonical base64url characters."""
    if type(text) is not str or len(text) != 43:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != SECRET_BYTES or _b64(raw) != text:
        return None
    return raw
