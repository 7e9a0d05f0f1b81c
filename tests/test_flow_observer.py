"""The flow's public seam for adapters: begin/finish, and the observer.

What a middleware or a telemetry adapter relies on: ``begin`` answers the
access step without a port; ``begin`` + ``finish`` is ``decide``; the
observer sees every decision once (Process included) with its operation,
and every port call with its timing and outcome; a broken observer costs
no user their cookies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from _web_client import ALICE, SAME_ORIGIN, Jar, asgi_call, ports
from tokenflow import (
    AsyncFlow,
    ConfigError,
    DeviceBinding,
    DeviceRegistered,
    Flow,
    FlowConfig,
    Forbidden,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
)
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.observers import FlowOperation, PortCall
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    Fault,
    FaultyStore,
)
from tokenflow.testing.dbsc import DbscClient
from tokenflow.web import PendingDecision

LOGIN = PasswordCredentials(ALICE.username, ALICE.password)


@dataclass
class Observer:
    decisions: list[tuple[FlowOperation, Request, Any]] = field(default_factory=list)
    calls: list[PortCall] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    def on_decision(self, operation: FlowOperation, request: Request, decision: Any) -> None:
        self.decisions.append((operation, request, decision))
        self.threads.append(threading.get_ident())

    def on_port_call(self, call: PortCall) -> None:
        self.calls.append(call)

    def kinds(self) -> list[tuple[str, str]]:
        return [(op.value, type(decision).__name__) for op, _, decision in self.decisions]


class NoStore:
    """A store that fails the test if the flow touches it."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the store was called")

    create = rotate = revoke = revoke_user = sessions_of = _refuse


def sync_flow(clock: FakeClock, store: Any = None, observer: Any = None, **kwargs: Any) -> Flow:
    users, passwords = ports(clock)
    return Flow(
        KeyRing.generate(),
        MemoryStore() if store is None else store,
        users,
        passwords=passwords,
        clock=clock,
        observer=observer,
        **kwargs,
    )


def signed_in(flow: Flow, clock: FakeClock) -> Browser:
    browser = Browser(clock)
    decision = flow.login(browser.request("POST", credentials=LOGIN))
    assert isinstance(decision, Reissue)
    browser.receive(decision.set_cookies)
    return browser


# -- begin and finish ---------------------------------------------------------------


def test_begin_answers_a_valid_access_token_without_any_port() -> None:
    clock = FakeClock()
    keyring = KeyRing.generate()
    users, passwords = ports(clock)
    minting = Flow(keyring, MemoryStore(), users, passwords=passwords, clock=clock)
    browser = signed_in(minting, clock)
    # The same keys, and a store that fails the test when touched.
    reading = Flow(keyring, NoStore(), users, clock=clock)  # type: ignore[arg-type]
    first = reading.begin(browser.request())
    assert isinstance(first, Process)
    assert first.user_id == "alice"


@pytest.mark.parametrize("age", [0, 600, 10**6])
def test_begin_then_finish_is_decide(age: int) -> None:
    """Same decision kind, same user, same cookies to clear, whatever the state."""
    clock = FakeClock()
    flow = sync_flow(clock)
    one, two = signed_in(flow, clock), None
    two = Browser(clock, jar=dict(one.jar))
    clock.advance(age)
    first = flow.begin(one.request())
    stepped = first if not isinstance(first, PendingDecision) else flow.finish(first)
    # The other tab shares the cookies: within the grace window it gets the
    # same successor, so the two paths must agree on the decision's shape.
    direct = flow.decide(two.request())
    assert type(stepped) is type(direct)
    assert getattr(stepped, "user_id", None) == getattr(direct, "user_id", None)
    if isinstance(stepped, Unauthorized):
        assert stepped.reason == direct.reason  # type: ignore[union-attr]
        assert stepped.set_cookies == direct.set_cookies


def test_begin_leaves_a_refresh_pending_and_finish_rotates() -> None:
    clock = FakeClock()
    flow = sync_flow(clock)
    browser = signed_in(flow, clock)
    clock.advance(600)
    first = flow.begin(browser.request())
    assert isinstance(first, PendingDecision)
    assert "__Host" not in repr(first)
    assert browser.cookie_header() not in repr(first)
    decision = flow.finish(first)
    assert isinstance(decision, Reissue)


def test_finish_takes_only_what_begin_returned() -> None:
    flow = sync_flow(FakeClock())
    with pytest.raises(TypeError, match="PendingDecision"):
        flow.finish(Process({"sid": "x", "sub": "y"}))  # type: ignore[arg-type]


def test_begin_refuses_a_cross_site_post_without_a_port() -> None:
    clock = FakeClock()
    flow = sync_flow(clock, store=NoStore())
    request = Request(method="POST", sec_fetch_site="cross-site", origin="https://evil.example")
    assert isinstance(flow.begin(request), Forbidden)


# -- the observer ---------------------------------------------------------------------


def test_the_observer_sees_every_decision_once_with_its_operation() -> None:
    clock = FakeClock()
    observer = Observer()
    flow = sync_flow(clock, observer=observer)
    browser = signed_in(flow, clock)  # login
    flow.decide(browser.request())  # Process, from the access step
    clock.advance(600)
    pending = flow.begin(browser.request())  # refresh: reported by finish only
    assert isinstance(pending, PendingDecision)
    assert len(observer.decisions) == 2
    reissue = flow.finish(pending)
    browser.receive(reissue.set_cookies)
    first = flow.begin(browser.request())  # Process through begin
    assert isinstance(first, Process)
    flow.decide(Request())  # no cookie at all
    flow.decide(Request(method="POST", sec_fetch_site="cross-site"))
    logout = flow.logout(browser.request("POST"))
    assert isinstance(logout, LoggedOut)
    assert observer.kinds() == [
        ("login", "Reissue"),
        ("decide", "Process"),
        ("decide", "Reissue"),
        ("decide", "Process"),
        ("decide", "Unauthorized"),
        ("decide", "Forbidden"),
        ("logout", "LoggedOut"),
    ]
    # The very objects the caller got back, with the request they answer.
    assert observer.decisions[2][2] is reissue
    assert observer.decisions[2][1].cookie_header is not None


def test_the_observer_times_every_port_call() -> None:
    clock = FakeClock()
    observer = Observer()
    flow = sync_flow(clock, observer=observer)
    browser = signed_in(flow, clock)
    login_calls = [(c.port, c.method) for c in observer.calls]
    assert ("passwords", "verify_password") in login_calls
    assert ("store", "create") in login_calls
    observer.calls.clear()
    flow.decide(browser.request())
    assert observer.calls == []  # the access path calls no port
    clock.advance(600)
    flow.decide(browser.request())
    assert [(c.port, c.method) for c in observer.calls] == [
        ("users", "load_user"),
        ("store", "rotate"),
    ]
    for call in observer.calls:
        assert not call.failed
        assert call.error_type is None
        assert call.end_ns >= call.start_ns
        assert call.duration >= 0
        # Wall-clock nanoseconds since the epoch (what tracing spans take).
        assert call.start_ns > 1_600_000_000 * 10**9


def test_a_failing_port_call_is_reported_failed_without_its_message() -> None:
    clock = FakeClock()
    observer = Observer()
    store = FaultyStore(MemoryStore())
    flow = sync_flow(clock, store=store, observer=observer)
    browser = signed_in(flow, clock)
    clock.advance(600)
    store.arm(Fault.BEFORE_COMMIT, ["rotate"], error=ConnectionError("postgres://u:secret@db"))
    observer.calls.clear()
    decision = flow.decide(browser.request())
    assert isinstance(decision, Unavailable)
    call = observer.calls[-1]
    assert (call.port, call.method, call.failed) == ("store", "rotate", True)
    assert call.error_type == "ConnectionError"
    assert "secret" not in repr(call)
    assert observer.kinds()[-1] == ("decide", "Unavailable")


def test_an_async_flow_reports_the_same_and_a_timeout_as_a_failed_call() -> None:
    clock = FakeClock()
    observer = Observer()
    users, passwords = ports(clock)
    store = AsyncFaultyStore(AsyncMemoryStore(), hang_seconds=5)
    flow = AsyncFlow(
        KeyRing.generate(),
        store,
        AsyncFakeUserDirectory(users),
        passwords=AsyncFakePasswordVerifier(passwords),
        clock=clock,
        port_timeout=0.05,
        observer=observer,
    )

    async def scenario() -> None:
        browser = Browser(clock)
        login = await flow.login(browser.request("POST", credentials=LOGIN))
        browser.receive(login.set_cookies)
        assert isinstance(await flow.decide(browser.request()), Process)
        clock.advance(600)
        pending = flow.begin(browser.request())
        assert isinstance(pending, PendingDecision)
        assert isinstance(await flow.finish(pending), Reissue)
        clock.advance(600)
        store.arm(Fault.HANG, ["rotate"])
        assert isinstance(await flow.decide(browser.request()), Unavailable)

    asyncio.run(scenario())
    assert observer.kinds() == [
        ("login", "Reissue"),
        ("decide", "Process"),
        ("decide", "Reissue"),
        ("decide", "Unavailable"),
    ]
    last = observer.calls[-1]
    assert (last.port, last.method, last.failed, last.error_type) == (
        "store",
        "rotate",
        True,
        "TimeoutError",
    )
    assert last.duration >= 0.05


def test_device_bound_operations_are_reported() -> None:
    clock = FakeClock()
    observer = Observer()
    users = FakeUserDirectory()
    users.add_user("ada")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({"ada": "pw"}),
        config=FlowConfig(device_binding=DeviceBinding()),
        clock=clock,
        proofs=DbscProofVerifier(),
        observer=observer,
    )
    client = DbscClient(clock)
    login = flow.login(client.request("POST", credentials=PasswordCredentials("ada", "pw")))
    client.receive_decision(login)
    assert isinstance(client.register(flow), DeviceRegistered)
    clock.advance(600)
    assert isinstance(client.refresh(flow), Reissue)
    operations = [op for op, _, _ in observer.decisions]
    assert FlowOperation.REGISTER_DEVICE in operations
    assert FlowOperation.REFRESH_DEVICE in operations
    assert ("proofs", "verify") in [(c.port, c.method) for c in observer.calls]


def test_a_broken_observer_is_logged_and_the_decision_keeps_its_cookies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def on_decision(self, *args: Any) -> None:
            raise RuntimeError("exporter down")

        def on_port_call(self, *args: Any) -> None:
            raise RuntimeError("exporter down")

    clock = FakeClock()
    flow = sync_flow(clock, observer=Broken())
    with caplog.at_level(logging.ERROR, logger="tokenflow.observer"):
        browser = signed_in(flow, clock)
        clock.advance(600)
        decision = flow.decide(browser.request())
    # The rotation is committed in the store: losing its cookies would turn
    # the browser's next request into a reuse.
    assert isinstance(decision, Reissue)
    assert decision.set_cookies
    assert any("observer failed" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("observer", [object(), "log", type("Half", (), {"on_decision": print})()])
def test_an_observer_without_both_methods_is_a_config_error(observer: object) -> None:
    with pytest.raises(ConfigError, match=r"on_decision.*on_port_call"):
        sync_flow(FakeClock(), observer=observer)


def test_the_flow_shows_its_observer_and_store() -> None:
    observer = Observer()
    store = MemoryStore()
    flow = sync_flow(FakeClock(), store=store, observer=observer)
    assert flow.observer is observer
    assert flow.store is store
    assert sync_flow(FakeClock()).observer is None


# -- a sync flow under ASGI ------------------------------------------------------------


def test_a_sync_flow_under_asgi_decides_access_on_the_loop_and_rotates_in_a_thread() -> None:
    clock = FakeClock()
    observer = Observer()
    rotations: list[int] = []

    class ThreadNoting(MemoryStore):
        def rotate(self, rotation: Any) -> Any:
            rotations.append(threading.get_ident())
            return super().rotate(rotation)

    flow = sync_flow(clock, store=ThreadNoting(), observer=observer)
    loop_threads: list[int] = []
    decisions: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        loop_threads.append(threading.get_ident())
        decisions.append(auth_of(scope).decision)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    asgi = TokenflowMiddleware(app, flow)
    jar = Jar()
    login = f"username={ALICE.username}&password={ALICE.password}".encode()
    form = ("content-type", "application/x-www-form-urlencoded")
    assert (
        asgi_call(asgi, "POST", "/auth/login", [*SAME_ORIGIN, form], login, jar=jar).status == 303
    )
    observer.threads.clear()
    asgi_call(asgi, "GET", "/", jar=jar)
    assert isinstance(decisions[-1], Process)
    # The access decision was reported on the thread that ran the app: the loop.
    assert observer.threads == [loop_threads[-1]]
    clock.advance(600)
    asgi_call(asgi, "GET", "/", jar=jar)
    assert isinstance(decisions[-1], Reissue)
    assert rotations
    assert rotations[-1] != loop_threads[-1]
    assert observer.threads[-1] != loop_threads[-1]


def test_begin_answers_a_request_that_needs_no_port_without_one() -> None:
    """No refresh token and no credentials: 401 from begin, the same as decide's."""
    clock = FakeClock()
    flow = sync_flow(clock, store=NoStore())
    policy = flow.config.cookies
    for request in (
        Request(),
        Request(cookie_header="theme=dark"),
        Request(cookie_header=f"{policy.access_name}=not-a-token"),
    ):
        first = flow.begin(request)
        assert isinstance(first, Unauthorized), request
        decided = flow.decide(request)
        assert isinstance(decided, Unauthorized)
        assert (first.reason, first.set_cookies) == (decided.reason, decided.set_cookies)
        assert [type(e) for e in first.events] == [type(e) for e in decided.events]
    stale = flow.begin(Request(cookie_header=f"{policy.access_name}=not-a-token"))
    assert isinstance(stale, Unauthorized)
    assert [c.partition("=")[0] for c in stale.set_cookies] == [policy.access_name]
    # A refresh token, or credentials, need the ports.
    assert isinstance(
        flow.begin(Request(cookie_header=f"{policy.refresh_name}=x")), PendingDecision
    )
    assert isinstance(flow.begin(Request(credentials=LOGIN)), PendingDecision)
