"""The refresh race harness: many tabs of one browser refresh one session at once.

Run it against your own configuration (your store, your lifetimes, your
grace window) to see what your users' browsers will see::

    browser = Browser(clock)
    browser.receive(flow.decide(browser.request("POST", credentials=login)).set_cookies)
    run_refresh_race(flow, browser, tabs=8, trials=50).assert_ok()

What one trial does
-------------------
The tabs start as copies of one cookie jar. The harness keeps its own
timeline (``now`` is passed to every decision; no clock is read and none is
moved) and lets each access cookie run out exactly as a browser would, by
its ``Max-Age``. Then, in order:

1. **All tabs at once.** Every tab sends the same refresh cookie in the same
   instant (threads released by a :class:`threading.Barrier` for
   :class:`~tokenflow.Flow`, tasks released by an :class:`asyncio.Event` for
   :class:`~tokenflow.AsyncFlow`). Exactly one tab must be told it rotated
   the token (``Refreshed(grace=False)``), every other one that it replayed
   the predecessor inside the grace window (``Refreshed(grace=True)``), all
   with the same generation and no :class:`~tokenflow.events.ReuseDetected`.
2. **A lost response.** The winning tab's response never arrives: its
   ``Set-Cookie`` is not applied, so that tab still holds the old token and
   retries it half a grace window later. It must get the same successor
   (``grace=True``, same generation): no logout.
3. **Every tab keeps working.** Each tab is served by its new access token
   (:class:`~tokenflow.Process`), then, once those have run out, each tab
   refreshes in turn: the first rotates and all others get the grace replay.
   That only happens if every tab held the very same refresh secret.
4. **Set-Cookie applied out of order.** The response lost in step 2 finally
   reaches a jar *after* the newer response of step 3, so the jar ends up
   holding the immediate predecessor of the current token. Used inside the
   grace window, it gets the current successor back: no logout. That jar
   then serves as one of the tabs in the next trial.

After the last trial (unless ``check_stale_reuse=False``) the harness checks
the other side of step 4, which is **defined behaviour, not a failure**: a
stale ``Set-Cookie`` applied out of order and used *after* the grace window
is indistinguishable from a stolen token being replayed. It is answered as
reuse (:class:`~tokenflow.events.ReuseDetected` with cause
``PREDECESSOR_AFTER_GRACE``), the whole session is revoked, and every tab is
logged out at its next refresh. The grace window exists so that the honest
version of this race (a response that is merely late) converges; choose
``grace_seconds`` longer than your slowest client's retry.

The harness does nothing but call ``flow.decide``: no I/O of its own. The
browser passed in is copied, never changed; after a run its refresh token is
stale (and the session revoked, with the final check).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import sys
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .._config import FlowConfig
from .._drivers import AsyncFlow, Flow
from .._model import (
    Decision,
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
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
)
from .browser import Browser

__all__ = ["RaceReport", "run_refresh_race", "run_refresh_race_async"]

_SHOWN_FAILURES: Final = 12
"""Failures quoted in :meth:`RaceReport.assert_ok`'s message; the rest are counted."""


# -- the report ------------------------------------------------------------------


@dataclass
class RaceReport:
    """What a refresh race run saw, with :meth:`assert_ok` to fail a test on it.

    The counts cover every decision the run made. A clean run of ``n``
    completed trials has ``2 * n`` rotations (the race and the tab-by-tab
    refresh each rotate once) and ``2 * tabs * n`` grace replays (``tabs - 1``
    in each of those two, plus the lost response's retry and the out-of-order
    jar), and no reuse, no unavailable decision and no failure.
    """

    label: str
    """Which flow and store ran, for messages."""
    tabs: int
    """Tabs racing in each trial."""
    trials: int
    """Trials asked for."""
    grace_seconds: float
    """The flow's grace window, for the assertion message's hints."""
    completed: int = 0
    """Trials run to their end. Fewer than ``trials`` means the session was
    lost (revoked or expired) and the remaining trials could not run."""
    decisions: int = 0
    """Decisions the run asked the flow for."""
    rotations: int = 0
    """``Refreshed(grace=False)`` events: the refresh token was rotated."""
    graces: int = 0
    """``Refreshed(grace=True)`` events: the predecessor was answered inside the window."""
    reuses: int = 0
    """Unexpected :class:`~tokenflow.events.ReuseDetected` events: a user would have been logged
    out. The deliberate check of a stale token after the window is not counted here."""
    unavailable: int = 0
    """:class:`~tokenflow.Unavailable` decisions (a port failed, e.g. a store lock timed out)."""
    stale_reuse_detected: bool | None = None
    """The final check: True when a stale ``Set-Cookie`` used after the grace window was
    detected as reuse and ended the session, as defined; None when it did not run."""
    failures: list[str] = field(default_factory=list)
    """Every deviation from the expected outcome, in the order seen."""
    hints: list[str] = field(default_factory=list)
    """Likely causes of the failures, for the assertion message."""
    seconds: float = 0.0
    """Wall time of the run."""

    @property
    def ok(self) -> bool:
        """True when every trial ran and behaved (see :meth:`assert_ok`)."""
        return not self._problems()

    def summary(self) -> str:
        """One line for logs: the counts and the time taken."""
        stale = {None: "not checked", True: "detected", False: "MISSED"}[self.stale_reuse_detected]
        per_trial = 1000 * self.seconds / self.completed if self.completed else 0.0
        return (
            f"{self.label}, {self.tabs} tabs: {self.completed}/{self.trials} trials, "
            f"{self.decisions} decisions, {self.rotations} rotations, {self.graces} graces, "
            f"{self.reuses} reuses, {self.unavailable} unavailable, "
            f"{len(self.failures)} failures, stale reuse {stale} "
            f"({self.seconds:.2f} s, {per_trial:.1f} ms/trial)"
        )

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if self.completed != self.trials:
            problems.append(f"{self.completed} of {self.trials} trials completed")
        # Cross-checks of the counts: a failure list that missed something
        # (or a store that answered twice) still shows up here. An aborted run
        # stopped mid-trial, so its counts say nothing the abort did not.
        elif self.rotations != 2 * self.completed:
            problems.append(f"{self.rotations} rotations, expected {2 * self.completed}")
        elif self.graces != 2 * self.tabs * self.completed:
            problems.append(
                f"{self.graces} grace replays, expected {2 * self.tabs * self.completed}"
            )
        if self.reuses:
            problems.append(f"unexpected reuse detections: {self.reuses}")
        if self.unavailable:
            problems.append(f"Unavailable decisions: {self.unavailable}")
        if self.stale_reuse_detected is False:
            problems.append("a stale token used after the grace window was not detected as reuse")
        if self.failures:
            problems.append(f"failures: {len(self.failures)}")
        return problems

    def assert_ok(self) -> None:
        """Raise :class:`AssertionError` explaining every problem, unless the run was clean.

        Clean means: every trial completed; exactly one rotation per race and
        grace replays for everything else; no unexpected reuse; no
        Unavailable; the stale-token check (when run) detected reuse.
        """
        problems = self._problems()
        if not problems:
            return
        lines = [
            f"refresh race over {self.label} with {self.tabs} tabs failed: " + "; ".join(problems),
            f"  {self.summary()}",
        ]
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        lines.extend(f"  - {failure}" for failure in self.failures[:_SHOWN_FAILURES])
        if len(self.failures) > _SHOWN_FAILURES:
            lines.append(f"  ... and {len(self.failures) - _SHOWN_FAILURES} more failures")
        # Not ``assert``: the check must still fail under ``python -O``.
        raise AssertionError("\n".join(lines))


# -- the scenario, written once for both drivers ---------------------------------
#
# Like tokenflow's core, the scenario is a generator: it yields the requests it
# wants decided and receives the decisions, so that threads (Flow) and tasks
# (AsyncFlow) are the only difference between the two entry points.


@dataclass(frozen=True, slots=True)
class _Send:
    """One request, decided at ``now`` on the caller's own thread or task."""

    request: Request
    now: float


@dataclass(frozen=True, slots=True)
class _Race:
    """Requests released together, one thread or task each, all decided at ``now``."""

    requests: tuple[Request, ...]
    now: float


_Outcome: TypeAlias = Decision | Exception
"""What ``decide`` returned, or raised (a bug: it must never raise for client input)."""
_Step: TypeAlias = _Send | _Race
_Steps: TypeAlias = Generator[_Step, Any, None]


class _Timeline:
    """The harness's clock: every tab's jar reads it, and every decision is made at it."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance_to(self, when: float) -> float:
        """Move forward to ``when`` (never back); the new time."""
        self.now = max(self.now, when)
        return self.now


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated run: sizes, and the configuration facts the timeline needs."""

    tabs: int
    trials: int
    access_name: str
    grace: float
    leeway: float
    check_stale_reuse: bool


@dataclass(frozen=True, slots=True)
class _Late:
    """What a trial leaves for the final check: the response that arrived late,
    and when the rotation that made it stale happened."""

    response: Reissue
    rotated_at: float


# String fields worth quoting; the others (user and session ids, origins) are
# long and say nothing about what went wrong.
_NAMED: Final = frozenset({"port", "name", "method"})


def _fact(name: str, value: object) -> str | None:
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if isinstance(value, (bool, int)) or (isinstance(value, str) and name in _NAMED):
        return str(value)
    return None


def _event_text(event: object) -> str:
    assert dataclasses.is_dataclass(event)
    facts = [
        f"{f.name}={text}"
        for f in dataclasses.fields(event)
        if (text := _fact(f.name, getattr(event, f.name))) is not None
    ]
    return f"{type(event).__name__}({', '.join(facts)})"


def _describe(outcome: _Outcome) -> str:
    """A decision in one line: its type, reason and events."""
    if isinstance(outcome, Exception):
        # From decide (a bug: it never raises for client input) or from the
        # harness itself (a broken barrier, a timeout).
        return f"{outcome!r} instead of a decision"
    parts: list[str] = []
    if isinstance(outcome, Unauthorized):
        parts.append(outcome.reason.value)
    elif isinstance(outcome, Unavailable):
        parts.append(f"{outcome.port} port failed: {outcome.error!r}")
    parts.extend(_event_text(event) for event in outcome.events)
    return f"{type(outcome).__name__}({'; '.join(parts)})"


def _refreshed(decision: Reissue) -> Refreshed | None:
    for event in decision.events:
        if type(event) is Refreshed:
            return event
    return None


def _access_gone(tabs: Sequence[Browser], name: str) -> float:
    """The first instant at which no tab's jar still sends an access cookie."""
    return max((tab.jar[name][1] for tab in tabs if name in tab.jar), default=-math.inf)


def _max_age(set_cookies: Sequence[str], name: str) -> float:
    """The ``Max-Age`` of cookie ``name`` in a response (0 if it sets none)."""
    for header in set_cookies:
        pair, _, attributes = header.partition(";")
        if pair.partition("=")[0].strip() != name:
            continue
        for attribute in attributes.split(";"):
            key, _, raw = attribute.strip().partition("=")
            if key.lower() == "max-age":
                return float(raw)
    return 0.0


def _copy(tab: Browser) -> Browser:
    return Browser(tab.clock, tab.host, tab.origin, dict(tab.jar))


class _Run:
    """The scenario's bookkeeping: counts, the session it learned, failure messages."""

    def __init__(self, report: RaceReport, plan: _Plan) -> None:
        self.report = report
        self.plan = plan
        self.where = "before the first trial"
        self.session_id: str | None = None
        self.generation: int | None = None
        self.revoked: str | None = None
        """Why the session was revoked, once an unexpected decision revoked it."""

    def fail(self, message: str) -> None:
        self.report.failures.append(f"{self.where}: {message}")

    def hint(self, text: str) -> None:
        if text not in self.report.hints:
            self.report.hints.append(text)

    def tally(self, outcome: _Outcome, *, reuse_expected: bool = False) -> None:
        report = self.report
        report.decisions += 1
        if isinstance(outcome, Exception):
            return
        if isinstance(outcome, Unavailable):
            report.unavailable += 1
            self.hint(
                "a port failed under concurrency: look at the Unavailable decisions "
                "(a store lock or connection timeout?)"
            )
        for event in outcome.events:
            if type(event) is Refreshed:
                if event.grace:
                    report.graces += 1
                else:
                    report.rotations += 1
            elif type(event) is ReuseDetected and not reuse_expected:
                report.reuses += 1
                if self.plan.grace <= 0:
                    self.hint(
                        "grace_seconds is 0: parallel tabs and retried requests present the "
                        "predecessor, which is then reuse; set a grace window of a few seconds"
                    )
            elif type(event) is SessionRevoked and not reuse_expected:
                self.revoked = self.revoked or f"revoked ({event.reason.value})"
            elif type(event) is RefreshEnded and event.reason is RefreshEndedReason.EXPIRED:
                self.hint(
                    "the session reached its idle or absolute lifetime during the run: log "
                    "the browser in right before it, or lower trials"
                )

    def refresh(
        self,
        outcome: _Outcome,
        who: str,
        *,
        grace: bool | None = None,
        generation: int | None = None,
    ) -> tuple[Reissue, Refreshed] | None:
        """Check that ``outcome`` refreshed this run's session; None when it did not."""
        self.tally(outcome)
        event = _refreshed(outcome) if isinstance(outcome, Reissue) else None
        if event is None:
            self.fail(f"{who} got {_describe(outcome)}, expected a refresh")
            return None
        assert isinstance(outcome, Reissue)
        wrong: list[str] = []
        if grace is not None and event.grace is not grace:
            got, want = (
                ("grace replay", "rotation") if event.grace else ("rotation", "grace replay")
            )
            wrong.append(f"a {got}, expected a {want}")
        if generation is not None and event.generation != generation:
            wrong.append(f"generation {event.generation}, expected {generation}")
        if self.session_id is None:
            self.session_id = event.session_id
        elif event.session_id != self.session_id:
            wrong.append("another session than the one the browser was logged in to")
        if wrong:
            self.fail(f"{who} got {'; '.join(wrong)}: {_describe(outcome)}")
        return outcome, event

    def served(self, outcome: _Outcome, who: str) -> None:
        """Check that ``outcome`` is the access token serving this run's session."""
        self.tally(outcome)
        if not isinstance(outcome, Process):
            self.fail(f"{who} got {_describe(outcome)}, expected Process (its new access token)")
        elif outcome.session_id != self.session_id:
            self.fail(f"{who} was served by an access token of another session")

    def next_generation(self, generation: int) -> None:
        """Record the session's generation after a rotation; it must be the next one."""
        if self.generation is not None and generation != self.generation + 1:
            self.fail(f"the session went from generation {self.generation} to {generation}")
        self.generation = generation


def _resync(tabs: list[Browser], fresh: Sequence[int], run: _Run) -> bool:
    """Give every tab that missed the last step a sibling's cookies; False if none made it.

    Tabs of one real browser share a jar, so this is what the browser would
    hold. The failure was recorded already; re-syncing keeps it from
    cascading into every later step.
    """
    if run.revoked is not None:
        run.fail(f"the session was {run.revoked}: every tab is logged out")
        return False
    if not fresh:
        run.fail("no tab holds a working refresh token any more: the session is lost")
        return False
    for i in range(len(tabs)):
        if i not in fresh:
            tabs[i].jar = dict(tabs[fresh[0]].jar)
    return True


def _trial(
    run: _Run, clock: _Timeline, tabs: list[Browser], number: int
) -> Generator[_Step, Any, _Late | None]:
    """One trial (steps 1 to 4 of the module docstring); None when the session was lost."""
    plan = run.plan
    prefix = f"trial {number}/{plan.trials}"

    # 1. Every tab at once, at the first instant no tab still sends an access cookie.
    run.where = f"{prefix}, {plan.tabs} tabs at once"
    t = clock.advance_to(_access_gone(tabs, plan.access_name))
    outcomes: Sequence[_Outcome] = yield _Race(tuple(tab.request() for tab in tabs), t)
    fresh: dict[int, tuple[Reissue, Refreshed]] = {}
    for i, outcome in enumerate(outcomes):
        got = run.refresh(outcome, f"tab {i}")
        if got is not None:
            fresh[i] = got
    winners = [i for i, (_, event) in fresh.items() if not event.grace]
    if len(winners) != 1:
        run.fail(
            f"{len(winners)} tabs were told they rotated the token (Refreshed grace=False), "
            f"expected exactly one: tabs {winners}"
        )
    generations = sorted({event.generation for _, event in fresh.values()})
    if len(generations) > 1:
        run.fail(f"the tabs were given different generations {generations}")
    if not fresh:
        _resync(tabs, [], run)
        return None
    # The winner's response is the one to lose. Without a winner (its rotation
    # committed but its answer failed, say) the session lives on in the grace
    # replays, which carry the same generation: lose one of those instead.
    dropped = winners[0] if winners else min(fresh)
    lost, event = fresh.pop(dropped)
    generation = event.generation
    run.next_generation(generation)
    for i, (decision, _) in fresh.items():
        tabs[i].receive(decision.set_cookies)

    # 2. That response is lost; its tab retries the old token inside the window.
    run.where = f"{prefix}, lost response"
    clock.advance_to(t + plan.grace / 2)
    outcome = yield _Send(tabs[dropped].request(), clock.now)
    got = run.refresh(outcome, f"tab {dropped} retrying", grace=True, generation=generation)
    if got is not None:
        tabs[dropped].receive(got[0].set_cookies)
        fresh[dropped] = got
    if not _resync(tabs, sorted(fresh), run):
        return None

    # 3. Every tab is served by its new access token, then refreshes in turn. The
    # lost response's access token must be dead on the server (exp + leeway) by
    # then, so that step 4 exercises its refresh token, not its access token.
    run.where = f"{prefix}, each tab afterwards"
    for i, tab in enumerate(tabs):
        outcome = yield _Send(tab.request(), clock.now)
        run.served(outcome, f"tab {i}")
    lost_access_dead = t + _max_age(lost.set_cookies, plan.access_name) + plan.leeway
    rotated_at = clock.advance_to(max(_access_gone(tabs, plan.access_name), lost_access_dead))
    # Each trial starts at another tab, so that every tab gets to be the one that rotates.
    order = [(number - 1 + j) % plan.tabs for j in range(plan.tabs)]
    refreshed: list[int] = []
    for i in order:
        outcome = yield _Send(tabs[i].request(), rotated_at)
        # The first tab to get through rotates; every later one replays.
        got = run.refresh(outcome, f"tab {i}", grace=bool(refreshed), generation=generation + 1)
        if got is not None:
            tabs[i].receive(got[0].set_cookies)
            refreshed.append(i)
    run.next_generation(generation + 1)
    if not _resync(tabs, refreshed, run):
        return None

    # 4. The lost response arrives after the newer one: the jar now holds the
    # immediate predecessor, used inside the window. It must converge.
    run.where = f"{prefix}, Set-Cookie applied out of order inside the grace window"
    jar = _copy(tabs[refreshed[0]])
    jar.receive(lost.set_cookies)
    clock.advance_to(rotated_at + plan.grace / 2)
    outcome = yield _Send(jar.request(), clock.now)
    got = run.refresh(outcome, "the jar", grace=True, generation=generation + 1)
    if got is not None:
        jar.receive(got[0].set_cookies)
        tabs[refreshed[0]] = jar  # it must keep working as a tab in the next trial
    return _Late(lost, rotated_at)


def _stale_after_window(run: _Run, clock: _Timeline, tabs: list[Browser], late: _Late) -> _Steps:
    """The defined behaviour: a stale token used after the window is reuse and ends the session."""
    plan = run.plan
    run.where = f"after trial {plan.trials}, Set-Cookie applied out of order after the grace window"
    jar = _copy(tabs[0])
    jar.receive(late.response.set_cookies)
    # One second past the window: "now - rotated_at < grace" is then clearly false.
    clock.advance_to(late.rotated_at + plan.grace + 1)
    outcome: _Outcome = yield _Send(jar.request(), clock.now)
    run.tally(outcome, reuse_expected=True)
    events = () if isinstance(outcome, Exception) else outcome.events
    detected = (
        isinstance(outcome, Unauthorized)
        and outcome.reason is UnauthorizedReason.REFRESH_REUSED
        and any(
            type(e) is ReuseDetected and e.reason is ReuseDetectedReason.PREDECESSOR_AFTER_GRACE
            for e in events
        )
        and any(
            type(e) is SessionRevoked and e.reason is SessionRevokedReason.REUSE for e in events
        )
    )
    run.report.stale_reuse_detected = detected
    if not detected:
        run.fail(
            f"the jar got {_describe(outcome)}, expected Unauthorized(refresh_reused) with "
            "ReuseDetected(predecessor_after_grace) and SessionRevoked(reuse)"
        )
        return
    # Reuse revokes the whole session: every tab is logged out at its next refresh.
    now = clock.advance_to(_access_gone(tabs, plan.access_name))
    for i, tab in enumerate(tabs):
        outcome = yield _Send(tab.request(), now)
        run.tally(outcome)
        if not (
            isinstance(outcome, Unauthorized) and outcome.reason is UnauthorizedReason.SESSION_ENDED
        ):
            run.fail(
                f"tab {i} got {_describe(outcome)} after the session was revoked for reuse, "
                "expected Unauthorized(session_ended)"
            )


def _scenario(run: _Run, start: Browser, t0: float) -> _Steps:
    clock = _Timeline(t0)
    tabs = [Browser(clock, start.host, start.origin, dict(start.jar)) for _ in range(run.plan.tabs)]
    late: _Late | None = None
    for number in range(1, run.plan.trials + 1):
        late = yield from _trial(run, clock, tabs, number)
        if late is None:
            left = run.plan.trials - number
            if left:
                run.fail(f"the remaining {left} trials were not run")
            return
        run.report.completed += 1
    if run.plan.check_stale_reuse and late is not None:
        yield from _stale_after_window(run, clock, tabs, late)


# -- validation and the two drivers -------------------------------------------


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
    return value


def _plan(
    config: FlowConfig,
    browser: Browser,
    tabs: int,
    trials: int,
    now: float | None,
    check_stale_reuse: bool,
    timeout: float,
) -> tuple[_Plan, float]:
    """Validate a run before it starts (misuse raises ValueError); the plan and start time."""
    tabs = _whole("tabs", tabs)
    trials = _whole("trials", trials)
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    start = browser.clock() if now is None else now
    if not (isinstance(start, (int, float)) and math.isfinite(start)):
        raise ValueError(f"now must be a finite time in seconds since the epoch, not {start!r}")
    policy = config.cookies
    held = browser.jar.get(policy.refresh_name)
    if held is None or held[1] <= start:
        raise ValueError(
            f"the browser holds no live {policy.refresh_name!r} cookie at {start}: log it in "
            "first (browser.receive(flow.decide(browser.request('POST', credentials=...))"
            ".set_cookies))"
        )
    access, grace, leeway = config.access_ttl, float(config.grace_seconds), config.leeway
    # Between two rotations the timeline moves by one access lifetime plus the
    # larger of half a window and the leeway (step 3 of a trial); the session
    # must not die of idleness in that gap, or every trial would end in 401.
    gap = access + max(grace / 2, leeway) + 1
    if gap >= config.refresh_idle_ttl:
        raise ValueError(
            f"refresh_idle_ttl ({config.refresh_idle_ttl} s) leaves no room between refreshes: "
            f"the harness lets the access token ({access} s) run out and waits up to "
            f"{gap - access:g} s more; raise refresh_idle_ttl"
        )
    # Every trial lets two access tokens run out and opens two grace windows. The
    # session's absolute lifetime must cover the whole run, or the last trials
    # would fail for a reason that has nothing to do with races.
    per_trial = 2 * access + 1.5 * grace + leeway + 1
    # Before the first trial, the browser's access cookie may have a whole
    # lifetime left; after the last, the stale-token check waits out one more.
    overhead = access + (grace + 1 + access if check_stale_reuse else 0)
    needed = overhead + trials * per_trial
    if needed > config.refresh_absolute_ttl:
        fits = max(0, int((config.refresh_absolute_ttl - overhead) // per_trial))
        raise ValueError(
            f"{trials} trials take about {needed:.0f} s of one session's life, but "
            f"refresh_absolute_ttl is {config.refresh_absolute_ttl} s: run at most {fits} "
            "trials, or raise refresh_absolute_ttl in a test configuration"
        )
    plan = _Plan(
        tabs=tabs,
        trials=trials,
        access_name=policy.access_name,
        grace=grace,
        leeway=leeway,
        check_stale_reuse=bool(check_stale_reuse),
    )
    return plan, float(start)


def _label(flow: Flow | AsyncFlow, label: str | None) -> str:
    return label if label is not None else f"{type(flow).__name__}({type(flow.store).__name__})"


def _decide(flow: Flow, request: Request, now: float) -> _Outcome:
    try:
        return flow.decide(request, now=now)
    except Exception as exc:
        return exc


def _race_threads(
    pool: ThreadPoolExecutor, flow: Flow, race: _Race, timeout: float
) -> tuple[list[_Outcome], bool]:
    """Decide every request on its own thread, all released by one barrier;
    the outcomes, and whether some thread is still stuck in ``decide``."""
    barrier = threading.Barrier(len(race.requests), timeout=timeout)

    def tab(request: Request) -> _Outcome:
        try:
            barrier.wait()
        except threading.BrokenBarrierError as exc:
            return exc
        return _decide(flow, request, race.now)

    futures: list[Future[_Outcome]] = [pool.submit(tab, r) for r in race.requests]
    outcomes: list[_Outcome] = []
    stuck = False
    deadline = time.monotonic() + 2 * timeout
    for future in futures:
        try:
            outcomes.append(future.result(max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            stuck = True
            outcomes.append(TimeoutError(f"decide did not return within {2 * timeout:g} s"))
    return outcomes, stuck


def run_refresh_race(
    flow: Flow,
    browser: Browser,
    *,
    tabs: int,
    trials: int,
    now: float | None = None,
    check_stale_reuse: bool = True,
    timeout: float = 30.0,
    label: str | None = None,
    switch_interval: float | None = None,
) -> RaceReport:
    """Race ``tabs`` threads refreshing one session, ``trials`` times; the report.

    ``browser`` must be logged in (hold a refresh cookie); it is copied, never
    changed. ``now`` starts the harness's timeline (default
    ``browser.clock()``); every decision is made at an explicit ``now`` on it,
    so the flow's clock is never read. Each trial is described in the module
    docstring of :mod:`tokenflow.testing.races`; with ``check_stale_reuse`` the run
    ends by showing that a stale token used after the grace window is
    detected as reuse, which revokes the session.

    ``timeout`` bounds each wait for the racing threads (seconds).
    ``switch_interval``, if given, is set with :func:`sys.setswitchinterval`
    for the run and restored afterwards: CPython switches threads every 5 ms
    by default, far longer than a decision on an in-memory store, so without
    it the released threads mostly run one after the other. ``1e-6`` makes
    them interleave inside ``decide``. (Stores that release the GIL, such as
    SQLite or a network client, interleave either way.)

    Raises
    :class:`ValueError` for arguments the run cannot work with: a browser
    that is not logged in, or more trials than the session's absolute
    lifetime can hold. Everything the flow answers goes into the report;
    call :meth:`RaceReport.assert_ok` to fail a test on it.
    """
    plan, start = _plan(flow.config, browser, tabs, trials, now, check_stale_reuse, timeout)
    if switch_interval is not None and not (
        isinstance(switch_interval, (int, float)) and 0 < switch_interval < math.inf
    ):
        raise ValueError(f"switch_interval must be positive seconds, not {switch_interval!r}")
    report = RaceReport(_label(flow, label), plan.tabs, plan.trials, plan.grace)
    run = _Run(report, plan)
    began = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=plan.tabs, thread_name_prefix="tokenflow-race")
    stuck = False
    previous_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        steps = _scenario(run, browser, start)
        reply: object = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration:
                break
            if type(step) is _Race:
                reply, stuck = _race_threads(pool, flow, step, timeout)
                if stuck:
                    run.fail("a racing thread never returned from decide; the run stopped")
                    break
            else:
                assert type(step) is _Send
                reply = _decide(flow, step.request, step.now)
    finally:
        sys.setswitchinterval(previous_interval)
        # A thread stuck in a hung port cannot be killed; do not wait for it.
        pool.shutdown(wait=not stuck, cancel_futures=True)
    report.seconds = time.perf_counter() - began
    return report


async def _adecide(flow: AsyncFlow, request: Request, now: float) -> _Outcome:
    try:
        return await flow.decide(request, now=now)
    except Exception as exc:
        return exc


async def _race_tasks(flow: AsyncFlow, race: _Race, timeout: float) -> list[_Outcome]:
    """Decide every request in its own task; none starts before all are waiting."""
    # An Event and a count rather than asyncio.Barrier, which needs Python 3.11.
    release = asyncio.Event()
    waiting = 0

    async def tab(request: Request) -> _Outcome:
        nonlocal waiting
        waiting += 1
        await release.wait()
        return await _adecide(flow, request, race.now)

    tasks = [asyncio.ensure_future(tab(r)) for r in race.requests]
    while waiting < len(tasks):
        await asyncio.sleep(0)
    release.set()
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return [
        task.result() if task in done else TimeoutError(f"decide did not return in {timeout:g} s")
        for task in tasks
    ]


async def run_refresh_race_async(
    flow: AsyncFlow,
    browser: Browser,
    *,
    tabs: int,
    trials: int,
    now: float | None = None,
    check_stale_reuse: bool = True,
    timeout: float = 30.0,
    label: str | None = None,
) -> RaceReport:
    """:func:`run_refresh_race` for an :class:`~tokenflow.AsyncFlow`: the tabs are tasks.

    The racing tasks are released together by one :class:`asyncio.Event`;
    how far they then overlap depends on the store (an in-memory store
    answers without suspending, so the tasks run one after the other at the
    same ``now``; a store that awaits a thread or a socket interleaves them).
    A task still running after ``timeout`` seconds is cancelled and recorded.
    """
    plan, start = _plan(flow.config, browser, tabs, trials, now, check_stale_reuse, timeout)
    report = RaceReport(_label(flow, label), plan.tabs, plan.trials, plan.grace)
    run = _Run(report, plan)
    began = time.perf_counter()
    steps = _scenario(run, browser, start)
    reply: object = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration:
            break
        if type(step) is _Race:
            reply = await _race_tasks(flow, step, timeout)
        else:
            assert type(step) is _Send
            reply = await _adecide(flow, step.request, step.now)
    report.seconds = time.perf_counter() - began
    return report
