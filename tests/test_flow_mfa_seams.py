"""The flow's two public seams for second-factor management (issue 22):
``require`` (a requirement known only once the user is) and
``second_factor_attempt`` (a code checked outside a login, throttled like a
login's second step, under the same account key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenflow import (
    AsyncFlow,
    ConfigError,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    StepUpRequired,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unavailable,
)
from tokenflow.events import LoginThrottled
from tokenflow.ports import SecondFactorFailure, SecondFactorRefused
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeSecondFactors,
    AsyncFakeUserDirectory,
    FakeClock,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle

PASSWORD = PasswordCredentials("alice@example.com", "alice's long passphrase")
WRONG = SecondFactorRefused(SecondFactorFailure.WRONG)


def _flow(
    clock: FakeClock, factors: FakeSecondFactors | None = None
) -> tuple[Flow, FakeSecondFactors]:
    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password(PASSWORD.username, PASSWORD.password, user_id="alice")
    factors = factors or FakeSecondFactors()
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=passwords,
        throttle=MemoryThrottle(),
        second_factors=factors,
        clock=clock,
    )
    return flow, factors


def _cookies(decision: Any) -> str:
    return "; ".join(c.split(";", 1)[0] for c in decision.set_cookies)


def test_require_answers_the_decision_or_step_up_with_its_cookies() -> None:
    clock = FakeClock()
    flow, _ = _flow(clock)
    login = flow.login(Request(method="POST", credentials=PASSWORD))
    assert isinstance(login, Reissue)
    assert flow.require(login, Requirement(max_age=300)) is login
    short = flow.require(login, Requirement(aal=2))
    assert isinstance(short, StepUpRequired)
    assert short.requirement == Requirement(aal=2)
    assert short.set_cookies == login.set_cookies  # a rotation's cookies are never dropped
    access = flow.decide(Request(cookie_header=_cookies(login)))
    assert isinstance(access, Process)
    clock.advance(301)
    stale = flow.require(access, Requirement(max_age=300))
    assert isinstance(stale, StepUpRequired)
    assert "max_age=300" in stale.www_authenticate
    assert flow.require(access, Requirement(max_age=300), now=clock() - 2) is access
    with pytest.raises(TypeError):
        flow.require(stale, Requirement())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flow.require(access, 2)  # type: ignore[arg-type]


def test_an_attempt_runs_once_reserved_and_a_success_starts_the_count_over() -> None:
    clock = FakeClock()
    flow, _ = _flow(clock)
    calls: list[float] = []

    def refused(now: float) -> SecondFactorRefused:
        calls.append(now)
        return WRONG

    for _ in range(4):
        assert flow.second_factor_attempt("alice", refused) == WRONG
    assert calls == [clock()] * 4
    assert flow.second_factor_attempt("alice", lambda now: "confirmed") == "confirmed"
    # The count started over: five more failures are allowed before the wait.
    outcomes = [flow.second_factor_attempt("alice", refused) for _ in range(6)]
    assert outcomes[:5] == [WRONG] * 5
    throttled = outcomes[5]
    assert isinstance(throttled, TooManyRequests)
    assert throttled.events == (LoginThrottled("second_factor", None, throttled.retry_after),)
    assert len(calls) == 9  # the sixth was never checked


def test_attempts_share_the_count_of_the_second_step_of_a_login() -> None:
    clock = FakeClock()
    flow, factors = _flow(clock)
    factors.enroll("alice")
    for _ in range(5):
        assert flow.second_factor_attempt("alice", lambda now: WRONG) == WRONG
    first = flow.login(Request(method="POST", credentials=PASSWORD))
    partial = _cookies(first)
    code = factors.code_at("alice", clock())
    second = flow.login(
        Request(method="POST", cookie_header=partial, credentials=SecondFactorCredentials(code))
    )
    assert isinstance(second, TooManyRequests)
    assert factors.verified == 0


def test_an_address_is_counted_too() -> None:
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(),
        passwords=FakePasswordVerifier(),
        throttle=MemoryThrottle(),
        second_factors=FakeSecondFactors(),
        clock=FakeClock(),
        config=FlowConfig(throttle=ThrottlePolicy(address=ThrottleRule(3, 1.0, 60.0))),
    )
    for user in ("a", "b", "c"):
        assert flow.second_factor_attempt(user, lambda now: WRONG, client_address="192.0.2.1")
    # A fourth account from the same address waits: guesses spread over
    # accounts are still counted per address.
    assert isinstance(
        flow.second_factor_attempt("d", lambda now: 1, client_address="192.0.2.1"),
        TooManyRequests,
    )
    assert flow.second_factor_attempt("d", lambda now: 1, client_address="192.0.2.2") == 1


def test_an_attempt_that_raises_is_unavailable_and_stays_counted() -> None:
    clock = FakeClock()
    flow, _ = _flow(clock)

    def broken(now: float) -> object:
        raise ConnectionError("store down")

    for _ in range(5):
        outcome = flow.second_factor_attempt("alice", broken)
        assert isinstance(outcome, Unavailable)
        assert outcome.port == "second_factors"
    assert isinstance(flow.second_factor_attempt("alice", lambda now: 1), TooManyRequests)


def test_misuse_raises() -> None:
    users = FakeUserDirectory()
    plain = Flow(KeyRing.generate(), MemoryStore(), users)
    with pytest.raises(ConfigError, match="second_factors"):
        plain.second_factor_attempt("alice", lambda now: 1)
    flow, _ = _flow(FakeClock())
    with pytest.raises(TypeError):
        flow.second_factor_attempt("", lambda now: 1)
    with pytest.raises(TypeError):
        flow.second_factor_attempt("alice", "not callable")  # type: ignore[arg-type]


def test_the_clock_is_the_flows() -> None:
    clock = FakeClock()
    flow, _ = _flow(clock)
    assert flow.clock is clock


def test_async_flow_runs_an_awaitable_attempt_under_the_same_rules() -> None:
    clock = FakeClock()
    users = FakeUserDirectory()
    users.add_user("alice")
    flow = AsyncFlow(
        KeyRing.generate(),
        AsyncMemoryStore(),
        AsyncFakeUserDirectory(users),
        passwords=AsyncFakePasswordVerifier(FakePasswordVerifier()),
        throttle=AsyncMemoryThrottle(),
        second_factors=AsyncFakeSecondFactors(FakeSecondFactors()),
        clock=clock,
    )

    async def refused(now: float) -> SecondFactorRefused:
        return WRONG

    async def accepted(now: float) -> float:
        return now

    async def run() -> list[object]:
        seen: list[object] = [await flow.second_factor_attempt("alice", accepted)]
        for _ in range(6):
            seen.append(await flow.second_factor_attempt("alice", refused))
        return seen

    seen = asyncio.run(run())
    assert seen[0] == clock()
    assert seen[1:6] == [WRONG] * 5
    assert isinstance(seen[6], TooManyRequests)


def test_an_observer_sees_the_attempt_as_a_second_factors_port_call() -> None:
    calls: list[Any] = []

    class Observer:
        def on_decision(self, operation: Any, request: Any, decision: Any) -> None:
            pass

        def on_port_call(self, call: Any) -> None:
            calls.append((call.port, call.method, call.failed))

    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(),
        passwords=FakePasswordVerifier(),
        throttle=MemoryThrottle(),
        second_factors=FakeSecondFactors(),
        observer=Observer(),
    )
    assert flow.second_factor_attempt("alice", lambda now: "ok") == "ok"
    assert ("second_factors", "attempt", False) in calls
    assert [c for c in calls if c[0] == "throttle"]  # reserved, then reset
