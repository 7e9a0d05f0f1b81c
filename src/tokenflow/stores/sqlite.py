"""SQLite session stores: the embedded default, one file shared by threads and processes.

Layout of the file (schema version 2, kept in ``PRAGMA user_version``)::

    tokenflow_sessions(session_id TEXT PRIMARY KEY, user_id, created_at REAL,
                       refreshed_at REAL, idle_expires_at REAL,
                       absolute_expires_at REAL, generation INTEGER,
                       metadata TEXT (JSON), current BLOB, previous BLOB,
                       rotated_at REAL, salt BLOB, device_key TEXT)

``device_key`` (version 2) is the public key of a device-bound session, NULL
while unbound. A version 1 file is migrated when a store opens it, or ahead
of time with :func:`migrate` (or :data:`MIGRATION_1_TO_2` in the ``sqlite3``
shell): one ``ALTER TABLE ... ADD COLUMN``, which SQLite does without
rewriting the table, so it is safe on a live database. Processes of an older
release that are already running keep working; restarted ones refuse the
migrated file, so upgrade them all.

``current`` and ``previous`` are verifiers (SHA-256 digests of refresh
secrets), never the secrets themselves: a copy of the file opens no session.

Concurrency, in one paragraph: the file is in WAL mode, so readers never
block the writer or each other. Every rotation runs in a ``BEGIN IMMEDIATE``
transaction, which takes SQLite's single write lock *before* reading the row:
the read, :func:`~tokenflow.stores.apply_rotation` and the write-back are one
critical section for every thread of every process using the file, and no
transaction ever has to upgrade a read snapshot into a write (the upgrade is
where deferred transactions fail with ``SQLITE_BUSY`` without waiting).
The threads of one process queue for those transactions on a lock of the
store before SQLite's, so that a waiting thread starts the moment the
holder commits rather than after SQLite's busy handler has slept (1, 2,
5, 10 ... ms): that sleep was the refresh path's latency tail. Other
writes are single statements, atomic on their own.

Every connection reads the file through a memory map (``PRAGMA mmap_size``,
up to 1 GiB): pages come straight from the operating system's cache, shared
by all connections and processes, instead of being copied into each
connection's small private cache, so a refresh among a million sessions
costs about what it costs among a thousand.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from .._backends.sqlite import Held
from .._errors import ConfigError
from .._sessions import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_rotation,
)
from ._values import check_metadata, stored_times

__all__ = ["MIGRATION_1_TO_2", "AsyncSQLiteStore", "SQLiteStore", "migrate"]

_T = TypeVar("_T")

SCHEMA_VERSION = 2
"""The layout this release reads and writes (``PRAGMA user_version``)."""

# WITHOUT ROWID: every lookup is by session_id, and a row is ~200 bytes, so
# clustering the table on its primary key saves the second B-tree probe that a
# rowid table needs (SQLite recommends it for small rows with a non-integer key).
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS tokenflow_sessions (
        session_id          TEXT PRIMARY KEY NOT NULL,
        user_id             TEXT NOT NULL,
        created_at          REAL NOT NULL,
        refreshed_at        REAL NOT NULL,
        idle_expires_at     REAL NOT NULL,
        absolute_expires_at REAL NOT NULL,
        generation          INTEGER NOT NULL,
        metadata            TEXT NOT NULL,
        current             BLOB NOT NULL,
        previous            BLOB,
        rotated_at          REAL,
        salt                BLOB,
        device_key          TEXT
    ) WITHOUT ROWID
    """,
    # sessions_of and revoke_user: the trailing columns make the index deliver
    # rows already in "oldest first" order, so listing never sorts.
    """
    CREATE INDEX IF NOT EXISTS tokenflow_sessions_by_user
        ON tokenflow_sessions (user_id, created_at, session_id)
    """,
    # purge: a session is dead once the earlier of its two expiries has passed;
    # indexing that one expression serves the whole purge predicate.
    """
    CREATE INDEX IF NOT EXISTS tokenflow_sessions_by_expiry
        ON tokenflow_sessions (min(idle_expires_at, absolute_expires_at))
    """,
)

MIGRATION_1_TO_2 = "ALTER TABLE tokenflow_sessions ADD COLUMN device_key TEXT"
"""Schema version 1 to 2 (device-bound sessions); then ``PRAGMA user_version = 2``."""

_INFO_COLUMNS = (
    "session_id, user_id, created_at, refreshed_at, idle_expires_at, absolute_expires_at, "
    "generation, metadata, device_key"
)
_COLUMNS = f"{_INFO_COLUMNS}, current, previous, rotated_at, salt"

_INSERT = f"INSERT INTO tokenflow_sessions ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"  # noqa: S608
# Device binding: set only if unset and the session is live; read back after.
_BIND = """
    UPDATE tokenflow_sessions SET device_key = ?
    WHERE session_id = ? AND device_key IS NULL AND idle_expires_at > ? AND absolute_expires_at > ?
"""
_SELECT_LIVE_INFO = f"""
    SELECT {_INFO_COLUMNS} FROM tokenflow_sessions
    WHERE session_id = ? AND idle_expires_at > ? AND absolute_expires_at > ?
"""  # noqa: S608
_DEVICE_KEY = """
    SELECT device_key FROM tokenflow_sessions
    WHERE session_id = ? AND idle_expires_at > ? AND absolute_expires_at > ?
"""
_SELECT_ONE = f"SELECT {_COLUMNS} FROM tokenflow_sessions WHERE session_id = ?"  # noqa: S608
_UPDATE = """
    UPDATE tokenflow_sessions SET
        user_id = ?, created_at = ?, refreshed_at = ?, idle_expires_at = ?,
        absolute_expires_at = ?, generation = ?, metadata = ?,
        current = ?, previous = ?, rotated_at = ?, salt = ?
    WHERE session_id = ?
"""
_DELETE_ONE = "DELETE FROM tokenflow_sessions WHERE session_id = ?"
_DELETE_USER = "DELETE FROM tokenflow_sessions WHERE user_id = ?"
_LIST_LIVE = f"""
    SELECT {_INFO_COLUMNS} FROM tokenflow_sessions
    WHERE user_id = ? AND idle_expires_at > ? AND absolute_expires_at > ?
    ORDER BY created_at, session_id
"""  # noqa: S608
# Written with the indexed expression verbatim so that the planner uses it;
# ``min(a, b) <= now`` is exactly ``not SessionInfo.is_live(now)``.
_PURGE = "DELETE FROM tokenflow_sessions WHERE min(idle_expires_at, absolute_expires_at) <= ?"

_NO_METADATA: Mapping[str, str] = MappingProxyType({})

_MMAP_BYTES = 1 << 30
"""Address space each connection maps the file with (SQLite caps it at its build limit)."""


def _encode_metadata(metadata: Mapping[str, str]) -> str:
    # ASCII-only JSON: any str survives (even lone surrogates, which SQLite's
    # UTF-8 text cannot hold) and the text compares byte-for-byte.
    return json.dumps(dict(metadata), separators=(",", ":"), sort_keys=True)


def _decode_metadata(text: str) -> Mapping[str, str]:
    if text == "{}":
        return _NO_METADATA
    decoded: dict[str, str] = json.loads(text)
    return MappingProxyType(decoded)


def _info_of(row: tuple[Any, ...]) -> SessionInfo:
    return SessionInfo(
        session_id=row[0],
        user_id=row[1],
        created_at=row[2],
        refreshed_at=row[3],
        idle_expires_at=row[4],
        absolute_expires_at=row[5],
        generation=row[6],
        metadata=_decode_metadata(row[7]),
        device_key=row[8],
    )


def _stored_of(row: tuple[Any, ...]) -> StoredSession:
    return StoredSession(
        _info_of(row), current=row[9], previous=row[10], rotated_at=row[11], salt=row[12]
    )


def _state_values(state: StoredSession) -> tuple[Any, ...]:
    """The UPDATE parameters of a state: every column, so that the row is
    exactly what :func:`apply_rotation` returned, whatever fields it changes."""
    info = state.info
    return (
        info.user_id,
        info.created_at,
        info.refreshed_at,
        info.idle_expires_at,
        info.absolute_expires_at,
        info.generation,
        _encode_metadata(info.metadata),
        state.current,
        state.previous,
        state.rotated_at,
        state.salt,
        info.session_id,
    )


class SQLiteStore:
    """A :class:`~tokenflow.ports.SessionStore` in an SQLite database file.

    ``path`` names a file (created if missing, with its ``-wal`` and ``-shm``
    companions beside it); ``":memory:"`` is refused because every connection
    would see a different, empty database. Give tokenflow a file of its own:
    the schema version lives in ``PRAGMA user_version``, which an application
    sharing the file may also want. Every thread and process that opens the
    same file shares the same sessions, with atomic rotation across all of
    them; the file must be on a local disk (WAL mode needs shared memory,
    which network file systems do not provide).

    ``timeout`` is how many seconds an operation waits for another writer's
    lock before raising :class:`sqlite3.OperationalError` ("database is
    locked"), which the flow turns into an Unavailable decision.

    Durability: ``synchronous=NORMAL`` in WAL mode survives an application
    crash, but a power cut may lose the last transactions. Losing a rotation
    makes the client's newest refresh token unknown, which ends that session
    (the user logs in again); nothing is ever wrongly accepted.

    Each thread gets its own connection, opened on first use and closed when
    the thread ends or :meth:`close` is called. Expired sessions are deleted
    when rotated; call :meth:`purge` periodically to drop the rest.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:"):
            raise ConfigError(
                "SQLiteStore needs a database file path; an in-memory database is private "
                "to one connection. Use MemoryStore for a store that lives in memory"
            )
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0):
            raise ConfigError("SQLiteStore timeout must be a finite number of seconds >= 0")
        # Absolute, so that a later chdir() cannot point new threads elsewhere.
        self._path = os.path.abspath(raw)
        if not os.path.isdir(os.path.dirname(self._path)):
            raise ConfigError(
                f"SQLiteStore: the directory of {self._path!r} does not exist; create it first"
            )
        self._timeout = float(timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        # Write transactions of this process's threads queue here, not in
        # SQLite: a BEGIN IMMEDIATE that finds the file locked is retried by
        # SQLite's busy handler after sleeps of 1, 2, 5, 10 ... ms, which turns
        # two threads rotating at once into a tail of tens of milliseconds. A
        # waiter on this lock wakes as soon as the holder commits. SQLite's own
        # lock still serialises writers across processes, so this only shortens
        # waits; it is no part of correctness. Keyed by pid: a child forked
        # while another thread held the lock would otherwise inherit it held.
        self._writer = (os.getpid(), threading.Lock())
        self._held: weakref.WeakSet[Held] = weakref.WeakSet()
        self._closed = False
        # The schema connection is not kept: a store built at import time in a
        # pre-fork server (gunicorn --preload) then hands no open connection
        # to its workers.
        conn = self._connect()
        try:
            self._init_schema(conn)
        finally:
            conn.close()

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._timeout,  # SQLite's busy timeout: wait for a lock, don't fail at once
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # only so that close() may close other threads' connections
        )
        try:
            # Per connection: fsync only at WAL checkpoints, not at every commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Read the file through a memory map (the OS page cache, shared by
            # every connection and process) rather than copying pages into
            # each connection's small private cache: with a million sessions
            # a refresh then costs about what it costs with a thousand.
            conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode (persistent: later opens find it so); the mode in force.

        The switch needs an exclusive lock, and when several processes open a
        new file together SQLite may report "database is locked" at once
        instead of calling the busy handler: retry until the timeout, as the
        busy handler would have waited.
        """
        deadline = time.monotonic() + self._timeout
        delay = 0.001
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        # Not inside the transaction below: the journal mode cannot change in one.
        mode = self._switch_to_wal(conn)
        if mode.lower() != "wal":
            raise ConfigError(
                f"SQLiteStore could not put {self._path!r} in WAL mode (got {mode!r}); "
                "use a file on a local file system"
            )
        # IMMEDIATE: processes starting together create the schema exactly once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                conn.execute(MIGRATION_1_TO_2)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise ConfigError(
                    f"{self._path!r} has tokenflow schema version {version}, but this release "
                    f"reads version {SCHEMA_VERSION}; upgrade tokenflow or use another file"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        held: Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid() and not self._closed:
            return held.conn
        # A holder from another pid was inherited across fork(): replacing it
        # runs its finalizer, which parks the connection instead of closing it.
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self!r} is closed")
            held = Held(self._connect())
            self._held.add(held)
        self._local.held = held
        return held.conn

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Drop this thread's connection after a failure left it unusable."""
        held: Held | None = getattr(self._local, "held", None)
        if held is not None and held.conn is conn:
            del self._local.held
            held.finalizer()

    def _immediate(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in a ``BEGIN IMMEDIATE`` transaction: under the write lock."""
        conn = self._conn()
        pid, writer = self._writer
        if pid != os.getpid():
            writer = threading.Lock()
            self._writer = (os.getpid(), writer)
        with writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        # A connection stuck in a transaction would fail every
                        # later BEGIN in this thread: replace it.
                        self._discard(conn)
                raise
        return result

    def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        info = session.info
        # SQLite would store NaN as NULL: a NaN expiry is stored as -inf.
        created, refreshed, idle_at, absolute_at = stored_times(info)
        check_metadata(info.metadata)
        values = (
            info.session_id,
            info.user_id,
            created,
            refreshed,
            idle_at,
            absolute_at,
            info.generation,
            _encode_metadata(info.metadata),
            info.device_key,
            session.verifier,
            None,
            None,
            None,
        )
        try:
            self._conn().execute(_INSERT, values)
        except sqlite3.IntegrityError as exc:
            # The only constraint NaN-free values can break is the primary key.
            raise ValueError("session id already exists") from exc

    def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply :func:`~tokenflow.stores.apply_rotation` under SQLite's write lock.

        Read, decide and write back happen in one ``BEGIN IMMEDIATE``
        transaction, so rotations of one session are serialised across every
        thread and process using the file.
        """

        def body(conn: sqlite3.Connection) -> RotationResult:
            row = conn.execute(_SELECT_ONE, (rotation.session_id,)).fetchone()
            if row is None:
                return RotationResult(RotationOutcome.UNKNOWN_SESSION)
            stored = _stored_of(row)
            result, state = apply_rotation(stored, rotation)
            if state is None:
                conn.execute(_DELETE_ONE, (rotation.session_id,))
            elif state is not stored:  # GRACE returns the state unchanged: no write
                conn.execute(_UPDATE, _state_values(state))
            return result

        return self._immediate(body)

    def revoke(self, session_id: str) -> bool:
        """Delete one session; True if it existed."""
        return self._conn().execute(_DELETE_ONE, (session_id,)).rowcount > 0

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        """Bind a live, unbound session to a device key; the session after the call.

        One ``BEGIN IMMEDIATE`` transaction: the conditional UPDATE and the read
        back see the same row, so of two racing registrations the first key wins.
        """

        def body(conn: sqlite3.Connection) -> SessionInfo | None:
            conn.execute(_BIND, (device_key, session_id, now, now))
            row = conn.execute(_SELECT_LIVE_INFO, (session_id, now, now)).fetchone()
            return None if row is None else _info_of(row)

        return self._immediate(body)

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        row = self._conn().execute(_DEVICE_KEY, (session_id, now, now)).fetchone()
        return None if row is None else row[0]

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number deleted."""
        return self._conn().execute(_DELETE_USER, (user_id,)).rowcount

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first (ties by session id)."""
        rows = self._conn().execute(_LIST_LIVE, (user_id, now, now)).fetchall()
        return [_info_of(row) for row in rows]

    def purge(self, *, now: float) -> int:
        """Delete every session that is no longer live at ``now``; the number deleted."""
        return self._conn().execute(_PURGE, (now,)).rowcount

    def close(self) -> None:
        """Close every thread's connection. Later operations raise
        :class:`sqlite3.ProgrammingError`. Calling it again does nothing."""
        with self._lock:
            self._closed = True
            held = list(self._held)
            self._held.clear()
        for h in held:
            h.finalizer()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSQLiteStore:
    """The async face of :class:`SQLiteStore`, with the same file semantics.

    :mod:`sqlite3` is blocking: a call can wait up to ``timeout`` seconds for
    another process's write lock, and every commit writes to disk. Run on the
    event loop, that would stall every other request, so each operation runs
    the sync store's method in a worker thread (:func:`asyncio.to_thread`).
    Each worker thread keeps its own connection; the default executor's
    threads are reused, so the number of connections stays bounded.

    A cancelled call may still complete in its thread: a rotation is then
    applied although its caller never sees the result. That is the case the
    grace window exists for; the client's retry with the old token gets
    GRACE and converges on the same successor.

    Constructing the store opens the file and creates the schema
    synchronously: do it at startup. ``sync`` is the underlying
    :class:`SQLiteStore`, for sync code sharing the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.sync: SQLiteStore = SQLiteStore(path, timeout=timeout)

    def __repr__(self) -> str:
        return f"AsyncSQLiteStore({self.sync.path!r})"

    async def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        await asyncio.to_thread(self.sync.create, session)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the reference rotation rule atomically (see :meth:`SQLiteStore.rotate`)."""
        return await asyncio.to_thread(self.sync.rotate, rotation)

    async def revoke(self, session_id: str) -> bool:
        """Delete one session; True if it existed."""
        return await asyncio.to_thread(self.sync.revoke, session_id)

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number deleted."""
        return await asyncio.to_thread(self.sync.revoke_user, user_id)

    async def bind_device(
        self, session_id: str, device_key: str, *, now: float
    ) -> SessionInfo | None:
        """Bind a live, unbound session to a device key (see :meth:`SQLiteStore.bind_device`)."""
        return await asyncio.to_thread(
            functools.partial(self.sync.bind_device, session_id, device_key, now=now)
        )

    async def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        return await asyncio.to_thread(
            functools.partial(self.sync.device_key_of, session_id, now=now)
        )

    async def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first."""
        return await asyncio.to_thread(functools.partial(self.sync.sessions_of, user_id, now=now))

    async def purge(self, *, now: float) -> int:
        """Delete every session that is no longer live; the number deleted."""
        return await asyncio.to_thread(functools.partial(self.sync.purge, now=now))

    async def aclose(self) -> None:
        """Close every connection (the last close checkpoints the WAL: disk I/O)."""
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSQLiteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def migrate(path: str | os.PathLike[str]) -> int:
    """Bring an existing file to this release's schema (live-safe); the version it now has.

    Opening a store migrates too; call this from a deployment step to do it
    ahead of time. A file that is already current is left alone.
    """
    if not os.path.exists(os.fspath(path)):
        raise ConfigError(f"no SQLite database at {os.fspath(path)!r} to migrate")
    SQLiteStore(path).close()
    return SCHEMA_VERSION
