"""PostgreSQL connection rules shared by every PostgreSQL backend (stores, throttles, passkeys).

A backend is given a pool, an autocommit connection or a conninfo string;
:class:`Connections` and :class:`AsyncConnections` turn any of the three
into one source of connections, and close only a pool they opened
themselves. :func:`split_table` checks a ``table=`` name once for all.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._errors import ConfigError

__all__ = [
    "TABLE_RE",
    "AsyncConnections",
    "Connections",
    "owned_pool_kwargs",
    "single_connection_error",
    "split_table",
]

TABLE_RE: Final = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,49})")
"""A table name, optionally schema-qualified: what ``table=`` accepts."""


def split_table(table: object) -> tuple[str | None, str]:
    """``(schema or None, base name)`` of a ``table=`` value; ConfigError when it is not one."""
    match = TABLE_RE.fullmatch(table) if isinstance(table, str) else None
    if match is None:
        raise ConfigError(
            f"invalid table name {table!r}: use letters, digits and underscores "
            "(at most 50 characters, not starting with a digit), optionally as schema.table"
        )
    schema, base = match.groups()
    return schema, base


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


class Connections:
    """Connections from a pool, one autocommit connection, or a conninfo string.

    ``name`` is the backend's class name, for the errors a wrong target gets.
    The target is never shown: a conninfo may hold a password.
    """

    __slots__ = ("_conn", "_owns_pool", "_pool")

    def __init__(self, target: object, name: str) -> None:
        self._pool: ConnectionPool[Any] | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._owns_pool = False
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
        """A connection for one operation."""
        if self._pool is not None:
            # The pool's context commits (or rolls back) a connection that is
            # not in autocommit mode, and replaces broken ones.
            with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

    def close(self) -> None:
        """Close the pool opened for a conninfo string (never one that was given)."""
        if self._owns_pool and self._pool is not None:
            self._pool.close()


class AsyncConnections:
    """The async :class:`Connections`: an async pool, connection, or conninfo string.

    A pool opened for a conninfo string opens at the first operation: a
    constructor may run where there is no event loop yet.
    """

    __slots__ = ("_conn", "_opened", "_owns_pool", "_pool")

    def __init__(self, target: object, name: str) -> None:
        self._pool: AsyncConnectionPool[Any] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._owns_pool = False
        self._opened = False
        if isinstance(target, str):
            self._pool = AsyncConnectionPool(target, open=False, **owned_pool_kwargs())
            self._owns_pool = True
        elif isinstance(target, AsyncConnectionPool):
            self._pool = target
            self._opened = True
        elif isinstance(target, psycopg.AsyncConnection):
            if not target.autocommit:
                raise single_connection_error(name)
            self._conn = target
        else:
            raise ConfigError(
                f"{name} needs a psycopg_pool.AsyncConnectionPool, a "
                f"psycopg.AsyncConnection or a conninfo string, not {type(target).__name__}"
            )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one operation."""
        if self._pool is not None:
            if not self._opened:
                await self._pool.open()  # idempotent, and safe to race
                self._opened = True
            async with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

    async def aclose(self) -> None:
        """Close the pool opened for a conninfo string (never one that was given)."""
        if self._owns_pool and self._pool is not None and self._opened:
            await self._pool.close()
