"""The session store conformance kit (tokenflow.testing) against the server-backed stores.

Runs against real Redis and PostgreSQL servers on 127.0.0.1; skipped when they
do not answer, unless TOKENFLOW_REQUIRE_SERVICES=1 makes that a failure. The
kit works under random ids, so one store (one key prefix, one table unique to
this run) serves every scenario.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from _services import (
    REDIS_URL,
    connect_redis,
    drop_redis_keys,
    postgres_conninfo,
    require_module,
    unique_name,
)
from tokenflow.testing import check_async_session_store, check_session_store

EXAMPLES = 100
CALLERS = 16
ROUNDS = 20


# ------------------------------------------------------------------ Redis


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    require_module("redis")
    client = connect_redis()
    prefix = unique_name("kit_redis")
    yield prefix
    drop_redis_keys(client, prefix)
    client.close()


def test_redis_store_conforms(redis_prefix: str) -> None:
    from tokenflow.stores.redis import RedisStore

    client = connect_redis()
    try:
        store = RedisStore(client, prefix=redis_prefix)
        check_session_store(lambda: store, max_examples=EXAMPLES, threads=CALLERS, rounds=ROUNDS)
    finally:
        client.close()


@pytest.mark.asyncio
async def test_async_redis_store_conforms(redis_prefix: str) -> None:
    import redis.asyncio

    from tokenflow.stores.redis import AsyncRedisStore

    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=30)
    try:
        store = AsyncRedisStore(client, prefix=redis_prefix)
        await check_async_session_store(
            lambda: store, max_examples=EXAMPLES, tasks=CALLERS, rounds=ROUNDS
        )
    finally:
        await client.aclose()


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def pg_table() -> Iterator[tuple[str, str]]:
    require_module("psycopg")
    require_module("psycopg_pool")
    import psycopg
    from psycopg import sql

    from tokenflow.stores.postgres import apply_schema

    conninfo = postgres_conninfo()
    table = unique_name("kit_pg")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_schema(conn, table=table)
    yield conninfo, table
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_postgres_store_conforms(pg_table: tuple[str, str]) -> None:
    from psycopg_pool import ConnectionPool

    from tokenflow.stores.postgres import PostgresStore

    conninfo, table = pg_table
    pool: Any = ConnectionPool(
        conninfo, min_size=CALLERS, max_size=CALLERS, kwargs={"autocommit": True}
    )
    with pool:
        store = PostgresStore(pool, table=table)
        check_session_store(lambda: store, max_examples=EXAMPLES, threads=CALLERS, rounds=ROUNDS)


@pytest.mark.asyncio
async def test_async_postgres_store_conforms(pg_table: tuple[str, str]) -> None:
    from psycopg_pool import AsyncConnectionPool

    from tokenflow.stores.postgres import AsyncPostgresStore

    conninfo, table = pg_table
    pool: Any = AsyncConnectionPool(
        conninfo, min_size=CALLERS, max_size=CALLERS, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        store = AsyncPostgresStore(pool, table=table)
        await check_async_session_store(
            lambda: store, max_examples=EXAMPLES, tasks=CALLERS, rounds=ROUNDS
        )
