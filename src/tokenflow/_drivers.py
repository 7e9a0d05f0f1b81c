"""The two drivers: :class:`Flow` (sync) and :class:`AsyncFlow` (async).

Both wrap the one decision core (:mod:`tokenflow._flow`). A driver's only job
is to answer the core's needs by calling the ports, and to throw a
:class:`~tokenflow._flow.PortError` into the core when a port raises. Neither
contains a decision: everything they share (construction, the checks of the
ports, the need-to-port table) lives in :class:`_Driver`, and the two ``_run``
loops below are the whole difference between sync and async.

The public seam for adapters (middleware, telemetry) is here too:
:meth:`Flow.begin` answers the port-free first step of a decision without
blocking (a valid access token, a refused cross-origin request), and
:meth:`Flow.finish` runs the rest; a :class:`FlowObserver` given at
construction sees every decision and every port call. Nothing outside this
module and :mod:`tokenflow._flow` reaches into a flow.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from ._config import FlowConfig
from ._errors import ConfigError
from ._flow import (
    AuthorizationRequest,
    BindDevice,
    CheckThrottle,
    CreateSession,
    ExchangeCode,
    FactorsOf,
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
    RunAttempt,
    Steps,
    VerifyDeviceProof,
    VerifyExternalToken,
    VerifyPasskey,
    VerifyPassword,
    VerifySecondFactor,
)
from ._keyring import KeyRing
from ._model import (
    AuthorizationCodeCredentials,
    Decision,
    Process,
    ProviderRedirect,
    Reissue,
    Request,
    Requirement,
    StepUpRequired,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from ._sessions import SessionInfo
from ._token import Purpose, TokenCodec
from .ports import (
    AsyncExternalTokenVerifier,
    AsyncLoginThrottle,
    AsyncPasskeyVerifier,
    AsyncPasswordVerifier,
    AsyncSecondFactorVerifier,
    AsyncSessionStore,
    AsyncUserDirectory,
    DeviceProofVerifier,
    ExternalTokenVerifier,
    LoginThrottle,
    PasskeyVerifier,
    PasswordVerifier,
    SecondFactorVerifier,
    SessionStore,
    UserDirectory,
)

__all__ = [
    "AsyncFlow",
    "Flow",
    "FlowObserver",
    "FlowOperation",
    "PendingDecision",
    "PortCall",
    "combine_observers",
]

T = TypeVar("T")

_PORT_METHODS: Final = {
    "store": ("create", "rotate", "revoke", "revoke_user", "sessions_of"),
    "users": ("load_user", "link_external"),
    "passwords": ("verify_password",),
    "external": ("verify_token",),
    "code flow": ("authorization_url", "exchange_code"),
    "throttle": ("failures", "reserve", "release", "reset"),
    "accounts": ("account_key",),
    "device store": ("bind_device", "device_key_of"),
    "proofs": ("verify",),
    "passkeys": ("verify_assertion",),
    "second_factors": ("factors_of", "verify_second_factor"),
}
"""What the flow calls on each port: checked when a flow is built."""

_DEVICE_KEY_CACHE: Final = 4096
"""Device keys of bound sessions a flow remembers (public keys, ~150 bytes each)."""


_METHOD_OF_NEED: Final[dict[type, str]] = {
    RotateSession: "rotate",
    LoadUser: "load_user",
    CreateSession: "create",
    RevokeSession: "revoke",
    VerifyPassword: "verify_password",
    VerifyExternalToken: "verify_token",
    LinkExternal: "link_external",
    CheckThrottle: "failures",
    LoadDeviceKey: "device_key_of",
    BindDevice: "bind_device",
    ReserveAttempt: "reserve",
    ReleaseAttempt: "release",
    FindAccount: "account_key",
    ResetThrottle: "reset",
    VerifyDeviceProof: "verify",
    VerifyPasskey: "verify_assertion",
    AuthorizationRequest: "authorization_url",
    ExchangeCode: "exchange_code",
    FactorsOf: "factors_of",
    VerifySecondFactor: "verify_second_factor",
    RunAttempt: "attempt",
}
"""The port method that answers each need (what :class:`PortCall` names)."""

_observer_log = logging.getLogger("tokenflow.observer")


# -- the public seam: the first step, observers ---------------------------------


class FlowOperation(enum.Enum):
    """Which method of a flow took a decision (what a :class:`FlowObserver` is told)."""

    DECIDE = "decide"
    """:meth:`Flow.decide`, or :meth:`Flow.begin` and :meth:`Flow.finish`."""
    LOGIN = "login"
    LOGOUT = "logout"
    REGISTER_DEVICE = "register_device"
    REFRESH_DEVICE = "refresh_device"
    STEP_UP = "step_up"


@dataclass(frozen=True, slots=True)
class PortCall:
    """One call of a flow to one of its ports, as a :class:`FlowObserver` sees it.

    ``port`` is the port's name (``"store"``, ``"users"``, ``"passwords"``,
    ``"external"``, ``"throttle"``, ``"proofs"``) and ``method`` the method
    called (``"rotate"``, ``"load_user"``...). ``start_ns`` is the wall-clock
    start in nanoseconds since the epoch (what tracing spans take);
    ``end_ns`` adds the duration measured on a monotonic clock, so
    :attr:`duration` never goes negative when the wall clock steps.
    ``failed`` is True when the call raised (or timed out): ``error_type``
    then names the exception's class. The exception itself is not carried,
    since its message may hold a connection string or a query's values.
    """

    port: str
    method: str
    start_ns: int
    end_ns: int
    failed: bool = False
    error_type: str | None = None

    @property
    def duration(self) -> float:
        """How long the call took, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


class FlowObserver(Protocol):
    """Sees what a flow does, for logs, metrics and traces; given as ``observer=``.

    Both methods are called on the thread (or event loop) that runs the
    flow, so keep them quick and non-blocking. An exception raised by an
    observer is logged (logger ``tokenflow.observer``) and otherwise
    ignored: a broken exporter must not cost a user the rotated cookies of
    a decision already committed to the store.
    """

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        """Called once for every decision the flow returns, :class:`~tokenflow.Process` included."""

    def on_port_call(self, call: PortCall) -> None:
        """Called after every port call, whether it succeeded or failed."""


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """What :meth:`Flow.begin` returns when a decision needs its ports.

    Opaque: hand it to :meth:`Flow.finish` (or :meth:`AsyncFlow.finish`),
    once. It holds the request (cookies included), so it is not logged.
    """

    _state: Pending = field(repr=False)
    _request: Request = field(repr=False)
    _now: float = field(repr=False)


def _notify(
    observer: FlowObserver, operation: FlowOperation, request: Request, decision: Decision
) -> None:
    try:
        observer.on_decision(operation, request, decision)
    except Exception:
        _observer_log.exception("a tokenflow observer failed on a %s decision", operation.value)


def _report(observer: FlowObserver, call: PortCall) -> None:
    try:
        observer.on_port_call(call)
    except Exception:
        _observer_log.exception("a tokenflow observer failed on a %s port call", call.port)


class _Observers:
    """Several observers as one: each is told in turn, and one that raises
    neither stops the others nor reaches the flow."""

    __slots__ = ("_members",)

    def __init__(self, members: tuple[FlowObserver, ...]) -> None:
        self._members = members

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        for member in self._members:
            _notify(member, operation, request, decision)

    def on_port_call(self, call: PortCall) -> None:
        for member in self._members:
            _report(member, call)


def _is_observer(observer: object) -> bool:
    return callable(getattr(observer, "on_decision", None)) and callable(
        getattr(observer, "on_port_call", None)
    )


def combine_observers(*observers: FlowObserver) -> FlowObserver:
    """One :class:`FlowObserver` that tells each of ``observers``, in order.

    For a flow watched by more than one party (say your own logging of
    ``decision.events`` and :class:`tokenflow.otel.OpenTelemetryObserver`)::

        flow = Flow(keyring, store, users, observer=combine_observers(audit, telemetry))

    An observer that raises is logged (logger ``tokenflow.observer``) and the
    others are still told. Raises :class:`~tokenflow.ConfigError` when given
    nothing, or something without ``on_decision()`` and ``on_port_call()``.
    """
    if not observers:
        raise ConfigError("combine_observers() needs at least one observer")
    members: list[FlowObserver] = []
    for observer in observers:
        if not _is_observer(observer):
            raise ConfigError(
                f"{type(observer).__name__} is not an observer: it needs on_decision() and "
                "on_port_call() methods (see tokenflow.observers.FlowObserver)"
            )
        # A combination inside a combination is flattened: one level of calls.
        members.extend(observer._members if type(observer) is _Observers else (observer,))
    return members[0] if len(members) == 1 else _Observers(tuple(members))


def _port_call(need: Need, start_ns: int, began: int, error: BaseException | None) -> PortCall:
    end_ns = start_ns + (time.perf_counter_ns() - began)
    return PortCall(
        need.port,
        _METHOD_OF_NEED[type(need)],
        start_ns,
        end_ns,
        error is not None,
        None if error is None else type(error).__name__,
    )


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
        "_begin",
        "_clock",
        "_core",
        "_device_keys",
        "_device_keys_lock",
        "_external",
        "_observer",
        "_passkeys",
        "_passwords",
        "_proofs",
        "_random",
        "_second_factors",
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
        observer: FlowObserver | None = None,
        passkeys: object | None = None,
        second_factors: object | None = None,
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
        # Providers whose client also runs the authorization-code flow (it has
        # the code-flow methods): they can start sign-ins and take callbacks.
        code_providers = frozenset(
            name for name, verifier in external.items() if hasattr(verifier, "exchange_code")
        )
        for name in code_providers:
            _check_port(
                "code flow", f"external[{name!r}]", external[name], asynchronous=asynchronous
            )
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
        # -- passkeys (issue 21) --
        if passkeys is not None:
            _check_port("passkeys", "passkeys", passkeys, asynchronous=asynchronous)
        # -- end passkeys --
        if second_factors is not None:
            _check_port(
                "second_factors", "second_factors", second_factors, asynchronous=asynchronous
            )
            if throttle is None:
                # A six-digit code falls to an unthrottled guesser in hours.
                raise ConfigError(
                    "second_factors needs a throttle: codes are short, and only the throttle "
                    "keeps guessing slow (throttle=tokenflow.throttles.MemoryThrottle() or a "
                    "shared backend)"
                )
        if observer is not None and not _is_observer(observer):
            raise ConfigError(
                "observer must have on_decision() and on_port_call() methods "
                "(see tokenflow.observers.FlowObserver)"
            )
        policy = config.cookies
        names = {Purpose.ACCESS: policy.access_name, Purpose.REFRESH: policy.refresh_name}
        # The partial-login cookie's name follows the access cookie's prefix.
        names[Purpose.PARTIAL_LOGIN] = (
            next((p for p in ("__Host-", "__Secure-") if policy.access_name.startswith(p)), "")
            + "tf-2fa"
        )
        codec = TokenCodec(keyring, leeway=config.leeway, cookie_names=names)
        self._core = FlowCore(
            codec,
            config,
            passwords=passwords is not None,
            providers=frozenset(external),
            throttle=throttle is not None,
            accounts=accounts,
            passkeys=passkeys is not None,
            second_factors=second_factors is not None,
            code_providers=code_providers,
            # A client built with response_mode="form_post" comes back by POST.
            form_post_providers=frozenset(
                name
                for name in code_providers
                if getattr(external[name], "response_mode", None) == "form_post"
            ),
        )
        # Bound once: the access path pays no attribute lookup for it.
        self._begin = self._core.begin
        self._store: Any = store
        self._users: Any = users
        self._passwords: Any = passwords
        self._external: dict[str, Any] = external
        self._throttle: Any = throttle
        self._proofs: Any = proofs
        self._passkeys: Any = passkeys
        self._second_factors: Any = second_factors
        # Device keys of bound sessions, by session id: a bound key never
        # changes (the first key wins), so a cached one saves a store round
        # trip per device refresh. Safe because the store's rotation checks
        # the key again, atomically, and a revoked session rotates nowhere.
        self._device_keys: OrderedDict[str, str] = OrderedDict()
        self._device_keys_lock = threading.Lock()
        self._clock = clock
        self._random: Callable[[int], bytes] = os.urandom
        self._observer = observer

    @property
    def config(self) -> FlowConfig:
        """The validated configuration."""
        return self._core.config

    @property
    def code_providers(self) -> frozenset[str]:
        """The providers whose client runs the authorization-code flow (sign-in
        through the provider's pages): :meth:`~Flow.start_provider_login` takes them."""
        return self._core.code_providers

    @property
    def providers(self) -> frozenset[str]:
        """The names of the external verifiers (``external``)."""
        return self._core.providers

    @property
    def form_post_providers(self) -> frozenset[str]:
        """The code-flow providers whose callback is a cross-site POST
        (``response_mode=form_post``, as Sign in with Apple answers)."""
        return self._core.form_post_providers

    @property
    def store(self) -> Any:
        """The session store given at construction."""
        return self._store

    @property
    def passkeys(self) -> Any:
        """The passkey verifier given at construction (``passkeys=``), if any."""
        return self._passkeys

    @property
    def second_factors(self) -> Any:
        """The second-factor verifier given at construction (``second_factors=``), if any."""
        return self._second_factors

    @property
    def partial_cookie_name(self) -> str:
        """The name of the partial-login cookie (``__Host-tf-2fa`` by default), which
        :class:`~tokenflow.SecondFactorRequired` sets and the second step reads."""
        return self._core.partial_cookie_name

    @property
    def observer(self) -> FlowObserver | None:
        """The observer given at construction, if any."""
        return self._observer

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the flow reads when a call is given no ``now``: an edge that
        asks another port something timed (an enrolment's expiry) asks it on
        this clock, so the two agree."""
        return self._clock

    def require(
        self, decision: Process | Reissue, requirement: Requirement, *, now: float | None = None
    ) -> Process | Reissue | StepUpRequired:
        """``decision`` (a signed-in one), or :class:`~tokenflow.StepUpRequired`
        (carrying its cookies) when its session falls short of ``requirement``.

        The same check :attr:`Request.requirement <tokenflow.Request.requirement>`
        makes, for a requirement that depends on who the user is, so known only
        after a decision: an edge that lets a user replace a second factor
        requires assurance level 2 of a session whose account has one. No port
        is called (a plain call on :class:`AsyncFlow` too).
        """
        if type(decision) not in (Process, Reissue):
            raise TypeError("require() takes a Process or Reissue decision")
        if not isinstance(requirement, Requirement):
            raise TypeError("require() takes a tokenflow.Requirement")
        return self._core.require(decision, requirement, self._now(now))

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _attempt_steps(
        self,
        user_id: str,
        attempt: Callable[[float], Any],
        client_address: str | None,
        now: float | None,
    ) -> Any:
        if self._second_factors is None:
            raise ConfigError("second_factor_attempt needs a flow with second_factors")
        if type(user_id) is not str or not user_id:
            raise TypeError("second_factor_attempt takes a user id (a non-empty str)")
        if not callable(attempt):
            raise TypeError("second_factor_attempt takes a callable attempt(now)")
        return self._core.second_factor_attempt(user_id, client_address, attempt, self._now(now))

    def begin(self, request: Request, *, now: float | None = None) -> Decision | PendingDecision:
        """The first step of :meth:`~Flow.decide`, which calls no port and never blocks.

        A :class:`~tokenflow.Decision` when the request is answered without a
        port (a valid access token: :class:`~tokenflow.Process`; a refused
        cross-origin request; an oversized cookie), else a
        :class:`PendingDecision` for :meth:`~Flow.finish`, which calls the
        ports. ``begin`` then ``finish`` is exactly ``decide``, and the
        observer sees the decision once either way. This is how an event
        loop serves a sync :class:`Flow`: ``begin`` on the loop, and only
        ``finish`` in a worker thread.
        """
        if now is None:
            now = self._clock()
        first = self._begin(request, now)
        if type(first) is Pending:
            return PendingDecision(first, request, now)
        if self._observer is not None:
            _notify(self._observer, _DECIDE, request, first)  # type: ignore[arg-type]
        return first  # type: ignore[return-value]

    def _observed(self, operation: FlowOperation, request: Request, decision: Decision) -> Decision:
        if self._observer is not None:
            _notify(self._observer, operation, request, decision)
        return decision

    def _steps_of(self, pending: PendingDecision) -> Steps:
        if type(pending) is not PendingDecision:
            raise TypeError("finish() takes the PendingDecision that begin() returned")
        return self._core.resume(pending._state, pending._request, pending._now, self._random)

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
        if type(need) is VerifyPasskey:
            return self._passkeys.verify_assertion(need.response, now=need.now)
        if type(need) is FactorsOf:
            return self._second_factors.factors_of(need.user_id)
        if type(need) is VerifySecondFactor:
            return self._second_factors.verify_second_factor(need.user_id, need.code, now=need.now)
        if type(need) is RunAttempt:
            return need.attempt(need.now)
        if type(need) is AuthorizationRequest:
            return self._external[need.provider].authorization_url(
                state=need.state, nonce=need.nonce, code_challenge=need.code_challenge
            )
        if type(need) is ExchangeCode:
            return self._external[need.provider].exchange_code(
                need.code,
                code_verifier=need.code_verifier,
                nonce=need.nonce,
                issuer=need.issuer,
                now=need.now,
            )
        assert type(need) is ResetThrottle
        return self._throttle.reset(list(need.keys))

    def transaction_clearing(self, credentials: AuthorizationCodeCredentials) -> tuple[str, ...]:
        """The ``Set-Cookie`` value deleting the sign-in transaction cookie a provider
        callback names. :meth:`~Flow.login` adds it to Reissue and Unauthorized;
        an HTTP edge adds it to the other answers (429, 503, 403) it sends."""
        return self._core.transaction_clearing(credentials)


class Flow(_Driver):
    """Authenticates requests with sync ports.

    ``keyring`` seals and opens tokens; ``store`` keeps refresh sessions;
    ``users`` reloads identities at login and refresh. ``passwords`` enables
    username/password login; ``external`` maps provider names to external
    token verifiers (:mod:`tokenflow.oidc` has them for the usual
    providers); ``passkeys`` (a :class:`tokenflow.passkeys.Passkeys`)
    enables passkey login; ``second_factors`` (a :class:`tokenflow.mfa.SecondFactors`)
    makes accounts with a second factor log in in two steps and enables
    :meth:`step_up` (it needs ``throttle``); ``throttle`` counts failed
    logins and slows guessing down (see :class:`~tokenflow.ThrottlePolicy`).
    ``clock`` (seconds since the epoch) is read once per call when no
    ``now`` is given. ``observer`` (a
    :class:`FlowObserver`) sees every decision and every port call; without
    one, nothing is timed or reported.

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
        observer: FlowObserver | None = None,
        passkeys: PasskeyVerifier | None = None,
        second_factors: SecondFactorVerifier | None = None,
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
            observer=observer,
            passkeys=passkeys,
            second_factors=second_factors,
        )

    def decide(self, request: Request, *, now: float | None = None) -> Decision:
        """The decision for one request, in the order of :mod:`tokenflow._flow`.

        Never raises for anything the client sent; raises ``ValueError`` for a
        ``now`` that is not a finite number of seconds since the epoch.
        """
        if now is None:
            now = self._clock()
        first = self._begin(request, now)
        if type(first) is not Pending:
            if self._observer is not None:
                _notify(self._observer, _DECIDE, request, first)  # type: ignore[arg-type]
            return first  # type: ignore[return-value]
        steps = self._core.resume(first, request, now, self._random)
        return self._observed(_DECIDE, request, self._run(steps))

    def finish(self, pending: PendingDecision) -> Decision:
        """The rest of a decision that :meth:`begin` left pending: calls the ports
        (blocking, so run it in a worker thread when on an event loop)."""
        steps = self._steps_of(pending)
        return self._observed(_DECIDE, pending._request, self._run(steps))

    def login(self, request: Request, *, now: float | None = None) -> Decision:
        """Log in with ``request.credentials``, even if the request carries a session.

        Reissue on success: a new session whose cookies replace the old ones,
        and every session the request's cookies named is revoked. On failure
        (Unauthorized, TooManyRequests) the old session is left alone. A
        request without credentials is Unauthorized.
        """
        steps = self._core.login(request, self._now(now), self._random)
        return self._observed(FlowOperation.LOGIN, request, self._run(steps))

    def step_up(self, request: Request, *, now: float | None = None) -> Decision:
        """Raise the assurance of the request's session (see :class:`~tokenflow.Requirement`).

        ``request`` carries the session's refresh cookie and credentials for
        its user: :class:`~tokenflow.SecondFactorCredentials` (assurance level
        2), :class:`~tokenflow.PasswordCredentials` (a fresh ``auth_time`` for
        a session at level 1; a level-2 session needs its second factor for
        that) or :class:`~tokenflow.PasskeyCredentials`. Reissue on success: the same
        session, rotated with the raised ``aal``/``amr``/``auth_time``; no
        other session changes. Unauthorized (no cookie cleared) when the
        credentials are refused or name another user; TooManyRequests when
        throttled.
        """
        steps = self._core.step_up(request, self._now(now), self._random)
        return self._observed(FlowOperation.STEP_UP, request, self._run(steps))

    def second_factor_attempt(
        self,
        user_id: str,
        attempt: Callable[[float], T],
        *,
        client_address: str | None = None,
        now: float | None = None,
    ) -> T | TooManyRequests | Unavailable:
        """Check a second-factor code outside a login, throttled like one.

        ``attempt(now)`` checks the code (the first code of an enrolment:
        ``lambda now: factors.confirm_totp(user_id, code, now=now)``); it is
        counted under the account's second-factor throttle keys (and
        ``client_address``'s), the same as a login's second step. Too many
        recent failures: :class:`~tokenflow.TooManyRequests`, and ``attempt``
        is not called. Otherwise its answer is returned; a
        :class:`~tokenflow.ports.SecondFactorRefused` stays counted as a
        failure, anything else starts the account's count over. If
        ``attempt`` or the throttle raises: :class:`~tokenflow.Unavailable`.
        Raises ConfigError when the flow has no ``second_factors``.
        """
        steps = self._attempt_steps(user_id, attempt, client_address, now)
        return self._run(steps)  # type: ignore[return-value]

    def start_provider_login(
        self, request: Request, provider: str, *, next_path: str = "/", now: float | None = None
    ) -> ProviderRedirect | Unauthorized | Unavailable:
        """Start a sign-in with ``provider`` (OpenID Connect authorization code, PKCE,
        state, nonce): ProviderRedirect (302 to the provider, with the sealed
        transaction cookie). ``next_path`` is where the callback's Reissue sends the
        browser (a same-site path; anything else becomes ``/``). An unknown
        provider is Unauthorized; a client that fails is Unavailable.

        Finish it by calling :meth:`login` with the callback's
        :class:`~tokenflow.AuthorizationCodeCredentials`.
        """
        steps = self._core.start_provider_login(
            request, provider, next_path, self._now(now), self._random
        )
        return self._run(steps)  # type: ignore[return-value]

    def logout(self, request: Request, *, now: float | None = None) -> Decision:
        """Revoke the request's sessions and clear both cookies: :class:`~tokenflow.LoggedOut`,
        or Forbidden for a cross-origin request, or Unavailable if the store failed."""
        steps = self._core.logout(request, now=self._now(now))
        return self._observed(FlowOperation.LOGOUT, request, self._run(steps))

    def register_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session registration (DBSC): DeviceRegistered on success.

        ``request.session_response`` is the ``Secure-Session-Response`` header.
        Raises ConfigError if ``FlowConfig.device_binding`` is not set.
        """
        self._device_config()
        steps = self._core.register_device(request, self._now(now))
        return self._observed(FlowOperation.REGISTER_DEVICE, request, self._run(steps))

    def refresh_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session refresh: Reissue, DeviceProofRequired (403
        with a challenge) or Unauthorized. Raises ConfigError if DBSC is off."""
        self._device_config()
        steps = self._core.refresh_device(request, self._now(now), self._random)
        return self._observed(FlowOperation.REFRESH_DEVICE, request, self._run(steps))

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
                if type(need) is LoadDeviceKey:
                    answer = self._known_key(need.session_id)
                    if answer is None:
                        answer = self._port(need)
                        self._remember_key(need.session_id, answer)
                else:
                    answer = self._port(need)
            except Exception as exc:
                failure = PortError(need, exc)

    def _call(self, need: Need) -> Any:
        if type(need) is VerifyDeviceProof:
            return self._verify_proof(need)
        return self._call_port(need)

    def _port(self, need: Need) -> Any:
        observer = self._observer
        if observer is None:
            return self._call(need)
        start_ns, began = time.time_ns(), time.perf_counter_ns()
        try:
            answer = self._call(need)
        except Exception as exc:
            _report(observer, _port_call(need, start_ns, began, exc))
            raise
        _report(observer, _port_call(need, start_ns, began, None))
        return answer


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
        observer: FlowObserver | None = None,
        passkeys: AsyncPasskeyVerifier | None = None,
        second_factors: AsyncSecondFactorVerifier | None = None,
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
            observer=observer,
            passkeys=passkeys,
            second_factors=second_factors,
        )
        self._timeout = port_timeout

    async def decide(self, request: Request, *, now: float | None = None) -> Decision:
        """The decision for one request (see :meth:`Flow.decide`)."""
        if now is None:
            now = self._clock()
        first = self._begin(request, now)
        if type(first) is not Pending:
            if self._observer is not None:
                _notify(self._observer, _DECIDE, request, first)  # type: ignore[arg-type]
            return first  # type: ignore[return-value]
        steps = self._core.resume(first, request, now, self._random)
        return self._observed(_DECIDE, request, await self._run(steps))

    async def finish(self, pending: PendingDecision) -> Decision:
        """The rest of a decision that :meth:`begin` left pending (see :meth:`Flow.finish`)."""
        steps = self._steps_of(pending)
        return self._observed(_DECIDE, pending._request, await self._run(steps))

    async def login(self, request: Request, *, now: float | None = None) -> Decision:
        """Log in with ``request.credentials`` (see :meth:`Flow.login`)."""
        steps = self._core.login(request, self._now(now), self._random)
        return self._observed(FlowOperation.LOGIN, request, await self._run(steps))

    async def step_up(self, request: Request, *, now: float | None = None) -> Decision:
        """Raise the assurance of the request's session (see :meth:`Flow.step_up`)."""
        steps = self._core.step_up(request, self._now(now), self._random)
        return self._observed(FlowOperation.STEP_UP, request, await self._run(steps))

    async def second_factor_attempt(
        self,
        user_id: str,
        attempt: Callable[[float], Awaitable[T]],
        *,
        client_address: str | None = None,
        now: float | None = None,
    ) -> T | TooManyRequests | Unavailable:
        """Check a second-factor code outside a login, throttled like one (see
        :meth:`Flow.second_factor_attempt`); ``attempt(now)`` returns an awaitable."""
        steps = self._attempt_steps(user_id, attempt, client_address, now)
        return await self._run(steps)  # type: ignore[return-value]

    async def start_provider_login(
        self, request: Request, provider: str, *, next_path: str = "/", now: float | None = None
    ) -> ProviderRedirect | Unauthorized | Unavailable:
        """Start a sign-in with ``provider`` (see :meth:`Flow.start_provider_login`)."""
        steps = self._core.start_provider_login(
            request, provider, next_path, self._now(now), self._random
        )
        return await self._run(steps)  # type: ignore[return-value]

    async def logout(self, request: Request, *, now: float | None = None) -> Decision:
        """Revoke the request's sessions and clear both cookies (see :meth:`Flow.logout`)."""
        steps = self._core.logout(request, now=self._now(now))
        return self._observed(FlowOperation.LOGOUT, request, await self._run(steps))

    async def register_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session registration (see :meth:`Flow.register_device`)."""
        self._device_config()
        steps = self._core.register_device(request, self._now(now))
        return self._observed(FlowOperation.REGISTER_DEVICE, request, await self._run(steps))

    async def refresh_device(self, request: Request, *, now: float | None = None) -> Decision:
        """Serve a device-bound session refresh (see :meth:`Flow.refresh_device`)."""
        self._device_config()
        steps = self._core.refresh_device(request, self._now(now), self._random)
        return self._observed(FlowOperation.REFRESH_DEVICE, request, await self._run(steps))

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
                if type(need) is LoadDeviceKey and (
                    (answer := self._known_key(need.session_id)) is not None
                ):
                    pass
                elif self._observer is None:
                    answer = await self._port(need)
                else:
                    answer = await self._observed_port(need, self._observer)
                if type(need) is LoadDeviceKey:
                    self._remember_key(need.session_id, answer)
            except TimeoutError as exc:
                # Hosts match on the builtin TimeoutError; before 3.11 asyncio
                # raised a class of its own, which is translated here.
                error: Exception = exc
                if not isinstance(exc, TimeoutError):
                    error = TimeoutError(f"the {need.port} port timed out")
                failure = PortError(need, error)
            except Exception as exc:
                failure = PortError(need, exc)

    async def _port(self, need: Need) -> Any:
        if type(need) is VerifyDeviceProof:
            return self._verify_proof(need)
        if self._timeout is None:
            return await self._call_port(need)
        return await asyncio.wait_for(self._call_port(need), self._timeout)

    async def _observed_port(self, need: Need, observer: FlowObserver) -> Any:
        start_ns, began = time.time_ns(), time.perf_counter_ns()
        try:
            answer = await self._port(need)
        except Exception as exc:
            _report(observer, _port_call(need, start_ns, began, exc))
            raise
        _report(observer, _port_call(need, start_ns, began, None))
        return answer


_DECIDE: Final = FlowOperation.DECIDE
