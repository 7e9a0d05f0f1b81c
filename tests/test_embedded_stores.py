"""The embedded stores (memory and SQLite) against the conformance kit, plus
what only SQLite has: a file shared by threads and by several processes."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tokenflow import ConfigError
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import (
    AsyncMemoryStore,
    AsyncSQLiteStore,
    MemoryStore,
    NewSession,
    Rotation,
    RotationOutcome,
    SessionInfo,
    SQLiteStore,
)
from tokenflow.testing import check_async_session_store, check_session_store

NOW = 1_800_000_000.0


def test_memory_store_conforms() -> None:
    check_session_store(MemoryStore, max_examples=60, threads=16, rounds=20)


@pytest.mark.asyncio
async def test_async_memory_store_conforms() -> None:
    await check_async_session_store(AsyncMemoryStore, max_examples=60, tasks=16, rounds=20)


def test_sqlite_store_conforms(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kit.sqlite3")
    try:
        check_session_store(lambda: store, max_examples=40, threads=16, rounds=10)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_async_sqlite_store_conforms(tmp_path: Path) -> None:
    store = AsyncSQLiteStore(tmp_path / "kit.sqlite3")
    try:
        await check_async_session_store(lambda: store, max_examples=40, tasks=16, rounds=10)
    finally:
        await store.close()


def _session(session_id: str, secret: bytes, user: str = "u1") -> NewSession:
    info = SessionInfo(session_id, user, NOW, NOW, NOW + 1800, NOW + 43200, 0, {"agent": "test ü"})
    return NewSession(info, verifier_of(secret))


def test_sqlite_file_is_in_wal_mode_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    store = SQLiteStore(path)
    secret = secrets.token_bytes(32)
    store.create(_session("s1", secret))
    store.close()
    with sqlite3.connect(path) as raw:
        (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    again = SQLiteStore(path)
    try:
        (info,) = again.sessions_of("u1", NOW)
        assert info.metadata == {"agent": "test ü"}
        salt = secrets.token_bytes(16)
        successor = verifier_of(derive_successor(secret, salt))
        result = again.rotate(Rotation("s1", verifier_of(secret), successor, salt, NOW, 1800, 5))
        assert result.outcome is RotationOutcome.ROTATED
    finally:
        again.close()


def test_sqlite_refuses_an_in_memory_database() -> None:
    with pytest.raises(ConfigError, match="MemoryStore"):
        SQLiteStore(":memory:")


def test_sqlite_repr_shows_the_path_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.sqlite3")
    secret = secrets.token_bytes(32)
    store.create(_session("s1", secret))
    try:
        text = repr(store)
        assert "r.sqlite3" in text
        assert secret.hex() not in text
        assert verifier_of(secret).hex() not in text
    finally:
        store.close()


def test_sqlite_purge_drops_only_dead_sessions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.sqlite3")
    try:
        store.create(_session("live", secrets.token_bytes(32)))
        dead = SessionInfo("dead", "u1", NOW - 5000, NOW - 5000, NOW - 10, NOW + 100)
        store.create(NewSession(dead, verifier_of(secrets.token_bytes(32))))
        assert store.purge(NOW) == 1
        assert [s.session_id for s in store.sessions_of("u1", NOW)] == ["live"]
    finally:
        store.close()


def _rotate_in_process(path: str, secret: bytes, ready: object, go: object, out: object) -> None:
    store = SQLiteStore(path, timeout=30)
    salt = os.urandom(16)
    successor = verifier_of(derive_successor(secret, salt))
    rotation = Rotation("race", verifier_of(secret), successor, salt, NOW, 1800, 30)
    ready.release()  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    result = store.rotate(rotation)
    out.put((result.outcome.value, result.salt if result.salt is not None else salt))  # type: ignore[attr-defined]
    store.close()


@pytest.mark.parametrize("processes", [2, 4])
def test_sqlite_rotation_is_atomic_across_processes(tmp_path: Path, processes: int) -> None:
    """Processes released together: one rotates, the others replay its salt."""
    context = multiprocessing.get_context("spawn")
    path = str(tmp_path / "shared.sqlite3")
    secret = secrets.token_bytes(32)
    store = SQLiteStore(path)
    store.create(_session("race", secret))
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(target=_rotate_in_process, args=(path, secret, ready, go, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert ready.acquire(timeout=60)
    go.set()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == {"rotated": 1, "grace": processes - 1}
    # Every process ends up with the same successor secret: the winner's salt.
    assert len({salt for _, salt in results}) == 1
    (info,) = store.sessions_of("u1", NOW)
    assert info.generation == 1
    store.close()
