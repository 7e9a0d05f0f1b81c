"""The two drivers: :class:`Flow` (sync) and :class:`AsyncFlow` (async).

Both wrap the one decision core (:mod:`tokenflow._flow`). A driver's only job
is to answer the core's needs by calling the ports, and to throw a
:class:`~tokenflow._flow.PortError` into the core when a port raises. Neither
contains a decision: everything they share (construction, the checks of the
ports, the need-to-port table) lives in :class:`_Driver`, and the two ``_run``
loops below are the whole difference between sync and async.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ._config import FlowConfig
from ._errors import ConfigError
from ._flow import (
    BindDevice,
    CheckThrottle,
    CreateSession,
    FindAccount,
    FlowCore,
    LinkExternal,
    LoadDeviceKey,
    LoadUser,
    Need,
    Pending,
    PortError,
    ReleaseAttempt,
    ReserveAttempt,
    ResetThrottle,
    RevokeSession,
    RotateSession,
    Steps,
    VerifyDeviceProof,
    VerifyExternalToken,
    VerifyPassword,
)
from ._keyring import KeyRing
from ._model import Decision, Request
from ._sessions import SessionInfo
from ._token import Purpose, TokenCodec
from .ports import (
    AsyncExternalTokenVerifier,
    AsyncLoginThrottle,
    AsyncPasswordVerifier,
    AsyncSessionStore,
    AsyncUserDirectory,
    DeviceProofVerifier,
    ExternalTokenVerifier,
    LoginThrottle,
    PasswordVerifier,
    SessionStore,
    UserDirectory,
)

__all__ = ["AsyncFlow", "Flow"]

_PORT_METHODS: Final = {
    "store": ("create", "rotate", "revoke", "revoke_user", "sessions_of"),
    "users": ("load_user", "link_external"),
    "passwords": ("verify_password",),
    "external": ("verify_token",),
    "throttle": ("failures", "reserve", "release", "reset"),
    "accounts": ("account_key",),
    "device store": ("bind_device", "device_key_of"),
    "proofs": ("verify",),
}
"""What the flow calls on each port: checked when a flow is built."""

_DEVICE_KEY_CACHE: Final = 4096
"""Device keys of bound sessions a flow remembers (public keys, ~150 bytes each)."""


def _check_port(port: str, name: str, obj: object, *, asynchronous: bool) -> None:
    """Raise ConfigError unless ``obj`` has every method of ``port``, of the right kind.

    A sync port handed to :class:`AsyncFlow` (or the reverse) would otherwise
    fail on every request, or worse, look like it worked: an un-awaited
    coroutine is truthy, so a logout would report a revocation that never ran.
    """
    for method in _PORT_METHODS[port]:
        function = getattr(obj, method, None)
        if function is None or not callable(function):
            raise ConfigError(
                f"{name} ({type(obj).__name__}) has no {method}() method; "
                f"see tokenflow.ports for what the {port} port must provide"
            )
        is_async = inspect.iscoroutinefunction(function)
        if asynchronous and not is_async:
            raise ConfigError(
                f"{name}.{method} ({type(obj).__name__}) is not a coroutine function: "
                "AsyncFlow needs async ports (async def), e.g. the Async... store"
            )
        if not asynchronous and (is_async or inspect.isasyncgenfunction(function)):
            raise ConfigError(
                f"{name}.{method} ({type(obj).__name__}) is a coroutine function: "
                "Flow needs sync ports; use AsyncFlow for async ones"
            )


class _Driver:
    """What :class:`Flow` and :class:`AsyncFlow` share: everything but I/O."""

    __slots__ = (
        "_clock",
        "_core",
        "_device_keys",
        "_device_keys_lock",
        "_external",
        "_passwords",
        "_proofs",
        "_random",
        "_store",
        "_throttle",
        "_users",
    )

    def __init__(
        self,
        keyring: KeyRing,
        store: object,
        users: object,
        passwords: object | None,
        external: Mapping[str, object] | None,
        throttle: object | None,
        config: FlowConfig | None,
        clock: Callable[[], float],
        *,
        asynchronous: bool,
        proofs: object | None = None,
    ) -> None:
        config = FlowConfig() if config is None else config
        if not isinstance(config, FlowConfig):
            raise ConfigError("config must be a FlowConfig")
        if not isinstance(keyring, KeyRing):
            raise ConfigError("a flow needs a KeyRing: KeyRing.parse(text) or KeyRing.generate()")
        if not callable(clock):
            raise ConfigError("clock must be a callable returning seconds since the epoch")
        external = dict(external or {})
        _check_port("store", "store", store, asynchronous=asynchronous)
        _check_port("users", "users", users, asynchronous=asynchronous)
        accounts = False
        if passwords is not None:
            _check_port("passwords", "passwords", passwords, asynchronous=asynchronous)
            # Optional: a verifier that names accounts gets its throttle counted per account.
            if getattr(passwords, "account_key", None) is not None:
                _check_port("accounts", "passwords", passwords, asynchronous=asynchronous)
                accounts = True
        if throttle is not None:
            _check_port("throttle", "throttle", throttle, asynchronous=asynchronous)
        for name, verifier in external.items():
            if not isinstance(name, str) or not name:
                raise ConfigError("external verifiers are keyed by non-empty provider names")
            _check_port("external", f"external[{name!r}]", verifier, asynchronous=asynchronous)
        if config.device_binding is not None:
            if proofs is None:
                raise ConfigError(
                    "FlowConfig.device_binding needs a proof verifier: "
                    "proofs=tokenflow.dbsc.DbscProofVerifier()"
                )
            # The verifier is CPU work called in place by both drivers: always sync.
            _check_port("proofs", "proofs", proofs, asynchronous=False)
            _check_port("device store", "store", store, asynchronous=asynchronous)
        elif proofs is not None:
            raise ConfigError("proofs is given but FlowConfig.device_binding is not set")
        policy = config.cookies
        names = {Purpose.ACCESS: policy.access_name, Purpose.REFRESH: policy.refresh_name}
        codec = TokenCodec(keyring, leeway=config.leeway, cookie_names=names)
        self._core = FlowCore(
            codec,
            config,
            passwords=passwords is not None,
            providers=frozenset(external),
            throttle=throttle is not None,
            accounts=accounts,
        )
        self._store: Any = store
        self._users: Any = users
        self._passwords: Any = passwords
        self._external: dict[str, Any] = external
        self._throttle: Any = throttle
        self._proofs: Any = proofs
        # Device keys of bound sessions, by session id: a bound key never
        # changes (the first key wins), so a cached one saves a store round
        # trip per device refresh. Safe because the store's rotation checks
        # the key again, atomically, and a revoked session rotates nowhere.
        self._device_keys: OrderedDict[str, str] = OrderedDict()
        self._device_keys_lock = threading.Lock()
        self._clock = clock
        self._random: Callable[[int], bytes] = os.urandom

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._core.config

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _known_key(self, session_id: str) -> str | None:
        with self._device_keys_lock:
            key = self._device_keys.get(session_id)
            if key is not None:
                self._device_keys.move_to_end(session_id)
            return key

    def _remember_key(self, session_id: str, key: object) -> None:
        if type(key) is not str:
            return
        with self._device_keys_lock:
            self._device_keys[session_id] = key
            self._device_keys.move_to_end(session_id)
            if len(self._device_keys) > _DEVICE_KEY_CACHE:
                self._device_keys.popitem(last=False)

    def _verify_proof(self, need: VerifyDeviceProof) -> Any:
        """The one port both drivers call in place: proof verification is CPU work."""
        return self._proofs.verify(need.token, key=need.key, algorithms=need.algorithms)

    def _device_config(self) -> None:
        if self._core.config.device_binding is None:
            raise ConfigError("device-bound sessions are off: set FlowConfig.device_binding")

    def _call_port(self, need: Need) -> Any:
        """Call the port method that answers ``need``: a value for :class:`Flow`,
        an awaitable for :class:`AsyncFlow` (their ports differ only in that)."""
        if type(need) is RotateSession:
            return self._store.rotate(need.rotation)
        if type(need) is LoadUser:
            return self._users.load_user(need.user_id)
        if type(need) is CreateSession:
            return self._store.create(need.session)
        if type(need) is RevokeSession:
            return self._store.revoke(need.session_id)
        if type(need) is VerifyPassword:
            return self._passwords.verify_password(need.username, need.password)
        if type(need) is VerifyExternalToken:
            return self._external[need.provider].verify_token(need.token, now=need.now)
        if type(need) is LinkExternal:
            return self._users.link_external(need.identity)
        if type(need) is CheckThrottle:
            return self._throttle.failures(list(need.keys), now=need.now)
        if type(need) is LoadDeviceKey:
            return self._store.device_key_of(need.session_id, now=need.now)
        if type(need) is BindDevice:
            return self._store.bind_device(need.session_id, need.device_key, now=need.now)
        if type(need) is ReserveAttempt:
            return self._throttle.reserve(
                list(need.keys), list(need.expected), now=need.now, window=need.window
            )
        if type(need) is ReleaseAttempt:
            return self._throttle.release(list(need.keys), now=need.now)
        if type(need) is FindAccount:
            return self._passwords.account_key(need.username)
        assert type(need) is ResetThrottle
        return self._throttle.reset(list(need.keys))


class Flow(_Driver):
    """Authenticates requests with sync ports.

    ``keyring`` seals and opens tokens; ``store`` keeps refresh sessions;
    ``users`` reloads identities at login and refresh. ``passwords`` enables
    username/password login; ``external`` maps provider names to external
    token verifiers (:mod:`tokenflow.oidc` has them for the usual
    providers); ``throttle`` counts failed logins and slows guessing down
    (see :class:`~tokenflow.ThrottlePolicy`). ``clock`` (seconds since the
    epoch) is read once per call when no ``now`` is given.

    Every port is checked here: a missing method, or an ``async def`` one
    (an async port belongs to :class:`AsyncFlow`), raises
    :class:`~tokenflow.ConfigError` naming the port and the method.

    Thread-safe: one instance serves every request.
    """

    __slots__ = ()

    def __init__(
        self,
        keyring: KeyRing,
        store: SessionStore,
        users: UserDirectory,
        *,
        passwords: PasswordVerifier | None = None,
        external: Mapping[str, ExternalTokenVerifier] | None = None,
        throttle: LoginThrottle | None = None,
        config: FlowConfig | None = None,
        clock: Callable[[], float] = time.time,
        proofs: DeviceProofVerifier | None = None,
    ) -> None:
        super().__init__(
            keyring,
            store,
            users,
            passwords,
            external,
            throttle,
            config,
            clock,
            asynchronous=False,
            proofs=proofs,
        )

    def decide(self, request: Request, *, now: float | None = None) -> Decision:
        """The decision for one request, in the order of :mod:`tokenflow._flow`.

        Never raises for anything the client sent; raises ``ValueError`` for a
        ``now`` that is not a finite number of seconds since the epoch.
        """
        if now is None:
            now = self._clock()
        first = self._core.begin(request, now)
        if not isinstance(first, Pending):
            return first
        return self._run(self._core.resume(first, request, now, self._random))

    def login(self, request: Request, *, now: float | None = None) -> Decision:
        """Log in with ``request.credentials``, even if the request carries a session.

        Reissue on success: a new session whose cookies replace the old ones,
        and every session the request's cookies named is revoked. On failure
        (Unauthorized, TooManyRequests) the old session is left alone. A
        request without credentials is Unauthorized.
        """
        return self._run(self._core.login(request, self._now(now), self._random))

    def logout(self, request: Request, *, now: float | None = None) -> Decision:
        """Revoke the request's sessions and clear both cookies: :class:`~tokenflow.LoggedOut`,
        or Forbidden for a cross-origin request, or Unavailable if the store failed."""
        return self._run(self._core.logout(request, now=self._now(now)))

    def register_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session registration (DBSC): DeviceRegistered on success.

        ``request.session_response`` is the ``Secure-Session-Response`` header.
        Raises ConfigError if ``FlowConfig.device_binding`` is not set.
        """
        self._device_config()
        return self._run(self._core.register_device(request, self._now(now)))

    def refresh_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session refresh: Reissue, DeviceProofRequired (403
        with a challenge) or Unauthorized. Raises ConfigError if DBSC is off."""
        self._device_config()
        return self._run(self._core.refresh_device(request, self._now(now), self._random))

    def revoke_session(self, session_id: str) -> bool:
        """Revoke one session (its refresh token stops working at once)."""
        return self._store.revoke(session_id)  # type: ignore[no-any-return]

    def revoke_user(self, user_id: str) -> int:
        """Revoke every session of a user: "log out everywhere"."""
        return self._store.revoke_user(user_id)  # type: ignore[no-any-return]

    def sessions_of(self, user_id: str, *, now: float | None = None) -> Sequence[SessionInfo]:
        """A user's live sessions, oldest first, for a "your devices" page."""
        return self._store.sessions_of(user_id, now=self._now(now))  # type: ignore[no-any-return]

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
                if type(need) is VerifyDeviceProof:
                    answer = self._verify_proof(need)
                elif type(need) is LoadDeviceKey:
                    answer = self._known_key(need.session_id)
                    if answer is None:
                        answer = self._call_port(need)
                        self._remember_key(need.session_id, answer)
                else:
                    answer = self._call_port(need)
            except Exception as exc:
                failure = PortError(need, exc)


class AsyncFlow(_Driver):
    """Authenticates requests with async ports; same decisions as :class:`Flow`.

    Every port method must be a coroutine function (``async def``): a sync
    port raises :class:`~tokenflow.ConfigError` here, naming the port and the
    method. ``port_timeout`` (seconds, optional) bounds every port call: a
    port that hangs past it yields Unavailable instead of holding the request.
    """

    __slots__ = ("_timeout",)

    def __init__(
        self,
        keyring: KeyRing,
        store: AsyncSessionStore,
        users: AsyncUserDirectory,
        *,
        passwords: AsyncPasswordVerifier | None = None,
        external: Mapping[str, AsyncExternalTokenVerifier] | None = None,
        throttle: AsyncLoginThrottle | None = None,
        config: FlowConfig | None = None,
        clock: Callable[[], float] = time.time,
        port_timeout: float | None = None,
        proofs: DeviceProofVerifier | None = None,
    ) -> None:
        if port_timeout is not None and (
            isinstance(port_timeout, bool)
            or not isinstance(port_timeout, (int, float))
            or not port_timeout > 0
        ):
            raise ConfigError("port_timeout must be a positive number of seconds, or None")
        super().__init__(
            keyring,
            store,
            users,
            passwords,
            external,
            throttle,
            config,
            clock,
            asynchronous=True,
            proofs=proofs,
        )
        self._timeout = port_timeout

    async def decide(self, request: Request, *, now: float | None = None) -> Decision:
        """The decision for one request (see :meth:`Flow.decide`)."""
        if now is None:
            now = self._clock()
        first = self._core.begin(request, now)
        if not isinstance(first, Pending):
            return first
        return await self._run(self._core.resume(first, request, now, self._random))

    async def login(self, request: Request, *, now: float | None = None) -> Decision:
        """Log in with ``request.credentials`` (see :meth:`Flow.login`)."""
        return await self._run(self._core.login(request, self._now(now), self._random))

    async def logout(self, request: Request, *, now: float | None = None) -> Decision:
        """Revoke the request's sessions and clear both cookies (see :meth:`Flow.logout`)."""
        return await self._run(self._core.logout(request, now=self._now(now)))

    async def register_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session registration (see :meth:`Flow.register_device`)."""
        self._device_config()
        return await self._run(self._core.register_device(request, self._now(now)))

    async def refresh_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session refresh (see :meth:`Flow.refresh_device`)."""
        self._device_config()
        return await self._run(self._core.refresh_device(request, self._now(now), self._random))

    async def revoke_session(self, session_id: str) -> bool:
        """Revoke one session."""
        return await self._store.revoke(session_id)  # type: ignore[no-any-return]

    async def revoke_user(self, user_id: str) -> int:
        """Revoke every session of a user."""
        return await self._store.revoke_user(user_id)  # type: ignore[no-any-return]

    async def sessions_of(self, user_id: str, *, now: float | None = None) -> Sequence[SessionInfo]:
        """A user's live sessions, oldest first."""
        return await self._store.sessions_of(user_id, now=self._now(now))  # type: ignore[no-any-return]

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
                if type(need) is VerifyDeviceProof:
                    answer = self._verify_proof(need)
                elif type(need) is LoadDeviceKey and (
                    (answer := self._known_key(need.session_id)) is not None
                ):
                    pass
                elif self._timeout is None:
                    answer = await self._call_port(need)
                else:
                    answer = await asyncio.wait_for(self._call_port(need), self._timeout)
                if type(need) is LoadDeviceKey:
                    self._remember_key(need.session_id, answer)
            except asyncio.TimeoutError as exc:
                # Hosts match on the builtin TimeoutError; before 3.11 asyncio
                # raised a class of its own, which is translated here.
                error: Exception = exc
                if not isinstance(exc, TimeoutError):
                    error = TimeoutError(f"the {need.port} port timed out")
                failure = PortError(need, error)
            except Exception as exc:
                failure = PortError(need, exc)
