"""What every shipped store accepts and refuses at create, alike on all four.

The conformance kit holds every store to round-tripping metadata that is
UTF-8 text (U+0000 included) and to judging every stored time as the
reference rule does; these tests pin the shipped stores' answers to what the
contract leaves out: text that is not Unicode, and NaN where it orders nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import drop_redis_keys
from tokenflow.stores import MemoryStore, NewSession, SessionInfo, SQLiteStore

T0 = 1_700_000_000.0


def _memory(request: pytest.FixtureRequest, _: Path) -> Iterator[Any]:
    yield MemoryStore()


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Any]:
    with SQLiteStore(tmp / "sessions.db") as store:
        yield store


def _redis(request: pytest.FixtureRequest, _: Path) -> Iterator[Any]:
    from tokenflow.stores.redis import RedisStore

    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("unique_name")("values")
    try:
        yield RedisStore(client, prefix=prefix)
    finally:
        drop_redis_keys(client, prefix)


def _postgres(request: pytest.FixtureRequest, _: Path) -> Iterator[Any]:
    conninfo = request.getfixturevalue("postgres_conninfo")
    import psycopg
    from psycopg import sql

    from tokenflow.stores.postgres import PostgresStore, apply_schema

    table = request.getfixturevalue("unique_name")("values")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_schema(conn, table=table)
        try:
            yield PostgresStore(conn, table=table)
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[Any]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield from STORES[request.param](request, tmp_path)


def _new(metadata: dict[str, str], *, created: float = T0) -> NewSession:
    sid = "v-" + secrets.token_hex(8)
    info = SessionInfo(sid, "valuer", created, T0, T0 + 60, T0 + 120, 0, metadata)
    return NewSession(info, secrets.token_bytes(32))


@pytest.mark.parametrize(
    "metadata",
    [{"ua": "\ud800"}, {"\udfff": "x"}, {"pair": "\ud83d\ude00"}],
    ids=["lone high surrogate", "surrogate key", "two surrogates"],
)
def test_metadata_that_is_not_unicode_text_is_refused_by_every_store(
    store: Any, metadata: dict[str, str]
) -> None:
    # JSON would silently merge "\ud83d\ude00" into one emoji, PostgreSQL
    # refuses lone surrogates: every store refuses them up front instead.
    with pytest.raises(ValueError, match="surrogate"):
        store.create(_new(metadata))
    assert store.sessions_of("valuer", now=T0) == []


def test_metadata_with_nul_round_trips_in_every_store(store: Any) -> None:
    new = _new({"ua": "a\x00b", "\x00": ""})
    store.create(new)
    assert store.sessions_of("valuer", now=T0) == [new.info]


def test_a_nan_creation_time_is_refused_by_every_store(store: Any) -> None:
    with pytest.raises(ValueError, match="NaN"):
        store.create(_new({}, created=float("nan")))
    assert store.sessions_of("valuer", now=T0) == []
