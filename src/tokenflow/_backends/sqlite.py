"""SQLite connections held per thread, shared by the SQLite store and throttle."""

from __future__ import annotations

import os
import sqlite3
import weakref

__all__ = ["Held"]

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
