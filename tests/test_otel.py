"""tokenflow.otel: the metrics and spans it emits, read back with the SDK's in-memory
reader and exporter, through Flow, AsyncFlow and the ASGI middleware; what never
reaches an attribute; the import rule; combine_observers."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from _web_client import ALICE, JSON, SAME_ORIGIN, Jar, asgi_call, ports
from tokenflow import (
    AsyncFlow,
    ConfigError,
    Decision,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tokenflow.asgi import TokenflowMiddleware
from tokenflow.observers import FlowOperation, PortCall, combine_observers
from tokenflow.otel import (
    DECISIONS,
    PORT_DURATION,
    PORT_DURATION_BUCKETS,
    PORT_FAILURES,
    SCOPE,
    SECURITY_EVENTS,
    OpenTelemetryObserver,
)
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakeExternalTokenVerifier,
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    FakeClock,
    FakeExternalTokenVerifier,
    Fault,
    FaultyStore,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle

ROOT = Path(__file__).resolve().parent.parent
HOST = "app.example"
PROVIDER = "idp"
PAST_ACCESS = FlowConfig().access_ttl + FlowConfig().leeway + 1
"""Seconds after which an access token no longer opens: the refresh path runs."""


# -- reading back what was emitted ----------------------------------------------------


@dataclass
class Telemetry:
    """An SDK meter and tracer provider with in-memory readers, and an observer on them."""

    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    observer: OpenTelemetryObserver = field(init=False)
    tracer_provider: TracerProvider = field(init=False)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.observer = OpenTelemetryObserver(
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            tracer_provider=self.tracer_provider,
        )

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == SCOPE
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def counts(self, name: str) -> dict[frozenset[tuple[str, Any]], int]:
        metric = self.metrics().get(name)
        if metric is None:
            return {}
        return {
            frozenset(point.attributes.items()): point.value
            for point in metric.data.data_points
            if point.value
        }

    def histogram(self, name: str) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
        metric = self.metrics().get(name)
        if metric is None:
            return {}
        return {frozenset(p.attributes.items()): p for p in metric.data.data_points}

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def every_string(self) -> list[str]:
        """Every name, unit, description, attribute key and value, span name and status."""
        strings: list[str] = []
        for name, metric in self.metrics().items():
            strings += [name, metric.unit, metric.description]
            for point in metric.data.data_points:
                for key, value in point.attributes.items():
                    strings += [key, str(value)]
        for span in self.spans():
            strings += [span.name, str(span.status.description)]
            for key, value in (span.attributes or {}).items():
                strings += [key, str(value)]
            for event in span.events:
                strings.append(event.name)
                strings += [f"{k}={v}" for k, v in (event.attributes or {}).items()]
        return strings


def attrs(**values: Any) -> frozenset[tuple[str, Any]]:
    """``attrs(tokenflow__decision="process")`` -> the attribute set, dots for ``__``."""
    return frozenset((key.replace("__", "."), value) for key, value in values.items())


def decision(operation: str, kind: str, status: int, **extra: Any) -> frozenset[tuple[str, Any]]:
    return attrs(
        tokenflow__operation=operation, tokenflow__decision=kind, tokenflow__status=status, **extra
    )


# -- a world that runs on either driver ----------------------------------------------


@dataclass
class World:
    """A flow of either kind over fakes, with a browser's cookie jar."""

    asynchronous: bool
    observer: Any
    throttle: bool = False
    clock: FakeClock = field(default_factory=FakeClock)
    flow: Flow | AsyncFlow = field(init=False)
    store: FaultyStore | AsyncFaultyStore = field(init=False)
    idp: FakeExternalTokenVerifier = field(default_factory=lambda: FakeExternalTokenVerifier())
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        users, passwords = ports(self.clock)
        users.link(PROVIDER, "subject-alice", "alice")
        extra: dict[str, Any] = {}
        if self.throttle:
            extra["config"] = FlowConfig(throttle=ThrottlePolicy(username=ThrottleRule(2, 30, 60)))
        if self.asynchronous:
            if self.throttle:
                extra["throttle"] = AsyncMemoryThrottle()
            self.store = AsyncFaultyStore(AsyncMemoryStore())
            self.flow = AsyncFlow(
                KeyRing.generate(),
                self.store,
                AsyncFakeUserDirectory(users),
                passwords=AsyncFakePasswordVerifier(passwords),
                external={PROVIDER: AsyncFakeExternalTokenVerifier(self.idp)},
                clock=self.clock,
                observer=self.observer,
                **extra,
            )
        else:
            if self.throttle:
                extra["throttle"] = MemoryThrottle()
            self.store = FaultyStore(MemoryStore())
            self.flow = Flow(
                KeyRing.generate(),
                self.store,
                users,
                passwords=passwords,
                external={PROVIDER: self.idp},
                clock=self.clock,
                observer=self.observer,
                **extra,
            )

    def request(self, method: str = "GET", **kw: Any) -> Request:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items()) or None
        kw.setdefault("cookie_header", header)
        return Request(method, sec_fetch_site="same-origin", host=HOST, **kw)

    def run(self, operation: str, request: Request) -> Decision:
        answer = getattr(self.flow, operation)(request)
        if inspect.isawaitable(answer):
            answer = asyncio.run(_awaited(answer))
        for line in answer.set_cookies:
            name, _, value = line.partition(";")[0].partition("=")
            if "Max-Age=0" in line or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer  # type: ignore[no-any-return]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


DRIVERS = pytest.mark.parametrize("asynchronous", [False, True], ids=["Flow", "AsyncFlow"])


# -- names, units, attributes -----------------------------------------------------------


def test_instruments_have_their_names_units_and_descriptions() -> None:
    telemetry = Telemetry()
    world = World(False, telemetry.observer)
    world.run("login", world.request("POST", credentials=ALICE))
    world.store.arm(Fault.BEFORE_COMMIT, ["revoke"])
    world.run("logout", world.request("POST"))
    found = telemetry.metrics()
    assert {name: m.unit for name, m in found.items()} == {
        DECISIONS: "{decision}",
        SECURITY_EVENTS: "{event}",
        PORT_FAILURES: "{failure}",
        PORT_DURATION: "s",
    }
    assert all(m.description for m in found.values())
    assert (DECISIONS, SECURITY_EVENTS, PORT_FAILURES, PORT_DURATION) == (
        "tokenflow.decisions",
        "tokenflow.security_events",
        "tokenflow.port.failures",
        "tokenflow.port.duration",
    )
    # The advised buckets reach the SDK: sub-millisecond store calls get their own.
    point = next(iter(telemetry.histogram(PORT_DURATION).values()))
    assert tuple(point.explicit_bounds) == PORT_DURATION_BUCKETS


@DRIVERS
def test_a_session_counted_from_login_to_logout(asynchronous: bool) -> None:
    telemetry = Telemetry()
    world = World(asynchronous, telemetry.observer)
    assert type(world.run("login", world.request("POST", credentials=ALICE))) is Reissue
    for _ in range(3):
        assert type(world.run("decide", world.request())) is Process
    world.clock.advance(PAST_ACCESS)
    assert type(world.run("decide", world.request())) is Reissue
    wrong = PasswordCredentials(ALICE.username, "not the password")
    assert type(world.run("login", world.request("POST", credentials=wrong))) is Unauthorized
    assert type(world.run("logout", world.request("POST"))) is LoggedOut
    assert type(world.run("decide", world.request())) is Unauthorized

    assert telemetry.counts(DECISIONS) == {
        decision("login", "reissue", 200): 1,
        decision("decide", "process", 200): 3,
        decision("decide", "reissue", 200): 1,
        decision("login", "unauthorized", 401, tokenflow__reason="login_failed"): 1,
        decision("logout", "logged_out", 200): 1,
        decision("decide", "unauthorized", 401, tokenflow__reason="no_credentials"): 1,
    }
    assert telemetry.counts(SECURITY_EVENTS) == {
        attrs(tokenflow__event="logged_in", tokenflow__login__method="password"): 1,
        attrs(
            tokenflow__event="token_rejected",
            tokenflow__reason="expired",
            tokenflow__token__purpose="access",
        ): 1,
        attrs(tokenflow__event="refreshed", tokenflow__refresh__grace=False): 1,
        attrs(
            tokenflow__event="login_failed",
            tokenflow__reason="bad_password",
            tokenflow__login__method="password",
        ): 1,
        attrs(tokenflow__event="session_revoked", tokenflow__reason="logout"): 1,
    }
    assert telemetry.counts(PORT_FAILURES) == {}
    calls = {k: p.count for k, p in telemetry.histogram(PORT_DURATION).items()}
    assert calls == {
        attrs(tokenflow__port__name="passwords", tokenflow__port__method="verify_password"): 2,
        attrs(tokenflow__port__name="users", tokenflow__port__method="load_user"): 2,
        attrs(tokenflow__port__name="store", tokenflow__port__method="create"): 1,
        attrs(tokenflow__port__name="store", tokenflow__port__method="rotate"): 1,
        attrs(tokenflow__port__name="store", tokenflow__port__method="revoke"): 1,
    }
    spans = telemetry.spans()
    assert [s.name for s in spans] == [
        "tokenflow passwords.verify_password",
        "tokenflow users.load_user",
        "tokenflow store.create",
        "tokenflow users.load_user",
        "tokenflow store.rotate",
        "tokenflow passwords.verify_password",
        "tokenflow store.revoke",
    ]
    for span in spans:
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == SCOPE
        port, _, method = span.name.removeprefix("tokenflow ").partition(".")
        assert dict(span.attributes or {}) == {
            "tokenflow.port.name": port,
            "tokenflow.port.method": method,
        }


@DRIVERS
def test_spans_take_the_port_calls_own_times_and_the_current_parent(asynchronous: bool) -> None:
    telemetry = Telemetry()
    seen: list[PortCall] = []

    class Recorder:
        def on_decision(self, operation: FlowOperation, request: Request, d: Decision) -> None:
            pass

        def on_port_call(self, call: PortCall) -> None:
            seen.append(call)

    world = World(asynchronous, combine_observers(Recorder(), telemetry.observer))
    tracer = telemetry.tracer_provider.get_tracer("the host")
    with tracer.start_as_current_span("POST /login") as server:
        world.run("login", world.request("POST", credentials=ALICE))
    *calls, parent = telemetry.spans()
    assert parent.name == "POST /login"
    assert len(calls) == len(seen) == 3
    for span, call in zip(calls, seen, strict=True):
        assert span.name == f"tokenflow {call.port}.{call.method}"
        assert (span.start_time, span.end_time) == (call.start_ns, call.end_ns)
        assert span.parent is not None
        assert span.parent.span_id == server.get_span_context().span_id
        assert span.context.trace_id == server.get_span_context().trace_id


@DRIVERS
def test_a_store_outage_counts_failures_503s_and_marks_spans(asynchronous: bool) -> None:
    telemetry = Telemetry()
    world = World(asynchronous, telemetry.observer)
    world.run("login", world.request("POST", credentials=ALICE))
    world.clock.advance(PAST_ACCESS)
    world.store.arm(Fault.BEFORE_COMMIT, ["rotate"])
    for _ in range(2):
        assert type(world.run("decide", world.request())) is Unavailable

    failed = attrs(
        tokenflow__port__name="store",
        tokenflow__port__method="rotate",
        error__type="InjectedFault",
    )
    assert telemetry.counts(PORT_FAILURES) == {failed: 2}
    assert telemetry.histogram(PORT_DURATION)[failed].count == 2
    unavailable = decision(
        "decide",
        "unavailable",
        503,
        tokenflow__port__name="store",
        error__type="InjectedFault",
    )
    assert telemetry.counts(DECISIONS)[unavailable] == 2
    assert (
        telemetry.counts(SECURITY_EVENTS)[
            attrs(
                tokenflow__event="port_failed",
                tokenflow__port__name="store",
                error__type="InjectedFault",
            )
        ]
        == 2
    )
    rotations = [s for s in telemetry.spans() if s.name == "tokenflow store.rotate"]
    assert len(rotations) == 2
    for span in rotations:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "InjectedFault"
        assert dict(span.attributes or {}) == dict(failed)


def test_an_async_port_timeout_is_a_timeout_error() -> None:
    telemetry = Telemetry()
    store = AsyncFaultyStore(AsyncMemoryStore())
    users, passwords = ports(FakeClock())
    flow = AsyncFlow(
        KeyRing.generate(),
        store,
        AsyncFakeUserDirectory(users),
        passwords=AsyncFakePasswordVerifier(passwords),
        port_timeout=0.05,
        observer=telemetry.observer,
    )
    store.arm(Fault.HANG, ["create"])
    answer = asyncio.run(flow.login(Request("POST", credentials=ALICE)))
    assert type(answer) is Unavailable
    assert set(telemetry.counts(PORT_FAILURES)) == {
        attrs(
            tokenflow__port__name="store",
            tokenflow__port__method="create",
            error__type="TimeoutError",
        )
    }


@DRIVERS
def test_reuse_and_throttling_are_counted_by_reason(asynchronous: bool) -> None:
    telemetry = Telemetry()
    world = World(asynchronous, telemetry.observer, throttle=True)
    world.run("login", world.request("POST", credentials=ALICE))
    stolen = dict(world.cookies)
    world.clock.advance(PAST_ACCESS)
    world.run("decide", world.request())  # rotates: the stolen refresh token is now old
    world.clock.advance(FlowConfig().grace_seconds + 1)
    world.cookies = stolen  # its access token has expired: the refresh token is tried
    assert type(world.run("decide", world.request())) is Unauthorized
    wrong = PasswordCredentials(ALICE.username, "guess")
    answers = [world.run("login", world.request("POST", credentials=wrong)) for _ in range(3)]
    assert type(answers[-1]) is TooManyRequests

    events = telemetry.counts(SECURITY_EVENTS)
    assert (
        events[
            attrs(tokenflow__event="reuse_detected", tokenflow__reason="predecessor_after_grace")
        ]
        == 1
    )
    assert events[attrs(tokenflow__event="session_revoked", tokenflow__reason="reuse")] == 1
    assert (
        events[attrs(tokenflow__event="login_throttled", tokenflow__login__method="password")] == 1
    )
    counted = telemetry.counts(DECISIONS)
    assert counted[decision("decide", "unauthorized", 401, tokenflow__reason="refresh_reused")] == 1
    assert counted[decision("login", "too_many_requests", 429)] == 1


def test_tampered_and_cross_origin_requests_are_counted_without_their_values() -> None:
    telemetry = Telemetry()
    world = World(False, telemetry.observer)
    world.run("login", world.request("POST", credentials=ALICE))
    access = next(name for name in world.cookies if "access" in name)
    value = world.cookies[access]
    world.cookies[access] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    world.run("decide", world.request())
    world.run(
        "decide",
        Request("POST", origin="https://evil.example", sec_fetch_site="cross-site", host=HOST),
    )
    events = telemetry.counts(SECURITY_EVENTS)
    assert (
        events[
            attrs(
                tokenflow__event="token_rejected",
                tokenflow__reason="tag_mismatch",
                tokenflow__token__purpose="access",
            )
        ]
        == 1
    )
    assert events[attrs(tokenflow__event="cross_origin_rejected")] == 1
    assert telemetry.counts(DECISIONS)[decision("decide", "forbidden", 403)] == 1


def test_parallel_decisions_are_all_counted() -> None:
    telemetry = Telemetry()
    world = World(False, telemetry.observer)
    world.run("login", world.request("POST", credentials=ALICE))
    request = world.request()
    flow = world.flow
    assert isinstance(flow, Flow)
    threads, each = 8, 400
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        for _ in range(each):
            flow.decide(request)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert telemetry.counts(DECISIONS)[decision("decide", "process", 200)] == threads * each


# -- what never becomes an attribute -------------------------------------------------------

SECRET_PASSWORD = "correct-horse-SECRET-PASSWORD"
SECRET_USERNAME = "SECRET-USERNAME@example.com"
SECRET_PROVIDER = "SECRET-PROVIDER-eyJhbGciOi"
SECRET_ORIGIN = "https://SECRET-ORIGIN.example"


def test_no_secret_token_cookie_credential_or_id_reaches_any_attribute() -> None:
    telemetry = Telemetry()
    world = World(False, telemetry.observer)
    world.run("login", world.request("POST", credentials=ALICE))
    login_cookies = dict(world.cookies)
    answers = [world.run("decide", world.request())]
    world.clock.advance(PAST_ACCESS)
    answers.append(world.run("decide", world.request()))
    id_token = world.idp.issue("subject-alice", expires_at=world.clock() + 600)
    external = ExternalTokenCredentials(PROVIDER, id_token)
    answers.append(world.run("login", world.request("POST", credentials=external)))
    answers.append(
        world.run(
            "login",
            world.request(
                "POST", credentials=ExternalTokenCredentials(SECRET_PROVIDER, "eyJ.secret.token")
            ),
        )
    )
    guess = PasswordCredentials(SECRET_USERNAME, SECRET_PASSWORD)
    answers.append(world.run("login", world.request("POST", credentials=guess)))
    answers.append(
        world.run(
            "decide",
            Request(
                "DELETE",
                cookie_header="; ".join(f"{k}={v}" for k, v in login_cookies.items()),
                origin=SECRET_ORIGIN,
                sec_fetch_site="cross-site",
                host=HOST,
            ),
        )
    )
    world.store.arm(Fault.BEFORE_COMMIT, error=ConnectionError("postgresql://u:SECRET-DSN@db"))
    answers.append(world.run("logout", world.request("POST")))
    assert type(answers[-1]) is Unavailable

    secrets = {SECRET_PASSWORD, SECRET_USERNAME, SECRET_PROVIDER, SECRET_ORIGIN, "SECRET-DSN"}
    secrets |= {id_token, ALICE.password, ALICE.username, "alice"}
    secrets |= set(login_cookies.values()) | set(world.cookies.values())
    for answer in answers:
        secrets |= {c.partition(";")[0].partition("=")[2] for c in answer.set_cookies}
        for event in answer.events:
            secrets |= {getattr(event, f, None) for f in ("user_id", "session_id", "username")}
    secrets -= {None, ""}
    assert len(secrets) > 12
    exported = telemetry.every_string()
    assert len(exported) > 100
    leaks = sorted({s for s in secrets for text in exported if s in text})
    assert not leaks, leaks
    # The unknown provider was counted all the same, without its name.
    assert (
        telemetry.counts(SECURITY_EVENTS)[
            attrs(tokenflow__event="login_failed", tokenflow__reason="unknown_provider")
        ]
        == 1
    )


def allowed_values() -> set[Any]:
    """Every value an attribute may take for the world below: closed sets only."""
    import tokenflow
    import tokenflow.events
    import tokenflow.tokens

    values: set[Any] = {True, False, "password", PROVIDER, "_OTHER"}
    values |= {op.value for op in FlowOperation}
    modules = (tokenflow, tokenflow.events, tokenflow.tokens)
    for obj in (getattr(module, name) for module in modules for name in module.__all__):
        if isinstance(obj, type) and hasattr(obj, "__members__"):
            values |= {m.value for m in obj if isinstance(m.value, str)}
    values |= {"access", "refresh", 200, 401, 403, 429, 503}
    values |= {"store", "users", "passwords", "external", "throttle", "proofs"}
    values |= {"create", "rotate", "revoke", "load_user", "link_external", "verify_password"}
    values |= {"verify_token", "failures", "record_failure", "reset"}
    values |= {"process", "reissue", "unauthorized", "forbidden", "logged_out"}
    values |= {"too_many_requests", "unavailable"}
    values |= {"logged_in", "login_failed", "login_throttled", "refreshed", "reuse_detected"}
    values |= {"session_revoked", "token_rejected", "refresh_ended", "ambiguous_cookie"}
    values |= {"cross_origin_rejected", "port_failed"}
    return values


FUZZ_TELEMETRY = Telemetry()
FUZZ_WORLD = World(False, FUZZ_TELEMETRY.observer, throttle=True)
TEXT = st.text(max_size=40)
CREDENTIALS = st.one_of(
    st.none(),
    st.builds(PasswordCredentials, TEXT, TEXT),
    st.builds(ExternalTokenCredentials, st.sampled_from([PROVIDER, "other"]) | TEXT, TEXT),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]) | st.text(min_size=1, max_size=10),
    cookie_header=st.none() | st.text(max_size=120),
    origin=st.none() | TEXT,
    fetch_site=st.none() | st.sampled_from(["same-origin", "cross-site", "none"]) | TEXT,
    credentials=CREDENTIALS,
    operation=st.sampled_from(["decide", "login", "logout"]),
)
def test_every_attribute_value_comes_from_a_closed_set(
    method: str,
    cookie_header: str | None,
    origin: str | None,
    fetch_site: str | None,
    credentials: Any,
    operation: str,
) -> None:
    request = Request(
        method,
        cookie_header=cookie_header,
        origin=origin,
        sec_fetch_site=fetch_site,
        host=HOST,
        credentials=credentials,
        client_address="192.0.2.1",
    )
    getattr(FUZZ_WORLD.flow, operation)(request)
    allowed = allowed_values()
    for name in (DECISIONS, SECURITY_EVENTS, PORT_FAILURES):
        for key in FUZZ_TELEMETRY.counts(name):
            stray = {value for _, value in key if value not in allowed}
            assert not stray, (name, stray)


# -- the import rule ----------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_tokenflow_imports_no_opentelemetry() -> None:
    done = _python(
        "import sys, tokenflow, tokenflow.stores, tokenflow.asgi, tokenflow.wsgi, tokenflow.web\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    done = _python("import sys, tokenflow.otel; print('opentelemetry.trace' in sys.modules)")
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


def test_without_the_extra_the_import_error_names_it() -> None:
    # None in sys.modules makes an import fail as if the package were not installed.
    done = _python(
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import tokenflow\n"
        "try:\n"
        "    import tokenflow.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'tokenflow[otel]'" in done.stdout


def test_without_an_sdk_the_api_alone_costs_no_error() -> None:
    # The global providers of the bare API are no-ops: nothing is exported, nothing raises.
    done = _python(
        "import logging, tokenflow\n"
        "from tokenflow import Flow, KeyRing, Request\n"
        "from tokenflow.otel import OpenTelemetryObserver\n"
        "from tokenflow.stores import MemoryStore\n"
        "from tokenflow.testing import FakeUserDirectory\n"
        "logging.basicConfig(level=logging.ERROR)\n"
        "flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory(),"
        " observer=OpenTelemetryObserver())\n"
        "print(type(flow.decide(Request('GET'))).__name__)\n"
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "Unauthorized", "")


# -- composing observers ----------------------------------------------------------------


@dataclass
class Log:
    name: str
    lines: list[str]
    fail: bool = False

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        self.lines.append(f"{self.name}:{operation.value}:{type(decision).__name__}")
        if self.fail:
            raise RuntimeError("a broken exporter")

    def on_port_call(self, call: PortCall) -> None:
        self.lines.append(f"{self.name}:{call.port}.{call.method}")
        if self.fail:
            raise RuntimeError("a broken exporter")


def test_combined_observers_are_told_in_order_and_one_failure_stops_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines: list[str] = []
    telemetry = Telemetry()
    first, broken, last = Log("a", lines), Log("b", lines, fail=True), Log("c", lines)
    observer = combine_observers(first, combine_observers(broken, telemetry.observer), last)
    users, passwords = ports(FakeClock())
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords, observer=observer)
    with caplog.at_level(logging.ERROR, logger="tokenflow.observer"):
        answer = flow.login(Request("POST", credentials=ALICE))
    assert type(answer) is Reissue
    assert lines == [
        "a:passwords.verify_password",
        "b:passwords.verify_password",
        "c:passwords.verify_password",
        "a:users.load_user",
        "b:users.load_user",
        "c:users.load_user",
        "a:store.create",
        "b:store.create",
        "c:store.create",
        "a:login:Reissue",
        "b:login:Reissue",
        "c:login:Reissue",
    ]
    assert len([r for r in caplog.records if r.name == "tokenflow.observer"]) == 4
    assert telemetry.counts(DECISIONS) == {decision("login", "reissue", 200): 1}
    assert len(telemetry.spans()) == 3


def test_combine_observers_checks_what_it_is_given() -> None:
    one = Log("a", [])
    assert combine_observers(one) is one
    with pytest.raises(ConfigError, match="at least one"):
        combine_observers()
    with pytest.raises(ConfigError, match="on_port_call"):
        combine_observers(one, object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="meter_provider"):
        OpenTelemetryObserver(meter_provider=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tracer_provider"):
        OpenTelemetryObserver(tracer_provider=object())  # type: ignore[arg-type]


# -- through the ASGI middleware ---------------------------------------------------------


@dataclass
class Hello:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})


def middleware(asynchronous: bool, observer: Any, store: Any = None) -> TokenflowMiddleware:
    users, passwords = ports(FakeClock())
    flow: Flow | AsyncFlow
    if asynchronous:
        flow = AsyncFlow(
            KeyRing.generate(),
            store or AsyncMemoryStore(),
            AsyncFakeUserDirectory(users),
            passwords=AsyncFakePasswordVerifier(passwords),
            observer=observer,
        )
    else:
        flow = Flow(
            KeyRing.generate(),
            store or MemoryStore(),
            users,
            passwords=passwords,
            observer=observer,
        )
    return TokenflowMiddleware(Hello(), flow, required=["/account"])


@DRIVERS
def test_through_the_asgi_middleware_under_a_server_span(asynchronous: bool) -> None:
    telemetry = Telemetry()
    app = middleware(asynchronous, telemetry.observer)
    tracer = telemetry.tracer_provider.get_tracer("the server")
    jar = Jar()
    body = json.dumps({"username": ALICE.username, "password": ALICE.password}).encode()
    with tracer.start_as_current_span("POST /auth/login") as login_span:
        reply = asgi_call(app, "POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    assert reply.status == 200
    for _ in range(2):
        assert asgi_call(app, "GET", "/account", [("host", HOST)], jar=jar).status == 200
    assert asgi_call(app, "GET", "/account", [("host", HOST)]).status == 401

    assert telemetry.counts(DECISIONS) == {
        decision("login", "reissue", 200): 1,
        decision("decide", "process", 200): 2,
        decision("decide", "unauthorized", 401, tokenflow__reason="no_credentials"): 1,
    }
    assert telemetry.counts(SECURITY_EVENTS) == {
        attrs(tokenflow__event="logged_in", tokenflow__login__method="password"): 1
    }
    *calls, server = telemetry.spans()
    assert server.name == "POST /auth/login"
    assert [s.name for s in calls] == [
        "tokenflow passwords.verify_password",
        "tokenflow users.load_user",
        "tokenflow store.create",
    ]
    # A sync flow's port calls run in a worker thread: the context goes with them.
    for span in calls:
        assert span.parent is not None
        assert span.parent.span_id == login_span.get_span_context().span_id


@DRIVERS
def test_a_store_outage_seen_through_the_middleware(asynchronous: bool) -> None:
    telemetry = Telemetry()
    store = AsyncFaultyStore(AsyncMemoryStore()) if asynchronous else FaultyStore(MemoryStore())
    app = middleware(asynchronous, telemetry.observer, store)
    jar = Jar()
    body = json.dumps({"username": ALICE.username, "password": ALICE.password}).encode()
    store.arm(Fault.BEFORE_COMMIT, ["create"])
    reply = asgi_call(app, "POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    assert reply.status == 503
    assert telemetry.counts(PORT_FAILURES) == {
        attrs(
            tokenflow__port__name="store",
            tokenflow__port__method="create",
            error__type="InjectedFault",
        ): 1
    }
    assert telemetry.counts(DECISIONS) == {
        decision(
            "login", "unavailable", 503, tokenflow__port__name="store", error__type="InjectedFault"
        ): 1
    }


def test_the_observer_repr_names_nothing_of_its_providers() -> None:
    assert repr(Telemetry().observer) == "OpenTelemetryObserver()"


@pytest.fixture(autouse=True)
def _no_global_providers() -> Iterator[None]:
    """These tests pass providers explicitly: the global ones must stay untouched."""
    before = (trace.get_tracer_provider(),)
    yield
    assert (trace.get_tracer_provider(),) == before


def test_the_console_example_prints_every_instrument_and_span() -> None:
    done = subprocess.run(
        [sys.executable, "examples/otel_console.py"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr
    for name in (DECISIONS, SECURITY_EVENTS, PORT_FAILURES, PORT_DURATION):
        assert f'"name": "{name}"' in done.stdout
    for span in ("store.create", "store.rotate", "users.load_user"):
        assert f'"name": "tokenflow {span}"' in done.stdout
    assert '"tokenflow.event": "reuse_detected"' in done.stdout
    assert "ReuseDetected" in done.stderr
