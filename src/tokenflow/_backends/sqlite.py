"""SQLite connections held per thread, shared by the SQLite store, throttle and adapters."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence

from .._errors import ConfigError

__all__ = ["Held", "SQLiteFile"]

# Connections inherited across fork() by a child process. SQLite forbids
# using *or closing* them in the child (closing can release locks and
# checkpoint or unlink the WAL under the parent's feet), so they are parked
# here, referenced forever, and never touched again.
_INHERITED: list[sqlite3.Connection] = []


def _close_if_owner(conn: sqlite3.Connection, owner_pid: int) -> None:
    """Close a thread's connection: in the process that opened it, never in a fork child."""
    if os.getpid() == owner_pid:
        conn.close()
    else:
        _INHERITED.append(conn)


class Held:
    """One thread's connection. When the thread ends, its thread-local slot
    drops this holder and the finalizer closes the connection explicitly
    (closing by garbage collection raises ResourceWarning on Python 3.13+)."""

    __slots__ = ("__weakref__", "conn", "finalizer", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.finalizer = weakref.finalize(self, _close_if_owner, conn, self.pid)


class SQLiteFile:
    """A database file with one connection per thread (closed when the thread ends),
    in WAL mode, with ``schema`` applied once. The adapters' SQLite backends
    (passkeys, second factors) each hold one."""

    def __init__(
        self, path: str | os.PathLike[str], name: str, timeout: float, schema: Sequence[str]
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:"):
            raise ConfigError(f"{name} needs a database file path; use the memory one for memory")
        self._path = os.path.abspath(raw)
        if not os.path.isdir(os.path.dirname(self._path)):
            raise ConfigError(f"{name}: the directory of {self._path!r} does not exist")
        self._timeout = float(timeout)
        self._local = threading.local()
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in schema:
                conn.execute(statement)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        # As the session store: in WAL mode, NORMAL loses no committed write
        # on a process crash, only on a power cut, and saves an fsync per write.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, in this process)."""
        held: Held | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            held = Held(self._connect())
            self._local.held = held
        return held.conn
