"""The failover drill's accounting, on an in-memory primary and replica (no servers).

``benchmarks/failover.py`` counts lost rotations, grants without commit and
logouts while real servers die. These tests give its machinery a failover
whose losses are known exactly (a replica that stops receiving, then is
promoted) and a flow that grants without the store, and check that the
drill counts what happened, no more and no less.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tokenflow import Decision, Flow, Reissue, Request
from tokenflow.stores import MemoryStore, NewSession, Rotation, RotationResult, SessionInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import failover

SIZES = failover.Sizes(sessions=24, workers=3, warm_up=0.3, runs=1, cost_rotations=1)


class _ReplicatedStore:
    """A primary and a replica; every write is applied to both, in one order,
    until replication is cut. ``fail`` makes every call raise (no primary);
    ``promote`` serves from the replica from then on."""

    def __init__(self) -> None:
        self.primary = MemoryStore()
        self.replica = MemoryStore()
        self.replicating = True
        self.failed = False
        self._lock = threading.Lock()

    def serving(self) -> MemoryStore:
        if self.failed:
            raise ConnectionError("the primary is gone (drill)")
        return self.primary

    def create(self, session: NewSession) -> None:
        with self._lock:
            self.serving().create(session)
            if self.replicating:
                self.replica.create(session)

    def rotate(self, rotation: Rotation) -> RotationResult:
        with self._lock:
            result = self.serving().rotate(rotation)
            if self.replicating:
                self.replica.rotate(rotation)  # the same rule on the same state: same answer
            return result

    def revoke(self, session_id: str) -> bool:
        with self._lock:
            return self.serving().revoke(session_id)

    def revoke_user(self, user_id: str) -> int:
        with self._lock:
            return self.serving().revoke_user(user_id)

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        with self._lock:
            return self.serving().sessions_of(user_id, now=now)

    def cut(self) -> None:
        with self._lock:
            self.replicating = False

    def kill(self) -> None:
        with self._lock:
            self.failed = True

    def promote(self) -> None:
        with self._lock:
            self.primary, self.failed = self.replica, False


def _generation(store: MemoryStore, client: failover._Client) -> int | None:
    sessions = store.sessions_of(client.user_id, now=time.time())
    return sessions[0].generation if sessions else None


def _drill(lag: float) -> tuple[failover.RunResult, dict[str, int]]:
    store = _ReplicatedStore()
    recording = failover._Recording(store)
    flow, users = failover._flow(recording)
    clients = failover._login_all(flow, users, SIZES.sessions, "t")
    at_kill: dict[str, int] = {}

    def kill() -> None:
        store.kill()
        # What was granted on the primary, and what the replica kept.
        for client in clients:
            granted = _generation(store.primary, client)
            kept = _generation(store.replica, client)
            assert granted is not None
            assert kept is not None
            at_kill[client.session_id] = granted - kept

    def promote() -> None:
        time.sleep(0.2)
        store.promote()

    def audit(client: failover._Client) -> int | None:
        return _generation(store.serving(), client)

    drill = failover._Drill(flow, recording, clients, audit, SIZES)
    recovery = drill.run(interrupt=store.cut, lag=lag, kill=kill, after_kill=promote)
    return failover._result("memory", "test", drill, recovery), at_kill


def test_lost_rotations_are_exactly_those_the_replica_missed() -> None:
    result, missed = _drill(lag=0.2)
    # The stream rotates every session many times in 0.2 s: some are missed.
    assert sum(missed.values()) > 0
    assert result.rotations_lost == sum(missed.values())
    rolled_back = sum(1 for n in missed.values() if n > 0)
    assert result.sessions_rolled_back == rolled_back
    # Each of them presents a token the promoted store never saw: logged out
    # as reuse; nobody else is.
    assert result.logged_out_after_kill == rolled_back
    assert set(result.logged_out_reasons) == {"refresh_reused"}
    # Named for what they are: tokens newer than the store, none taken for a replay.
    assert (result.newer_than_store, result.older_generation) == (rolled_back, 0)
    assert result.write_rate_per_s > 0
    assert (result.grants_without_commit, result.cookies_cleared_on_503) == (0, 0)
    assert result.unavailable_after_kill > 0  # while there was no primary
    assert result.recovered
    assert 0.2 <= result.recovery_s < 5


def test_a_replica_that_keeps_up_loses_nothing() -> None:
    result, missed = _drill(lag=0.0)
    assert set(missed.values()) == {0}
    assert (result.rotations_lost, result.sessions_rolled_back) == (0, 0)
    assert result.logged_out_after_kill == 0
    assert result.grants_without_commit == 0
    assert result.decisions_after_kill.get("Reissue", 0) > 0


class _GrantsWithoutStore:
    """A broken driver: after its first real refresh, it keeps answering with
    that Reissue and never asks the store again."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self.config = flow.config
        self._stale: Decision | None = None
        self._lock = threading.Lock()

    def decide(self, request: Request, *, now: float | None = None) -> Decision:
        with self._lock:
            if self._stale is None:
                self._stale = self._flow.decide(request, now=now)
            return self._stale


def test_a_grant_the_store_did_not_confirm_is_counted() -> None:
    store = MemoryStore()
    recording = failover._Recording(store)
    flow, users = failover._flow(recording)
    clients = failover._login_all(flow, users, 4, "g")
    broken = _GrantsWithoutStore(flow)
    drill = failover._Drill(broken, recording, clients, lambda c: 0, SIZES)  # type: ignore[arg-type]
    drill.run(interrupt=None, lag=0.0, kill=lambda: None)
    result = failover._result("memory", "broken", drill, 0.0)
    phases = (
        result.decisions_before_kill,
        result.decisions_while_replica_behind,
        result.decisions_after_kill,
    )
    reissues = sum(n for phase in phases for k, n in phase.items() if k.startswith("Reissue"))
    assert reissues > 1
    # Only the first decision went to the store; every other grant is unconfirmed.
    assert result.grants_without_commit == reissues - 1
    assert isinstance(broken._stale, Reissue)
