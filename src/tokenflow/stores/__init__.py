"""Session stores: the embedded ones here, Redis and PostgreSQL in submodules.

- :class:`MemoryStore` / :class:`AsyncMemoryStore`: one process, for tests and
  single-process development.
- :class:`SQLiteStore` / :class:`AsyncSQLiteStore`: the embedded default; one
  file shared safely by threads and processes on one machine.

The record types and the reference rotation rule (:func:`apply_rotation`) are
re-exported here for adapter authors.
"""

from .._sessions import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_rotation,
)
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncSQLiteStore",
    "MemoryStore",
    "NewSession",
    "Rotation",
    "RotationOutcome",
    "RotationResult",
    "SQLiteStore",
    "SessionInfo",
    "StoredSession",
    "apply_rotation",
]
