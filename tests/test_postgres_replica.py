"""PostgresStore on a primary that streams to a replica.

The pair is the one ``.ci/services/pg-replica.sh start`` runs: a primary on
127.0.0.1:5433 and a streaming replica on 127.0.0.1:5434 (``TOKENFLOW_PG_PRIMARY_DSN``
and ``TOKENFLOW_PG_REPLICA_DSN`` name others). It is a pair of its own, not
the shared server on 5432, because the failover drill kills its primary.
These tests skip when it does not answer, and fail instead under
``TOKENFLOW_REQUIRE_SERVICES=1``, as CI sets it.

What they show: the conformance kit passes on the primary; what the primary
commits reaches the replica; with synchronous replication in
``remote_apply`` mode a rotation is on the replica the moment it returns;
and a store pointed at the read-only replica fails closed.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tokenflow import Flow, KeyRing, PasswordCredentials, Reissue, Unavailable
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import NewSession, Rotation, RotationOutcome, SessionInfo
from tokenflow.testing import (
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    check_async_session_store,
    check_session_store,
)

REQUIRED = os.environ.get("TOKENFLOW_REQUIRE_SERVICES", "") == "1"
PRIMARY = os.environ.get(
    "TOKENFLOW_PG_PRIMARY_DSN", "host=127.0.0.1 port=5433 dbname=test user=postgres"
)
REPLICA = os.environ.get(
    "TOKENFLOW_PG_REPLICA_DSN", "host=127.0.0.1 port=5434 dbname=test user=postgres"
)
STANDBY_NAME = "tokenflow_replica"  # the application_name pg-replica.sh gives the replica
HOW_TO_START = "start it with: .ci/services/pg-replica.sh start"


def _missing(message: str) -> None:
    message += f"; {HOW_TO_START}. Set TOKENFLOW_REQUIRE_SERVICES=1 to make this a failure."
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


try:
    import psycopg
    import psycopg.errors
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from tokenflow.stores.postgres import AsyncPostgresStore, PostgresStore, apply_schema
except ImportError as exc:  # pragma: no cover - the postgres extra is missing
    if REQUIRED:
        pytest.fail(f"psycopg is not installed ({exc})", pytrace=False)
    pytest.skip(f"psycopg is not installed ({exc})", allow_module_level=True)

LOGIN = PasswordCredentials("ada@example.com", "analytical engine")
T0 = 1_700_000_000.5


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    for name, dsn in (("primary", PRIMARY), ("replica", REPLICA)):
        try:
            with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error as exc:
            _missing(f"the PostgreSQL {name} does not answer at {dsn!r} ({str(exc).strip()})")
        if row != (name == "replica",):
            _missing(f"the server at {dsn!r} is not a {name} (failed over and not rebuilt?)")
    with psycopg.connect(PRIMARY, autocommit=True) as conn:
        streaming = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
            "AND state = 'streaming'",
            (STANDBY_NAME,),
        ).fetchone()
    if streaming != (1,):
        _missing("the replica does not stream from the primary")
    return PRIMARY, REPLICA


@pytest.fixture(scope="module")
def table(pair: tuple[str, str]) -> Iterator[str]:
    name = f"tokenflow_test_replica_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(pair[0], autocommit=True) as conn:
        apply_schema(conn, table=name)
    yield name
    with psycopg.connect(pair[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def pool(pair: tuple[str, str]) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        pair[0], min_size=1, max_size=10, kwargs={"autocommit": True}, open=True
    ) as pool:
        yield pool


def _new(user: str) -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(f"{user}-{secrets.token_hex(4)}", user, T0, T0, T0 + 1800, T0 + 86400)
    return NewSession(info, verifier_of(secret)), secret


def _rotation(sid: str, secret: bytes, now: float) -> Rotation:
    salt = secrets.token_bytes(16)
    successor = verifier_of(derive_successor(secret, salt))
    return Rotation(sid, verifier_of(secret), successor, salt, now, 1800.0, 5.0)


def _generation_on(dsn: str, table: str, sid: str) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT generation FROM {} WHERE session_id = %s").format(
                sql.Identifier(table)
            ),
            (sid,),
        ).fetchone()
    return None if row is None else int(row[0])


# ------------------------------------------------------------------ the kit on the primary


def test_kit_passes_on_the_primary(pool: ConnectionPool[Any], table: str) -> None:
    store = PostgresStore(pool, table=table)
    check_session_store(lambda: store, max_examples=30)


@pytest.mark.asyncio
async def test_async_kit_passes_on_the_primary(pair: tuple[str, str], table: str) -> None:
    async with AsyncConnectionPool(
        pair[0], min_size=1, max_size=10, kwargs={"autocommit": True}, open=False
    ) as apool:
        store = AsyncPostgresStore(apool, table=table)
        await check_async_session_store(lambda: store, max_examples=30)


# ------------------------------------------------------------------ replication


def test_the_replica_receives_every_rotation(
    pair: tuple[str, str], pool: ConnectionPool[Any], table: str
) -> None:
    store = PostgresStore(pool, table=table)
    new, secret = _new("streamed")
    store.create(new)
    sid = new.info.session_id
    for n in range(3):
        rotation = _rotation(sid, secret, T0 + n + 1)
        assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
        secret = derive_successor(secret, rotation.salt)
    deadline = time.monotonic() + 10  # asynchronous: it arrives, a little later
    while _generation_on(pair[1], table, sid) != 3:
        assert time.monotonic() < deadline, "the replica never caught up"
        time.sleep(0.02)


def test_synchronous_remote_apply_puts_the_rotation_on_the_replica_at_once(
    pair: tuple[str, str], table: str
) -> None:
    # With the replica named in synchronous_standby_names and
    # synchronous_commit = remote_apply, a commit returns only once the
    # replica has applied it: a promoted replica then knows every rotation a
    # client was told about. Checked with no waiting at all.
    with psycopg.connect(pair[0], autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                (STANDBY_NAME,),
            ).fetchone() != ("sync",):
                assert time.monotonic() < deadline, "the replica never became synchronous"
                time.sleep(0.05)
            options = "-c synchronous_commit=remote_apply"
            with ConnectionPool(
                pair[0],
                min_size=1,
                max_size=2,
                kwargs={"autocommit": True, "options": options},
                open=True,
            ) as sync_pool:
                store = PostgresStore(sync_pool, table=table)
                new, secret = _new("synchronous")
                store.create(new)
                sid = new.info.session_id
                with psycopg.connect(pair[1], autocommit=True) as replica:
                    query = sql.SQL("SELECT generation FROM {} WHERE session_id = %s").format(
                        sql.Identifier(table)
                    )
                    for n in range(5):
                        rotation = _rotation(sid, secret, T0 + n + 1)
                        assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
                        secret = derive_successor(secret, rotation.salt)
                        assert replica.execute(query, (sid,)).fetchone() == (n + 1,)
        finally:
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")


def test_a_store_on_the_read_only_replica_fails_closed(
    pair: tuple[str, str], pool: ConnectionPool[Any], table: str
) -> None:
    # A pool left pointing at a replica (a failover the application missed)
    # cannot write: every refresh is a 503 that mints and clears nothing, and
    # the client's token still works once the pool points at the primary.
    clock = FakeClock(T0)
    users = FakeUserDirectory()
    users.add_user("ada")
    passwords = FakePasswordVerifier()
    passwords.set_password(LOGIN.username, LOGIN.password, user_id="ada")
    keys = KeyRing.generate()
    primary_flow = Flow(
        keys, PostgresStore(pool, table=table), users, passwords=passwords, clock=clock
    )
    browser = Browser(clock)
    login = primary_flow.decide(browser.request("POST", credentials=LOGIN))
    assert isinstance(login, Reissue)
    browser.receive(login.set_cookies)
    clock.advance(130)
    # The session must be on the replica before the replica can refuse to rotate it.
    with PostgresStore(pair[1], table=table) as replica_store:
        deadline = time.monotonic() + 10
        while not replica_store.sessions_of("ada", now=clock()):
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.02)
    with ConnectionPool(
        pair[1], min_size=1, max_size=2, kwargs={"autocommit": True}, open=True
    ) as replica_pool:
        replica_flow = Flow(
            keys, PostgresStore(replica_pool, table=table), users, passwords=passwords, clock=clock
        )
        refused = replica_flow.decide(browser.request())
    assert isinstance(refused, Unavailable)
    assert refused.set_cookies == ()
    assert isinstance(refused.error, psycopg.errors.ReadOnlySqlTransaction)
    recovered = primary_flow.decide(browser.request())
    assert isinstance(recovered, Reissue)
