"""SQLiteStore and AsyncSQLiteStore: the file, its schema, and atomicity across processes.

The contract itself is checked by the conformance kit (test_stores_conformance.py,
with ``purge`` among the state machine's rules); these tests cover what is
particular to SQLite.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenflow import ConfigError
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import (
    AsyncSQLiteStore,
    NewSession,
    Rotation,
    RotationOutcome,
    SessionInfo,
    SQLiteStore,
)
from tokenflow.stores.sqlite import _LIST_LIVE, _PURGE, SCHEMA_VERSION

T0 = 1_700_000_000.0


def _session(
    sid: str,
    user: str = "alice",
    *,
    now: float = T0,
    idle: float = 1800.0,
    absolute: float = 86_400.0,
    metadata: dict[str, str] | None = None,
) -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(sid, user, now, now, now + idle, now + absolute, 0, metadata or {})
    return NewSession(info, verifier_of(secret)), secret


def _rotation(
    sid: str, secret: bytes, now: float, *, salt: bytes | None = None, grace: float = 60.0
) -> tuple[Rotation, bytes]:
    salt = salt if salt is not None else secrets.token_bytes(16)
    successor = derive_successor(secret, salt)
    rotation = Rotation(sid, verifier_of(secret), verifier_of(successor), salt, now, 1800.0, grace)
    return rotation, successor


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(path) as store:
        yield store


def _raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the file, to look behind the store's back."""
    return sqlite3.connect(path, isolation_level=None)


# ------------------------------------------------------------------ the file and its schema


def test_first_open_creates_the_schema_in_wal_mode(path: Path) -> None:
    SQLiteStore(path).close()
    raw = _raw(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        objects = dict(raw.execute("SELECT name, type FROM sqlite_master").fetchall())
        assert objects == {
            "tokenflow_sessions": "table",
            "tokenflow_sessions_by_user": "index",
            "tokenflow_sessions_by_expiry": "index",
        }
        columns = {row[1]: row[2] for row in raw.execute("PRAGMA table_info(tokenflow_sessions)")}
        assert columns["current"] == columns["previous"] == columns["salt"] == "BLOB"
        assert (
            columns["created_at"] == columns["idle_expires_at"] == columns["rotated_at"] == "REAL"
        )
        assert columns["metadata"] == "TEXT"
    finally:
        raw.close()


def test_writers_of_one_process_queue_in_the_process_not_in_sqlite(path: Path) -> None:
    # With no busy timeout, a BEGIN IMMEDIATE that found another thread's
    # transaction open would fail at once ("database is locked"): every
    # rotation succeeding proves the threads waited for each other in the
    # process, where a waiter wakes at the commit instead of sleeping in
    # SQLite's busy handler (the refresh path's latency tail).
    threads, rounds = 4, 150
    with SQLiteStore(path, timeout=0) as store:
        secrets_by_sid = {}
        for n in range(threads):
            new, secret = _session(f"s{n}")
            store.create(new)
            secrets_by_sid[f"s{n}"] = secret
        start = threading.Barrier(threads)
        failures: list[BaseException] = []

        def rotate(sid: str) -> None:
            secret = secrets_by_sid[sid]
            start.wait()
            try:
                for step in range(rounds):
                    rotation, secret = _rotation(sid, secret, T0 + 1 + step * 0.001)
                    assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
            except BaseException as exc:
                failures.append(exc)

        workers = [threading.Thread(target=rotate, args=(sid,)) for sid in secrets_by_sid]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert failures == []


def test_connections_use_normal_sync_and_the_busy_timeout(path: Path) -> None:
    with SQLiteStore(path, timeout=2.5) as store:
        conn = store._conn()  # a peek at this thread's connection
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (2500,)


def test_reopening_keeps_the_sessions_and_does_not_touch_the_schema(path: Path) -> None:
    new, secret = _session("s1")
    with SQLiteStore(path) as store:
        store.create(new)
    raw = _raw(path)
    schema = raw.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    raw.close()
    with SQLiteStore(path) as store:
        assert store.sessions_of("alice", now=T0) == [new.info]
        rotation, _ = _rotation("s1", secret, T0 + 1)
        assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
    raw = _raw(path)
    assert raw.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    raw.close()


def test_a_file_from_a_newer_release_is_refused(path: Path) -> None:
    SQLiteStore(path).close()
    raw = _raw(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        SQLiteStore(path)


@pytest.mark.parametrize("name", ["", ":memory:"])
def test_an_in_memory_database_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="MemoryStore"):
        SQLiteStore(name)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteStore(tmp_path / "no such directory" / "sessions.db")


@pytest.mark.parametrize("timeout", [-1.0, float("nan"), float("inf")])
def test_a_nonsense_timeout_is_refused(path: Path, timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        SQLiteStore(path, timeout=timeout)


def test_a_relative_path_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    with SQLiteStore("sessions.db") as store:
        assert store.path == str(tmp_path / "a" / "sessions.db")
        # A thread opening its connection after a chdir still finds the same file.
        monkeypatch.chdir(tmp_path / "b")
        thread = threading.Thread(target=store.create, args=(_session("s1")[0],))
        thread.start()
        thread.join()
        assert store.sessions_of("alice", now=T0) != []
    assert not (tmp_path / "b" / "sessions.db").exists()


def test_repr_shows_the_path_and_nothing_else(store: SQLiteStore, path: Path) -> None:
    new, secret = _session("s1")
    store.create(new)
    store.rotate(_rotation("s1", secret, T0 + 1)[0])
    assert repr(store) == f"SQLiteStore({str(path)!r})"
    assert repr(AsyncSQLiteStore(path)) == f"AsyncSQLiteStore({str(path)!r})"


# ------------------------------------------------------------------ what is stored, and how


def test_metadata_round_trips_and_comes_back_read_only(store: SQLiteStore) -> None:
    metadata = {
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "address": "2001:db8::1",
        "note": 'ünïcödé ☃ "quoted" \\ {}',
        "nul": "a\x00b",
        "": "",
    }
    new, _ = _session("s1", metadata=metadata)
    store.create(new)
    (listed,) = store.sessions_of("alice", now=T0)
    assert listed == new.info
    assert dict(listed.metadata) == metadata
    with pytest.raises(TypeError):
        listed.metadata["user_agent"] = "changed"  # type: ignore[index]


def test_times_round_trip_exactly(store: SQLiteStore) -> None:
    now = T0 + 1 / 3
    info = SessionInfo("s1", "alice", now, now + 1e-6, now + 1800.1, now + 86_400.7, 41)
    store.create(NewSession(info, verifier_of(b"secret")))
    assert store.sessions_of("alice", now=now) == [info]


def test_the_file_holds_verifiers_and_salts_as_blobs_and_no_secret(path: Path) -> None:
    new, secret = _session("s1", metadata={"k": "v"})
    salt = bytes([0, 255]) + secrets.token_bytes(14)  # NUL and 0xFF: raw bytes, not text
    rotation, successor = _rotation("s1", secret, T0 + 1, salt=salt)
    with SQLiteStore(path) as store:
        store.create(new)
        assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
    raw = _raw(path)
    row = raw.execute(
        "SELECT typeof(current), typeof(previous), typeof(salt), typeof(created_at), "
        "typeof(rotated_at), typeof(metadata), current, previous, salt FROM tokenflow_sessions"
    ).fetchone()
    raw.close()
    assert row[:6] == ("blob", "blob", "blob", "real", "real", "text")
    assert row[6:] == (verifier_of(successor), verifier_of(secret), salt)
    # The store saw only digests: neither refresh secret is anywhere in the files.
    contents = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    assert secret not in contents
    assert successor not in contents
    assert verifier_of(successor) in contents


def test_a_duplicate_id_raises_value_error(store: SQLiteStore) -> None:
    new, _ = _session("s1")
    store.create(new)
    with pytest.raises(ValueError, match="already exists"):
        store.create(_session("s1", "mallory")[0])
    assert store.sessions_of("mallory", now=T0) == []
    assert store.sessions_of("alice", now=T0) == [new.info]


def test_a_nan_creation_time_is_refused(store: SQLiteStore) -> None:
    new, _ = _session("s1")
    info = dataclasses.replace(new.info, created_at=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        store.create(NewSession(info, new.verifier))


def test_a_nan_expiry_is_stored_as_expired(store: SQLiteStore) -> None:
    # SQLite would turn NaN into NULL; -inf is expired at every now, as NaN is.
    new, _ = _session("s1", idle=float("nan"))
    store.create(new)
    assert store.sessions_of("alice", now=-1e300) == []
    assert store.purge(now=-1e300) == 1


# ------------------------------------------------------------------ purge and the indexes


def test_purge_drops_dead_sessions_only(store: SQLiteStore) -> None:
    store.create(_session("live")[0])
    store.create(_session("idle-over", idle=50.0)[0])
    store.create(_session("absolute-over", absolute=60.0)[0])
    store.create(_session("ends-now", idle=100.0)[0])  # not live at its expiry instant
    assert store.purge(now=T0 + 100.0) == 3
    assert [i.session_id for i in store.sessions_of("alice", now=T0 + 100.0)] == ["live"]
    assert store.purge(now=T0 + 100.0) == 0
    assert store.revoke_user("alice") == 1  # purged sessions are really gone


def test_listing_and_purge_use_their_indexes(store: SQLiteStore) -> None:
    conn = store._conn()
    plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {_PURGE}", (T0,)))
    assert "tokenflow_sessions_by_expiry" in plan
    plan = " ".join(
        str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {_LIST_LIVE}", ("alice", T0, T0))
    )
    assert "tokenflow_sessions_by_user" in plan
    assert "TEMP B-TREE" not in plan  # the index delivers "oldest first" without a sort


# ------------------------------------------------------------------ locks, threads, close


def test_a_held_write_lock_makes_writes_fail_after_the_timeout(path: Path) -> None:
    with SQLiteStore(path, timeout=0.2) as store:
        new, secret = _session("s1")
        store.create(new)
        blocker = _raw(path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store.rotate(_rotation("s1", secret, T0 + 1)[0])
            assert 0.15 < time.monotonic() - started < 5
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store.create(_session("s2")[0])
            # WAL: readers are not blocked by a writer.
            assert store.sessions_of("alice", now=T0) == [new.info]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The failed attempt left no transaction open on the store's connection.
        assert store.rotate(_rotation("s1", secret, T0 + 1)[0]).outcome is RotationOutcome.ROTATED


def test_a_thread_connection_is_closed_when_the_thread_ends(store: SQLiteStore) -> None:
    store.create(_session("s1")[0])
    threads = [
        threading.Thread(target=store.sessions_of, args=("alice",), kwargs={"now": T0})
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(store._held) == 1  # the main thread's, from create; the others are closed


def test_close_closes_every_thread_connection_and_refuses_later_use(path: Path) -> None:
    store = SQLiteStore(path)
    store.create(_session("s1")[0])
    opened, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        store.sessions_of("alice", now=T0)  # opens this thread's connection
        opened.set()
        release.wait(10)
        try:
            store.sessions_of("alice", now=T0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    assert opened.wait(10)
    store.close()
    # The last connection to close checkpoints and removes the WAL file: all
    # connections are closed although the worker thread is still alive.
    assert not Path(f"{path}-wal").exists()
    release.set()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], sqlite3.ProgrammingError)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.revoke("s1")
    store.close()  # twice is fine


# ------------------------------------------------------------------ several processes


def _rotating_process(
    path: str,
    sid: str,
    secret: bytes,
    rounds: int,
    barrier: Any,
    results: Any,
) -> None:
    """One process of the race: every round, rotate the same session at once."""
    with SQLiteStore(path) as store:
        for rnd in range(rounds):
            salt = os.urandom(16)
            rotation, successor = _rotation(sid, secret, T0 + 1 + rnd, salt=salt, grace=600.0)
            barrier.wait(60)
            result = store.rotate(rotation)
            if result.outcome is RotationOutcome.GRACE and result.salt is not None:
                successor = derive_successor(secret, result.salt)
            results.put((rnd, result.outcome.name, verifier_of(successor)))
            secret = successor  # every process must now hold the same secret


def test_rotation_is_atomic_across_processes(path: Path) -> None:
    processes, rounds = 4, 5
    new, secret = _session("s1")
    with SQLiteStore(path) as store:
        store.create(new)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(
            target=_rotating_process, args=(str(path), "s1", secret, rounds, barrier, results)
        )
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    answers = [results.get(timeout=120) for _ in range(processes * rounds)]
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    for rnd in range(rounds):
        this_round = [(outcome, successor) for r, outcome, successor in answers if r == rnd]
        outcomes = sorted(outcome for outcome, _ in this_round)
        assert outcomes == ["GRACE"] * (processes - 1) + ["ROTATED"], f"round {rnd}"
        assert len({successor for _, successor in this_round}) == 1, f"round {rnd} diverged"
    with SQLiteStore(path) as store:
        (info,) = store.sessions_of("alice", now=T0 + rounds)
        assert info.generation == rounds


def _opening_process(directory: str, files: int, barrier: Any, results: Any) -> None:
    """Open each new file at the same instant as the other processes."""
    failures = []
    for n in range(files):
        barrier.wait(60)
        try:
            SQLiteStore(os.path.join(directory, f"{n}.db")).close()
        except Exception as exc:
            failures.append(repr(exc))
    results.put(failures)


def test_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL can fail at once, without the busy handler,
    # when several processes do it together: the store retries.
    processes, files = 6, 30
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_opening_process, args=(str(tmp_path), files, barrier, results))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    failures = [f for _ in workers for f in results.get(timeout=120)]
    for w in workers:
        w.join(60)
    assert failures == []
    for n in range(files):
        raw = _raw(tmp_path / f"{n}.db")
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        raw.close()


def _child_rotates(path: str, secret: bytes, store: SQLiteStore) -> None:
    rotation, _ = _rotation("s1", secret, T0 + 1)
    os._exit(0 if store.rotate(rotation).outcome is RotationOutcome.ROTATED else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads alive
def test_a_forked_child_opens_its_own_connection(path: Path) -> None:
    with SQLiteStore(path) as store:
        new, secret = _session("s1")
        store.create(new)  # the parent now holds an open connection
        child = multiprocessing.get_context("fork").Process(
            target=_child_rotates, args=(str(path), secret, store)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        # The parent's connection still works and sees the child's rotation.
        (info,) = store.sessions_of("alice", now=T0 + 1)
        assert info.generation == 1
        replay, _ = _rotation("s1", secret, T0 + 2)
        assert store.rotate(replay).outcome is RotationOutcome.GRACE


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads alive
def test_a_child_forked_during_a_write_does_not_inherit_the_held_writer_lock(path: Path) -> None:
    with SQLiteStore(path) as store:
        new, secret = _session("s1")
        store.create(new)
        # A thread of the parent is about to write (it holds the in-process
        # writer lock) at the moment of the fork: the child must still write.
        _, writer = store._writer
        with writer:
            child = multiprocessing.get_context("fork").Process(
                target=_child_rotates, args=(str(path), secret, store)
            )
            child.start()
            child.join(30)
        if child.exitcode is None:
            child.kill()
            child.join()
        assert child.exitcode == 0


# ------------------------------------------------------------------ async


@pytest.mark.asyncio
async def test_the_async_store_shares_the_file_with_sync_code(path: Path) -> None:
    async with AsyncSQLiteStore(path) as store:
        new, secret = _session("s1")
        await store.create(new)
        rotation, _ = _rotation("s1", secret, T0 + 1)
        assert (await store.rotate(rotation)).outcome is RotationOutcome.ROTATED
        assert store.sync.rotate(rotation).outcome is RotationOutcome.GRACE
        assert [i.generation for i in await store.sessions_of("alice", now=T0 + 1)] == [1]
        await store.create(_session("s2", "bob", idle=10.0)[0])
        assert await store.purge(now=T0 + 10.0) == 1
        assert await store.revoke("s2") is False
        assert await store.revoke_user("alice") == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await store.revoke("s1")
