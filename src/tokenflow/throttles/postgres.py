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

Connections as for :class:`~tokenflow.stores.PostgresStore`: a pool (best,
with ``kwargs={"autocommit": True}``), an autocommit connection, or a
conninfo string (the throttle opens and owns a small pool). Run
:meth:`PostgresThrottle.purge` now and then to drop expired rows.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from types import TracebackType
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._errors import ConfigError
from .._throttle import NO_FAILURES, FailureCount
from ..stores.postgres import _TABLE_RE, _owned_pool_kwargs, _single_connection_error

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
    match = _TABLE_RE.fullmatch(table) if isinstance(table, str) else None
    if match is None:
        raise ConfigError(
            f"invalid table name {table!r}: use letters, digits and underscores "
            "(at most 50 characters, not starting with a digit), optionally as schema.table"
        )
    schema, base = match.groups()
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
    __slots__ = ("delete", "purge", "record", "select", "table")

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
            "WHERE key = ANY(%(keys)s::text[]) AND expires_at > %(now)s"
        ).format(t=ident)
        self.delete = sql.SQL("DELETE FROM {t} WHERE key = ANY(%(keys)s::text[])").format(t=ident)
        self.purge = sql.SQL("DELETE FROM {t} WHERE expires_at <= %(now)s").format(t=ident)


def _record_params(keys: Sequence[str], now: float, window: float) -> dict[str, Any]:
    if not (math.isfinite(now) and math.isfinite(window)):
        raise ValueError("now and window must be finite numbers")
    return {"keys": list(keys), "now": float(now), "expires": float(now + window)}


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
        self._pool: ConnectionPool[Any] | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._owns_pool = False
        if isinstance(target, str):
            self._pool = ConnectionPool(target, open=True, **_owned_pool_kwargs())
            self._owns_pool = True
        elif isinstance(target, ConnectionPool):
            self._pool = target
        elif isinstance(target, psycopg.Connection):
            if not target.autocommit:
                raise _single_connection_error("PostgresThrottle")
            self._conn = target
        else:
            raise ConfigError(
                "PostgresThrottle needs a psycopg_pool.ConnectionPool, a psycopg.Connection "
                f"or a conninfo string, not {type(target).__name__}"
            )

    def __repr__(self) -> str:
        # No pool or conninfo: a conninfo may hold a password.
        return f"PostgresThrottle(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The throttle table's name."""
        return self._sql.table

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

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
        if self._owns_pool and self._pool is not None:
            self._pool.close()

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
        self._pool: AsyncConnectionPool[Any] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._owns_pool = False
        self._opened = False
        if isinstance(target, str):
            self._pool = AsyncConnectionPool(target, open=False, **_owned_pool_kwargs())
            self._owns_pool = True
        elif isinstance(target, AsyncConnectionPool):
            self._pool = target
            self._opened = True
        elif isinstance(target, psycopg.AsyncConnection):
            if not target.autocommit:
                raise _single_connection_error("AsyncPostgresThrottle")
            self._conn = target
        else:
            raise ConfigError(
                "AsyncPostgresThrottle needs a psycopg_pool.AsyncConnectionPool, a "
                f"psycopg.AsyncConnection or a conninfo string, not {type(target).__name__}"
            )

    def __repr__(self) -> str:
        return f"AsyncPostgresThrottle(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The throttle table's name."""
        return self._sql.table

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is not None:
            if not self._opened:
                await self._pool.open()
                self._opened = True
            async with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

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
        if self._owns_pool and self._pool is not None and self._opened:
            await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresThrottle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
