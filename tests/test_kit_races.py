"""The refresh race harness, run against every flow and store the package ships.

Two halves. The first runs :func:`run_refresh_race` (threads) and
:func:`run_refresh_race_async` (tasks) over the in-memory and SQLite stores
with 2, 8 and 32 tabs, and checks not only that :meth:`RaceReport.assert_ok`
passes but the exact counts a clean run must produce. The second proves the
harness can fail: broken stores (rotation not atomic, grace replays that do
not converge, a port that goes down) and a configuration without a grace
window must each make :meth:`RaceReport.assert_ok` raise with a message that
names the problem. A harness that never fails would pass the first half too.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tokenflow import (
    AsyncFlow,
    CookiePolicy,
    Decision,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
)
from tokenflow._sessions import (
    Rotation,
    RotationOutcome,
    RotationResult,
    apply_rotation,
)
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.stores.sqlite import AsyncSQLiteStore, SQLiteStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    RaceReport,
    run_refresh_race,
    run_refresh_race_async,
)

LOGIN = PasswordCredentials("ada@example.com", "correct horse battery staple")
USER = "ada"
# Threads switch every 5 ms by default, longer than a whole in-memory decision:
# a tiny interval makes the released threads interleave inside decide().
SWITCH = 1e-6
# Trials per tab count: a few under the fast profile, a few hundred races in
# all under the thorough one (the ``sizes`` fixture of tests/conftest.py).
FAST_TRIALS = {2: 20, 8: 10, 32: 4}
THOROUGH_TRIALS = {2: 150, 8: 100, 32: 60}


def _trials(sizes: Any, tabs: int) -> int:
    return int(sizes.pick(FAST_TRIALS[tabs], THOROUGH_TRIALS[tabs]))


# -- worlds ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> FakeUserDirectory:
    directory = FakeUserDirectory()
    directory.add_user(USER, {"roles": ["editor"]})
    return directory


@pytest.fixture(scope="module")
def passwords() -> FakePasswordVerifier:
    verifier = FakePasswordVerifier()
    verifier.set_password(LOGIN.username, LOGIN.password, user_id=USER)
    return verifier


def _logged_in(decision: Decision, clock: FakeClock) -> Browser:
    assert isinstance(decision, Reissue), decision
    browser = Browser(clock)
    browser.receive(decision.set_cookies)
    return browser


def _sync_flow(
    store: Any,
    users: FakeUserDirectory,
    passwords: FakePasswordVerifier,
    config: FlowConfig | None = None,
) -> tuple[Flow, Browser]:
    clock = FakeClock()
    flow = Flow(KeyRing.generate(), store, users, passwords=passwords, config=config, clock=clock)
    return flow, _logged_in(flow.decide(Browser(clock).request("POST", credentials=LOGIN)), clock)


async def _async_flow(
    store: Any,
    users: FakeUserDirectory,
    passwords: FakePasswordVerifier,
    config: FlowConfig | None = None,
) -> tuple[AsyncFlow, Browser]:
    clock = FakeClock()
    flow = AsyncFlow(
        KeyRing.generate(),
        store,
        AsyncFakeUserDirectory(users),
        passwords=AsyncFakePasswordVerifier(passwords),
        config=config,
        clock=clock,
    )
    login = await flow.decide(Browser(clock).request("POST", credentials=LOGIN))
    return flow, _logged_in(login, clock)


@pytest.fixture(params=["memory", "sqlite"])
def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    store = SQLiteStore(tmp_path / "sessions.sqlite3")
    yield store
    store.close()


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def async_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield AsyncMemoryStore()
        return
    store = AsyncSQLiteStore(tmp_path / "sessions.sqlite3")
    yield store
    await store.aclose()


def _assert_clean(report: RaceReport, tabs: int, trials: int) -> None:
    report.assert_ok()
    assert report.ok
    # The exact counts of a clean run: two rotations per trial (the race and
    # the tab-by-tab refresh), 2 * tabs grace replays, nothing else.
    assert report.completed == trials
    assert report.rotations == 2 * trials
    assert report.graces == 2 * tabs * trials
    assert (report.reuses, report.unavailable, report.failures) == (0, 0, [])
    assert report.stale_reuse_detected is True


# -- every shipped flow and store, 2 to 32 tabs ----------------------------------


@pytest.mark.parametrize("tabs", sorted(FAST_TRIALS))
def test_threads_race_one_session(
    sync_store: Any,
    users: FakeUserDirectory,
    passwords: FakePasswordVerifier,
    tabs: int,
    sizes: Any,
) -> None:
    flow, browser = _sync_flow(sync_store, users, passwords)
    jar = dict(browser.jar)
    interval = sys.getswitchinterval()
    trials = _trials(sizes, tabs)
    report = run_refresh_race(flow, browser, tabs=tabs, trials=trials, switch_interval=SWITCH)
    assert sys.getswitchinterval() == interval
    _assert_clean(report, tabs, trials)
    assert browser.jar == jar, "the harness works on copies of the browser"
    # The final check revoked the session for reuse: nothing of it is left.
    assert flow.sessions_of(USER, now=browser.clock()) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("tabs", sorted(FAST_TRIALS))
async def test_tasks_race_one_session(
    async_store: Any,
    users: FakeUserDirectory,
    passwords: FakePasswordVerifier,
    tabs: int,
    sizes: Any,
) -> None:
    flow, browser = await _async_flow(async_store, users, passwords)
    trials = _trials(sizes, tabs)
    report = await run_refresh_race_async(flow, browser, tabs=tabs, trials=trials)
    _assert_clean(report, tabs, trials)
    assert await flow.sessions_of(USER, now=browser.clock()) == []


def test_session_survives_without_the_stale_check(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords)
    report = run_refresh_race(flow, browser, tabs=4, trials=5, check_stale_reuse=False)
    report.assert_ok()
    assert report.stale_reuse_detected is None
    (session,) = flow.sessions_of(USER, now=browser.clock())
    assert session.generation == 2 * 5  # two rotations per trial, from generation 0


def test_own_configuration_is_honoured(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    # Plain cookie names, no leeway, a short access token and a long window:
    # every timeline computation in the harness reads the configuration.
    config = FlowConfig(
        access_ttl=30,
        refresh_idle_ttl=300,
        refresh_absolute_ttl=3600,
        grace_seconds=20,
        leeway=0,
        cookies=CookiePolicy.local_development(),
    )
    flow, browser = _sync_flow(MemoryStore(), users, passwords, config)
    assert "tf_refresh" in browser.jar
    _assert_clean(run_refresh_race(flow, browser, tabs=3, trials=20), 3, 20)


def test_start_time_can_be_given(users: FakeUserDirectory, passwords: FakePasswordVerifier) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords)
    later = browser.clock() + 60  # the access cookie is still in the jar, the refresh too
    _assert_clean(run_refresh_race(flow, browser, tabs=2, trials=3, now=later), 2, 3)


# -- the harness must be able to fail ----------------------------------------------


class _NonAtomicStore(MemoryStore):
    """Reads, yields the GIL, then writes: two racing rotations both see "current"."""

    def rotate(self, rotation: Rotation) -> RotationResult:
        stored = self._sessions.get(rotation.session_id)
        if stored is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        time.sleep(0.002)  # the read-modify-write gap a missing lock leaves open
        result, state = apply_rotation(stored, rotation)
        with self._lock:
            if state is None:
                self._delete(rotation.session_id)
            else:
                self._sessions[rotation.session_id] = state
        return result


class _DivergentGraceStore(MemoryStore):
    """Answers GRACE with a fresh salt, not the stored one: replays do not converge."""

    def rotate(self, rotation: Rotation) -> RotationResult:
        result = super().rotate(rotation)
        if result.outcome is RotationOutcome.GRACE:
            return RotationResult(RotationOutcome.GRACE, result.session, secrets.token_bytes(16))
        return result


class _FlakyStore(MemoryStore):
    """Fails one rotation in ``every``, as a store timing out under load would."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self._every = every
        self._count = 0
        self._counter = threading.Lock()

    def rotate(self, rotation: Rotation) -> RotationResult:
        with self._counter:
            self._count += 1
            fail = self._count % self._every == 0
        if fail:
            raise TimeoutError("database is locked")
        return super().rotate(rotation)


class _LostAnswerStore(MemoryStore):
    """Commits the first rotation, then fails to answer it (a connection reset after COMMIT)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def rotate(self, rotation: Rotation) -> RotationResult:
        result = super().rotate(rotation)
        if self.armed and result.outcome is RotationOutcome.ROTATED:
            self.armed = False
            raise ConnectionResetError("connection reset after commit")
        return result


def _failing(report: RaceReport) -> str:
    assert not report.ok
    with pytest.raises(AssertionError) as caught:
        report.assert_ok()
    return str(caught.value)


def test_rotation_that_is_not_atomic_is_caught(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(_NonAtomicStore(), users, passwords)
    message = _failing(run_refresh_race(flow, browser, tabs=8, trials=3))
    assert "tabs were told they rotated the token" in message
    assert "expected exactly one" in message


class _AsyncNonAtomicStore(AsyncMemoryStore):
    """The async version of the missing lock: an await between read and write."""

    async def rotate(self, rotation: Rotation) -> RotationResult:
        stored = self.sync._sessions.get(rotation.session_id)
        if stored is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        await asyncio.sleep(0)
        result, state = apply_rotation(stored, rotation)
        if state is None:
            self.sync._delete(rotation.session_id)
        else:
            self.sync._sessions[rotation.session_id] = state
        return result


@pytest.mark.asyncio
async def test_tasks_catch_a_store_that_awaits_inside_its_rotation(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = await _async_flow(_AsyncNonAtomicStore(), users, passwords)
    report = await run_refresh_race_async(flow, browser, tabs=8, trials=3)
    message = _failing(report)
    assert "tabs were told they rotated the token" in message


def test_grace_replays_that_do_not_converge_are_caught(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    # The race itself looks right (one rotation, the rest grace); only the
    # tab-by-tab refresh afterwards shows that the tabs hold different secrets.
    flow, browser = _sync_flow(_DivergentGraceStore(), users, passwords)
    report = run_refresh_race(flow, browser, tabs=4, trials=5)
    message = _failing(report)
    assert report.reuses >= 1
    assert "each tab afterwards" in message
    assert "ReuseDetected" in message
    assert "the session was revoked (reuse): every tab is logged out" in message


def test_no_grace_window_logs_racing_tabs_out(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords, FlowConfig(grace_seconds=0))
    report = run_refresh_race(flow, browser, tabs=2, trials=10)
    message = _failing(report)
    assert report.completed == 0
    assert report.reuses == 1
    assert "grace_seconds is 0" in message
    assert "refresh_reused" in message
    assert "the remaining 9 trials were not run" in message


def test_a_port_failing_under_load_is_reported(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(_FlakyStore(every=7), users, passwords)
    report = run_refresh_race(flow, browser, tabs=4, trials=10)
    message = _failing(report)
    assert report.unavailable >= 1
    assert "Unavailable(store port failed: TimeoutError('database is locked')" in message
    assert "hint: a port failed under concurrency" in message


def test_a_rotation_whose_answer_is_lost_is_reported_and_survived(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    # The racing tab whose rotation committed gets Unavailable; its siblings
    # get grace replays of that rotation. The session lives: every trial runs.
    flow, browser = _sync_flow(_LostAnswerStore(), users, passwords)
    report = run_refresh_race(flow, browser, tabs=4, trials=5)
    message = _failing(report)
    assert report.completed == 5
    assert report.unavailable == 1
    assert report.stale_reuse_detected is True
    assert "0 tabs were told they rotated the token" in message
    assert "ConnectionResetError('connection reset after commit')" in message


def test_message_is_capped_but_counts_everything(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords, FlowConfig(grace_seconds=0))
    report = run_refresh_race(flow, browser, tabs=32, trials=2)
    message = _failing(report)
    assert len(report.failures) > 12
    assert f"and {len(report.failures) - 12} more failures" in message


# -- misuse raises before anything runs --------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"tabs": 0, "trials": 1}, "tabs must be a whole number"),
        ({"tabs": 2, "trials": True}, "trials must be a whole number"),
        ({"tabs": 2, "trials": 1, "timeout": 0}, "timeout must be a positive"),
        ({"tabs": 2, "trials": 1, "now": float("nan")}, "now must be a finite time"),
        ({"tabs": 2, "trials": 1, "switch_interval": -1.0}, "switch_interval must be"),
        ({"tabs": 2, "trials": 1000}, r"run at most \d+ trials"),
    ],
)
def test_misuse_raises(
    users: FakeUserDirectory,
    passwords: FakePasswordVerifier,
    arguments: dict[str, Any],
    match: str,
) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords)
    with pytest.raises(ValueError, match=match):
        run_refresh_race(flow, browser, **arguments)


def test_a_browser_that_is_not_logged_in_is_refused(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, _ = _sync_flow(MemoryStore(), users, passwords)
    with pytest.raises(ValueError, match="log it in first"):
        run_refresh_race(flow, Browser(FakeClock()), tabs=2, trials=1)


def test_an_idle_lifetime_shorter_than_the_refresh_gap_is_refused(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    config = FlowConfig(access_ttl=120, refresh_idle_ttl=121, grace_seconds=5)
    flow, browser = _sync_flow(MemoryStore(), users, passwords, config)
    with pytest.raises(ValueError, match="raise refresh_idle_ttl"):
        run_refresh_race(flow, browser, tabs=2, trials=1)


@pytest.mark.asyncio
async def test_async_misuse_raises(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, _ = await _async_flow(AsyncMemoryStore(), users, passwords)
    with pytest.raises(ValueError, match="log it in first"):
        await run_refresh_race_async(flow, Browser(FakeClock()), tabs=2, trials=1)


def test_summary_reads_as_one_line(
    users: FakeUserDirectory, passwords: FakePasswordVerifier
) -> None:
    flow, browser = _sync_flow(MemoryStore(), users, passwords)
    summary = run_refresh_race(flow, browser, tabs=2, trials=2, label="mine").summary()
    assert "\n" not in summary
    assert summary.startswith("mine, 2 tabs: 2/2 trials")
    assert "stale reuse detected" in summary
