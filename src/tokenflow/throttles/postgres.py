"""PostgreSQL login throttles (psycopg 3): failure counts shared by every application server.

The table (``postgres_schema.sql`` beside this module, applied by
:func:`apply_schema`) has one row per key: its count, the time of its last
failure and when that count expires (last failure + window).

**One statement per call.** ``record_failure`` is an ``INSERT ... SELECT
FROM unnest(keys) ON CONFLICT DO UPDATE ... RETURNING``: PostgreSQL locks
each row it upserts, and a concurrent upsert of the same key waits for the
lock and then updates the newest version of the row, so N concurrent
failures of a key count exactly N. Keys are upserted in sorted order, so
two calls sharing keys always lock them in the same order and cannot
deadlock. Run in autocommit mode, the statement is its own transaction.

**Reservations.** ``reserve`` runs one short transaction: per key, in
sorted order, an upsert (expected count 0) or an update (any other count)
whose ``WHERE`` demands the count the flow read; PostgreSQL judges it on the
row's newest version under the row's lock, so of simultaneous reservations
with the same expected counts exactly one wins. A key that fails rolls back
the whole transaction.

Connections as for :class:`~tokenflow.stores.PostgresStore`: a pool (best,
with ``kwargs={"autocommit": True}``), an autocommit connection, or a
conninfo string (the throttle opens and owns a small pool). Run
:meth:`PostgresThrottle.purge` now and then to drop expired rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from types import TracebackType
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._backends.postgres import AsyncConnections, Connections, split_table
from .._throttle import NO_FAILURES, FailureCount

__all__ = [
    "AsyncPostgresThrottle",
    "PostgresThrottle",
    "apply_schema",
    "apply_schema_async",
    "schema_sql",
]

DEFAULT_TABLE: Final = "tokenflow_login_failures"

# A fixed advisory-lock key, distinct from the session store's: servers
# starting together create the table one after the other.
_SCHEMA_LOCK_KEY: Final = 0x746F6B656E746872


def _names(table: str) -> tuple[sql.Identifier, sql.Identifier]:
    schema, base = split_table(table)
    ident = sql.Identifier(schema, base) if schema else sql.Identifier(base)
    return ident, sql.Identifier(f"{base}_by_expiry")


def _schema(table: str) -> sql.Composed:
    text = resources.files("tokenflow.throttles").joinpath("postgres_schema.sql").read_text("utf-8")
    ident, expiry_index = _names(table)
    return sql.SQL(text).format(table=ident, expiry_index=expiry_index)


def schema_sql(table: str = DEFAULT_TABLE, conn: psycopg.Connection[Any] | None = None) -> str:
    """The schema's SQL text for ``table``, for migration tools or ``psql``."""
    return _schema(table).as_string(conn)


def _lock_and_schema(table: str) -> tuple[sql.Composed, sql.Composed]:
    return sql.SQL("SELECT pg_advisory_xact_lock({})").format(_SCHEMA_LOCK_KEY), _schema(table)


def apply_schema(conn: psycopg.Connection[Any], *, table: str = DEFAULT_TABLE) -> None:
    """Create the throttle table and its index if they do not exist (idempotent)."""
    lock, schema = _lock_and_schema(table)
    with conn.transaction():
        conn.execute(lock)
        conn.execute(schema)


async def apply_schema_async(
    conn: psycopg.AsyncConnection[Any], *, table: str = DEFAULT_TABLE
) -> None:
    """The async variant of :func:`apply_schema`."""
    lock, schema = _lock_and_schema(table)
    async with conn.transaction():
        await conn.execute(lock)
        await conn.execute(schema)


class _Statements:
    __slots__ = (
        "delete",
        "purge",
        "record",
        "release",
        "reserve_first",
        "reserve_next",
        "select",
        "table",
    )

    def __init__(self, table: str) -> None:
        ident, _ = _names(table)
        self.table = table
        self.record = sql.SQL(
            "INSERT INTO {t} AS f (key, count, last_failure_at, expires_at) "
            "SELECT k, 1, %(now)s, %(expires)s FROM unnest(%(keys)s::text[]) AS k ORDER BY k "
            "ON CONFLICT (key) DO UPDATE SET "
            "count = CASE WHEN EXCLUDED.last_failure_at < f.expires_at "
            "THEN f.count + 1 ELSE 1 END, "
            "last_failure_at = EXCLUDED.last_failure_at, expires_at = EXCLUDED.expires_at "
            "RETURNING key, count, last_failure_at"
        ).format(t=ident)
        self.select = sql.SQL(
            "SELECT key, count, last_failure_at FROM {t} "
            "WHERE key = ANY(%(keys)s::text[]) AND expires_at > %(now)s AND count > 0"
        ).format(t=ident)
        # A key expected at 0 may be absent, dead (window over) or released
        # to 0; any other expected count must match the live row exactly. Both
        # statements judge the row's latest committed version under its lock
        # (ON CONFLICT DO UPDATE and UPDATE re-check their WHERE after a wait).
        self.reserve_first = sql.SQL(
            "INSERT INTO {t} AS f (key, count, last_failure_at, expires_at) "
            "VALUES (%(key)s, 1, %(now)s, %(expires)s) ON CONFLICT (key) DO UPDATE SET "
            "count = 1, last_failure_at = EXCLUDED.last_failure_at, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE f.expires_at <= EXCLUDED.last_failure_at OR f.count = 0 RETURNING key"
        ).format(t=ident)
        self.reserve_next = sql.SQL(
            "UPDATE {t} SET count = count + 1, last_failure_at = %(now)s, "
            "expires_at = %(expires)s "
            "WHERE key = %(key)s AND count = %(count)s AND expires_at > %(now)s RETURNING key"
        ).format(t=ident)
        self.release = sql.SQL(
            "UPDATE {t} SET count = count - 1 "
            "WHERE key = ANY(%(keys)s::text[]) AND count > 0 AND expires_at > %(now)s"
        ).format(t=ident)
        self.delete = sql.SQL("DELETE FROM {t} WHERE key = ANY(%(keys)s::text[])").format(t=ident)
        self.purge = sql.SQL("DELETE FROM {t} WHERE expires_at <= %(now)s").format(t=ident)


def _record_params(keys: Sequence[str], now: float, window: float) -> dict[str, Any]:
    if not (math.isfinite(now) and math.isfinite(window)):
        raise ValueError("now and window must be finite numbers")
    return {"keys": list(keys), "now": float(now), "expires": float(now + window)}


def _reservations(
    statements: _Statements,
    keys: Sequence[str],
    expected: Sequence[int],
    now: float,
    window: float,
) -> list[tuple[sql.Composed, dict[str, Any]]]:
    """One statement per key, in key order: two reservations sharing keys lock
    them in the same order, so they wait for each other and never deadlock."""
    if len(expected) != len(keys):
        raise ValueError("reserve needs one expected count per key")
    params = _record_params(keys, now, window)
    steps = []
    for key, count in sorted(zip(keys, expected, strict=True)):
        query = statements.reserve_first if count == 0 else statements.reserve_next
        steps.append(
            (
                query,
                {
                    "key": key,
                    "count": int(count),
                    "now": params["now"],
                    "expires": params["expires"],
                },
            )
        )
    return steps


def _in_order(
    keys: Sequence[str], rows: Sequence[Any], default: FailureCount | None
) -> list[FailureCount]:
    found = {key: FailureCount(int(count), float(last)) for key, count, last in rows}
    if default is None:
        return [found[key] for key in keys]
    return [found.get(key, default) for key in keys]


class PostgresThrottle:
    """A :class:`~tokenflow.ports.LoginThrottle` in a PostgreSQL table.

    ``target``: a :class:`psycopg_pool.ConnectionPool`, an autocommit
    :class:`psycopg.Connection`, or a conninfo string (the throttle owns that
    pool and closes it in :meth:`close`). ``table``: create it with
    :func:`apply_schema`. One statement per call.
    """

    def __init__(
        self,
        target: str | psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        table: str = DEFAULT_TABLE,
    ) -> None:
        self._sql = _Statements(table)
        self._db = Connections(target, "PostgresThrottle")
        self._connection = self._db.connection

    def __repr__(self) -> str:
        # No pool or conninfo: a conninfo may hold a password.
        return f"PostgresThrottle(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The throttle table's name."""
        return self._sql.table

    def _rows(self, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now`` (one SELECT)."""
        if not keys:
            return []
        rows = self._rows(self._sql.select, {"keys": list(keys), "now": float(now)})
        return _in_order(keys, rows, NO_FAILURES)

    def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, in one atomic upsert; the new counts."""
        if not keys:
            return []
        rows = self._rows(self._sql.record, _record_params(keys, now, window))
        return _in_order(keys, rows, None)

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``.

        One transaction: a statement per key, each judging the key's row under
        its lock; if one finds the count moved, the transaction is rolled back.
        """
        steps = _reservations(self._sql, keys, expected, now, window)
        if not steps:
            return True
        with self._connection() as conn, conn.transaction():
            for query, params in steps:
                if conn.execute(query, params).fetchone() is None:
                    raise psycopg.Rollback
            return True
        return False

    def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (one UPDATE; never below 0)."""
        if keys:
            with self._connection() as conn:
                conn.execute(self._sql.release, {"keys": list(keys), "now": float(now)})

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures (one DELETE)."""
        if keys:
            with self._connection() as conn:
                conn.execute(self._sql.delete, {"keys": list(keys)})

    def purge(self, *, now: float) -> int:
        """Delete every row whose window has run out at ``now``; how many."""
        with self._connection() as conn:
            return conn.execute(self._sql.purge, {"now": float(now)}).rowcount

    def close(self) -> None:
        """Close the pool the throttle opened for a conninfo string (nothing else)."""
        self._db.close()

    def __enter__(self) -> PostgresThrottle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPostgresThrottle:
    """The async variant of :class:`PostgresThrottle`, with the same table and semantics.

    ``target``: a :class:`psycopg_pool.AsyncConnectionPool`, an autocommit
    :class:`psycopg.AsyncConnection`, or a conninfo string (the pool opens at
    the first call; close it with :meth:`aclose` or ``async with``).
    """

    def __init__(
        self,
        target: str | psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        table: str = DEFAULT_TABLE,
    ) -> None:
        self._sql = _Statements(table)
        self._db = AsyncConnections(target, "AsyncPostgresThrottle")
        self._connection = self._db.connection

    def __repr__(self) -> str:
        return f"AsyncPostgresThrottle(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The throttle table's name."""
        return self._sql.table

    async def _rows(self, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now`` (one SELECT)."""
        if not keys:
            return []
        rows = await self._rows(self._sql.select, {"keys": list(keys), "now": float(now)})
        return _in_order(keys, rows, NO_FAILURES)

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, in one atomic upsert; the new counts."""
        if not keys:
            return []
        rows = await self._rows(self._sql.record, _record_params(keys, now, window))
        return _in_order(keys, rows, None)

    async def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``."""
        steps = _reservations(self._sql, keys, expected, now, window)
        if not steps:
            return True
        async with self._connection() as conn, conn.transaction():
            for query, params in steps:
                cursor = await conn.execute(query, params)
                if await cursor.fetchone() is None:
                    raise psycopg.Rollback
            return True
        return False

    async def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (one UPDATE; never below 0)."""
        if keys:
            async with self._connection() as conn:
                await conn.execute(self._sql.release, {"keys": list(keys), "now": float(now)})

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures (one DELETE)."""
        if keys:
            async with self._connection() as conn:
                await conn.execute(self._sql.delete, {"keys": list(keys)})

    async def purge(self, *, now: float) -> int:
        """Delete every row whose window has run out at ``now``; how many."""
        async with self._connection() as conn:
            cursor = await conn.execute(self._sql.purge, {"now": float(now)})
            return cursor.rowcount

    async def aclose(self) -> None:
        """Close the pool the throttle opened for a conninfo string (nothing else)."""
        await self._db.aclose()

    async def __aenter__(self) -> AsyncPostgresThrottle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
