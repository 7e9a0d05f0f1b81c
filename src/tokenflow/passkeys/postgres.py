"""PostgreSQL passkey repository and challenge ledger (needs the ``postgres`` extra too).

Tables are created if missing (``tokenflow_passkeys``, ``tokenflow_used_challenges``
by default). A used challenge is one ``INSERT ... ON CONFLICT DO UPDATE ...
WHERE expired RETURNING``: PostgreSQL re-checks the condition under the row
lock, so of any number of simultaneous uses on any number of servers exactly
one gets a row back. A counter moves with one conditional ``UPDATE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from .._backends.postgres import Connections, split_table
from ._rows import COLUMNS, FORWARD, from_row, to_row
from ._types import StoredPasskey

__all__ = ["PostgresChallengeLedger", "PostgresPasskeyRepository"]

_COLUMNS = sql.SQL(COLUMNS)


def _ident(table: object) -> sql.Identifier:
    schema, base = split_table(table)
    return sql.Identifier(schema, base) if schema else sql.Identifier(base)


class _Postgres:
    def __init__(self, target: Any, name: str) -> None:
        self._db = Connections(target, name)
        self._connection = self._db.connection

    def _rows(self, query: sql.Composed, params: Any = None) -> list[Any]:
        with self._connection() as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def _count(self, query: sql.Composed, params: Any) -> int:
        with self._connection() as conn:
            return int(conn.execute(query, params).rowcount)

    def close(self) -> None:
        """Close the pool this object opened from a conninfo string (not one it was given)."""
        self._db.close()


class PostgresPasskeyRepository(_Postgres):
    """A :class:`~tokenflow.passkeys.PasskeyRepository` in PostgreSQL.

    ``target`` is a pool, an autocommit connection, or a conninfo string.
    """

    def __init__(self, target: Any, *, table: str = "tokenflow_passkeys") -> None:
        super().__init__(target, "PostgresPasskeyRepository")
        self._t = _ident(table)
        self._table = table
        self._rows(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (credential_id bytea PRIMARY KEY, "
                "user_id text NOT NULL, user_handle bytea NOT NULL, public_key bytea NOT NULL, "
                "sign_count bigint NOT NULL, name text NOT NULL, created_at double precision "
                "NOT NULL, transports text NOT NULL, backup_eligible boolean NOT NULL, "
                "backed_up boolean NOT NULL, user_verified boolean NOT NULL, aaguid text "
                "NOT NULL, last_used_at double precision)"
            ).format(t=self._t)
        )
        self._rows(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (user_id)").format(
                i=sql.Identifier(table.rpartition(".")[2] + "_by_user"), t=self._t
            )
        )

    def __repr__(self) -> str:
        return f"PostgresPasskeyRepository(table={self._table!r})"

    def add(self, passkey: StoredPasskey) -> None:
        """Store a new passkey (ValueError if its credential id exists)."""
        query = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
            t=self._t, c=_COLUMNS, v=sql.SQL(", ").join([sql.Placeholder()] * 13)
        )
        try:
            self._rows(query, to_row(passkey))
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError("a passkey with this credential id exists") from exc

    def find(self, credential_id: bytes) -> StoredPasskey | None:
        """The passkey with this credential id, or None."""
        rows = self._rows(
            sql.SQL("SELECT {c} FROM {t} WHERE credential_id = %s").format(c=_COLUMNS, t=self._t),
            (credential_id,),
        )
        return from_row(rows[0]) if rows else None

    def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """The user's passkeys, oldest first."""
        rows = self._rows(
            sql.SQL(
                "SELECT {c} FROM {t} WHERE user_id = %s ORDER BY created_at, credential_id"
            ).format(c=_COLUMNS, t=self._t),
            (user_id,),
        )
        return [from_row(r) for r in rows]

    def user_handle_of(self, user_id: str) -> bytes | None:
        """The user handle of the user's passkeys, or None."""
        rows = self._rows(
            sql.SQL(
                "SELECT user_handle FROM {t} WHERE user_id = %s ORDER BY created_at LIMIT 1"
            ).format(t=self._t),
            (user_id,),
        )
        return bytes(rows[0][0]) if rows else None

    def record_use(
        self, credential_id: bytes, sign_count: int, backed_up: bool, now: float
    ) -> bool:
        """Move the counter forward and record the use: one conditional UPDATE."""
        rows = self._rows(
            sql.SQL(
                "UPDATE {t} SET sign_count = %(count)s, backed_up = %(backed)s, "
                "last_used_at = %(now)s WHERE credential_id = %(id)s AND {forward} "
                "RETURNING credential_id"
            ).format(t=self._t, forward=sql.SQL(FORWARD)),
            {"count": sign_count, "backed": bool(backed_up), "now": now, "id": credential_id},
        )
        return bool(rows)

    def rename(self, user_id: str, credential_id: bytes, name: str) -> bool:
        """Rename one of the user's passkeys; whether it existed."""
        query = sql.SQL("UPDATE {t} SET name = %s WHERE credential_id = %s AND user_id = %s")
        return self._count(query.format(t=self._t), (name, credential_id, user_id)) == 1

    def remove(self, user_id: str, credential_id: bytes) -> bool:
        """Remove one of the user's passkeys; whether it existed."""
        query = sql.SQL("DELETE FROM {t} WHERE credential_id = %s AND user_id = %s")
        return self._count(query.format(t=self._t), (credential_id, user_id)) == 1


class PostgresChallengeLedger(_Postgres):
    """A :class:`~tokenflow.passkeys.ChallengeLedger` in PostgreSQL, shared by every server."""

    def __init__(self, target: Any, *, table: str = "tokenflow_used_challenges") -> None:
        super().__init__(target, "PostgresChallengeLedger")
        self._t = _ident(table)
        self._table = table
        self._rows(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (key bytea PRIMARY KEY, "
                "expires_at double precision NOT NULL)"
            ).format(t=self._t)
        )
        self._use = sql.SQL(
            "INSERT INTO {t} AS u (key, expires_at) VALUES (%(key)s, %(exp)s) "
            "ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at "
            "WHERE u.expires_at <= %(now)s RETURNING key"
        ).format(t=self._t)

    def __repr__(self) -> str:
        return f"PostgresChallengeLedger(table={self._table!r})"

    def use(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record a used challenge: True the first time only (one atomic statement)."""
        return bool(self._rows(self._use, {"key": key, "exp": expires_at, "now": now}))

    def purge(self, now: float) -> int:
        """Delete the records of challenges that expired by ``now``; how many."""
        query = sql.SQL("DELETE FROM {t} WHERE expires_at <= %s").format(t=self._t)
        return self._count(query, (now,))
