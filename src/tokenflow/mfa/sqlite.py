"""An SQLite second-factor store (one file, shared by threads and processes).

Three tables, created if missing (they may live in the session store's file)::

    tokenflow_mfa_totp(user_id TEXT PRIMARY KEY, secret BLOB, last_step INTEGER)
    tokenflow_mfa_pending(user_id TEXT PRIMARY KEY, secret BLOB, expires_at REAL)
    tokenflow_mfa_recovery(user_id TEXT, code_hash BLOB, PRIMARY KEY (user_id, code_hash))

``secret`` is sealed with the key ring (see :meth:`tokenflow.KeyRing.seal_bytes`)
and recovery codes are hashes. A used time step is one conditional
``UPDATE ... WHERE last_step < ?`` and a used recovery code one ``DELETE``,
both atomic under SQLite's write lock; a confirmation and a regeneration
run in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from .._backends.sqlite import SQLiteFile

__all__ = ["SQLiteSecondFactorStore"]

_T = TypeVar("_T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS tokenflow_mfa_totp (
        user_id   TEXT PRIMARY KEY NOT NULL,
        secret    BLOB NOT NULL,
        last_step INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tokenflow_mfa_pending (
        user_id    TEXT PRIMARY KEY NOT NULL,
        secret     BLOB NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tokenflow_mfa_recovery (
        user_id   TEXT NOT NULL,
        code_hash BLOB NOT NULL,
        PRIMARY KEY (user_id, code_hash)
    ) WITHOUT ROWID""",
)


class SQLiteSecondFactorStore:
    """A :class:`~tokenflow.mfa.SecondFactorStore` in an SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self._db = SQLiteFile(path, "SQLiteSecondFactorStore", timeout, _SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteSecondFactorStore({self._db.path!r})"

    def _immediate(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._db.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        """Keep a pending enrolment (replacing the user's previous one)."""
        self._db.conn().execute(
            "INSERT INTO tokenflow_mfa_pending (user_id, secret, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, "
            "expires_at = excluded.expires_at",
            (user_id, sealed, expires_at),
        )

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        """The sealed secret of the user's live pending enrolment, or None."""
        row = (
            self._db.conn()
            .execute(
                "SELECT secret FROM tokenflow_mfa_pending WHERE user_id = ? AND expires_at > ?",
                (user_id, now),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def confirm(self, user_id: str, sealed: bytes, step: int, code_hashes: Sequence[bytes]) -> bool:
        """Turn the pending enrolment ``sealed`` into the confirmed one (one transaction)."""

        def body(conn: sqlite3.Connection) -> bool:
            taken = conn.execute(
                "DELETE FROM tokenflow_mfa_pending WHERE user_id = ? AND secret = ? "
                "RETURNING user_id",
                (user_id, sealed),
            ).fetchone()
            if taken is None:
                return False
            conn.execute(
                "INSERT INTO tokenflow_mfa_totp (user_id, secret, last_step) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, "
                "last_step = excluded.last_step",
                (user_id, sealed, step),
            )
            _replace_codes(conn, user_id, code_hashes)
            return True

        return self._immediate(body)

    def totp_of(self, user_id: str) -> bytes | None:
        """The user's confirmed sealed secret, or None."""
        row = (
            self._db.conn()
            .execute("SELECT secret FROM tokenflow_mfa_totp WHERE user_id = ?", (user_id,))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def use_step(self, user_id: str, step: int) -> bool:
        """Record a used time step if it is later than the last: one conditional UPDATE."""
        row = (
            self._db.conn()
            .execute(
                "UPDATE tokenflow_mfa_totp SET last_step = ? WHERE user_id = ? AND last_step < ? "
                "RETURNING user_id",
                (step, user_id, step),
            )
            .fetchone()
        )
        return row is not None

    def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
        """Delete one recovery code; the number left, or None if it was not there."""

        def body(conn: sqlite3.Connection) -> int | None:
            gone = conn.execute(
                "DELETE FROM tokenflow_mfa_recovery WHERE user_id = ? AND code_hash = ? "
                "RETURNING user_id",
                (user_id, code_hash),
            ).fetchone()
            return None if gone is None else _count(conn, user_id)

        return self._immediate(body)

    def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[bytes]) -> bool:
        """Replace all of the user's recovery codes; whether the user has a secret."""

        def body(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM tokenflow_mfa_totp WHERE user_id = ?", (user_id,)
            ).fetchone()
            if row is None:
                return False
            _replace_codes(conn, user_id, code_hashes)
            return True

        return self._immediate(body)

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        return _count(self._db.conn(), user_id)

    def remove(self, user_id: str) -> bool:
        """Forget the user's second factors; whether there was anything."""

        def body(conn: sqlite3.Connection) -> bool:
            had = conn.execute(
                "DELETE FROM tokenflow_mfa_totp WHERE user_id = ?", (user_id,)
            ).rowcount
            had += conn.execute(
                "DELETE FROM tokenflow_mfa_pending WHERE user_id = ?", (user_id,)
            ).rowcount
            conn.execute("DELETE FROM tokenflow_mfa_recovery WHERE user_id = ?", (user_id,))
            return had > 0

        return self._immediate(body)


def _replace_codes(conn: sqlite3.Connection, user_id: str, code_hashes: Sequence[bytes]) -> None:
    conn.execute("DELETE FROM tokenflow_mfa_recovery WHERE user_id = ?", (user_id,))
    conn.executemany(
        "INSERT INTO tokenflow_mfa_recovery (user_id, code_hash) VALUES (?, ?)",
        [(user_id, h) for h in code_hashes],
    )


def _count(conn: sqlite3.Connection, user_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM tokenflow_mfa_recovery WHERE user_id = ?", (user_id,)
    ).fetchone()
    return int(row[0])
