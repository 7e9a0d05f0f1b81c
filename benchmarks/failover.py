"""Failover drills: what users see when the session store's primary dies mid-stream.

Run from the repository root::

    python -m benchmarks.failover [--quick] [--runs N] [--lag SECONDS]
                                  [--only redis|postgres] [--json FILE]

The drill brings up (or heals) its own servers with the repository's
service scripts, ``.ci/services/redis-cluster.sh start`` and
``.ci/services/pg-replica.sh start``, and leaves them healthy when it ends.
It never touches another server: it kills its primaries.

Both engines get the same treatment. Many simulated browsers (one
:class:`~tokenflow.testing.Browser` and one session each) refresh through one
:class:`~tokenflow.Flow` as fast as a few worker threads can drive them: every
request carries only the refresh cookie, so every request rotates. After a
warm-up, the replica stops receiving for ``--lag`` seconds (0.5 by default: a
replica on a congested network or a slow disk; 0: a replica that keeps up),
then the primary holding sessions is killed, the stream goes on, and the
drill records every decision until every browser has been answered again.

* **Redis Cluster** (three masters, a replica each): ``kill -9`` of the master
  serving the most sessions; the cluster promotes its replica by itself
  (``cluster-node-timeout`` 1 s), and the dead node is restarted 2 s later,
  as a supervisor would, to rejoin as a replica. The lag: the replica's link
  is dropped and its reconnections refused (a wrong ``masterauth``). Two
  variants: plain asynchronous replication, and ``WAIT 1`` on every grant
  (:class:`WaitingRedisStore`).
* **PostgreSQL** primary with a streaming replica: ``pg_ctl stop -m
  immediate`` on the primary, a fixed detection delay standing in for a
  failover manager, then ``pg_promote()`` on the replica. The application's
  pool lists both servers with ``target_session_attrs=read-write``, so its new
  connections find the promoted server by themselves. The lag: the primary's
  walsender is frozen (SIGSTOP), then killed with the primary. Two variants:
  asynchronous replication, and synchronous (``synchronous_standby_names``
  naming the replica, ``synchronous_commit = on``).

Definitions (they are what the figures count):

* A **grant** is a :class:`~tokenflow.Reissue` answering a refresh: the
  client is handed the refresh token of generation *g* (its
  :class:`~tokenflow.events.Refreshed` event says which).
* A **grant without commit** is a grant for which the store had not confirmed
  that rotation: the rotate call made while deciding that request did not
  return ROTATED or GRACE with that same generation *g* (it raised, or
  answered something else). A store wrapper records every answer per thread,
  so each decision is matched with the store's own answer to it. "Confirmed"
  is what the store calls committed: executed by the Redis master (and, with
  WAIT, acknowledged by a replica); committed by PostgreSQL (and, in
  synchronous mode, flushed by the standby). Must be 0.
* **Cookies cleared on 503**: :class:`~tokenflow.Unavailable` decisions that
  carried any ``Set-Cookie`` at all. Must be 0: a 503 never clears or mints.
* A **rotation lost** is a grant that the promoted node does not know.
  Right before the first rotation of each session after the kill (inside the
  store call, so nothing touches the session in between), the drill reads
  the session on the promoted node: every generation the browser was granted
  beyond the one found there is a rotation lost, and a missing session counts
  all of them. While that read fails, the rotation is not attempted and the
  flow answers 503, as it would have: the store is not answering.
* **Recovery** is the time from the kill to the first refresh of a session
  on the failed primary that the store answered again. **Outage** is the
  time from the kill to the last 503.

What a user experiences follows from the counts: a browser whose rotation
was lost presents a token the promoted node never saw: the session is
revoked and the user must log in again. The token's sealed generation is
newer than the store's, so the event names it ``NEWER_THAN_STORE``, not
``OLDER_GENERATION`` (a replay): the drill counts the sessions revoked with
each reason ("newer" and "older") next to the rotations lost, and the write
rate (grants per second) of the phase before the kill, on which the losses
depend. A browser that got 503s and no grant meanwhile keeps its token and
stays logged in. The grace window covers the other case: a rotation that
was committed and replicated while its reply was lost to the crash, retried
within ``grace_seconds``.

Races for ``cluster_double_rotations``: before the drills, the flow race
harness (:func:`tokenflow.testing.run_refresh_race`, N = 2, 20, 100 tabs)
runs on the cluster, with a store wrapper that counts ROTATED answers per
presented token: more than one is a double rotation.

The command exits 1 if any of the four figures that must be 0
(``INVARIANTS``) is not; recovery times and the asynchronous losses are
measurements, never a failure. Results are printed, and with ``--json``
written with the top-level keys
``cluster_double_rotations``, ``failover_grants_without_commit``,
``failover_cookies_cleared_on_503``, ``pg_sync_rotations_lost`` and the
asynchronous and recovery figures (``redis_async_rotations_lost``,
``redis_wait_rotations_lost``, ``pg_async_rotations_lost``, ``*_recovery_s``
as ``[min, median, max]`` over the runs), and per drill
``*_newer_than_store_per_run``, ``*_older_generation_per_run`` and
``*_write_rate_per_s``). The whole command is bounded: each
phase has a deadline, and a drill that does not recover within it is
reported as such.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from tokenflow import (
    Decision,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Unauthorized,
    Unavailable,
)
from tokenflow.events import Refreshed, ReuseDetected, ReuseDetectedReason
from tokenflow.ports import SessionStore
from tokenflow.stores import NewSession, Rotation, RotationOutcome, RotationResult, SessionInfo
from tokenflow.testing import Browser, FakeClock, FakeUserDirectory, run_refresh_race

__all__ = ["WaitingRedisStore", "main"]

ROOT: Final = Path(__file__).resolve().parent.parent
SERVICES: Final = ROOT / ".ci" / "services"
CLUSTER_SEED: Final = os.environ.get("TOKENFLOW_REDIS_CLUSTER", "127.0.0.1:7000")
PG_PRIMARY_PORT: Final = int(os.environ.get("TOKENFLOW_PG_PRIMARY_PORT", "5433"))
PG_REPLICA_PORT: Final = int(os.environ.get("TOKENFLOW_PG_REPLICA_PORT", "5434"))
PG_STANDBY: Final = "tokenflow_replica"
PG_HOST: Final = "127.0.0.1"

PASSWORD: Final = "correct horse battery staple"
RACE_TRIALS: Final = {2: 30, 20: 8, 100: 3}
QUICK_RACE_TRIALS: Final = {2: 10, 20: 4, 100: 2}
WAIT_TIMEOUT_MS: Final = 100
"""How long a rotation waits for a replica's acknowledgement before failing closed."""
REDIS_RESTART_DELAY: Final = 2.0
"""Seconds between a Redis node's death and its restart: a supervisor's
restart delay. The restarted node rejoins as a replica of its successor."""
PG_DETECTION_DELAY: Final = 1.0
"""Seconds between the primary's death and the promotion: a failover manager's
detection time, kept short and fixed so that runs compare."""
INVARIANTS: Final = (
    "cluster_double_rotations",
    "failover_grants_without_commit",
    "failover_cookies_cleared_on_503",
    "pg_sync_rotations_lost",
)
"""Figures that must be 0: the command exits 1 otherwise."""
DEFAULT_LAG: Final = 0.5
"""Seconds of replication the replica misses when its primary dies, by default."""
RECOVERY_DEADLINE: Final = 60.0
"""Seconds after the kill before a drill gives up waiting for every browser."""


@dataclass(frozen=True)
class Sizes:
    """How big a drill is."""

    sessions: int
    workers: int
    warm_up: float
    runs: int
    cost_rotations: int


FULL: Final = Sizes(sessions=200, workers=4, warm_up=1.5, runs=3, cost_rotations=200)
QUICK: Final = Sizes(sessions=120, workers=4, warm_up=1.0, runs=1, cost_rotations=100)


def log(message: str) -> None:
    """A progress line on stderr (stdout holds the results)."""
    print(message, file=sys.stderr, flush=True)


def _services_required() -> bool:
    return os.environ.get("TOKENFLOW_REQUIRE_SERVICES", "") == "1"


def _service(script: str, *args: str, timeout: float = 120.0) -> None:
    """Run one of the repository's service scripts (start, crash-primary...)."""
    # The repository's own scripts, with fixed verbs: no outside input reaches them.
    subprocess.run(  # noqa: S603
        ["bash", str(SERVICES / script), *args],  # noqa: S607
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
    )


# -- the flow and its browsers ------------------------------------------------------


class _Passwords:
    """Every user ``u<n>`` has the one drill password: logins cost nothing measurable."""

    def verify_password(self, username: str, password: str) -> str | None:
        ok = hmac.compare_digest(password.encode(), PASSWORD.encode())
        return username if ok and username.startswith("u") else None


_NO_ANSWER: Final = object()


class _Recording:
    """A store wrapper that remembers, per thread, the store's answer to the
    last rotation, and runs ``before_rotate`` (if set) ahead of each one."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._local = threading.local()
        self.before_rotate: Callable[[str], None] | None = None

    def forget(self) -> None:
        self._local.answer = _NO_ANSWER

    def last_answer(self) -> object:
        return getattr(self._local, "answer", _NO_ANSWER)

    def create(self, session: NewSession) -> None:
        self.store.create(session)

    def rotate(self, rotation: Rotation) -> RotationResult:
        try:
            if self.before_rotate is not None:
                self.before_rotate(rotation.session_id)
            result = self.store.rotate(rotation)
        except BaseException as exc:
            self._local.answer = exc
            raise
        self._local.answer = result
        return result

    def revoke(self, session_id: str) -> bool:
        return self.store.revoke(session_id)

    def revoke_user(self, user_id: str) -> int:
        return self.store.revoke_user(user_id)

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        return self.store.sessions_of(user_id, now=now)


@dataclass
class _Client:
    """One browser with one session, and what the drill knows about it."""

    user_id: str
    browser: Browser
    session_id: str
    granted: int = 0
    """Generation of the newest refresh token this browser was granted."""
    affected: bool = True
    """Its session lived on the primary that is killed."""
    checked: bool = False
    """Its session was read on the promoted node."""
    found: int | None = None
    """The generation the promoted node held for it (None: no such session)."""
    lost: int = 0
    answered_after_kill: float | None = None
    logged_out: str | None = None
    reuse_reason: str | None = None
    """The ReuseDetected reason of the request that logged it out, if any."""


def _refreshed(decision: Decision) -> Refreshed | None:
    return next((e for e in decision.events if isinstance(e, Refreshed)), None)


@dataclass
class _Tally:
    """Every decision of one drill run, by phase."""

    before: Counter[str] = field(default_factory=Counter)
    lag: Counter[str] = field(default_factory=Counter)
    after: Counter[str] = field(default_factory=Counter)
    grants_without_commit: int = 0
    cookies_on_503: int = 0
    last_503: float | None = None
    refresh_ms: list[float] = field(default_factory=list)
    slowest_after: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Drill:
    """One run: log in, stream refreshes, kill, watch the recovery, audit."""

    def __init__(
        self,
        flow: Flow,
        recording: _Recording,
        clients: list[_Client],
        audit: Callable[[_Client], int | None],
        sizes: Sizes,
    ) -> None:
        self.flow = flow
        self.recording = recording
        self.clients = clients
        self.audit = audit
        self.sizes = sizes
        self.tally = _Tally()
        self.lag_started: float | None = None
        self.kill_started: float | None = None
        """Wall time the kill began: decisions from here on count as after the kill."""
        self.killed_at: float | None = None
        """Wall time the kill had returned: the primary is dead for any request
        started later, which alone may count as answered after the kill."""
        self.stop = threading.Event()
        self.access_name = flow.config.cookies.access_name
        self.by_session = {c.session_id: c for c in clients}
        recording.before_rotate = self._check

    def _phase(self, when: float) -> Counter[str]:
        if self.kill_started is not None and when >= self.kill_started:
            return self.tally.after
        if self.lag_started is not None and when >= self.lag_started:
            return self.tally.lag
        return self.tally.before

    def _judge(self, decision: Decision) -> None:
        """Count one decision; the grant-without-commit check happens here."""
        kind = type(decision).__name__
        refreshed = _refreshed(decision)
        if isinstance(decision, Reissue) and refreshed is not None and refreshed.grace:
            kind = "Reissue(grace)"
        answer = self.recording.last_answer()
        now = time.time()
        with self.tally.lock:
            self._phase(now)[kind] += 1
            if isinstance(decision, Reissue):
                confirmed = (
                    isinstance(answer, RotationResult)
                    and answer.outcome in (RotationOutcome.ROTATED, RotationOutcome.GRACE)
                    and answer.session is not None
                    and refreshed is not None
                    and answer.session.generation == refreshed.generation
                )
                if not confirmed:
                    self.tally.grants_without_commit += 1
            elif isinstance(decision, Unavailable):
                self.tally.last_503 = now
                if decision.set_cookies:
                    self.tally.cookies_on_503 += 1

    def _check(self, session_id: str) -> None:
        """Before the first rotation of a session after the kill, read it on the
        promoted node. Runs inside the store call (see ``_Recording``), so that
        nothing can touch the session between the read and the rotation; a read
        that fails raises, which the flow answers with 503, like the rotation
        that would have followed it."""
        if self.killed_at is None:
            return
        client = self.by_session.get(session_id)
        if client is None or client.checked:
            return
        found = self.audit(client)
        client.checked, client.found = True, found
        if found is None:  # the session itself is gone: every generation lost
            client.lost = client.granted + 1
        else:
            client.lost = max(client.granted - found, 0)

    def _request(self, client: _Client) -> None:
        if client.logged_out is not None:
            return
        after = self.killed_at is not None
        client.browser.jar.pop(self.access_name, None)  # the access token "expired"
        self.recording.forget()
        started = time.perf_counter()
        decision = self.flow.decide(client.browser.request())
        elapsed = time.perf_counter() - started
        self._judge(decision)
        with self.tally.lock:
            if after:
                self.tally.slowest_after = max(self.tally.slowest_after, elapsed)
            else:
                self.tally.refresh_ms.append(elapsed * 1000)
        if isinstance(decision, Unavailable):
            return
        if after and client.answered_after_kill is None:
            client.answered_after_kill = time.monotonic()
        if isinstance(decision, Reissue):
            refreshed = _refreshed(decision)
            if refreshed is not None:
                client.granted = refreshed.generation
            client.browser.receive(decision.set_cookies)
        elif isinstance(decision, Unauthorized):
            client.logged_out = decision.reason.value
            reuse = next((e for e in decision.events if isinstance(e, ReuseDetected)), None)
            if reuse is not None:
                client.reuse_reason = reuse.reason.value

    def _worker(self, mine: list[_Client]) -> None:
        while not self.stop.is_set():
            for client in mine:
                if self.stop.is_set():
                    return
                self._request(client)
            if all(c.logged_out is not None for c in mine):
                time.sleep(0.01)

    def run(
        self,
        *,
        interrupt: Callable[[], None] | None,
        lag: float,
        kill: Callable[[], None],
        after_kill: Callable[[], None] | None = None,
    ) -> float:
        """Stream; cut replication ``lag`` seconds before the kill (``interrupt``);
        kill; run ``after_kill`` (promotion, restart) beside the stream; wait for
        every browser to be answered again. Returns the seconds to recover."""
        workers = [
            threading.Thread(
                target=self._worker, args=(self.clients[i :: self.sizes.workers],), daemon=True
            )
            for i in range(self.sizes.workers)
        ]
        for worker in workers:
            worker.start()
        beside: threading.Thread | None = None
        try:
            time.sleep(self.sizes.warm_up)
            if interrupt is not None and lag > 0:
                interrupt()
                self.lag_started = time.time()
                time.sleep(lag)
            kill_monotonic = time.monotonic()
            self.kill_started = time.time()
            kill()
            self.killed_at = time.time()
            if after_kill is not None:
                beside = threading.Thread(target=after_kill, daemon=True)
                beside.start()
            deadline = kill_monotonic + RECOVERY_DEADLINE
            while time.monotonic() < deadline:
                if all(c.answered_after_kill is not None for c in self.clients):
                    break
                time.sleep(0.05)
            time.sleep(0.3)  # a little of the stream after recovery
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(30)
            if beside is not None:
                beside.join(RECOVERY_DEADLINE)
        first = [
            c.answered_after_kill - kill_monotonic
            for c in self.clients
            if c.affected and c.answered_after_kill is not None
        ]
        return min(first) if first else float("nan")


@dataclass
class RunResult:
    """What one drill run measured."""

    engine: str
    mode: str
    sessions: int
    affected_sessions: int
    recovered: bool
    recovery_s: float
    outage_s: float
    decisions_before_kill: dict[str, int]
    decisions_while_replica_behind: dict[str, int]
    decisions_after_kill: dict[str, int]
    unavailable_after_kill: int
    grants_without_commit: int
    cookies_cleared_on_503: int
    rotations_lost: int
    newer_than_store: int
    """Sessions revoked with ReuseDetected NEWER_THAN_STORE (the store lost rotations)."""
    older_generation: int
    """Sessions revoked with ReuseDetected OLDER_GENERATION (what a replay looks like)."""
    write_rate_per_s: float
    """Grants (rotations) per second in the phase before the kill."""
    sessions_rolled_back: int
    logged_out_after_kill: int
    logged_out_reasons: dict[str, int]
    unchecked: int
    slowest_request_after_kill_s: float
    refresh_ms_median: float
    refresh_ms_p99: float
    extra: dict[str, Any] = field(default_factory=dict)


def _result(engine: str, mode: str, drill: _Drill, recovery: float) -> RunResult:
    tally = drill.tally
    clients = drill.clients
    killed = drill.kill_started or 0.0
    latencies = sorted(tally.refresh_ms) or [float("nan")]
    lost = [c for c in clients if c.lost > 0]
    out = [c for c in clients if c.logged_out is not None]
    reasons = Counter(c.reuse_reason for c in out)
    # The write rate just before the kill: the lag phase if there was one.
    phase, seconds = (
        (tally.lag, killed - drill.lag_started)
        if drill.lag_started is not None
        else (tally.before, drill.sizes.warm_up)
    )
    grants = phase["Reissue"] + phase["Reissue(grace)"]
    return RunResult(
        engine=engine,
        mode=mode,
        sessions=len(clients),
        affected_sessions=sum(c.affected for c in clients),
        recovered=all(c.answered_after_kill is not None for c in clients),
        recovery_s=round(recovery, 3),
        outage_s=round(max(0.0, tally.last_503 - killed) if tally.last_503 else 0.0, 3),
        decisions_before_kill=dict(tally.before),
        decisions_while_replica_behind=dict(tally.lag),
        decisions_after_kill=dict(tally.after),
        unavailable_after_kill=tally.after["Unavailable"],
        grants_without_commit=tally.grants_without_commit,
        cookies_cleared_on_503=tally.cookies_on_503,
        rotations_lost=sum(c.lost for c in clients),
        newer_than_store=reasons[ReuseDetectedReason.NEWER_THAN_STORE.value],
        older_generation=reasons[ReuseDetectedReason.OLDER_GENERATION.value],
        write_rate_per_s=round(grants / seconds, 1) if seconds > 0 else float("nan"),
        sessions_rolled_back=len(lost),
        logged_out_after_kill=len(out),
        logged_out_reasons=dict(Counter(str(c.logged_out) for c in out)),
        unchecked=sum(not c.checked for c in clients),
        slowest_request_after_kill_s=round(tally.slowest_after, 3),
        refresh_ms_median=round(statistics.median(latencies), 3),
        refresh_ms_p99=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
    )


def _login_all(flow: Flow, users: FakeUserDirectory, count: int, tag: str) -> list[_Client]:
    clients = []
    for n in range(count):
        user_id = f"u{tag}-{n}"
        users.add_user(user_id)
        browser = Browser(time.time)
        decision = flow.decide(
            browser.request("POST", credentials=PasswordCredentials(user_id, PASSWORD))
        )
        if not isinstance(decision, Reissue):
            raise RuntimeError(f"login failed before the drill: {decision!r}")
        browser.receive(decision.set_cookies)
        (session,) = flow.sessions_of(user_id)
        clients.append(_Client(user_id, browser, session.session_id))
    return clients


def _flow(store: SessionStore) -> tuple[Flow, FakeUserDirectory]:
    users = FakeUserDirectory()
    # The default lifetimes and the default 5 s grace window: what users get.
    flow = Flow(KeyRing.generate(), store, users, passwords=_Passwords(), config=FlowConfig())
    return flow, users


# -- Redis -------------------------------------------------------------------------


def _cluster_client(timeout: float = 0.5) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    host, _, port = CLUSTER_SEED.rpartition(":")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, int(port))],
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )


_GRACE_RETURN = "    return {'grace', s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[4], s[12]}"
# The GRACE branch of the store's rotation script writes nothing, so a WAIT
# after it would not cover the rotation it replays (made earlier, maybe on
# another connection). The waiting variant adds a write that changes nothing
# (the key's TTL set to itself): the connection's replication offset then
# passes that rotation, and WAIT covers it.
_GRACE_TOUCH = (
    "    local ttl = redis.call('PTTL', key)\n"
    "    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end\n" + _GRACE_RETURN
)


class WaitingRedisStore:
    """A :class:`~tokenflow.stores.redis.RedisStore` on a cluster that makes
    every grant wait for a replica: ``WAIT numreplicas timeout`` follows each
    rotation, and fewer acknowledgements than asked fail closed (an error, so
    the flow answers 503 and the client keeps its token).

    WAIT counts the replicas that have received every write *of the
    connection it runs on*, so the rotation script and the WAIT share a
    connection: both are pipelined, in one round trip, on a connection to the
    master that serves the session's slot (``RedisCluster.get_redis_connection``).
    A redirection or a connection error raises (503), after asking the
    cluster client to reload its slot map, so the next call goes to the new
    master. A GRACE answer is made to write (see ``_GRACE_TOUCH``) so that it
    is waited on too. Every other operation is the plain store's.

    This is the drill's variant, to measure what WAIT buys and costs.
    """

    def __init__(self, client: Any, *, prefix: str, replicas: int, timeout_ms: int) -> None:
        from tokenflow.stores import redis as redis_store

        if _GRACE_RETURN not in redis_store._ROTATE_LUA:
            raise RuntimeError("the rotation script changed: update WaitingRedisStore")
        self.plain = redis_store.RedisStore(client, prefix=prefix)
        self._client = client
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._script = client.register_script(
            redis_store._ROTATE_LUA.replace(_GRACE_RETURN, _GRACE_TOUCH)
        )
        self._layout = self.plain._layout
        self.unacknowledged = 0
        self._lock = threading.Lock()

    def create(self, session: NewSession) -> None:
        self.plain.create(session)

    def revoke(self, session_id: str) -> bool:
        return self.plain.revoke(session_id)

    def revoke_user(self, user_id: str) -> int:
        return self.plain.revoke_user(user_id)

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        return self.plain.sessions_of(user_id, now=now)

    def _reload_map(self) -> None:
        try:
            self._client.nodes_manager.initialize()
        except Exception:  # still failing over: the next call tries again
            return

    def rotate(self, rotation: Rotation) -> RotationResult:
        import redis
        from redis.exceptions import NoScriptError

        key = self._layout.session_key(rotation.session_id)
        args = self._layout.rotate_args(rotation)
        for attempt in (1, 2):
            node = self._client.get_node_from_key(key)
            connection = self._client.get_redis_connection(node)
            pipe = connection.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
            pipe.execute_command("WAIT", self._replicas, self._timeout_ms)
            try:
                reply, acknowledged = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                self._reload_map()
                raise
            if isinstance(reply, NoScriptError) and attempt == 1:
                connection.script_load(self._script.script)
                continue
            if isinstance(reply, Exception):
                self._reload_map()  # MOVED, CLUSTERDOWN...: the map is stale
                raise reply
            result = self._layout.rotation_result(rotation.session_id, reply)
            granted = result.outcome in (RotationOutcome.ROTATED, RotationOutcome.GRACE)
            if granted and (not isinstance(acknowledged, int) or acknowledged < self._replicas):
                with self._lock:
                    self.unacknowledged += 1
                raise redis.TimeoutError(
                    f"rotation acknowledged by {acknowledged} replicas, not {self._replicas}"
                )
            return result
        raise AssertionError("unreachable")


class _CountingStore(_Recording):
    """Counts ROTATED answers per presented verifier: more than one is a double rotation."""

    def __init__(self, store: SessionStore) -> None:
        super().__init__(store)
        self.wins: Counter[tuple[str, bytes]] = Counter()
        self._lock = threading.Lock()

    def rotate(self, rotation: Rotation) -> RotationResult:
        result = super().rotate(rotation)
        if result.outcome is RotationOutcome.ROTATED:
            with self._lock:
                self.wins[(rotation.session_id, rotation.presented)] += 1
        return result

    def double_rotations(self) -> int:
        return sum(n - 1 for n in self.wins.values() if n > 1)


def cluster_races(quick: bool) -> dict[str, Any]:
    """The flow race harness on the cluster, N = 2, 20, 100 tabs."""
    from tokenflow.stores.redis import RedisStore

    client = _cluster_client(timeout=30)
    prefix = f"tokenflow_races_{secrets.token_hex(4)}"
    counting = _CountingStore(RedisStore(client, prefix=prefix))
    flow, users = _flow(counting)
    users.add_user("u-race")
    rows = []
    try:
        for tabs, trials in (QUICK_RACE_TRIALS if quick else RACE_TRIALS).items():
            browser = Browser(FakeClock(time.time()))
            login = flow.decide(
                browser.request("POST", credentials=PasswordCredentials("u-race", PASSWORD))
            )
            assert isinstance(login, Reissue)
            browser.receive(login.set_cookies)
            report = run_refresh_race(flow, browser, tabs=tabs, trials=trials, label="cluster")
            rows.append(
                {
                    "tabs": tabs,
                    "trials": trials,
                    "completed": report.completed,
                    "rotations": report.rotations,
                    "graces": report.graces,
                    "reuses": report.reuses,
                    "unavailable": report.unavailable,
                    "ok": report.ok,
                }
            )
            log(f"races: {report.summary()}")
    finally:
        for node in client.get_primaries():
            for key in client.scan_iter(match=f"{prefix}:*", count=1000, target_nodes=node):
                client.delete(key)
        client.close()
    return {"rows": rows, "double_rotations": counting.double_rotations()}


def _master_port_of(client: Any, replica: Any) -> int:
    info = client.info("replication", target_nodes=replica)
    return int(info["master_port"])


def _master_pid(client: Any, node: Any) -> int:
    info = client.info("server", target_nodes=node)
    return int(info["process_id"])


def _rotation_cost(store_a: SessionStore, store_b: SessionStore, count: int) -> dict[str, Any]:
    """Per-rotation microseconds of two stores, timed alternately (one rotation
    of each in turn, so drift and neighbours hit both alike); medians and ratio."""
    from tokenflow._sessions import derive_successor, verifier_of

    now = time.time()
    stores = (store_a, store_b)
    chains: list[list[tuple[str, bytes]]] = [[], []]
    for store, chain in zip(stores, chains, strict=True):
        for _ in range(count):
            secret = secrets.token_bytes(32)
            sid = secrets.token_urlsafe(16)
            info = SessionInfo(sid, "u-cost", now, now, now + 1800, now + 86400)
            store.create(NewSession(info, verifier_of(secret)))
            chain.append((sid, secret))
    times: list[list[float]] = [[], []]
    for i in range(count):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            sid, secret = chains[which][i]
            salt = secrets.token_bytes(16)
            rotation = Rotation(
                sid,
                verifier_of(secret),
                verifier_of(derive_successor(secret, salt)),
                salt,
                now,
                1800,
                5,
            )
            started = time.perf_counter()
            outcome = stores[which].rotate(rotation).outcome
            times[which].append((time.perf_counter() - started) * 1e6)
            if outcome is not RotationOutcome.ROTATED:
                raise RuntimeError(f"cost measurement: rotation answered {outcome}")
    for store in stores:
        store.revoke_user("u-cost")
    a, b = statistics.median(times[0]), statistics.median(times[1])
    return {
        "plain_us": round(a, 1),
        "variant_us": round(b, 1),
        "ratio": round(b / a, 3),
        "rotations": count,
    }


def redis_drill(mode: str, sizes: Sizes, lag: float) -> RunResult:
    """One Redis Cluster run: ``mode`` is ``async`` or ``wait1``."""
    from tokenflow.stores.redis import RedisStore

    _service("redis-cluster.sh", "start")
    client = _cluster_client()
    audit_client = _cluster_client(timeout=0.3)
    prefix = f"tokenflow_drill_{secrets.token_hex(4)}"
    store: SessionStore
    if mode == "wait1":
        store = WaitingRedisStore(client, prefix=prefix, replicas=1, timeout_ms=WAIT_TIMEOUT_MS)
    else:
        store = RedisStore(client, prefix=prefix)
    recording = _Recording(store)
    flow, users = _flow(recording)
    clients = _login_all(flow, users, sizes.sessions, secrets.token_hex(3))
    homes: Counter[str] = Counter()
    for c in clients:
        homes[client.get_node_from_key(f"{prefix}:s:{c.session_id}").name] += 1
    victim_name = homes.most_common(1)[0][0]
    victim = client.get_node(node_name=victim_name)
    pid = _master_pid(client, victim)
    for c in clients:
        c.affected = client.get_node_from_key(f"{prefix}:s:{c.session_id}").name == victim_name

    def audit(c: _Client) -> int | None:
        raw = audit_client.hget(f"{prefix}:s:{c.session_id}", "gen")
        return None if raw is None else int(raw)

    replica = next(n for n in client.get_replicas() if _master_port_of(client, n) == victim.port)

    def interrupt() -> None:
        # The replica stops receiving: its next connection attempts fail to
        # authenticate, and its current link is dropped by the master.
        client.config_set("masterauth", secrets.token_hex(8), target_nodes=replica)
        client.execute_command("CLIENT KILL", "TYPE", "replica", target_nodes=victim)

    def restart() -> None:
        client.config_set("masterauth", "", target_nodes=replica)
        time.sleep(REDIS_RESTART_DELAY)
        _service("redis-cluster.sh", "start")  # the killed node rejoins as a replica

    drill = _Drill(flow, recording, clients, audit, sizes)
    log(
        f"redis/{mode}: {len(clients)} sessions, killing master {victim_name} (pid {pid}) "
        f"holding {homes[victim_name]} of them after {sizes.warm_up:g} s, its replica "
        f"{lag:g} s behind; restarting it {REDIS_RESTART_DELAY:g} s later"
    )
    recovery = drill.run(
        interrupt=interrupt, lag=lag, kill=lambda: os.kill(pid, signal.SIGKILL), after_kill=restart
    )
    result = _result("redis", mode, drill, recovery)
    result.extra.update(lag_s=lag, restart_delay_s=REDIS_RESTART_DELAY, victim=victim_name)
    if isinstance(store, WaitingRedisStore):
        result.extra["unacknowledged_grants_refused"] = store.unacknowledged
    try:
        _service("redis-cluster.sh", "start")
        for node in client.get_primaries():
            for key in client.scan_iter(match=f"{prefix}:*", count=1000, target_nodes=node):
                client.delete(key)
    finally:
        client.close()
        audit_client.close()
    return result


def redis_wait_cost(sizes: Sizes) -> dict[str, Any]:
    from tokenflow.stores.redis import RedisStore

    _service("redis-cluster.sh", "start")
    client = _cluster_client(timeout=5)
    prefix = f"tokenflow_cost_{secrets.token_hex(4)}"
    try:
        plain = RedisStore(client, prefix=prefix)
        waiting = WaitingRedisStore(client, prefix=prefix, replicas=1, timeout_ms=WAIT_TIMEOUT_MS)
        return _rotation_cost(plain, waiting, sizes.cost_rotations)
    finally:
        client.close()


# -- PostgreSQL --------------------------------------------------------------------


def _pg_dsn(port: int) -> str:
    return f"host={PG_HOST} port={port} dbname=test user=postgres connect_timeout=2"


# Both servers, and libpq picks the one that accepts writes: after a failover
# new connections land on the promoted replica with no reconfiguration.
PG_BOTH: Final = (
    f"host={PG_HOST},{PG_HOST} port={PG_PRIMARY_PORT},{PG_REPLICA_PORT} dbname=test "
    "user=postgres connect_timeout=2 target_session_attrs=read-write"
)


def _pg_mode(mode: str) -> None:
    import psycopg

    with psycopg.connect(_pg_dsn(PG_PRIMARY_PORT), autocommit=True) as conn:
        if mode == "sync":
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{PG_STANDBY}'")
        else:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        conn.execute("SELECT pg_reload_conf()")
        wanted = "sync" if mode == "sync" else "async"
        deadline = time.monotonic() + 15
        while conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            (PG_STANDBY,),
        ).fetchone() != (wanted,):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not become {wanted}")
            time.sleep(0.05)


def _pg_pool(conninfo: str, size: int, options: str = "") -> Any:
    from psycopg_pool import ConnectionPool

    kwargs: dict[str, Any] = {"autocommit": True}
    if options:
        kwargs["options"] = options
    pool = ConnectionPool(
        conninfo,
        min_size=size,
        max_size=size,
        timeout=2.0,
        kwargs=kwargs,
        check=ConnectionPool.check_connection,
        open=True,
    )
    pool.wait(10)
    return pool


def postgres_drill(mode: str, sizes: Sizes, lag: float) -> RunResult:
    """One PostgreSQL run: ``mode`` is ``async`` or ``sync``."""
    import psycopg

    from tokenflow.stores.postgres import PostgresStore, apply_schema

    _service("pg-replica.sh", "start")  # a fresh pair if the last run failed it over
    _pg_mode(mode)
    table = f"tokenflow_drill_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_dsn(PG_PRIMARY_PORT), autocommit=True) as conn:
        apply_schema(conn, table=table)
    pool = _pg_pool(PG_BOTH, sizes.workers)
    recording = _Recording(PostgresStore(pool, table=table))
    flow, users = _flow(recording)
    clients = _login_all(flow, users, sizes.sessions, secrets.token_hex(3))
    audit_conn: list[Any] = []

    def audit(c: _Client) -> int | None:
        if not audit_conn or audit_conn[0].closed:
            audit_conn[:] = [psycopg.connect(PG_BOTH, autocommit=True, connect_timeout=1)]
        try:
            row = (
                audit_conn[0]
                .execute(
                    f'SELECT generation FROM "{table}" WHERE session_id = %s',  # noqa: S608
                    (c.session_id,),
                )
                .fetchone()
            )
        except psycopg.Error:
            audit_conn[0].close()
            raise
        return None if row is None else int(row[0])

    timings: dict[str, float] = {}

    def promote() -> None:
        time.sleep(PG_DETECTION_DELAY)
        started = time.monotonic()
        with psycopg.connect(_pg_dsn(PG_REPLICA_PORT), autocommit=True) as conn:
            conn.execute("SELECT pg_promote(true, 30)")
        timings["promote_s"] = round(time.monotonic() - started, 3)

    walsender: list[int] = []

    def interrupt() -> None:
        # The primary stops sending WAL: its walsender is frozen. Commits go
        # on (asynchronous) or wait for the standby (synchronous).
        with psycopg.connect(_pg_dsn(PG_PRIMARY_PORT), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (PG_STANDBY,)
            ).fetchone()
        if row is None:
            raise RuntimeError("the replica is not streaming")
        walsender.append(int(row[0]))
        os.kill(walsender[0], signal.SIGSTOP)

    def crash() -> None:
        if walsender:
            # Killed, not resumed: what it had not sent never leaves.
            os.kill(walsender[0], signal.SIGKILL)
        _service("pg-replica.sh", "crash-primary")

    drill = _Drill(flow, recording, clients, audit, sizes)
    log(
        f"postgres/{mode}: {len(clients)} sessions, stopping the primary (immediate) after "
        f"{sizes.warm_up:g} s, its replica {lag:g} s behind; promoting the replica "
        f"{PG_DETECTION_DELAY:g} s later"
    )
    try:
        recovery = drill.run(interrupt=interrupt, lag=lag, kill=crash, after_kill=promote)
    finally:
        pool.close()
        for conn in audit_conn:
            conn.close()
    result = _result("postgres", mode, drill, recovery)
    result.extra.update(timings)
    result.extra.update(detection_delay_s=PG_DETECTION_DELAY, lag_s=lag)
    return result


def postgres_sync_cost(sizes: Sizes) -> dict[str, Any]:
    """Rotations waiting for the standby's flush against rotations that do not."""
    import psycopg

    from tokenflow.stores.postgres import PostgresStore, apply_schema

    _service("pg-replica.sh", "start")
    _pg_mode("sync")
    table = f"tokenflow_cost_{secrets.token_hex(4)}"
    dsn = _pg_dsn(PG_PRIMARY_PORT)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_schema(conn, table=table)
    # synchronous_commit=local: wait for the local flush only, as with no standby named.
    local = _pg_pool(dsn, 1, "-c synchronous_commit=local")
    remote = _pg_pool(dsn, 1, "-c synchronous_commit=on")
    try:
        return _rotation_cost(
            PostgresStore(local, table=table),
            PostgresStore(remote, table=table),
            sizes.cost_rotations,
        )
    finally:
        local.close()
        remote.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        _pg_mode("async")


# -- the command -------------------------------------------------------------------


def _spread(values: Sequence[float]) -> list[float] | None:
    clean = [v for v in values if v == v]  # drop NaN (a run that did not recover)
    if not clean:
        return None
    return [round(min(clean), 3), round(statistics.median(clean), 3), round(max(clean), 3)]


def _print(results: Sequence[RunResult], keys: dict[str, Any]) -> None:
    header = (
        f"{'engine':8} {'mode':5} {'run':>3} {'recover s':>9} {'outage s':>8} {'503s':>5} "
        f"{'lost':>5} {'newer':>5} {'older':>5} {'rolled back':>11} {'logged out':>10} "
        f"{'no-commit':>9} {'cleared':>7} {'refresh ms':>10} {'grants/s':>8}"
    )
    print(header)
    print("-" * len(header))
    runs: Counter[tuple[str, str]] = Counter()
    for r in results:
        runs[(r.engine, r.mode)] += 1
        print(
            f"{r.engine:8} {r.mode:5} {runs[(r.engine, r.mode)]:>3} {r.recovery_s:>9.2f} "
            f"{r.outage_s:>8.2f} {r.unavailable_after_kill:>5} {r.rotations_lost:>5} "
            f"{r.newer_than_store:>5} {r.older_generation:>5} "
            f"{r.sessions_rolled_back:>11} {r.logged_out_after_kill:>10} "
            f"{r.grants_without_commit:>9} {r.cookies_cleared_on_503:>7} "
            f"{r.refresh_ms_median:>10.2f} {r.write_rate_per_s:>8.1f}"
        )
    print()
    for key, value in keys.items():
        print(f"{key}: {json.dumps(value)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.failover",
        description="Failover drills on a Redis Cluster and a PostgreSQL primary with a "
        "replica (start them with .ci/services/redis-cluster.sh and pg-replica.sh).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (CI)")
    parser.add_argument("--runs", type=int, help="runs of each drill (default 3, 1 with --quick)")
    parser.add_argument(
        "--only", choices=["redis", "postgres"], action="append", help="one engine only"
    )
    parser.add_argument(
        "--lag",
        type=float,
        default=DEFAULT_LAG,
        help=f"seconds the replica stops receiving before its primary dies (default "
        f"{DEFAULT_LAG:g}; 0: a healthy replica)",
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.failover``; returns the exit status."""
    args = _parser().parse_args(argv)
    # The pool logs every failed reconnection during a failover; the drill
    # counts what the flow answered instead.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    sizes = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else sizes.runs
    engines = args.only or ["redis", "postgres"]
    started = time.monotonic()
    results: list[RunResult] = []
    # The machine's load when the drill starts: a busy machine refreshes
    # fewer sessions per second, so fewer are caught in a replication lag.
    keys: dict[str, Any] = {"load_average_1m": round(os.getloadavg()[0], 2)}
    if "redis" in engines:
        races = cluster_races(args.quick)
        keys["cluster_double_rotations"] = races["double_rotations"]
        keys["cluster_races"] = races["rows"]
        for _ in range(runs):
            for mode in ("async", "wait1"):
                results.append(redis_drill(mode, sizes, args.lag))
        keys["redis_wait_cost"] = redis_wait_cost(sizes)
    if "postgres" in engines:
        for _ in range(runs):
            for mode in ("async", "sync"):
                results.append(postgres_drill(mode, sizes, args.lag))
        _service("pg-replica.sh", "start")  # leave a healthy pair behind
        keys["pg_sync_cost"] = postgres_sync_cost(sizes)

    def of(engine: str, mode: str) -> list[RunResult]:
        return [r for r in results if (r.engine, r.mode) == (engine, mode)]

    keys["failover_grants_without_commit"] = sum(r.grants_without_commit for r in results)
    keys["failover_cookies_cleared_on_503"] = sum(r.cookies_cleared_on_503 for r in results)
    for engine, mode, name in (
        ("redis", "async", "redis_async"),
        ("redis", "wait1", "redis_wait"),
        ("postgres", "async", "pg_async"),
        ("postgres", "sync", "pg_sync"),
    ):
        chosen = of(engine, mode)
        if not chosen:
            continue
        keys[f"{name}_rotations_lost"] = sum(r.rotations_lost for r in chosen)
        keys[f"{name}_rotations_lost_per_run"] = [r.rotations_lost for r in chosen]
        keys[f"{name}_newer_than_store_per_run"] = [r.newer_than_store for r in chosen]
        keys[f"{name}_older_generation_per_run"] = [r.older_generation for r in chosen]
        keys[f"{name}_write_rate_per_s"] = _spread([r.write_rate_per_s for r in chosen])
        keys[f"{name}_sessions_rolled_back_per_run"] = [r.sessions_rolled_back for r in chosen]
        keys[f"{name}_logged_out_per_run"] = [r.logged_out_after_kill for r in chosen]
        keys[f"{name}_recovery_s"] = _spread([r.recovery_s for r in chosen])
        keys[f"{name}_outage_s"] = _spread([r.outage_s for r in chosen])
        keys[f"{name}_recovered_every_run"] = all(r.recovered for r in chosen)
    keys["lag_s"] = args.lag
    keys["duration_s"] = round(time.monotonic() - started, 1)
    _print(results, keys)
    if args.json is not None:
        data = {**keys, "runs": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        log(f"wrote {args.json}")
    # These are safety properties, not performance goals: any breach fails the command.
    breaches = [key for key in INVARIANTS if keys.get(key, 0)]
    for key in breaches:
        log(f"FAILED: {key} is {keys[key]}, must be 0")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
