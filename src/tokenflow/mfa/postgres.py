"""A PostgreSQL second-factor store (needs the ``postgres`` extra too).

Three tables, created if missing, named after ``table`` (default
``tokenflow_mfa``): ``<table>_totp`` (user id, sealed secret, last used
step), ``<table>_pending`` (user id, sealed secret, expiry) and
``<table>_recovery`` (user id, code hash). A used time step is one
``UPDATE ... WHERE last_step < %s RETURNING``: PostgreSQL re-checks the
condition under the row lock, so of any number of simultaneous uses of one
step on any number of servers exactly one gets a row back. A used recovery
code is one ``DELETE ... RETURNING`` (same argument). Confirmations and
regenerations are transactions that lock the user's row first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import psycopg
from psycopg import sql

from .._backends.postgres import Connections, split_table

__all__ = ["PostgresSecondFactorStore"]


def _ident(table: str) -> sql.Identifier:
    schema, base = split_table(table)
    return sql.Identifier(schema, base) if schema else sql.Identifier(base)


class PostgresSecondFactorStore:
    """A :class:`~tokenflow.mfa.SecondFactorStore` in PostgreSQL, shared by every server.

    ``target`` is a pool, an autocommit connection, or a conninfo string.
    """

    def __init__(self, target: Any, *, table: str = "tokenflow_mfa") -> None:
        # A malformed name fails before a pool is opened for it, and before any suffix.
        split_table(table)
        self._db = Connections(target, "PostgresSecondFactorStore")
        # One connection shared by threads: a transaction must not take in
        # another thread's statements, so every operation takes turns.
        self._turns: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(target, psycopg.Connection) else nullcontext()
        )
        self._table = table
        self._totp = _ident(f"{table}_totp")
        self._pending = _ident(f"{table}_pending")
        self._codes = _ident(f"{table}_recovery")
        self._rows(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (user_id text PRIMARY KEY, "
                "secret bytea NOT NULL, last_step bigint NOT NULL)"
            ).format(t=self._totp)
        )
        self._rows(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (user_id text PRIMARY KEY, "
                "secret bytea NOT NULL, expires_at double precision NOT NULL)"
            ).format(t=self._pending)
        )
        self._rows(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (user_id text NOT NULL, "
                "code_hash bytea NOT NULL, PRIMARY KEY (user_id, code_hash))"
            ).format(t=self._codes)
        )

    def __repr__(self) -> str:
        return f"PostgresSecondFactorStore(table={self._table!r})"

    def close(self) -> None:
        """Close the pool this object opened from a conninfo string (not one it was given)."""
        self._db.close()

    def _rows(self, query: sql.Composed, params: Any = None) -> list[Any]:
        with self._turns, self._db.connection() as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._turns, self._db.connection() as conn, conn.transaction():
            yield conn

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        """Keep a pending enrolment (replacing the user's previous one)."""
        self._rows(
            sql.SQL(
                "INSERT INTO {t} (user_id, secret, expires_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, "
                "expires_at = EXCLUDED.expires_at"
            ).format(t=self._pending),
            (user_id, sealed, expires_at),
        )

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        """The sealed secret of the user's live pending enrolment, or None."""
        rows = self._rows(
            sql.SQL("SELECT secret FROM {t} WHERE user_id = %s AND expires_at > %s").format(
                t=self._pending
            ),
            (user_id, now),
        )
        return bytes(rows[0][0]) if rows else None

    def confirm(self, user_id: str, sealed: bytes, step: int, code_hashes: Sequence[bytes]) -> bool:
        """Turn the pending enrolment ``sealed`` into the confirmed one (one transaction)."""
        with self._transaction() as conn:
            taken = conn.execute(
                sql.SQL(
                    "DELETE FROM {t} WHERE user_id = %s AND secret = %s RETURNING user_id"
                ).format(t=self._pending),
                (user_id, sealed),
            ).fetchone()
            if taken is None:
                return False
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (user_id, secret, last_step) VALUES (%s, %s, %s) "
                    "ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, "
                    "last_step = EXCLUDED.last_step"
                ).format(t=self._totp),
                (user_id, sealed, step),
            )
            self._replace(conn, user_id, code_hashes)
            return True

    def _replace(self, conn: Any, user_id: str, code_hashes: Sequence[bytes]) -> None:
        conn.execute(
            sql.SQL("DELETE FROM {t} WHERE user_id = %s").format(t=self._codes), (user_id,)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {t} (user_id, code_hash) SELECT %s, h FROM unnest(%s::bytea[]) AS h"
            ).format(t=self._codes),
            (user_id, list(code_hashes)),
        )

    def totp_of(self, user_id: str) -> bytes | None:
        """The user's confirmed sealed secret, or None."""
        rows = self._rows(
            sql.SQL("SELECT secret FROM {t} WHERE user_id = %s").format(t=self._totp), (user_id,)
        )
        return bytes(rows[0][0]) if rows else None

    def use_step(self, user_id: str, step: int) -> bool:
        """Record a used time step if it is later than the last: one conditional UPDATE."""
        rows = self._rows(
            sql.SQL(
                "UPDATE {t} SET last_step = %(step)s WHERE user_id = %(user)s "
                "AND last_step < %(step)s RETURNING user_id"
            ).format(t=self._totp),
            {"step": step, "user": user_id},
        )
        return bool(rows)

    def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
        """Delete one recovery code; the number left, or None if it was not there."""
        gone = self._rows(
            sql.SQL(
                "DELETE FROM {t} WHERE user_id = %s AND code_hash = %s RETURNING user_id"
            ).format(t=self._codes),
            (user_id, code_hash),
        )
        return self.recovery_codes_left(user_id) if gone else None

    def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[bytes]) -> bool:
        """Replace all of the user's recovery codes; whether the user has a secret."""
        with self._transaction() as conn:
            # The user's row lock orders simultaneous regenerations: each
            # statement after it sees the codes the one before committed.
            owner = conn.execute(
                sql.SQL("SELECT 1 FROM {t} WHERE user_id = %s FOR UPDATE").format(t=self._totp),
                (user_id,),
            ).fetchone()
            if owner is None:
                return False
            self._replace(conn, user_id, code_hashes)
            return True

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        rows = self._rows(
            sql.SQL("SELECT count(*) FROM {t} WHERE user_id = %s").format(t=self._codes),
            (user_id,),
        )
        return int(rows[0][0])

    def remove(self, user_id: str) -> bool:
        """Forget the user's second factors; whether there was anything."""
        with self._transaction() as conn:
            had = conn.execute(
                sql.SQL("DELETE FROM {t} WHERE user_id = %s").format(t=self._totp), (user_id,)
            ).rowcount
            had += conn.execute(
                sql.SQL("DELETE FROM {t} WHERE user_id = %s").format(t=self._pending), (user_id,)
            ).rowcount
            conn.execute(
                sql.SQL("DELETE FROM {t} WHERE user_id = %s").format(t=self._codes), (user_id,)
            )
            return had > 0
