"""Session stores on real servers: what a rotation costs, and that it is one atomic round trip.

Four questions, for :class:`~tokenflow.stores.redis.RedisStore` and
:class:`~tokenflow.stores.postgres.PostgresStore` (and their async variants
where concurrency is the point):

* **Latency, single client.** A rotation against the cheapest possible round
  trip on the very same connection: Redis ``PING`` through the same client,
  PostgreSQL ``SELECT 1`` through the same one-connection pool. Timed by the
  shared harness in interleaved rounds, so the ratio compares like with like:
  the goal is a rotation within 1.5x a bare round trip, i.e. the store adds
  little beyond the network hop it cannot avoid. Every timed rotation is a
  real ROTATED one: each session's current verifier is kept and the successor
  fed back, and an outcome other than ROTATED aborts the run. A committed
  PostgreSQL write also waits for its WAL flush, which on a slow disk dwarfs
  any round trip: a diagnostic row times the same rotations on a connection
  with ``synchronous_commit=off``, to tell the disk's share from the store's.
* **Throughput.** Rotations and bare round trips per second from 1 and 16
  client threads, each thread with its own sessions, for a fixed time.
* **Races.** N = 2, 20, 100 concurrent rotations of one session, presenting
  the same token, through :func:`tokenflow.testing.run_rotation_race` (the
  same trials the test suite runs): exactly one must rotate and the others
  get GRACE. Independently of the harness's own judgement, a wrapper around
  each store counts the ROTATED answers to rotations that presented a
  session's first token: more than one per session is a *double rotation*, which the JSON totals.
* **Round trips per rotation,** counted rather than claimed, on the wire of
  the store's own connection. Redis: the server's ``INFO commandstats``
  (EVALSHA calls against rotations, server-wide) and ``MONITOR`` filtered to
  the store's connection (every command the server received from it).
  PostgreSQL: a relay on 127.0.0.1 between psycopg and the server counts the
  protocol messages; each round trip ends with one ReadyForQuery. That count
  is per connection, so concurrent traffic from other clients cannot blur it,
  and it needs no server extension (``pg_stat_statements`` must be preloaded
  at server start, and counts statements, not round trips).

A server that does not answer is reported as skipped (unless
``TOKENFLOW_REQUIRE_SERVICES=1``, then it raises), as the tests do; the
servers are found through the tests' ``TOKENFLOW_REDIS_URL`` and
``TOKENFLOW_POSTGRES_DSN``. Keys and tables are unique to the run and removed
at the end. The client libraries are imported only when their server is
measured, so the other groups run without the ``redis`` and ``postgres``
extras.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import selectors
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tokenflow.ports import AsyncSessionStore, SessionStore
from tokenflow.stores import NewSession, Rotation, RotationOutcome, RotationResult, SessionInfo
from tokenflow.testing import RotationRaceReport as RaceReport
from tokenflow.testing import run_rotation_race, run_rotation_race_async

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

if TYPE_CHECKING:
    import redis
    from psycopg_pool import ConnectionPool

__all__ = ["GOAL", "run"]

GROUP: Final = "stores"
GOAL: Final = 1.5
"""A single-client rotation may take at most this many times a bare round trip."""

REQUIRE_ENV: Final = "TOKENFLOW_REQUIRE_SERVICES"
REDIS_URL: Final = os.environ.get("TOKENFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN: Final = os.environ.get(
    "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)

IDLE_SECONDS: Final = 1800.0
ABSOLUTE_SECONDS: Final = 86400.0
GRACE_SECONDS: Final = 30.0
# Any 16 bytes do: the store keeps the salt and hands it back on GRACE only.
_SALT: Final = bytes(range(16))

LATENCY_SESSIONS: Final = 512
"""Sessions the single-client rotator cycles through: rotations spread over
many keys and rows, as many users' refreshes would."""
THROUGHPUT_CLIENTS: Final = (1, 16)
SESSIONS_PER_CLIENT: Final = 64
RACE_CALLERS: Final = (2, 20, 100)
RACE_TRIALS: Final = 1000
QUICK_RACE_TRIALS: Final = 50
RACE_CHUNK: Final = 100
"""Trials per call of the race harness: a progress line after each."""
POSTGRES_RACE_POOL: Final = 20
"""Connections of the race pools. The server allows 100 in all, shared with
whatever else runs: at N=100 the callers queue for a connection, and at most
this many rotations reach the server at once."""
COUNTED_ROTATIONS: Final = 1000
QUICK_COUNTED_ROTATIONS: Final = 200
WARM_UP_ROTATIONS: Final = 10
"""Rotations before counting round trips: past redis-py's one-off script load
and psycopg's one-off statement preparation (at the 5th execution)."""


# --------------------------------------------------------------------------- servers


class ServiceUnavailable(RuntimeError):
    """A server is required (``TOKENFLOW_REQUIRE_SERVICES=1``) but does not answer."""


def _services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def _redis_where() -> str:
    # Host and port only: a URL can carry a password.
    parts = urllib.parse.urlsplit(REDIS_URL)
    return f"{parts.hostname}:{parts.port or 6379}"


def _postgres_where() -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(POSTGRES_DSN)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname')}"


def _skip(reason: str) -> None:
    """Report a server as skipped, or raise if servers are required."""
    if _services_required():
        raise ServiceUnavailable(f"{reason}; {REQUIRE_ENV}=1 makes this an error, not a skip")
    print(f"skipped: {reason}")


def _unreachable(service: str, where: str, error: object) -> None:
    # One line: libpq's messages span several.
    _skip(f"{service} not reachable at {where} ({' '.join(str(error).split())})")


def _unique_name() -> str:
    """A key prefix and table name no other run uses (at most 50 characters)."""
    return f"tokenflow_bench_{os.getpid()}_{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- rotations


def _new_session(user_id: str) -> tuple[NewSession, bytes]:
    """A session, as the core would open it, and its first verifier."""
    now = time.time()
    verifier = hashlib.sha256(secrets.token_bytes(32)).digest()
    info = SessionInfo(
        session_id=secrets.token_urlsafe(16),
        user_id=user_id,
        created_at=now,
        refreshed_at=now,
        idle_expires_at=now + IDLE_SECONDS,
        absolute_expires_at=now + ABSOLUTE_SECONDS,
    )
    return NewSession(info, verifier), verifier


class _Rotator:
    """Rotates its own sessions round-robin, each presenting its current verifier.

    Every :meth:`step` is therefore a real ROTATED rotation: the successor is
    kept as the session's current verifier for its next turn. The successor is
    the SHA-256 of the presented verifier rather than a verifier derived from a
    secret as the core does: the store sees 32 distinct bytes either way, and
    the timed loop should hold the store's work, not the core's hashing.
    """

    def __init__(self, rotate: Callable[[Rotation], RotationResult]) -> None:
        self._rotate = rotate
        self._ids: list[str] = []
        self._current: list[bytes] = []
        self._next = 0
        self.rotations = 0
        self.failures: Counter[RotationOutcome] = Counter()

    @classmethod
    def open(cls, store: SessionStore, sessions: int, user_id: str) -> _Rotator:
        """A rotator over ``sessions`` sessions freshly created in ``store``."""
        rotator = cls(store.rotate)
        for _ in range(sessions):
            session, verifier = _new_session(user_id)
            store.create(session)
            rotator._ids.append(session.info.session_id)
            rotator._current.append(verifier)
        return rotator

    def step(self) -> None:
        """Rotate the next session once."""
        i = self._next
        self._next = i + 1 if i + 1 < len(self._ids) else 0
        presented = self._current[i]
        successor = hashlib.sha256(presented).digest()
        result = self._rotate(
            Rotation(
                self._ids[i],
                presented,
                successor,
                _SALT,
                time.time(),
                IDLE_SECONDS,
                GRACE_SECONDS,
            )
        )
        # An identity test is cheap enough for the timed loop; check() then
        # refuses figures that timed anything but rotations.
        if result.outcome is RotationOutcome.ROTATED:
            self._current[i] = successor
            self.rotations += 1
        else:
            self.failures[result.outcome] += 1

    def check(self, where: str) -> None:
        """Raise unless every rotation so far was ROTATED: else the figures time something else."""
        if self.failures:
            failed = {o.name: n for o, n in self.failures.items()}
            raise RuntimeError(f"{where}: rotations that did not rotate: {failed}")
        if self.rotations == 0:
            raise RuntimeError(f"{where}: no rotation ran")


# --------------------------------------------------------------------------- throughput


def _ops_per_second(ops: Sequence[Callable[[], object]], seconds: float) -> float:
    """Operations per second of ``len(ops)`` threads, each repeating its own op for ``seconds``."""
    counts = [0] * len(ops)
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(len(ops) + 1)

    def client(index: int, op: Callable[[], object]) -> None:
        done = 0
        try:
            barrier.wait()
            while not stop.is_set():
                op()
                done += 1
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)
            stop.set()
        counts[index] = done

    threads = [
        threading.Thread(target=client, args=(i, op), name=f"bench-client-{i}", daemon=True)
        for i, op in enumerate(ops)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


@dataclass(frozen=True, slots=True)
class _Throughput:
    clients: int
    rotations_per_s: float
    round_trips_per_s: float

    def as_json(self) -> dict[str, JSON]:
        return {
            "clients": self.clients,
            "rotations_per_s": round(self.rotations_per_s, 1),
            "round_trips_per_s": round(self.round_trips_per_s, 1),
            "rotation_vs_round_trip": round(self.round_trips_per_s / self.rotations_per_s, 4),
        }


def _throughput(
    settings: Settings,
    label: str,
    store: SessionStore,
    round_trip: Callable[[], object],
) -> list[_Throughput]:
    """Rotations and bare round trips per second for each client count."""
    seconds = 0.3 if settings.quick else 2.0
    user_id = f"bench-{secrets.token_hex(4)}"
    rotators = [
        _Rotator.open(store, SESSIONS_PER_CLIENT, user_id) for _ in range(max(THROUGHPUT_CLIENTS))
    ]
    results = []
    for clients in THROUGHPUT_CLIENTS:
        rotations = _ops_per_second([r.step for r in rotators[:clients]], seconds)
        round_trips = _ops_per_second([round_trip] * clients, seconds)
        settings.log(
            f"{GROUP}: {label} throughput, {clients} clients: {rotations:,.0f} rotations/s, "
            f"{round_trips:,.0f} round trips/s"
        )
        results.append(_Throughput(clients, rotations, round_trips))
    for i, rotator in enumerate(rotators):
        rotator.check(f"{label} throughput client {i}")
    return results


# --------------------------------------------------------------------------- races


class _Wins:
    """Per session, the ROTATED answers to rotations that presented its first verifier.

    The race harness judges each trial itself; this tally does not rely on it.
    Every racing caller presents the session's first verifier; the harness's
    follow-up rotation presents the successor and is not counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, bytes] = {}
        self._wins: Counter[str] = Counter()

    def created(self, session: NewSession) -> None:
        with self._lock:
            self._first[session.info.session_id] = session.verifier

    def answered(self, rotation: Rotation, result: RotationResult) -> None:
        if result.outcome is not RotationOutcome.ROTATED:
            return
        with self._lock:
            if self._first.get(rotation.session_id) == rotation.presented:
                self._wins[rotation.session_id] += 1

    def double_rotations(self) -> int:
        """Rotations beyond the first of one token: each one forked a session."""
        with self._lock:
            return sum(wins - 1 for wins in self._wins.values() if wins > 1)


class _TalliedStore:
    """A sync store whose creations and rotations also go to a :class:`_Wins` tally."""

    def __init__(self, store: SessionStore, wins: _Wins) -> None:
        self._store = store
        self._wins = wins

    def create(self, session: NewSession) -> None:
        self._wins.created(session)
        self._store.create(session)

    def rotate(self, rotation: Rotation) -> RotationResult:
        result = self._store.rotate(rotation)
        self._wins.answered(rotation, result)
        return result

    def revoke(self, session_id: str) -> bool:
        return self._store.revoke(session_id)

    def revoke_user(self, user_id: str) -> int:
        return self._store.revoke_user(user_id)

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        return self._store.sessions_of(user_id, now=now)


class _AsyncTalliedStore:
    """The async variant of :class:`_TalliedStore`."""

    def __init__(self, store: AsyncSessionStore, wins: _Wins) -> None:
        self._store = store
        self._wins = wins

    async def create(self, session: NewSession) -> None:
        self._wins.created(session)
        await self._store.create(session)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        result = await self._store.rotate(rotation)
        self._wins.answered(rotation, result)
        return result

    async def revoke(self, session_id: str) -> bool:
        return await self._store.revoke(session_id)

    async def revoke_user(self, user_id: str) -> int:
        return await self._store.revoke_user(user_id)

    async def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        return await self._store.sessions_of(user_id, now=now)


@dataclass
class _Race:
    """The merged tally of every trial of one store, driver and caller count."""

    store: str
    driver: str
    callers: int
    trials: int = 0
    outcomes: Counter[RotationOutcome] = field(default_factory=Counter)
    bad_trials: int = 0
    double_rotations: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, report: RaceReport, offset: int) -> None:
        self.trials += report.trials
        self.outcomes.update(report.outcomes)
        self.bad_trials += report.bad_trials
        self.seconds += report.seconds
        for problem in report.problems:
            if len(self.problems) < 20:
                # The harness numbers trials within one call; say which call.
                self.problems.append(f"(trials from {offset + 1}) {problem}")

    @property
    def rotated(self) -> int:
        return self.outcomes[RotationOutcome.ROTATED]

    @property
    def grace(self) -> int:
        return self.outcomes[RotationOutcome.GRACE]

    @property
    def others(self) -> dict[str, int]:
        keep = (RotationOutcome.ROTATED, RotationOutcome.GRACE)
        return {
            o.name: n
            for o, n in sorted(self.outcomes.items(), key=lambda i: i[0].name)
            if o not in keep
        }

    def as_json(self) -> dict[str, JSON]:
        return {
            "store": self.store,
            "driver": self.driver,
            "callers": self.callers,
            "trials": self.trials,
            "rotated": self.rotated,
            "grace": self.grace,
            "other": dict(self.others),
            "bad_trials": self.bad_trials,
            "double_rotations": self.double_rotations,
            "seconds": round(self.seconds, 3),
            "problems": list(self.problems),
        }


def _race_trials(settings: Settings) -> int:
    return QUICK_RACE_TRIALS if settings.quick else RACE_TRIALS


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    """``(offset, size)`` of each call to the race harness."""
    for offset in range(0, total, RACE_CHUNK):
        yield offset, min(RACE_CHUNK, total - offset)


def _race_progress(settings: Settings, race: _Race, total: int) -> None:
    settings.log(
        f"{GROUP}: race {race.store} {race.driver} N={race.callers}: {race.trials}/{total} "
        f"trials, {race.bad_trials} bad ({race.seconds:.1f} s)"
    )


def _races_sync(settings: Settings, name: str, store: SessionStore) -> list[_Race]:
    total = _race_trials(settings)
    races = []
    for callers in RACE_CALLERS:
        wins = _Wins()
        tallied = _TalliedStore(store, wins)
        race = _Race(name, "sync, threads", callers)
        for offset, size in _chunks(total):
            race.add(run_rotation_race(tallied, callers=callers, trials=size, label=name), offset)
            _race_progress(settings, race, total)
        race.double_rotations = wins.double_rotations()
        races.append(race)
    return races


async def _races_async(settings: Settings, name: str, store: AsyncSessionStore) -> list[_Race]:
    total = _race_trials(settings)
    races = []
    for callers in RACE_CALLERS:
        wins = _Wins()
        tallied = _AsyncTalliedStore(store, wins)
        race = _Race(name, "async, tasks", callers)
        for offset, size in _chunks(total):
            report = await run_rotation_race_async(
                tallied, callers=callers, trials=size, label=name
            )
            race.add(report, offset)
            _race_progress(settings, race, total)
        race.double_rotations = wins.double_rotations()
        races.append(race)
    return races


# --------------------------------------------------------------------------- results


@dataclass
class _StoreResult:
    """Everything measured on one server."""

    key: str
    """``redis`` or ``postgres``: the JSON row and the prefix of the top-level keys."""
    label: str
    server: str
    round_trip: str
    """What the bare round trip is (``PING``, ``SELECT 1``)."""
    rotation_us: Stats | None = None
    round_trip_us: Stats | None = None
    throughput: list[_Throughput] = field(default_factory=list)
    races: list[_Race] = field(default_factory=list)
    round_trips_per_rotation: float | None = None
    round_trip_evidence: dict[str, JSON] = field(default_factory=dict)
    unflushed_rotation_us: Stats | None = None
    """PostgreSQL only, a diagnostic: rotations whose commit does not wait for the WAL flush."""
    server_settings: dict[str, JSON] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.rotation_us is None or self.round_trip_us is None:
            return None
        return self.rotation_us.median / self.round_trip_us.median

    def as_json(self) -> dict[str, JSON]:
        ratio = self.ratio
        return {
            "label": self.label,
            "server": self.server,
            "round_trip": self.round_trip,
            "rotation": self.rotation_us.as_json() if self.rotation_us else None,
            "bare_round_trip": self.round_trip_us.as_json() if self.round_trip_us else None,
            "rotation_vs_roundtrip": None if ratio is None else round(ratio, 4),
            "throughput": [t.as_json() for t in self.throughput],
            "round_trips_per_rotation": self.round_trips_per_rotation,
            "round_trip_evidence": self.round_trip_evidence,
            "server_settings": self.server_settings,
            **self._unflushed_json(),
        }

    def _unflushed_json(self) -> dict[str, JSON]:
        if self.unflushed_rotation_us is None or self.round_trip_us is None:
            return {}
        ratio = self.unflushed_rotation_us.median / self.round_trip_us.median
        return {
            "rotation_synchronous_commit_off": self.unflushed_rotation_us.as_json(),
            "rotation_synchronous_commit_off_vs_roundtrip": round(ratio, 4),
        }


# --------------------------------------------------------------------------- Redis


def _redis_client(**options: Any) -> redis.Redis:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30, **options)


def _drop_redis_keys(client: redis.Redis, prefix: str) -> int:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def _redis_round_trips(settings: Settings, prefix: str) -> tuple[float, dict[str, JSON]]:
    """Commands the server received per rotation, counted by the server two ways."""
    from tokenflow.stores.redis import RedisStore

    batch = QUICK_COUNTED_ROTATIONS if settings.quick else COUNTED_ROTATIONS
    client = _redis_client(single_connection_client=True)
    admin = _redis_client()
    try:
        rotator = _Rotator.open(RedisStore(client, prefix=prefix), 100, "bench-count")
        for _ in range(WARM_UP_ROTATIONS):
            rotator.step()
        address = str(client.client_info()["addr"])

        # MONITOR shows every command the server executes, with the address of
        # the connection it came from ("lua" for those a script runs).
        received: Counter[str] = Counter()
        sentinel = f"tokenflow-bench-end-{secrets.token_hex(8)}"
        listening = threading.Event()
        failed: list[BaseException] = []

        # redis-py leaves its Monitor untyped; what it yields is read as Any.
        open_monitor: Callable[[], Any] = admin.monitor

        def watch() -> None:
            try:
                with open_monitor() as monitor:
                    listening.set()
                    while True:
                        command = monitor.next_command()
                        if f"{command['client_address']}:{command['client_port']}" != address:
                            continue
                        text = str(command["command"])
                        if sentinel in text:
                            return
                        received[text.split(" ", 1)[0].upper()] += 1
            except BaseException as exc:  # reported below
                failed.append(exc)
                listening.set()

        watcher = threading.Thread(target=watch, name="redis-monitor", daemon=True)
        watcher.start()
        if not listening.wait(10) or failed:
            raise RuntimeError(f"MONITOR did not start: {failed}")
        before = admin.info("commandstats")
        for _ in range(batch):
            rotator.step()
        after = admin.info("commandstats")
        client.echo(sentinel)
        watcher.join(30)
        if failed or watcher.is_alive():
            raise RuntimeError(f"MONITOR did not see the end of the batch: {failed}")
        rotator.check("redis round-trip count")
    finally:
        client.close()
        admin.close()

    def delta(name: str, stat: str) -> int:
        new = after.get(f"cmdstat_{name}", {}).get(stat, 0)
        old = before.get(f"cmdstat_{name}", {}).get(stat, 0)
        return int(new) - int(old)

    commands = sum(received.values())
    evalsha = delta("evalsha", "calls")
    evidence: dict[str, JSON] = {
        "rotations": batch,
        "monitor_commands_from_store_connection": dict(received),
        "monitor_commands_per_rotation": commands / batch,
        "commandstats_evalsha_calls_delta": evalsha,
        "commandstats_evalsha_failed_calls_delta": delta("evalsha", "failed_calls"),
        "commandstats_script_calls_delta": delta("script|load", "calls"),
        "commandstats_evalsha_per_rotation": evalsha / batch,
        "note": "commandstats are server-wide: other clients' EVALSHA calls in the same "
        "interval add to them; MONITOR is filtered to the store's own connection",
    }
    return commands / batch, evidence


def _redis(settings: Settings) -> _StoreResult | None:
    try:
        import redis

        from tokenflow.stores.redis import RedisStore
    except ImportError as exc:
        _skip(f"Redis client not installed ({exc}): pip install 'tokenflow[redis]'")
        return None
    probe = _redis_client()
    try:
        version = str(probe.info("server")["redis_version"])
    except redis.RedisError as exc:
        probe.close()
        _unreachable("Redis", _redis_where(), exc)
        return None
    prefix = _unique_name()
    result = _StoreResult("redis", "Redis", f"Redis {version}", "PING")
    settings.log(f"{GROUP}: Redis {version} at {_redis_where()}, key prefix {prefix}")
    try:
        # Latency: one connection serves both the store and PING.
        single = _redis_client(single_connection_client=True)
        try:
            rotator = _Rotator.open(RedisStore(single, prefix=prefix), LATENCY_SESSIONS, "bench-l")
            stats = measure(
                f"{GROUP} redis",
                [
                    Case("redis/rotate", Call(rotator.step)),
                    Case("redis/ping", Call(single.ping)),
                ],
                settings,
                status=lambda s: _ratio_status(s["redis/rotate"], s["redis/ping"]),
            )
            rotator.check("redis latency")
        finally:
            single.close()
        result.rotation_us, result.round_trip_us = stats["redis/rotate"], stats["redis/ping"]

        # Throughput: one client, its pool shared by every thread.
        shared = _redis_client()
        try:
            store = RedisStore(shared, prefix=prefix)
            result.throughput = _throughput(settings, "redis", store, shared.ping)
            result.races = _races_sync(settings, "RedisStore", store)
        finally:
            shared.close()
        result.races += asyncio.run(_redis_async_races(settings, prefix))

        result.round_trips_per_rotation, result.round_trip_evidence = _redis_round_trips(
            settings, prefix
        )
    finally:
        dropped = _drop_redis_keys(probe, prefix)
        probe.close()
        settings.log(f"{GROUP}: removed {dropped} Redis keys under {prefix}")
    return result


async def _redis_async_races(settings: Settings, prefix: str) -> list[_Race]:
    import redis.asyncio

    from tokenflow.stores.redis import AsyncRedisStore

    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30)
    try:
        store = AsyncRedisStore(client, prefix=prefix)
        return await _races_async(settings, "AsyncRedisStore", store)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- PostgreSQL

_SELECT_1: Final = "SELECT 1"
# What decides the cost of a committed write: reported beside the figures.
_DURABILITY_SETTINGS: Final = ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay")

# Protocol message types, by direction, for the relay's tallies.
_CLIENT_MESSAGES: Final = {
    "P": "Parse",
    "B": "Bind",
    "D": "Describe",
    "E": "Execute",
    "S": "Sync",
    "Q": "Query",
    "X": "Terminate",
    "H": "Flush",
    "C": "Close",
}
_SERVER_MESSAGES: Final = {
    "Z": "ReadyForQuery",
    "1": "ParseComplete",
    "2": "BindComplete",
    "t": "ParameterDescription",
    "T": "RowDescription",
    "n": "NoData",
    "D": "DataRow",
    "C": "CommandComplete",
    "E": "ErrorResponse",
}


class _MessageTally:
    """Splits one direction of a PostgreSQL connection into messages and counts them by type.

    Every message is a type byte and a 4-byte length (which counts itself),
    except the client's first, the startup packet, which has no type byte.
    """

    def __init__(self, names: Mapping[str, str], *, startup: bool) -> None:
        self._names = names
        self._startup = startup
        self._buffer = bytearray()
        self.counts: Counter[str] = Counter()

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while True:
            if self._startup:
                if len(buffer) - offset < 4:
                    break
                length = int.from_bytes(buffer[offset : offset + 4], "big")
                if len(buffer) - offset < length:
                    break
                self.counts["Startup"] += 1
                self._startup = False
                offset += length
                continue
            if len(buffer) - offset < 5:
                break
            length = int.from_bytes(buffer[offset + 1 : offset + 5], "big")
            if len(buffer) - offset < 1 + length:
                break
            kind = chr(buffer[offset])
            self.counts[self._names.get(kind, kind)] += 1
            offset += 1 + length
        del buffer[:offset]


class _WireCounter:
    """A relay on 127.0.0.1 in front of PostgreSQL that counts the messages it passes.

    A round trip is a request the client then waits on. In PostgreSQL's
    protocol every request ends with a Sync (or is a simple Query) and its
    answer with one ReadyForQuery, so the ReadyForQuery messages the server
    sends count the round trips exactly, whatever the client library does
    inside (psycopg's one-off statement preparation shows up as its own
    exchange). Each message is counted before it is forwarded, so the counts
    are complete once the client has its answer. TLS would hide the messages:
    the client connects to the relay with ``sslmode=disable``.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._client = _MessageTally(_CLIENT_MESSAGES, startup=True)
        self._server = _MessageTally(_SERVER_MESSAGES, startup=False)
        self._connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pg-wire-counter", daemon=True)
        self._thread.start()

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """``(client messages, server messages)`` so far, by type name."""
        with self._lock:
            return Counter(self._client.counts), Counter(self._server.counts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        sockets: list[socket.socket] = [self._listener]
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if key.data is None:
                        accepted, _ = self._listener.accept()
                        # One client at a time keeps the startup parsing simple;
                        # the counting pool holds a single connection.
                        if self._connections:
                            accepted.close()
                            continue
                        self._connections += 1
                        upstream = socket.create_connection(self._upstream, timeout=5)
                        for sock in (accepted, upstream):
                            sock.setblocking(True)
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                            sockets.append(sock)
                        selector.register(accepted, selectors.EVENT_READ, (upstream, self._client))
                        selector.register(upstream, selectors.EVENT_READ, (accepted, self._server))
                        continue
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    target, tally = key.data
                    data = source.recv(65536)
                    if not data:
                        selector.unregister(source)
                        selector.unregister(target)
                        source.close()
                        target.close()
                        continue
                    with self._lock:
                        tally.feed(data)
                    target.sendall(data)
        finally:
            for sock in sockets:
                sock.close()
            selector.close()


def _postgres_round_trips(settings: Settings, table: str) -> tuple[float | None, dict[str, JSON]]:
    """Round trips per rotation, counted on the wire of the store's one connection."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg_pool import ConnectionPool

    from tokenflow.stores.postgres import PostgresStore

    params = conninfo_to_dict(POSTGRES_DSN)
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        return None, {"skipped": "the server is reached by a Unix socket"}
    relay = _WireCounter(host, int(params.get("port") or 5432))
    batch = QUICK_COUNTED_ROTATIONS if settings.quick else COUNTED_ROTATIONS
    conninfo = make_conninfo(
        POSTGRES_DSN,
        host="127.0.0.1",
        hostaddr="127.0.0.1",
        port=str(relay.port),
        sslmode="disable",
        gssencmode="disable",
    )
    try:
        # The same kind of pool as the store is benchmarked with, of one
        # connection so that every message crosses the relay's one link.
        with ConnectionPool(
            conninfo, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
        ) as pool:
            pool.wait(10)
            store = PostgresStore(pool, table=table)
            rotator = _Rotator.open(store, 100, "bench-count")
            client_0, server_0 = relay.snapshot()
            for _ in range(WARM_UP_ROTATIONS):
                rotator.step()
            client_1, server_1 = relay.snapshot()
            for _ in range(batch):
                rotator.step()
            client_2, server_2 = relay.snapshot()
            rotator.check("postgres round-trip count")
    finally:
        relay.close()
    trips = server_2["ReadyForQuery"] - server_1["ReadyForQuery"]
    evidence: dict[str, JSON] = {
        "rotations": batch,
        "ready_for_query": trips,
        "client_messages": dict(client_2 - client_1),
        "server_messages": dict(server_2 - server_1),
        "warm_up_rotations": WARM_UP_ROTATIONS,
        "warm_up_round_trips": server_1["ReadyForQuery"] - server_0["ReadyForQuery"],
        "warm_up_client_messages": dict(client_1 - client_0),
        "method": "protocol messages counted by a relay on the store's one pooled connection",
    }
    return trips / batch, evidence


def _select_one(pool: ConnectionPool[Any]) -> Callable[[], object]:
    """``SELECT 1`` the way the store runs its statements: pooled connection, cursor, fetch."""

    def select_one() -> object:
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute(_SELECT_1)
            return cur.fetchone()

    return select_one


def _postgres(settings: Settings) -> _StoreResult | None:
    try:
        import psycopg
        from psycopg import sql
        from psycopg_pool import AsyncConnectionPool, ConnectionPool

        from tokenflow.stores.postgres import AsyncPostgresStore, PostgresStore, apply_schema
    except ImportError as exc:
        _skip(f"PostgreSQL client not installed ({exc}): pip install 'tokenflow[postgres]'")
        return None
    try:
        admin = psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unreachable("PostgreSQL", _postgres_where(), str(exc).strip())
        return None
    table = _unique_name()
    version = str(admin.info.parameter_status("server_version"))
    # "15.20 (Debian 15.20-0+deb12u1)": the number is enough for the table.
    short = version.split(" ", 1)[0]
    result = _StoreResult("postgres", "PostgreSQL", f"PostgreSQL {short}", "SELECT 1")
    for setting in _DURABILITY_SETTINGS:
        row = admin.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
        result.server_settings[setting] = None if row is None else str(row[0])
    settings.log(f"{GROUP}: PostgreSQL {version} at {_postgres_where()}, table {table}")
    autocommit: dict[str, Any] = {"autocommit": True}
    no_flush_wait: dict[str, Any] = {**autocommit, "options": "-c synchronous_commit=off"}
    try:
        apply_schema(admin, table=table)
        # Latency: a pool of one connection serves both the store and SELECT 1.
        # The second pool is a diagnostic only: the same rotations on a
        # connection whose commits do not wait for the WAL flush, which says
        # how much of a rotation is the disk rather than the store.
        with (
            ConnectionPool(
                POSTGRES_DSN, min_size=1, max_size=1, kwargs=autocommit, open=True, timeout=60
            ) as pool,
            ConnectionPool(
                POSTGRES_DSN, min_size=1, max_size=1, kwargs=no_flush_wait, open=True, timeout=60
            ) as unflushed_pool,
        ):
            pool.wait(10)
            unflushed_pool.wait(10)
            rotator = _Rotator.open(PostgresStore(pool, table=table), LATENCY_SESSIONS, "bench-l")
            unflushed = _Rotator.open(
                PostgresStore(unflushed_pool, table=table), LATENCY_SESSIONS, "bench-l"
            )
            stats = measure(
                f"{GROUP} postgres",
                [
                    Case("postgres/rotate", Call(rotator.step)),
                    Case("postgres/select1", Call(_select_one(pool))),
                    Case("postgres/rotate_synchronous_commit_off", Call(unflushed.step)),
                ],
                settings,
                status=lambda s: _ratio_status(s["postgres/rotate"], s["postgres/select1"]),
            )
            rotator.check("postgres latency")
            unflushed.check("postgres latency, synchronous_commit=off")
        result.rotation_us = stats["postgres/rotate"]
        result.round_trip_us = stats["postgres/select1"]
        result.unflushed_rotation_us = stats["postgres/rotate_synchronous_commit_off"]

        clients = max(THROUGHPUT_CLIENTS)
        with ConnectionPool(
            POSTGRES_DSN,
            min_size=clients,
            max_size=clients,
            kwargs=autocommit,
            open=True,
            timeout=60,
        ) as pool:
            pool.wait(30)
            store = PostgresStore(pool, table=table)
            result.throughput = _throughput(settings, "postgres", store, _select_one(pool))

        size = POSTGRES_RACE_POOL
        with ConnectionPool(
            POSTGRES_DSN, min_size=size, max_size=size, kwargs=autocommit, open=True, timeout=60
        ) as pool:
            pool.wait(30)
            result.races = _races_sync(settings, "PostgresStore", PostgresStore(pool, table=table))

        async def async_races() -> list[_Race]:
            # Opened by `async with`: an async pool must not open in its constructor.
            async with AsyncConnectionPool(
                POSTGRES_DSN,
                min_size=size,
                max_size=size,
                kwargs=autocommit,
                open=False,
                timeout=60,
            ) as pool:
                await pool.wait(30)
                store = AsyncPostgresStore(pool, table=table)
                return await _races_async(settings, "AsyncPostgresStore", store)

        result.races += asyncio.run(async_races())

        result.round_trips_per_rotation, result.round_trip_evidence = _postgres_round_trips(
            settings, table
        )
    finally:
        admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        admin.close()
        settings.log(f"{GROUP}: dropped table {table}")
    return result


# --------------------------------------------------------------------------- report


def _ratio_status(rotation: Stats, round_trip: Stats) -> str:
    return f"rotation vs round trip so far: {rotation.median / round_trip.median:.3f}x"


def run(settings: Settings, report: Report) -> None:
    """Benchmark the Redis and PostgreSQL stores; print the tables and fill in ``report``."""
    results = [r for r in (_redis(settings), _postgres(settings)) if r is not None]
    _print_results(settings, results)

    report.add_libraries("redis", "psycopg", "psycopg-binary", "psycopg-pool")
    report.add_detail(GROUP, "goal", {"max_rotation_vs_roundtrip": GOAL})
    report.add_detail(
        GROUP,
        "setup",
        {
            "latency_sessions": LATENCY_SESSIONS,
            "throughput_clients": list(THROUGHPUT_CLIENTS),
            "throughput_seconds": 0.3 if settings.quick else 2.0,
            "sessions_per_client": SESSIONS_PER_CLIENT,
            "race_callers": list(RACE_CALLERS),
            "race_trials": _race_trials(settings),
            "postgres_race_pool": POSTGRES_RACE_POOL,
        },
    )
    by_key = {r.key: r for r in results}
    for key in ("redis", "postgres"):
        found = by_key.get(key)
        if found is None:
            report.add_row(GROUP, key, {"skipped": "server not reachable"})
            report.add_key(f"{key}_rotation_vs_roundtrip", None)
            report.add_key(f"{key}_round_trips_per_rotation", None)
            continue
        report.add_row(GROUP, key, found.as_json())
        ratio = found.ratio
        report.add_key(f"{key}_rotation_vs_roundtrip", None if ratio is None else round(ratio, 4))
        trips = found.round_trips_per_rotation
        report.add_key(
            f"{key}_round_trips_per_rotation",
            None if trips is None else round(trips, 4),
        )
    races = [race for r in results for race in r.races]
    report.add_key("races", [race.as_json() for race in races])
    # None, not 0, when no race ran: a zero must mean "checked, and none".
    report.add_key(
        "double_rotations_total", sum(r.double_rotations for r in races) if races else None
    )


def _print_results(settings: Settings, results: Sequence[_StoreResult]) -> None:
    if not results:
        return
    print(
        f"\nStores: rotation vs a bare round trip on the same connection, single client, "
        f"median of {settings.rounds} interleaved rounds, µs per operation"
    )
    if settings.quick:
        print("QUICK MODE: few rounds, short batches and runs; do not quote these figures.")
    rows = []
    for r in results:
        if r.rotation_us is None or r.round_trip_us is None or r.ratio is None:
            continue
        rows.append(
            [
                r.server,
                f"{r.rotation_us.median:.1f}",
                f"{r.round_trip_us.median:.1f} ({r.round_trip})",
                f"{r.ratio:.2f}x",
                f"{r.rotation_us.noise_pct:.1f}% / {r.round_trip_us.noise_pct:.1f}%",
            ]
        )
        unflushed = r.unflushed_rotation_us
        if unflushed is not None:
            rows.append(
                [
                    "  diagnostic: synchronous_commit=off",
                    f"{unflushed.median:.1f}",
                    f"{r.round_trip_us.median:.1f} ({r.round_trip})",
                    f"{unflushed.median / r.round_trip_us.median:.2f}x",
                    f"{unflushed.noise_pct:.1f}% / {r.round_trip_us.noise_pct:.1f}%",
                ]
            )
    print(
        format_table(
            ["server", "rotation µs", "round trip µs", "ratio", "noise rot/rt"], rows, "lrrrr"
        )
    )
    for r in results:
        if r.unflushed_rotation_us is not None:
            shown = ", ".join(f"{k}={v}" for k, v in r.server_settings.items())
            print(f"{r.label} settings: {shown}.")
            print(
                "A committed rotation waits for the WAL flush to disk; the diagnostic row is the\n"
                "same rotation without that wait (the headline ratio keeps the default)."
            )

    print("\nThroughput: operations per second, client threads each with their own sessions")
    rows = [
        [
            r.label,
            str(t.clients),
            f"{t.rotations_per_s:,.0f}",
            f"{t.round_trips_per_s:,.0f}",
            f"{t.round_trips_per_s / t.rotations_per_s:.2f}x",
        ]
        for r in results
        for t in r.throughput
    ]
    print(
        format_table(
            ["store", "clients", "rotations/s", "round trips/s", "rotation cost"], rows, "lrrrr"
        )
    )

    races = [race for r in results for race in r.races]
    print(
        f"\nRaces: N concurrent rotations of one session presenting the same token "
        f"(PostgreSQL pools: {POSTGRES_RACE_POOL} connections)"
    )
    rows = [
        [
            race.store,
            race.driver,
            str(race.callers),
            str(race.trials),
            str(race.rotated),
            str(race.grace),
            ", ".join(f"{k} {v}" for k, v in race.others.items()) or "0",
            str(race.bad_trials),
            str(race.double_rotations),
            f"{1000 * race.seconds / race.trials:.1f}" if race.trials else "-",
        ]
        for race in races
    ]
    print(
        format_table(
            [
                "store",
                "driver",
                "N",
                "trials",
                "ROTATED",
                "GRACE",
                "other",
                "bad",
                "double",
                "ms/trial",
            ],
            rows,
            "llrrrrlrrr",
        )
    )
    for race in races:
        for problem in race.problems[:3]:
            print(f"  {race.store} {race.driver} N={race.callers}: {problem}")
    double = sum(race.double_rotations for race in races)
    verdict = "OK" if double == 0 else "VIOLATION: a token rotated twice"
    print(f"double rotations total: {double} (must be 0: {verdict})")

    print()
    for r in results:
        trips = r.round_trips_per_rotation
        shown = "n/a" if trips is None else f"{trips:.3f}"
        print(f"{r.label}: round trips per rotation: {shown}")
        _print_evidence(r)
    print("\nNoise is the interquartile range over the median: medians closer than it are a tie.")
    for r in results:
        ratio = r.ratio
        if ratio is None:
            continue
        verdict = "PASS" if ratio <= GOAL else "MISS"
        print(f"{r.key}_rotation_vs_roundtrip = {ratio:.3f}  (goal <= {GOAL}: {verdict})")


def _print_evidence(r: _StoreResult) -> None:
    e = r.round_trip_evidence
    if r.key == "redis":
        print(
            f"  MONITOR, the store's connection: {e['monitor_commands_from_store_connection']} "
            f"for {e['rotations']} rotations"
        )
        print(
            f"  INFO commandstats, server-wide: {e['commandstats_evalsha_calls_delta']} EVALSHA "
            f"calls ({e['commandstats_evalsha_failed_calls_delta']} failed), "
            f"{e['commandstats_script_calls_delta']} SCRIPT LOAD"
        )
    elif "skipped" in e:
        print(f"  not counted: {e['skipped']}")
    else:
        print(
            f"  on the wire: {e['ready_for_query']} ReadyForQuery for {e['rotations']} "
            f"rotations; client sent {e['client_messages']}"
        )
        print(
            f"  warm-up on a fresh connection: {e['warm_up_round_trips']} round trips for "
            f"{e['warm_up_rotations']} rotations (psycopg prepares a statement at its 5th use)"
        )
