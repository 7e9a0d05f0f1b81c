"""PostgreSQL connection rules shared by the PostgreSQL store, throttle and adapters."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from .._errors import ConfigError

__all__ = [
    "TABLE_RE",
    "PostgresConnections",
    "owned_pool_kwargs",
    "single_connection_error",
    "table_identifier",
]

TABLE_RE: Final = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,49})")
"""A table name, optionally schema-qualified: what ``table=`` accepts."""


def owned_pool_kwargs() -> dict[str, Any]:
    """The pool a conninfo string gets."""
    # Small, autocommit (one round trip per operation), and failing within
    # 5 s when the server is unreachable rather than after the pool's default
    # 30 s (the flow turns the error into a 503).
    return {
        "min_size": 1,
        "max_size": 10,
        "timeout": 5.0,
        "kwargs": {"autocommit": True},
        "name": "tokenflow",
    }


def single_connection_error(name: str) -> ConfigError:
    """The error for a single connection passed without autocommit."""
    return ConfigError(
        f"{name} needs a connection opened with autocommit=True: each operation is one "
        "self-committing statement, and row locks must not outlive it. Or pass a pool"
    )


def table_identifier(table: object) -> sql.Identifier:
    """The SQL identifier of a ``table=`` argument, or ConfigError (see :data:`TABLE_RE`)."""
    match = TABLE_RE.fullmatch(table) if isinstance(table, str) else None
    if match is None:
        raise ConfigError(
            f"invalid table name {table!r}: use letters, digits and underscores, "
            "optionally as schema.table"
        )
    schema, base = match.groups()
    return sql.Identifier(schema, base) if schema else sql.Identifier(base)


class PostgresConnections:
    """A pool, an autocommit connection, or a pool opened from a conninfo string:
    the adapters' PostgreSQL backends (passkeys, second factors) each hold one."""

    def __init__(self, target: Any, name: str) -> None:
        self._pool: ConnectionPool[Any] | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._owns_pool = False
        self._lock = threading.RLock()
        if isinstance(target, str):
            self._pool = ConnectionPool(target, open=True, **owned_pool_kwargs())
            self._owns_pool = True
        elif isinstance(target, ConnectionPool):
            self._pool = target
        elif isinstance(target, psycopg.Connection):
            if not target.autocommit:
                raise single_connection_error(name)
            self._conn = target
        else:
            raise ConfigError(
                f"{name} needs a psycopg_pool.ConnectionPool, a psycopg.Connection "
                f"or a conninfo string, not {type(target).__name__}"
            )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one statement (a single connection: under the lock)."""
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            with self._lock:
                yield self._conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction, committed when the block ends.

        With a single connection shared by threads, one transaction at a
        time: the lock keeps another thread's statements out of it.
        """
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        else:
            assert self._conn is not None
            with self._lock, self._conn.transaction():
                yield self._conn

    def rows(self, query: sql.Composed, params: Any = None) -> list[Any]:
        """Run one statement; its rows (none for a statement that returns none)."""
        with self.connection() as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def count(self, query: sql.Composed, params: Any) -> int:
        """Run one statement; how many rows it touched."""
        with self.connection() as conn:
            return int(conn.execute(query, params).rowcount)

    def close(self) -> None:
        """Close the pool this object opened from a conninfo string (not one it was given)."""
        if self._owns_pool and self._pool is not None:
            self._pool.close()
