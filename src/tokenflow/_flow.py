"""The decision core: every authentication decision tokenflow makes, in one place.

For each request, in this order::

    0. unsafe method from a cross-origin browser request  -> Forbidden (403)
    1. access cookie opens                                -> Process   (200, no store)
    2. refresh cookie opens, user still active, store rotates
         ROTATED                                          -> Reissue   (new access + refresh)
         GRACE   (predecessor inside the window)          -> Reissue   (the SAME successor)
         REUSED_PREVIOUS / REUSED_UNKNOWN                 -> session revoked, go on to 3
         EXPIRED / UNKNOWN_SESSION                        -> go on to 3
       user disabled or deleted                           -> session revoked, 401
    3. credentials verify, user active                    -> new session, Reissue
    4. otherwise                                     -> Unauthorized (401), clear sent cookies
    any port raises                                  -> Unavailable (503), nothing minted/cleared

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
    read_access_cookie,
    read_auth_cookies,
    read_refresh_cookie,
    render_clear_cookie,
    render_set_cookie,
)
from ._csrf import check_cross_origin
from ._errors import InvalidToken, TokenFailure
from ._model import (
    AmbiguousCookie,
    CrossOriginRejected,
    Decision,
    Event,
    ExternalTokenCredentials,
    Forbidden,
    LoggedIn,
    LoginFailed,
    LoginFailure,
    PasswordCredentials,
    PortFailed,
    Process,
    Refreshed,
    RefreshEnded,
    Reissue,
    Request,
    ReuseCause,
    ReuseDetected,
    RevokeCause,
    SessionEnded,
    SessionRevoked,
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

    refresh: str | None
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
        if request.method not in _SAFE_METHODS:
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
        events: list[Event] = []
        if type(access) is str:
            try:
                return Process(self._codec.open(_ACCESS, access, now))
            except InvalidToken as exc:
                events.append(TokenRejected(_ACCESS, exc.reason))
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
        verdict = check_cross_origin(
            request.method,
            request.sec_fetch_site,
            request.origin,
            request.host,
            self._config.trusted_origins,  # type: ignore[arg-type]
        )
        if verdict.allowed:
            return None
        event = CrossOriginRejected(request.method, request.origin, request.sec_fetch_site)
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
            events.append(TokenRejected(_REFRESH, TokenFailure.BAD_CLAIMS))
            return UnauthorizedReason.NO_CREDENTIALS

        # Reload the user before rotating: a disabled user's session ends here,
        # and a directory failure leaves the session untouched.
        identity: Identity | None = yield LoadUser(user_id)
        if identity is None:
            if (yield RevokeSession(session_id)):
                events.append(SessionRevoked(user_id, session_id, RevokeCause.USER_DISABLED))
            return UnauthorizedReason.USER_DISABLED

        salt = random(SALT_BYTES)
        successor = derive_successor(secret, salt)
        rotation = Rotation(
            session_id=session_id,
            presented=verifier_of(secret),
            successor=verifier_of(successor),
            salt=salt,
            now=now,
            idle_seconds=self._config.refresh_idle_ttl,
            grace_seconds=self._config.grace_seconds,
        )
        result: RotationResult = yield RotateSession(rotation)
        outcome = result.outcome
        if outcome is RotationOutcome.ROTATED or outcome is RotationOutcome.GRACE:
            grace = outcome is RotationOutcome.GRACE
            if grace:
                # Same successor as the rotation being replayed: parallel tabs converge.
                assert result.salt is not None
                successor = derive_successor(secret, result.salt)
            session = result.session
            assert session is not None
            events.append(Refreshed(user_id, session_id, session.generation, grace))
            return self._issue(identity, user_id, session, successor, now, events)
        if outcome is RotationOutcome.REUSED_PREVIOUS or outcome is RotationOutcome.REUSED_UNKNOWN:
            cause = (
                ReuseCause.PREDECESSOR_AFTER_GRACE
                if outcome is RotationOutcome.REUSED_PREVIOUS
                else ReuseCause.OLDER_GENERATION
            )
            events.append(ReuseDetected(user_id, session_id, cause))
            events.append(SessionRevoked(user_id, session_id, RevokeCause.REUSE))
            return UnauthorizedReason.REFRESH_REUSED
        why = SessionEnded.EXPIRED if outcome is RotationOutcome.EXPIRED else SessionEnded.UNKNOWN
        events.append(RefreshEnded(user_id, session_id, why))
        return UnauthorizedReason.SESSION_ENDED

    def _login(
        self, request: Request, now: float, random: Callable[[int], bytes], events: list[Event]
    ) -> Generator[Need, Any, Reissue | UnauthorizedReason]:
        credentials = request.credentials
        user_id: str | None
        if isinstance(credentials, PasswordCredentials):
            method, username = "password", credentials.username
            if (
                not self._passwords
                or type(username) is not str
                or type(credentials.password) is not str
            ):
                events.append(LoginFailed(LoginFailure.BAD_PASSWORD, method, None))
                return UnauthorizedReason.LOGIN_FAILED
            user_id = yield VerifyPassword(username, credentials.password)
            if user_id is None:
                events.append(LoginFailed(LoginFailure.BAD_PASSWORD, method, username))
                return UnauthorizedReason.LOGIN_FAILED
        elif isinstance(credentials, ExternalTokenCredentials):
            method = credentials.provider
            # Type checks first: client-supplied values may be unhashable.
            if type(method) is not str or method not in self._providers:
                events.append(LoginFailed(LoginFailure.UNKNOWN_PROVIDER, str(method)))
                return UnauthorizedReason.LOGIN_FAILED
            if type(credentials.token) is not str:
                events.append(LoginFailed(LoginFailure.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            external: ExternalIdentity | None = yield VerifyExternalToken(
                method, credentials.token, now
            )
            if external is None:
                events.append(LoginFailed(LoginFailure.BAD_EXTERNAL_TOKEN, method))
                return UnauthorizedReason.LOGIN_FAILED
            user_id = yield LinkExternal(external)
            if user_id is None:
                events.append(LoginFailed(LoginFailure.NOT_LINKED, method))
                return UnauthorizedReason.LOGIN_FAILED
        else:
            events.append(LoginFailed(LoginFailure.UNKNOWN_PROVIDER, type(credentials).__name__))
            return UnauthorizedReason.LOGIN_FAILED

        identity: Identity | None = yield LoadUser(user_id)
        if identity is None:
            events.append(LoginFailed(LoginFailure.USER_DISABLED, method))
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
        yield CreateSession(NewSession(session, verifier_of(secret)))
        events.append(LoggedIn(user_id, session.session_id, method))
        return self._issue(identity, user_id, session, secret, now, events)

    def _issue(
        self,
        identity: Identity,
        user_id: str,
        session: SessionInfo,
        secret: bytes,
        now: float,
        events: list[Event],
    ) -> Reissue:
        iat = int(now)
        # No token outlives its session: both expiries stop at the session's.
        access_exp = min(iat + self._config.access_ttl, int(session.absolute_expires_at))
        refresh_exp = int(session.idle_expires_at)
        access_claims = {
            **identity.claims,
            "sub": user_id,
            "sid": session.session_id,
            "iat": iat,
            "exp": access_exp,
        }
        refresh_claims = {
            "sub": user_id,
            "sid": session.session_id,
            "rs": _b64(secret),
            "iat": iat,
            "exp": refresh_exp,
        }
        codec, policy = self._codec, self._config.cookies
        cookies = (
            render_set_cookie(
                self._names[0],
                codec.seal(_ACCESS, access_claims),
                max_age=access_exp - iat,
                policy=policy,
            ),
            render_set_cookie(
                self._names[1],
                codec.seal(_REFRESH, refresh_claims),
                max_age=refresh_exp - iat,
                policy=policy,
            ),
        )
        return Reissue(access_claims, cookies, tuple(events))

    # logout ------------------------------------------------------------------

    def logout(self, request: Request, now: float) -> Steps:
        """Revoke the session the request's cookies name and clear both cookies.

        The session is found through the refresh token, else the access token;
        an expired access token still names its session, within the leeway only.
        """
        if request.method not in _SAFE_METHODS:
            forbidden = self._cross_origin(request)
            if forbidden is not None:
                return forbidden
        events: list[Event] = []
        if request.cookies is not None:
            tokens: tuple[object, object] = (
                request.cookies.get(self._names[0]),
                request.cookies.get(self._names[1]),
            )
        elif request.cookie_header:
            tokens = read_auth_cookies(request.cookie_header, self._policy)
        else:
            tokens = (None, None)
        for purpose, token in ((_REFRESH, tokens[1]), (_ACCESS, tokens[0])):
            if type(token) is not str:
                continue
            try:
                claims = self._codec.open(purpose, token, now)
            except InvalidToken:
                continue
            session_id = claims.get("sid")
            if type(session_id) is str:
                try:
                    revoked = yield RevokeSession(session_id)
                except PortError as failure:
                    events.append(PortFailed(failure.port, failure.error))
                    return Unavailable(failure.error, failure.port, tuple(events))
                if revoked:
                    events.append(SessionRevoked(claims["sub"], session_id, RevokeCause.LOGOUT))
                break
        return Unauthorized(UnauthorizedReason.LOGGED_OUT, self._clear, tuple(events))


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
