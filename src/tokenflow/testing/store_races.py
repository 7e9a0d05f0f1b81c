"""Store-level rotation races: N callers rotate one session at the same instant.

:func:`run_rotation_race` (threads) and :func:`run_rotation_race_async`
(asyncio tasks) run ``trials`` races against a store and tally every answer
in a :class:`RotationRaceReport`, with exact counts and the wall time, for
tests (``report.assert_ok()``) and for benchmarks (``report.summary()``).
Where :func:`~tokenflow.testing.run_refresh_race` drives whole flows, this
drives the store port alone, so it isolates the store's atomicity.

One trial:

1. create a fresh session under a user id unique to the run;
2. release ``callers`` rotations presenting its first refresh secret together
   (threads behind a :class:`threading.Barrier`, or tasks behind an
   :class:`asyncio.Event` they all wait on), each with its own random salt as
   the core would draw, each stamped with the clock read at release;
3. the store must answer exactly one ROTATED and GRACE to every other caller,
   every answer at generation 1, every GRACE carrying the winner's salt, so
   that every caller derives the same successor (parallel tabs converge);
   nothing may be revoked (no REUSED_*, no UNKNOWN_SESSION);
4. the winner's successor must then rotate once more (to generation 2): the
   one live generation is the winner's;
5. the session must still exist, to be revoked.

The run ends with ``revoke_user`` of its user, so it leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Final

from .._sessions import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    derive_successor,
    verifier_of,
)
from ..ports import AsyncSessionStore, SessionStore

__all__ = ["RotationRaceReport", "run_rotation_race", "run_rotation_race_async"]

_IDLE: Final = 1800.0
_ABSOLUTE: Final = 12 * 3600.0
_GRACE: Final = 5.0  # FlowConfig's defaults
_SHOWN_PROBLEMS: Final = 20
_BARRIER_TIMEOUT: Final = 60.0


@dataclass
class RotationRaceReport:
    """The tally of a series of store-level rotation races.

    A clean run of ``trials`` trials has ``trials`` ROTATED answers,
    ``trials * (callers - 1)`` GRACE answers, nothing else, and no bad trial.
    """

    label: str
    """Which store ran, for messages."""
    callers: int
    """Concurrent callers in each trial."""
    trials: int = 0
    """Trials run."""
    outcomes: Counter[RotationOutcome] = field(default_factory=Counter)
    """Every racing caller's answer, counted by outcome (follow-ups not included)."""
    bad_trials: int = 0
    """Trials with at least one problem."""
    problems: list[str] = field(default_factory=list)
    """What went wrong, for the first few bad trials."""
    seconds: float = 0.0
    """Wall time of the run."""

    @property
    def ok(self) -> bool:
        """True if at least one trial ran and every trial behaved."""
        return self.bad_trials == 0 and self.trials > 0

    def summary(self) -> str:
        """One line for logs and benchmark output."""
        rotated = self.outcomes[RotationOutcome.ROTATED]
        grace = self.outcomes[RotationOutcome.GRACE]
        other = sum(self.outcomes.values()) - rotated - grace
        per_trial = 1000 * self.seconds / self.trials if self.trials else 0.0
        return (
            f"{self.label} N={self.callers}: {self.trials} trials, {rotated} ROTATED, "
            f"{grace} GRACE, {other} other, {self.bad_trials} bad trials "
            f"({self.seconds:.2f} s, {per_trial:.1f} ms/trial)"
        )

    def assert_ok(self) -> None:
        """Raise :class:`AssertionError` with the problems seen unless the run was clean."""
        if self.ok:
            return
        if self.trials == 0:
            raise AssertionError(f"{self.summary()}: no trial ran")
        shown = "\n  ".join(self.problems)
        raise AssertionError(f"{self.summary()}\n  {shown}")


@dataclass(frozen=True, slots=True)
class _Trial:
    session: NewSession
    secret: bytes
    rotations: tuple[Rotation, ...]


def _new_trial(user_id: str, callers: int, now: float) -> _Trial:
    secret = secrets.token_bytes(32)
    info = SessionInfo(
        session_id=secrets.token_urlsafe(16),
        user_id=user_id,
        created_at=now,
        refreshed_at=now,
        idle_expires_at=now + _IDLE,
        absolute_expires_at=now + _ABSOLUTE,
    )
    rotations = []
    for _ in range(callers):
        salt = secrets.token_bytes(16)
        successor = verifier_of(derive_successor(secret, salt))
        rotations.append(
            Rotation(info.session_id, verifier_of(secret), successor, salt, now, _IDLE, _GRACE)
        )
    return _Trial(NewSession(info, verifier_of(secret)), secret, tuple(rotations))


def _judge(trial: _Trial, results: Sequence[RotationResult]) -> tuple[list[str], bytes | None]:
    """Problems with one trial's answers, and the successor secret everyone derived."""
    problems: list[str] = []
    winners = [i for i, r in enumerate(results) if r.outcome is RotationOutcome.ROTATED]
    if len(winners) != 1:
        problems.append(f"{len(winners)} ROTATED answers")
    others = Counter(
        r.outcome.name
        for r in results
        if r.outcome not in (RotationOutcome.ROTATED, RotationOutcome.GRACE)
    )
    if others:
        problems.append(f"unexpected outcomes {dict(others)}")
    if len(winners) != 1:
        return problems, None
    winner_salt = trial.rotations[winners[0]].salt
    successor = derive_successor(trial.secret, winner_salt)
    for result in results:
        if result.session is None or result.session.generation != 1:
            problems.append(f"{result.outcome.name} reported a generation other than 1")
        if result.outcome is RotationOutcome.GRACE:
            if result.salt != winner_salt:
                problems.append("GRACE carried a salt other than the winner's")
            # What the core does with the salt: every caller ends with one secret.
            elif derive_successor(trial.secret, result.salt) != successor:
                problems.append("a GRACE caller derived another successor")
    return problems, successor


def _follow_up(trial: _Trial, successor: bytes, now: float) -> Rotation:
    """The winner's next refresh: must rotate to generation 2."""
    salt = secrets.token_bytes(16)
    after = verifier_of(derive_successor(successor, salt))
    session_id = trial.session.info.session_id
    return Rotation(session_id, verifier_of(successor), after, salt, now, _IDLE, _GRACE)


def _tally(
    report: RotationRaceReport,
    results: Sequence[RotationResult],
    problems: list[str],
    follow: RotationResult | None,
    existed: bool,
) -> None:
    report.outcomes.update(r.outcome for r in results)
    if follow is not None and (
        follow.outcome is not RotationOutcome.ROTATED
        or follow.session is None
        or follow.session.generation != 2
    ):
        problems.append(
            f"the winner's successor answered {follow.outcome.name}, not ROTATED at generation 2"
        )
    if not existed:
        problems.append("the session was gone before the final revoke")
    report.trials += 1
    if problems:
        report.bad_trials += 1
        if len(report.problems) < _SHOWN_PROBLEMS:
            report.problems.append(f"trial {report.trials}: " + "; ".join(problems))


def _validate(callers: int, trials: int) -> None:
    if callers < 2:
        raise ValueError("a race needs at least 2 concurrent callers")
    if trials < 1:
        raise ValueError("trials must be >= 1")


def run_rotation_race(
    store: SessionStore,
    *,
    callers: int,
    trials: int,
    label: str | None = None,
    clock: Callable[[], float] = time.time,
) -> RotationRaceReport:
    """Run ``trials`` races of ``callers`` threads on a sync store (see the module docstring).

    ``clock`` stamps each rotation's ``now`` at its release; the default is
    the wall clock, as a server would use.
    """
    _validate(callers, trials)
    report = RotationRaceReport(label or type(store).__name__, callers)
    user_id = f"tfrace-{secrets.token_hex(8)}"
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers, thread_name_prefix="tokenflow-race") as pool:
        for _ in range(trials):
            trial = _new_trial(user_id, callers, clock())
            store.create(trial.session)
            barrier = threading.Barrier(callers, timeout=_BARRIER_TIMEOUT)

            def call(rotation: Rotation, barrier: threading.Barrier = barrier) -> RotationResult:
                barrier.wait()
                return store.rotate(replace(rotation, now=clock()))

            results = [f.result() for f in [pool.submit(call, r) for r in trial.rotations]]
            problems, successor = _judge(trial, results)
            follow = None
            if successor is not None:
                follow = store.rotate(_follow_up(trial, successor, clock()))
            existed = store.revoke(trial.session.info.session_id)
            _tally(report, results, problems, follow, existed)
    report.seconds = time.perf_counter() - started
    store.revoke_user(user_id)
    return report


async def run_rotation_race_async(
    store: AsyncSessionStore,
    *,
    callers: int,
    trials: int,
    label: str | None = None,
    clock: Callable[[], float] = time.time,
) -> RotationRaceReport:
    """Run ``trials`` races of ``callers`` asyncio tasks on an async store.

    Await it on the event loop the store belongs to. Every task is parked on
    one event before any is released.
    """
    _validate(callers, trials)
    report = RotationRaceReport(label or type(store).__name__, callers)
    user_id = f"tfrace-{secrets.token_hex(8)}"
    started = time.perf_counter()
    for _ in range(trials):
        trial = _new_trial(user_id, callers, clock())
        await store.create(trial.session)
        release = asyncio.Event()
        waiting = 0

        async def call(rotation: Rotation, release: asyncio.Event = release) -> RotationResult:
            nonlocal waiting
            waiting += 1
            await release.wait()
            return await store.rotate(replace(rotation, now=clock()))

        tasks = [asyncio.ensure_future(call(r)) for r in trial.rotations]
        while waiting < callers:
            await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks)
        problems, successor = _judge(trial, results)
        follow = None
        if successor is not None:
            follow = await store.rotate(_follow_up(trial, successor, clock()))
        existed = await store.revoke(trial.session.info.session_id)
        _tally(report, results, problems, follow, existed)
    report.seconds = time.perf_counter() - started
    await store.revoke_user(user_id)
    return report
