"""SQLite passkey repository and challenge ledger (one file, shared by threads and processes).

Two tables, created if missing (they may live in the session store's file)::

    tokenflow_passkeys(credential_id BLOB PRIMARY KEY, user_id, user_handle, ...)
    tokenflow_used_challenges(key BLOB PRIMARY KEY, expires_at REAL)

Every write is one statement, atomic under SQLite's write lock: a used
challenge is an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``
(a live record refuses the second use), and a counter moves with one
conditional ``UPDATE``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Final

from .._backends.sqlite import SQLiteFile
from ._rows import COLUMNS, from_row, to_row
from ._types import StoredPasskey

__all__ = ["SQLiteChallengeLedger", "SQLitePasskeyRepository"]

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS tokenflow_passkeys (
        credential_id  BLOB PRIMARY KEY NOT NULL,
        user_id        TEXT NOT NULL,
        user_handle    BLOB NOT NULL,
        public_key     BLOB NOT NULL,
        sign_count     INTEGER NOT NULL,
        name           TEXT NOT NULL,
        created_at     REAL NOT NULL,
        transports     TEXT NOT NULL,
        backup_eligible INTEGER NOT NULL,
        backed_up      INTEGER NOT NULL,
        user_verified  INTEGER NOT NULL,
        aaguid         TEXT NOT NULL,
        last_used_at   REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS tokenflow_passkeys_by_user ON tokenflow_passkeys (user_id)",
    """CREATE TABLE IF NOT EXISTS tokenflow_used_challenges (
        key        BLOB PRIMARY KEY NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)
_USE: Final = (
    "INSERT INTO tokenflow_used_challenges (key, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE tokenflow_used_challenges.expires_at <= ? RETURNING key"
)


class SQLitePasskeyRepository:
    """A :class:`~tokenflow.passkeys.PasskeyRepository` in an SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self._db = SQLiteFile(path, "SQLitePasskeyRepository", timeout, _SCHEMA)

    def __repr__(self) -> str:
        return f"SQLitePasskeyRepository({self._db.path!r})"

    def add(self, passkey: StoredPasskey) -> None:
        """Store a new passkey (ValueError if its credential id exists)."""
        try:
            self._db.conn().execute(
                f"INSERT INTO tokenflow_passkeys ({COLUMNS}) VALUES ({', '.join('?' * 13)})",  # noqa: S608
                to_row(passkey),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError("a passkey with this credential id exists") from exc

    def find(self, credential_id: bytes) -> StoredPasskey | None:
        """The passkey with this credential id, or None."""
        row = (
            self._db.conn()
            .execute(
                f"SELECT {COLUMNS} FROM tokenflow_passkeys WHERE credential_id = ?",  # noqa: S608
                (credential_id,),
            )
            .fetchone()
        )
        return None if row is None else from_row(row)

    def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """The user's passkeys, oldest first."""
        rows = (
            self._db.conn()
            .execute(
                f"SELECT {COLUMNS} FROM tokenflow_passkeys WHERE user_id = ? "  # noqa: S608
                "ORDER BY created_at, credential_id",
                (user_id,),
            )
            .fetchall()
        )
        return [from_row(r) for r in rows]

    def user_handle_of(self, user_id: str) -> bytes | None:
        """The user handle of the user's passkeys, or None."""
        row = (
            self._db.conn()
            .execute(
                "SELECT user_handle FROM tokenflow_passkeys WHERE user_id = ? "
                "ORDER BY created_at LIMIT 1",
                (user_id,),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def record_use(
        self, credential_id: bytes, sign_count: int, backed_up: bool, now: float
    ) -> bool:
        """Move the counter forward and record the use: one conditional UPDATE."""
        row = (
            self._db.conn()
            .execute(
                "UPDATE tokenflow_passkeys SET sign_count = ?, backed_up = ?, last_used_at = ? "
                "WHERE credential_id = ? AND (? > sign_count OR (? = 0 AND sign_count = 0)) "
                "RETURNING credential_id",
                (sign_count, bool(backed_up), now, credential_id, sign_count, sign_count),
            )
            .fetchone()
        )
        return row is not None

    def rename(self, user_id: str, credential_id: bytes, name: str) -> bool:
        """Rename one of the user's passkeys; whether it existed."""
        cursor = self._db.conn().execute(
            "UPDATE tokenflow_passkeys SET name = ? WHERE credential_id = ? AND user_id = ?",
            (name, credential_id, user_id),
        )
        return cursor.rowcount == 1

    def remove(self, user_id: str, credential_id: bytes) -> bool:
        """Remove one of the user's passkeys; whether it existed."""
        cursor = self._db.conn().execute(
            "DELETE FROM tokenflow_passkeys WHERE credential_id = ? AND user_id = ?",
            (credential_id, user_id),
        )
        return cursor.rowcount == 1


class SQLiteChallengeLedger:
    """A :class:`~tokenflow.passkeys.ChallengeLedger` in an SQLite file: every process
    using the file sees each challenge used once."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self._db = SQLiteFile(path, "SQLiteChallengeLedger", timeout, _SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteChallengeLedger({self._db.path!r})"

    def use(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record a used challenge: True the first time only (one atomic statement)."""
        row = self._db.conn().execute(_USE, (key, expires_at, now)).fetchone()
        return row is not None

    def purge(self, now: float) -> int:
        """Delete the records of challenges that expired by ``now``; how many."""
        cursor = self._db.conn().execute(
            "DELETE FROM tokenflow_used_challenges WHERE expires_at <= ?", (now,)
        )
        return cursor.rowcount
