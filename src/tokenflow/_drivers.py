"""The two drivers: :class:`Flow` (sync) and :class:`AsyncFlow` (async).

Both wrap the one decision core (:mod:`tokenflow._flow`). A driver's only job
is to answer the core's needs by calling the ports, and to throw a
:class:`~tokenflow._flow.PortError` into the core when a port raises. Neither
contains a decision: the two ``_run`` loops below are the whole difference
between sync and async.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._config import FlowConfig
from ._errors import ConfigError
from ._flow import (
    CreateSession,
    FlowCore,
    LinkExternal,
    LoadUser,
    Need,
    Pending,
    PortError,
    RevokeSession,
    RotateSession,
    Steps,
    VerifyExternalToken,
    VerifyPassword,
)
from ._keyring import KeyRing
from ._model import Decision, Request
from ._sessions import SessionInfo
from ._token import Purpose, TokenCodec
from .ports import (
    AsyncExternalTokenVerifier,
    AsyncPasswordVerifier,
    AsyncSessionStore,
    AsyncUserDirectory,
    ExternalTokenVerifier,
    PasswordVerifier,
    SessionStore,
    UserDirectory,
)

__all__ = ["AsyncFlow", "Flow"]


def _core(
    keyring: KeyRing,
    config: FlowConfig,
    passwords: object | None,
    external: Mapping[str, object],
) -> FlowCore:
    if not isinstance(config, FlowConfig):
        raise ConfigError("config must be a FlowConfig")
    for name in external:
        if not isinstance(name, str) or not name:
            raise ConfigError("external verifiers are keyed by non-empty provider names")
    policy = config.cookies
    names = {Purpose.ACCESS: policy.access_name, Purpose.REFRESH: policy.refresh_name}
    codec = TokenCodec(keyring, leeway=config.leeway, cookie_names=names)
    return FlowCore(codec, config, passwords=passwords is not None, providers=frozenset(external))


def _call_port(flow: Flow | AsyncFlow, need: Need) -> Any:
    """Call the port method that answers ``need``: a value for :class:`Flow`,
    an awaitable for :class:`AsyncFlow` (their ports differ only in that)."""
    if type(need) is RotateSession:
        return flow._store.rotate(need.rotation)
    if type(need) is LoadUser:
        return flow._users.load_user(need.user_id)
    if type(need) is CreateSession:
        return flow._store.create(need.session)
    if type(need) is RevokeSession:
        return flow._store.revoke(need.session_id)
    if type(need) is VerifyPassword:
        assert flow._passwords is not None
        return flow._passwords.verify_password(need.username, need.password)
    if type(need) is VerifyExternalToken:
        return flow._external[need.provider].verify_token(need.token, need.now)
    assert type(need) is LinkExternal
    return flow._users.link_external(need.identity)


class Flow:
    """Authenticates requests with sync ports.

    ``keyring`` seals and opens tokens; ``store`` keeps refresh sessions;
    ``users`` reloads identities at login and refresh. ``passwords`` enables
    username/password login; ``external`` maps provider names to ID-token
    verifiers. ``clock`` (seconds since the epoch) is read once per call when
    no ``now`` is given.

    Thread-safe: one instance serves every request.
    """

    def __init__(
        self,
        keyring: KeyRing,
        store: SessionStore,
        users: UserDirectory,
        *,
        passwords: PasswordVerifier | None = None,
        external: Mapping[str, ExternalTokenVerifier] | None = None,
        config: FlowConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._external = dict(external or {})
        self._core = _core(keyring, config or FlowConfig(), passwords, self._external)
        self._store = store
        self._users = users
        self._passwords = passwords
        self._clock = clock
        self._random: Callable[[int], bytes] = os.urandom

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._core.config

    def decide(self, request: Request, now: float | None = None) -> Decision:
        """The decision for one request. Never raises for anything the client sent."""
        if now is None:
            now = self._clock()
        first = self._core.begin(request, now)
        if not isinstance(first, Pending):
            return first
        return self._run(self._core.resume(first, request, now, self._random))

    def logout(self, request: Request, now: float | None = None) -> Decision:
        """Revoke the request's session and clear both cookies (an Unauthorized
        with reason LOGGED_OUT), or Forbidden for a cross-origin request."""
        return self._run(self._core.logout(request, self._clock() if now is None else now))

    def revoke_session(self, session_id: str) -> bool:
        """Revoke one session (its refresh token stops working at once)."""
        return self._store.revoke(session_id)

    def revoke_user(self, user_id: str) -> int:
        """Revoke every session of a user: "log out everywhere"."""
        return self._store.revoke_user(user_id)

    def sessions_of(self, user_id: str, now: float | None = None) -> Sequence[SessionInfo]:
        """A user's live sessions, oldest first, for a "your devices" page."""
        return self._store.sessions_of(user_id, self._clock() if now is None else now)

    def _run(self, steps: Steps) -> Decision:
        answer: Any = None
        failure: PortError | None = None
        while True:
            try:
                need = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            failure = None
            try:
                answer = _call_port(self, need)
            except Exception as exc:
                failure = PortError(need, exc)


class AsyncFlow:
    """Authenticates requests with async ports; same decisions as :class:`Flow`.

    ``port_timeout`` (seconds, optional) bounds every port call: a port that
    hangs past it yields Unavailable instead of holding the request.
    """

    def __init__(
        self,
        keyring: KeyRing,
        store: AsyncSessionStore,
        users: AsyncUserDirectory,
        *,
        passwords: AsyncPasswordVerifier | None = None,
        external: Mapping[str, AsyncExternalTokenVerifier] | None = None,
        config: FlowConfig | None = None,
        clock: Callable[[], float] = time.time,
        port_timeout: float | None = None,
    ) -> None:
        if port_timeout is not None and not port_timeout > 0:
            raise ConfigError("port_timeout must be a positive number of seconds, or None")
        self._external = dict(external or {})
        self._core = _core(keyring, config or FlowConfig(), passwords, self._external)
        self._store = store
        self._users = users
        self._passwords = passwords
        self._clock = clock
        self._timeout = port_timeout
        self._random: Callable[[int], bytes] = os.urandom

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._core.config

    async def decide(self, request: Request, now: float | None = None) -> Decision:
        """The decision for one request. Never raises for anything the client sent."""
        if now is None:
            now = self._clock()
        first = self._core.begin(request, now)
        if not isinstance(first, Pending):
            return first
        return await self._run(self._core.resume(first, request, now, self._random))

    async def logout(self, request: Request, now: float | None = None) -> Decision:
        """Revoke the request's session and clear both cookies (see :meth:`Flow.logout`)."""
        return await self._run(self._core.logout(request, self._clock() if now is None else now))

    async def revoke_session(self, session_id: str) -> bool:
        """Revoke one session."""
        return await self._store.revoke(session_id)

    async def revoke_user(self, user_id: str) -> int:
        """Revoke every session of a user."""
        return await self._store.revoke_user(user_id)

    async def sessions_of(self, user_id: str, now: float | None = None) -> Sequence[SessionInfo]:
        """A user's live sessions, oldest first."""
        return await self._store.sessions_of(user_id, self._clock() if now is None else now)

    async def _run(self, steps: Steps) -> Decision:
        answer: Any = None
        failure: PortError | None = None
        while True:
            try:
                need = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            failure = None
            try:
                if self._timeout is None:
                    answer = await _call_port(self, need)
                else:
                    answer = await asyncio.wait_for(_call_port(self, need), self._timeout)
            except asyncio.TimeoutError as exc:
                # Hosts match on the builtin TimeoutError; before 3.11 asyncio
                # raised a class of its own, which is translated here.
                error: Exception = exc
                if not isinstance(exc, TimeoutError):
                    error = TimeoutError(f"the {need.port} port timed out")
                failure = PortError(need, error)
            except Exception as exc:
                failure = PortError(need, exc)
