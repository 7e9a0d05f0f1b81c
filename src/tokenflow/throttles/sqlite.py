"""SQLite login throttles: failure counts in a file shared by threads and processes.

One table, created if missing (it may live in the session store's file)::

    tokenflow_login_failures(key TEXT PRIMARY KEY, count INTEGER,
                             last_failure_at REAL, expires_at REAL)

``reserve`` runs one write transaction (``BEGIN IMMEDIATE``): it counts an
attempt only if no other attempt was counted since the flow read the counts,
so simultaneous logins in any process get at most the limit of verifications.
Every other call is **one statement**, atomic on its own: ``record_failure`` is an
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` over all its keys, which
SQLite runs under its write lock, so N concurrent failures of a key count N
in every thread of every process using the file. A row whose ``expires_at``
(last failure + window) has passed restarts from 1; ``failures`` treats it
as absent; :meth:`SQLiteThrottle.purge` deletes such rows.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from .._backends.sqlite import Held
from .._errors import ConfigError
from .._throttle import NO_FAILURES, FailureCount

__all__ = ["AsyncSQLiteThrottle", "SQLiteThrottle"]

_SCHEMA: Final = """
    CREATE TABLE IF NOT EXISTS tokenflow_login_failures (
        key             TEXT PRIMARY KEY NOT NULL,
        count           INTEGER NOT NULL,
        last_failure_at REAL NOT NULL,
        expires_at      REAL NOT NULL
    ) WITHOUT ROWID
"""
_PURGE_INDEX: Final = """
    CREATE INDEX IF NOT EXISTS tokenflow_login_failures_by_expiry
        ON tokenflow_login_failures (expires_at)
"""
_MIN_SQLITE: Final = (3, 35, 0)  # INSERT ... RETURNING


@functools.lru_cache(maxsize=16)
def _record_sql(n: int) -> str:
    rows = ", ".join(["(?, 1, ?, ?)"] * n)
    # A live row (its window not over at ``now``) counts on; a dead one restarts at 1.
    return (
        "INSERT INTO tokenflow_login_failures (key, count, last_failure_at, expires_at) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT (key) DO UPDATE SET "
        "count = CASE WHEN excluded.last_failure_at < tokenflow_login_failures.expires_at "
        "THEN tokenflow_login_failures.count + 1 ELSE 1 END, "
        "last_failure_at = excluded.last_failure_at, expires_at = excluded.expires_at "
        "RETURNING key, count, last_failure_at"
    )


# Reservation: one statement per key inside one write transaction. A key
# expected at 0 may be absent, dead (window over) or released to 0; any other
# expected count must match the live row exactly. No row back: the counts
# moved since the flow read them, and the transaction is rolled back.
_RESERVE_FIRST: Final = (
    "INSERT INTO tokenflow_login_failures (key, count, last_failure_at, expires_at) "
    "VALUES (?, 1, ?, ?) ON CONFLICT (key) DO UPDATE SET count = 1, "
    "last_failure_at = excluded.last_failure_at, expires_at = excluded.expires_at "
    "WHERE tokenflow_login_failures.expires_at <= excluded.last_failure_at "
    "OR tokenflow_login_failures.count = 0 RETURNING key"
)
_RESERVE_NEXT: Final = (
    "UPDATE tokenflow_login_failures SET count = count + 1, last_failure_at = ?, "
    "expires_at = ? WHERE key = ? AND count = ? AND expires_at > ? RETURNING key"
)


@functools.lru_cache(maxsize=16)
def _release_sql(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        "UPDATE tokenflow_login_failures SET count = count - 1 "  # noqa: S608
        f"WHERE key IN ({marks}) AND count > 0 AND expires_at > ?"
    )


@functools.lru_cache(maxsize=16)
def _select_sql(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        "SELECT key, count, last_failure_at FROM tokenflow_login_failures "  # noqa: S608
        f"WHERE key IN ({marks}) AND expires_at > ? AND count > 0"
    )


@functools.lru_cache(maxsize=16)
def _delete_sql(n: int) -> str:
    return f"DELETE FROM tokenflow_login_failures WHERE key IN ({', '.join('?' * n)})"  # noqa: S608


def _check_time(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")


class SQLiteThrottle:
    """A :class:`~tokenflow.ports.LoginThrottle` in an SQLite database file.

    ``path`` names a file (created if missing); it may be the file of a
    :class:`~tokenflow.stores.SQLiteStore`. The file is put in WAL mode, and
    must be on a local disk. ``timeout`` is how long a call waits for another
    writer before raising ``sqlite3.OperationalError`` (the flow answers
    Unavailable). Each thread gets its own connection, closed when the
    thread ends or :meth:`close` is called.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigError(
                f"SQLiteThrottle needs SQLite 3.35 or newer (RETURNING); this Python has "
                f"{sqlite3.sqlite_version}"
            )
        raw = os.fspath(path)
        if raw in ("", ":memory:"):
            raise ConfigError(
                "SQLiteThrottle needs a database file path; use MemoryThrottle for memory"
            )
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0):
            raise ConfigError("SQLiteThrottle timeout must be a finite number of seconds >= 0")
        self._path = os.path.abspath(raw)
        if not os.path.isdir(os.path.dirname(self._path)):
            raise ConfigError(
                f"SQLiteThrottle: the directory of {self._path!r} does not exist; create it first"
            )
        self._timeout = float(timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: weakref.WeakSet[Held] = weakref.WeakSet()
        self._closed = False
        conn = self._connect()
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"SQLiteThrottle could not put {self._path!r} in WAL mode (got {mode!r})"
                )
            conn.execute(_SCHEMA)
            conn.execute(_PURGE_INDEX)
        finally:
            conn.close()

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteThrottle({self._path!r})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        held: Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid() and not self._closed:
            return held.conn
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self!r} is closed")
            held = Held(self._connect())
            self._held.add(held)
        self._local.held = held
        return held.conn

    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now`` (zero once its window ran out)."""
        if not keys:
            return []
        rows = self._conn().execute(_select_sql(len(keys)), (*keys, now)).fetchall()
        found = {key: FailureCount(count, last) for key, count, last in rows}
        return [found.get(key, NO_FAILURES) for key in keys]

    def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, in one atomic statement; the new counts."""
        if not keys:
            return []
        _check_time("now", now)
        _check_time("window", window)
        params: list[object] = []
        for key in keys:
            params += (key, now, now + window)
        rows = self._conn().execute(_record_sql(len(keys)), params).fetchall()
        counted = {key: FailureCount(count, last) for key, count, last in rows}
        return [counted[key] for key in keys]

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``.

        One write transaction (``BEGIN IMMEDIATE``: SQLite's write lock is
        taken first, so every process using the file sees reservations one
        after the other).
        """
        if len(expected) != len(keys):
            raise ValueError("reserve needs one expected count per key")
        if not keys:
            return True
        _check_time("now", now)
        _check_time("window", window)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for key, count in zip(keys, expected, strict=True):
                if count == 0:
                    row = conn.execute(_RESERVE_FIRST, (key, now, now + window)).fetchone()
                else:
                    row = conn.execute(
                        _RESERVE_NEXT, (now, now + window, key, count, now)
                    ).fetchone()
                if row is None:
                    conn.execute("ROLLBACK")
                    return False
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return True

    def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (never below 0)."""
        if keys:
            self._conn().execute(_release_sql(len(keys)), (*keys, now))

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        if keys:
            self._conn().execute(_delete_sql(len(keys)), tuple(keys))

    def purge(self, *, now: float) -> int:
        """Delete every key whose window has run out at ``now``; how many."""
        cursor = self._conn().execute(
            "DELETE FROM tokenflow_login_failures WHERE expires_at <= ?", (now,)
        )
        return cursor.rowcount

    def close(self) -> None:
        """Close every thread's connection; later calls raise. Idempotent."""
        with self._lock:
            self._closed = True
            held = list(self._held)
            self._held.clear()
        for h in held:
            h.finalizer()

    def __enter__(self) -> SQLiteThrottle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSQLiteThrottle:
    """The async face of :class:`SQLiteThrottle`: each call runs in a worker thread.

    ``sqlite3`` blocks (on disk, and on another process's write lock), so
    calls go through :func:`asyncio.to_thread` to keep the event loop free.
    ``sync`` is the underlying :class:`SQLiteThrottle`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.sync: SQLiteThrottle = SQLiteThrottle(path, timeout=timeout)

    def __repr__(self) -> str:
        return f"AsyncSQLiteThrottle({self.sync.path!r})"

    async def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now``."""
        return await asyncio.to_thread(functools.partial(self.sync.failures, keys, now=now))

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, atomically; the new counts."""
        return await asyncio.to_thread(
            functools.partial(self.sync.record_failure, keys, now=now, window=window)
        )

    async def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``."""
        return await asyncio.to_thread(
            functools.partial(self.sync.reserve, keys, expected, now=now, window=window)
        )

    async def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key."""
        await asyncio.to_thread(functools.partial(self.sync.release, keys, now=now))

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        await asyncio.to_thread(self.sync.reset, keys)

    async def purge(self, *, now: float) -> int:
        """Delete every key whose window has run out."""
        return await asyncio.to_thread(functools.partial(self.sync.purge, now=now))

    async def aclose(self) -> None:
        """Close every connection."""
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSQLiteThrottle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
