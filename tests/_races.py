"""Race trials: N callers rotate one session at the same instant, many times over.

Reusable by tests and benchmarks: it depends on tokenflow and the standard
library only (no pytest). Put ``tests/`` on ``sys.path`` and import
:func:`race_sync` or :func:`race_async`.

One trial: create a fresh session; release ``callers`` rotations presenting
its first refresh token together (a :class:`threading.Barrier` for threads,
an :class:`asyncio.Event` for tasks), each with its own random salt as the
core would draw. The store must then have:

- answered exactly one ROTATED and GRACE to every other caller;
- given every GRACE caller the winner's salt, so that all callers derive the
  very same successor secret (parallel tabs converge on one generation);
- revoked nothing (no REUSED_*, no UNKNOWN_SESSION);
- left exactly one live generation: the winner's successor rotates (to
  generation 2), and the session still exists afterwards, to be revoked.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.ports import AsyncSessionStore, SessionStore
from tokenflow.stores import NewSession, Rotation, RotationOutcome, RotationResult, SessionInfo

__all__ = ["RaceReport", "race_async", "race_sync"]

IDLE_SECONDS = 1800.0
ABSOLUTE_SECONDS = 12 * 3600.0
GRACE_SECONDS = 5.0  # FlowConfig defaults, here and above


@dataclass
class RaceReport:
    """The tally of a series of race trials."""

    label: str
    callers: int
    trials: int = 0
    outcomes: Counter[RotationOutcome] = field(default_factory=Counter)
    bad_trials: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True if every trial behaved."""
        return self.bad_trials == 0 and self.trials > 0

    def summary(self) -> str:
        """One line for logs and ``pytest -s``."""
        rotated = self.outcomes[RotationOutcome.ROTATED]
        grace = self.outcomes[RotationOutcome.GRACE]
        other = sum(self.outcomes.values()) - rotated - grace
        per_trial = 1000 * self.seconds / self.trials if self.trials else 0.0
        return (
            f"{self.label} N={self.callers}: {self.trials} trials, {rotated} ROTATED, "
            f"{grace} GRACE, {other} other, {self.bad_trials} bad trials "
            f"({self.seconds:.2f} s, {per_trial:.1f} ms/trial)"
        )


@dataclass
class _Trial:
    session: NewSession
    secret: bytes
    rotations: list[Rotation]


def _new_trial(user_id: str, callers: int, clock: Callable[[], float]) -> _Trial:
    secret = secrets.token_bytes(32)
    now = clock()
    info = SessionInfo(
        session_id=secrets.token_urlsafe(16),
        user_id=user_id,
        created_at=now,
        refreshed_at=now,
        idle_expires_at=now + IDLE_SECONDS,
        absolute_expires_at=now + ABSOLUTE_SECONDS,
    )
    rotations = []
    for _ in range(callers):
        salt = secrets.token_bytes(16)
        rotations.append(
            Rotation(
                session_id=info.session_id,
                presented=verifier_of(secret),
                successor=verifier_of(derive_successor(secret, salt)),
                salt=salt,
                now=now,  # replaced by the caller's own clock reading at release
                idle_seconds=IDLE_SECONDS,
                grace_seconds=GRACE_SECONDS,
            )
        )
    return _Trial(NewSession(info, verifier_of(secret)), secret, rotations)


def _at(rotation: Rotation, now: float) -> Rotation:
    return Rotation(
        rotation.session_id,
        rotation.presented,
        rotation.successor,
        rotation.salt,
        now,
        rotation.idle_seconds,
        rotation.grace_seconds,
    )


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
            problems.append(f"{result.outcome.name} reported generation != 1")
        if result.outcome is RotationOutcome.GRACE:
            if result.salt != winner_salt:
                problems.append("GRACE carried a salt other than the winner's")
            # What the core does with the salt: every caller ends with one secret.
            elif derive_successor(trial.secret, result.salt) != successor:
                problems.append("GRACE caller derived another successor")
    return problems, successor


def _follow_up(trial: _Trial, successor: bytes, now: float) -> Rotation:
    """The next refresh by the winner's successor: must rotate to generation 2."""
    salt = secrets.token_bytes(16)
    return Rotation(
        trial.session.info.session_id,
        verifier_of(successor),
        verifier_of(derive_successor(successor, salt)),
        salt,
        now,
        IDLE_SECONDS,
        GRACE_SECONDS,
    )


def _after(
    report: RaceReport, problems: list[str], follow: RotationResult | None, gone: bool
) -> None:
    if follow is not None and (
        follow.outcome is not RotationOutcome.ROTATED
        or follow.session is None
        or follow.session.generation != 2
    ):
        problems.append(f"winner's successor answered {follow.outcome.name}, not ROTATED gen 2")
    if not gone:
        problems.append("session was gone before the final revoke")
    report.trials += 1
    if problems:
        report.bad_trials += 1
        if len(report.problems) < 20:
            report.problems.append(f"trial {report.trials}: " + "; ".join(problems))


def race_sync(
    store: SessionStore,
    callers: int,
    trials: int,
    *,
    label: str = "",
    clock: Callable[[], float] = time.time,
) -> RaceReport:
    """Run ``trials`` races of ``callers`` threads on a sync store."""
    report = RaceReport(label or type(store).__name__, callers)
    user_id = "race-" + secrets.token_hex(8)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers, thread_name_prefix="race") as pool:
        for _ in range(trials):
            trial = _new_trial(user_id, callers, clock)
            store.create(trial.session)
            barrier = threading.Barrier(callers, timeout=60)

            def call(rotation: Rotation, barrier: threading.Barrier = barrier) -> RotationResult:
                barrier.wait()
                return store.rotate(_at(rotation, clock()))

            futures = [pool.submit(call, r) for r in trial.rotations]
            results = [f.result() for f in futures]
            for r in results:
                report.outcomes[r.outcome] += 1
            problems, successor = _judge(trial, results)
            follow = None
            if successor is not None:
                follow = store.rotate(_follow_up(trial, successor, clock()))
            gone = store.revoke(trial.session.info.session_id)
            _after(report, problems, follow, gone)
    report.seconds = time.perf_counter() - started
    store.revoke_user(user_id)
    return report


async def race_async(
    store: AsyncSessionStore,
    callers: int,
    trials: int,
    *,
    label: str = "",
    clock: Callable[[], float] = time.time,
) -> RaceReport:
    """Run ``trials`` races of ``callers`` asyncio tasks on an async store."""
    report = RaceReport(label or type(store).__name__, callers)
    user_id = "race-" + secrets.token_hex(8)
    started = time.perf_counter()
    for _ in range(trials):
        trial = _new_trial(user_id, callers, clock)
        await store.create(trial.session)
        release = asyncio.Event()
        waiting = 0

        async def call(rotation: Rotation, release: asyncio.Event = release) -> RotationResult:
            nonlocal waiting
            waiting += 1
            await release.wait()
            return await store.rotate(_at(rotation, clock()))

        tasks = [asyncio.create_task(call(r)) for r in trial.rotations]
        while waiting < callers:  # every task parked on the event before the release
            await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks)
        for r in results:
            report.outcomes[r.outcome] += 1
        problems, successor = _judge(trial, results)
        follow = None
        if successor is not None:
            follow = await store.rotate(_follow_up(trial, successor, clock()))
        gone = await store.revoke(trial.session.info.session_id)
        _after(report, problems, follow, gone)
    report.seconds = time.perf_counter() - started
    await store.revoke_user(user_id)
    return report
