"""The second-factor lockout: a rule, a window and a hard limit of their own for
code guesses (NIST SP 800-63B: at most 100 consecutive failures per account).

Someone holding the password must not guess codes forever: after
``ThrottlePolicy.second_factor_limit`` consecutive wrong codes every code
attempt for the account (second login step and step-up, TOTP and recovery
codes, both drivers) is answered 429 without being verified, until
``second_factor_window`` has passed since the last failure or an operator
resets the count. Time is a FakeClock; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tokenflow import (
    AsyncFlow,
    ConfigError,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
    SecondFactorCredentials,
    SecondFactorRequired,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unauthorized,
)
from tokenflow._throttle import address_key
from tokenflow.ports import FailureCount
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeSecondFactors,
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.throttles import (
    AsyncMemoryThrottle,
    MemoryThrottle,
    SQLiteThrottle,
    second_factor_key,
)

ALICE = PasswordCredentials("alice@example.com", "correct horse battery staple")
ADDRESS = "203.0.113.9"
HOUR = 3600.0
DAY = 86400.0
LIMIT = ThrottlePolicy().second_factor_limit
# Every failure up to the limit is free: the limit, not a delay, answers the next one.
NO_DELAYS = ThrottlePolicy(second_factor=ThrottleRule(LIMIT, 1.0, 900.0))
SF_KEY = second_factor_key("alice")


def make_throttle(backend: str, tmp_path: Path) -> MemoryThrottle | SQLiteThrottle:
    return MemoryThrottle() if backend == "memory" else SQLiteThrottle(tmp_path / "t.db")


@dataclass
class World:
    throttle: Any = field(default_factory=MemoryThrottle)
    policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    clock: FakeClock = field(default_factory=FakeClock)
    factors: FakeSecondFactors = field(default_factory=FakeSecondFactors)
    users: FakeUserDirectory = field(default_factory=FakeUserDirectory)
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        self.users.add_user("alice")
        passwords = FakePasswordVerifier()
        passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
        self.factors.enroll("alice")
        self.flow = Flow(
            KeyRing.generate(),
            MemoryStore(),
            self.users,
            passwords=passwords,
            throttle=self.throttle,
            config=FlowConfig(throttle=self.policy),
            clock=self.clock,
            second_factors=self.factors,
        )

    def code(self) -> str:
        return self.factors.code_at("alice", self.clock())

    def wrong(self, n: int = 0) -> str:
        """A wrong code at the clock's time (none of the three valid ones)."""
        now = self.clock()
        valid = {self.factors.code_at("alice", now + d) for d in (-30, 0, 30)}
        offset = 1 + n
        while (code := f"{(int(self.code()) + offset) % 1_000_000:06d}") in valid:
            offset += 1_000
        return code

    def partial(self, address: str | None = ADDRESS) -> Browser:
        """A browser holding alice's partial login (the password was right)."""
        browser = Browser(self.clock)
        first = self.flow.login(at(browser, ALICE, address))
        assert isinstance(first, SecondFactorRequired), first
        browser.receive(first.set_cookies)
        return browser

    def session(self) -> Browser:
        """A browser holding a session of alice at aal 2 (password and code)."""
        browser = self.partial()
        second = self.flow.login(at(browser, SecondFactorCredentials(self.code())))
        assert isinstance(second, Reissue), second
        browser.receive(second.set_cookies)
        return browser

    def counts(self, *keys: str) -> list[FailureCount]:
        return list(self.throttle.failures(list(keys), now=self.clock()))


def at(browser: Browser, credentials: Any, address: str | None = ADDRESS) -> Request:
    return replace(browser.request("POST", credentials=credentials), client_address=address)


def set_clock(clock: FakeClock, at_time: float) -> None:
    clock.advance(at_time - clock())


def spread(i: int) -> str:
    """One address per guess: only the account's count limits them."""
    return f"10.{i // 250}.{i % 250}.1"


def fail_codes_with_delays(world: World, n: int) -> None:
    """``n`` wrong codes from ADDRESS at the throttle's pace (the clock jumps
    over each delay; a partial login lasts 5 minutes, so each guess starts
    from a fresh one)."""
    failed = 0
    while failed < n:
        decision = world.flow.login(at(world.partial(), SecondFactorCredentials(world.wrong())))
        if isinstance(decision, TooManyRequests):
            assert decision.retry_after <= world.policy.second_factor.cap
            world.clock.advance(decision.retry_after)
            continue
        assert isinstance(decision, Unauthorized), decision
        failed += 1


# -- the policy ----------------------------------------------------------------------


def test_the_defaults_have_a_second_factor_rule_a_day_window_and_the_nist_limit() -> None:
    policy = ThrottlePolicy()
    assert policy.second_factor == ThrottleRule(5, 1.0, 900.0)
    assert (policy.second_factor_window, policy.second_factor_limit) == (DAY, 100)
    assert policy.window_of(SF_KEY) == DAY
    assert policy.window_of(address_key(ADDRESS)) == policy.window == HOUR


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # A window equal to the cap forgets the count exactly when the delay ends.
        (lambda: ThrottlePolicy(window=900.0), r"window \(900 s\) must be longer"),
        (lambda: ThrottlePolicy(second_factor_window=900.0), "second_factor_window"),
        (
            lambda: ThrottlePolicy(
                second_factor=ThrottleRule(5, 1.0, 7200.0), second_factor_window=7200.0
            ),
            "second_factor_window",
        ),
        (lambda: ThrottlePolicy(second_factor_window=float("inf")), "finite"),
        (lambda: ThrottlePolicy(second_factor="5/min"), "must be a ThrottleRule"),  # type: ignore[arg-type]
        (lambda: ThrottlePolicy(second_factor_limit=0), "second_factor_limit"),
        (lambda: ThrottlePolicy(second_factor_limit=101), "at most 100"),
        (lambda: ThrottlePolicy(second_factor_limit=True), "second_factor_limit"),
        (lambda: ThrottlePolicy(second_factor_limit=50.0), "second_factor_limit"),  # type: ignore[arg-type]
    ],
)
def test_bad_second_factor_settings_fail_at_construction(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_windows_just_longer_than_the_caps_are_accepted() -> None:
    ThrottlePolicy(window=900.5)
    ThrottlePolicy(second_factor=ThrottleRule(5, 1.0, 60.0), second_factor_window=61.0)
    assert ThrottlePolicy(second_factor_limit=1).second_factor_limit == 1


def test_at_the_limit_the_wait_runs_to_the_end_of_the_window() -> None:
    policy = ThrottlePolicy()
    keys = [SF_KEY, address_key(ADDRESS)]
    quiet = FailureCount(0, 0.0)
    # One below the limit: the rule's delay (capped at 15 minutes).
    assert policy.retry_after(keys, [FailureCount(99, 1000.0), quiet], 1000.0) == 900
    assert policy.retry_after(keys, [FailureCount(99, 1000.0), quiet], 1900.0) == 0
    # At the limit: until a day after the last failure, not the cap.
    assert policy.retry_after(keys, [FailureCount(100, 1000.0), quiet], 1900.0) == DAY - 900
    assert policy.retry_after(keys, [FailureCount(100, 1000.0), quiet], 1000.0 + DAY - 0.5) == 1
    # A count the store still reports is never waved through.
    assert policy.retry_after(keys, [FailureCount(100, 1000.0), quiet], 1000.0 + DAY) == 1
    # Password keys keep their own rule: the limit is for codes only.
    account = "u:#" + "0" * 32
    assert policy.retry_after([account], [FailureCount(100, 1000.0)], 1000.0 + 300) == 0


# -- the lockout through the flow ----------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_hundred_failed_codes_lock_the_account_past_the_hour_until_the_day_ends(
    backend: str, tmp_path: Path
) -> None:
    """Default policy, second login step, delays honoured: after 100 wrong
    codes the right one is refused unverified, still after the ordinary
    one-hour window, and accepted once a day has passed since the last failure."""
    world = World(throttle=make_throttle(backend, tmp_path))
    fail_codes_with_delays(world, LIMIT)
    last = world.clock()
    address = address_key(ADDRESS)
    assert world.counts(SF_KEY)[0] == FailureCount(LIMIT, last)
    verified = world.factors.verified
    elsewhere = "192.0.2.50"  # ADDRESS has used up its own free failures
    locked = world.flow.login(
        at(world.partial(elsewhere), SecondFactorCredentials(world.code()), elsewhere)
    )
    assert isinstance(locked, TooManyRequests)
    assert locked.retry_after == DAY
    # Past the ordinary window: the address is forgotten, the account's codes are not.
    world.clock.advance(HOUR)
    assert world.counts(SF_KEY, address) == [FailureCount(LIMIT, last), FailureCount(0, 0.0)]
    for code in (world.code(), world.wrong()):
        refused = world.flow.login(at(world.partial(), SecondFactorCredentials(code)))
        assert isinstance(refused, TooManyRequests)
        assert refused.retry_after == DAY - HOUR
    assert world.factors.verified == verified
    # Refused attempts neither extend nor shorten it: it ends a day after the last failure.
    set_clock(world.clock, last + DAY - 1)
    early = world.flow.login(at(world.partial(), SecondFactorCredentials(world.code())))
    assert isinstance(early, TooManyRequests)
    assert early.retry_after == 1
    assert world.counts(SF_KEY)[0] == FailureCount(LIMIT, last)
    set_clock(world.clock, last + DAY)
    assert isinstance(
        world.flow.login(at(world.partial(), SecondFactorCredentials(world.code()))), Reissue
    )
    assert world.counts(SF_KEY)[0] == FailureCount(0, 0.0)


def lock_by_step_up(world: World, browser: Browser) -> None:
    for i in range(LIMIT):
        decision = world.flow.step_up(
            at(browser, SecondFactorCredentials(world.wrong(i)), spread(i))
        )
        assert isinstance(decision, Unauthorized), (i, decision)


def test_step_up_and_recovery_codes_are_locked_out_too() -> None:
    world = World(policy=NO_DELAYS)
    recovery = world.factors.enroll("alice")
    browser = world.session()
    lock_by_step_up(world, browser)
    verified = world.factors.verified
    for code in (world.code(), recovery[0]):
        stepped = world.flow.step_up(at(browser, SecondFactorCredentials(code), "192.0.2.1"))
        assert isinstance(stepped, TooManyRequests), stepped
        assert stepped.retry_after == DAY
        # The second login step shares the count.
        second = world.flow.login(at(world.partial("192.0.2.2"), SecondFactorCredentials(code)))
        assert isinstance(second, TooManyRequests), second
    assert world.factors.verified == verified


def test_a_success_before_the_limit_starts_the_count_over() -> None:
    world = World(policy=NO_DELAYS)
    browser = world.session()
    for i in range(LIMIT - 1):
        decision = world.flow.step_up(
            at(browser, SecondFactorCredentials(world.wrong(i)), spread(i))
        )
        assert isinstance(decision, Unauthorized)
    world.clock.advance(30)  # the next time step: the session's own code was used
    stepped = world.flow.step_up(at(browser, SecondFactorCredentials(world.code())))
    assert isinstance(stepped, Reissue), stepped
    browser.receive(stepped.set_cookies)
    assert world.counts(SF_KEY)[0] == FailureCount(0, 0.0)
    # A full new allowance, and no more.
    before = world.factors.verified
    lock_by_step_up(world, browser)
    assert world.factors.verified - before == LIMIT
    world.clock.advance(30)
    assert isinstance(
        world.flow.step_up(at(browser, SecondFactorCredentials(world.code()))), TooManyRequests
    )


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_an_operator_reset_lifts_the_lockout(backend: str, tmp_path: Path) -> None:
    world = World(throttle=make_throttle(backend, tmp_path), policy=NO_DELAYS)
    browser = world.session()
    lock_by_step_up(world, browser)
    world.clock.advance(30)
    locked = world.flow.step_up(at(browser, SecondFactorCredentials(world.code())))
    assert isinstance(locked, TooManyRequests)
    # What docs/mfa.md tells operators to run, on the flow's throttle:
    world.throttle.reset([second_factor_key("alice")])
    stepped = world.flow.step_up(at(browser, SecondFactorCredentials(world.code())))
    assert isinstance(stepped, Reissue), stepped


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_fifty_parallel_guesses_at_the_limit_verify_no_more_than_it_allows(
    backend: str, tmp_path: Path
) -> None:
    world = World(throttle=make_throttle(backend, tmp_path), policy=NO_DELAYS)
    browser = world.session()
    spare = 3
    for i in range(LIMIT - spare):
        decision = world.flow.step_up(
            at(browser, SecondFactorCredentials(world.wrong(i)), spread(i))
        )
        assert isinstance(decision, Unauthorized)
    before = world.factors.verified
    now = world.clock()
    requests = [
        at(world.partial(spread(500 + i)), SecondFactorCredentials(world.wrong(200 + i)), spread(i))
        if i % 2
        else at(browser, SecondFactorCredentials(world.wrong(200 + i)), spread(i))
        for i in range(50)
    ]
    barrier = threading.Barrier(len(requests))
    answers: list[Any] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        barrier.wait()
        call = world.flow.login if i % 2 else world.flow.step_up
        decision = call(requests[i], now=now)
        with lock:
            answers.append(decision)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert world.factors.verified - before <= spare
    assert not any(isinstance(d, Reissue) for d in answers)
    assert world.counts(SF_KEY)[0].count == LIMIT - spare + (world.factors.verified - before)
    # Sequential guesses use up what the race left, then the right code waits a day.
    i = 0
    while world.counts(SF_KEY)[0].count < LIMIT:
        decision = world.flow.step_up(at(browser, SecondFactorCredentials(world.wrong(300 + i))))
        assert isinstance(decision, Unauthorized)
        i += 1
    assert world.factors.verified - before == spare
    world.clock.advance(30)
    assert isinstance(
        world.flow.step_up(at(browser, SecondFactorCredentials(world.code()))), TooManyRequests
    )


# -- the windows the throttle port is given ------------------------------------------


class RecordingThrottle(MemoryThrottle):
    """Records the keys and window of every reservation; ``steal`` makes the
    next reservation of an address key lose its race (a concurrent attempt
    counts it first)."""

    def __init__(self) -> None:
        super().__init__()
        self.reserved: list[tuple[tuple[str, ...], float]] = []
        self.steal = False

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        self.reserved.append((tuple(keys), window))
        if self.steal and keys[0].startswith("a:"):
            self.steal = False
            assert super().reserve(keys, expected, now=now, window=window)
            return False
        return super().reserve(keys, expected, now=now, window=window)


def test_code_guesses_reserve_the_account_for_a_day_and_the_address_for_an_hour() -> None:
    throttle = RecordingThrottle()
    world = World(throttle=throttle)
    browser = world.partial()
    password_call = throttle.reserved[-1]
    assert password_call[1] == HOUR
    assert len(password_call[0]) == 2
    throttle.reserved.clear()
    assert isinstance(
        world.flow.login(at(browser, SecondFactorCredentials(world.wrong()))), Unauthorized
    )
    assert throttle.reserved == [((SF_KEY,), DAY), ((address_key(ADDRESS),), HOUR)]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_the_stores_forget_the_address_after_an_hour_and_the_account_after_a_day(
    backend: str, tmp_path: Path
) -> None:
    world = World(throttle=make_throttle(backend, tmp_path))
    assert isinstance(
        world.flow.login(at(world.partial(), SecondFactorCredentials(world.wrong()))), Unauthorized
    )
    last = world.clock()
    address = address_key(ADDRESS)
    set_clock(world.clock, last + HOUR - 1)
    assert [c.count for c in world.counts(SF_KEY, address)] == [1, 1]
    set_clock(world.clock, last + HOUR)
    assert [c.count for c in world.counts(SF_KEY, address)] == [1, 0]
    set_clock(world.clock, last + DAY - 1)
    assert [c.count for c in world.counts(SF_KEY)] == [1]
    set_clock(world.clock, last + DAY)
    assert [c.count for c in world.counts(SF_KEY)] == [0]


def test_a_lost_race_on_the_address_takes_the_account_reservation_back() -> None:
    throttle = RecordingThrottle()
    world = World(throttle=throttle)
    browser = world.partial()
    throttle.reserved.clear()
    throttle.steal = True
    decision = world.flow.login(at(browser, SecondFactorCredentials(world.wrong())))
    assert isinstance(decision, Unauthorized)
    # Reserved twice (the first taken back), verified once: one failure on the account.
    assert [keys for keys, _ in throttle.reserved] == [
        (SF_KEY,),
        (address_key(ADDRESS),),
        (SF_KEY,),
        (address_key(ADDRESS),),
    ]
    assert world.factors.verified == 1
    assert world.counts(SF_KEY)[0].count == 1
    assert world.counts(address_key(ADDRESS))[0].count == 2  # the thief's and ours


# -- the async driver ----------------------------------------------------------------


def test_the_async_driver_locks_out_alike() -> None:
    async def run() -> None:
        clock = FakeClock()
        users = AsyncFakeUserDirectory()
        users.sync.add_user("alice")
        passwords = AsyncFakePasswordVerifier()
        passwords.sync.set_password(ALICE.username, ALICE.password, user_id="alice")
        factors = AsyncFakeSecondFactors()
        factors.sync.enroll("alice")
        throttle = AsyncMemoryThrottle()
        flow = AsyncFlow(
            KeyRing.generate(),
            AsyncMemoryStore(),
            users,
            passwords=passwords,
            throttle=throttle,
            config=FlowConfig(throttle=NO_DELAYS),
            clock=clock,
            second_factors=factors,
        )

        def code(offset: int = 0) -> str:
            right = factors.sync.code_at("alice", clock())
            return f"{(int(right) + offset) % 1_000_000:06d}" if offset else right

        async def partial(address: str) -> Browser:
            browser = Browser(clock)
            first = await flow.login(at(browser, ALICE, address))
            assert isinstance(first, SecondFactorRequired), first
            browser.receive(first.set_cookies)
            return browser

        browser = await partial(ADDRESS)
        second = await flow.login(at(browser, SecondFactorCredentials(code())))
        assert isinstance(second, Reissue), second
        browser.receive(second.set_cookies)
        # Half the guesses through step-up, half through the second login step.
        valid = {factors.sync.code_at("alice", clock() + d) for d in (-30, 0, 30)}
        wrong = [c for c in (code(7 + i) for i in range(LIMIT + 10)) if c not in valid]
        for i in range(LIMIT):
            request = SecondFactorCredentials(wrong[i])
            if i % 2:
                decision = await flow.step_up(at(browser, request, spread(i)))
            else:
                decision = await flow.login(at(await partial(spread(i)), request, spread(i)))
            assert isinstance(decision, Unauthorized), (i, decision)
        verified = factors.sync.verified
        clock.advance(30)
        stepped = await flow.step_up(at(browser, SecondFactorCredentials(code())))
        assert isinstance(stepped, TooManyRequests)
        assert stepped.retry_after == DAY - 30
        clock.advance(HOUR)  # past the ordinary window
        login = await flow.login(at(await partial("192.0.2.3"), SecondFactorCredentials(code())))
        assert isinstance(login, TooManyRequests)
        assert login.retry_after == DAY - HOUR - 30
        assert factors.sync.verified == verified
        await throttle.reset([second_factor_key("alice")])
        login = await flow.login(at(await partial("192.0.2.3"), SecondFactorCredentials(code())))
        assert isinstance(login, Reissue), login

    asyncio.run(run())
