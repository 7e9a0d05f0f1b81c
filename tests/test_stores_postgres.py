"""PostgresStore and AsyncPostgresStore against a real PostgreSQL server.

Skipped when no server answers on 127.0.0.1:5432, unless
TOKENFLOW_REQUIRE_SERVICES=1 makes that a failure. Every table is unique to
this run and dropped at the end.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg import pq, sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from tokenflow import ConfigError
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import NewSession, Rotation, RotationOutcome, SessionInfo
from tokenflow.stores.postgres import (
    AsyncPostgresStore,
    PostgresStore,
    apply_schema,
    apply_schema_async,
    schema_sql,
)
from tokenflow.testing import (
    check_async_session_store,
    check_session_store,
    run_rotation_race,
    run_rotation_race_async,
)

# Race pools: the server allows 100 connections, shared with parallel test
# workers and whatever else runs on the machine; stay well below.
RACE_POOL_SIZE = 20
T0 = 1_700_000_000.5


def _drop(conninfo: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture(scope="module")
def conninfo(postgres_conninfo: str) -> str:
    return postgres_conninfo


@pytest.fixture(scope="module")
def table(postgres_table: str) -> str:
    return postgres_table


@pytest.fixture(scope="module")
def pool(conninfo: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        conninfo, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True
    ) as pool:
        yield pool


@pytest.fixture(scope="module")
def sync_store(pool: ConnectionPool[Any], table: str) -> PostgresStore:
    return PostgresStore(pool, table=table)


@pytest.fixture(scope="module")
def async_store(conninfo: str, table: str, blocking: Any) -> Iterator[Any]:
    loop, face = blocking

    async def make() -> AsyncConnectionPool[Any]:
        apool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await apool.open()
        return apool

    apool = loop.run_until_complete(make())
    yield face(AsyncPostgresStore(apool, table=table))
    loop.run_until_complete(apool.close())


@pytest.fixture(scope="module", params=["sync", "async"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_store")


def _session(
    sid: str, user: str, now: float, idle: float = 1800.0, absolute: float = 86400.0
) -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(sid, user, now, now, now + idle, now + absolute)
    return NewSession(info, verifier_of(secret)), secret


def _rotation(sid: str, secret: bytes, now: float) -> Rotation:
    salt = secrets.token_bytes(16)
    return Rotation(
        sid, verifier_of(secret), verifier_of(derive_successor(secret, salt)), salt, now, 1800, 30
    )


# ------------------------------------------------------------------ the contract (the kit)

KIT_CALLERS = 8


def test_postgres_store_conforms(conninfo: str, table: str, sizes: Any) -> None:
    with ConnectionPool(
        conninfo, min_size=KIT_CALLERS, max_size=KIT_CALLERS, kwargs={"autocommit": True}
    ) as pool:
        store = PostgresStore(pool, table=table)
        rounds = sizes.pick(5, 20)
        check_session_store(lambda: store, threads=KIT_CALLERS, rounds=rounds)


@pytest.mark.asyncio
async def test_async_postgres_store_conforms(conninfo: str, table: str, sizes: Any) -> None:
    async with AsyncConnectionPool(
        conninfo,
        min_size=KIT_CALLERS,
        max_size=KIT_CALLERS,
        kwargs={"autocommit": True},
        open=False,
    ) as pool:
        store = AsyncPostgresStore(pool, table=table)
        rounds = sizes.pick(5, 20)
        await check_async_session_store(lambda: store, tasks=KIT_CALLERS, rounds=rounds)


def test_sync_and_async_stores_share_sessions(sync_store: PostgresStore, async_store: Any) -> None:
    new, secret = _session("shared-" + secrets.token_hex(4), "shared-user", T0)
    sync_store.create(new)
    rotation = _rotation(new.info.session_id, secret, T0 + 1)
    assert async_store.rotate(rotation).outcome is RotationOutcome.ROTATED
    assert sync_store.rotate(rotation).outcome is RotationOutcome.GRACE


def test_duplicate_session_id_is_refused(store: Any) -> None:
    sid = "dup-" + secrets.token_hex(4)
    original, secret = _session(sid, "dup-user-a", T0)
    store.create(original)
    with pytest.raises(ValueError, match="already exists"):
        store.create(_session(sid, "dup-user-b", T0)[0])
    result = store.rotate(_rotation(sid, secret, T0 + 1))
    assert result.outcome is RotationOutcome.ROTATED
    assert result.session.user_id == "dup-user-a"


def test_nan_times_are_refused(store: Any) -> None:
    info = SessionInfo("nan-" + secrets.token_hex(4), "nan-user", T0, T0, float("nan"), T0 + 10)
    with pytest.raises(ValueError, match="NaN"):
        store.create(NewSession(info, b"v" * 32))


# ------------------------------------------------------------------ schema


def test_schema_file_ships_in_the_package() -> None:
    packaged = resources.files("tokenflow.stores").joinpath("postgres_schema.sql")
    assert packaged.is_file()
    text = schema_sql("auth.sessions")
    assert 'CREATE TABLE IF NOT EXISTS "auth"."sessions"' in text
    assert '"sessions_by_user" ON "auth"."sessions"' in text
    assert "'{}'" in text  # doubled braces in the template come out single


def test_apply_schema_is_idempotent_and_safe_to_race(
    conninfo: str, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("schema")
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def apply() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                barrier.wait()
                apply_schema(conn, table=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with psycopg.connect(conninfo) as conn:  # inside a transaction: a savepoint
            apply_schema(conn, table=name)
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (name,)
            ).fetchall()
        assert [i for (i,) in indexes] == sorted(
            [f"{name}_by_expiry", f"{name}_by_user", f"{name}_pkey"]
        )
    finally:
        _drop(conninfo, name)


@pytest.mark.asyncio
async def test_apply_schema_async(conninfo: str, unique_name: Callable[[str], str]) -> None:
    name = unique_name("schema_async")
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await apply_schema_async(conn, table=name)
            await apply_schema_async(conn, table=name)
            async with AsyncPostgresStore(conn, table=name) as store:
                new, secret = _session("a", "u", T0)
                await store.create(new)
                rotated = await store.rotate(_rotation("a", secret, T0 + 1))
                assert rotated.outcome is RotationOutcome.ROTATED
    finally:
        _drop(conninfo, name)


def test_queries_use_the_indexes(pool: ConnectionPool[Any], table: str) -> None:
    ident = sql.Identifier(table)
    with pool.connection() as conn, conn.transaction():
        # A near-empty table makes any plan cheap: ask for index scans, then
        # check that the indexes serve the predicates (and the order).
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        listing = conn.execute(
            sql.SQL(
                "EXPLAIN SELECT * FROM {} WHERE user_id = 'u' AND 1 < idle_expires_at "
                "ORDER BY created_at, session_id"
            ).format(ident)
        ).fetchall()
        purge = conn.execute(
            sql.SQL(
                "EXPLAIN SELECT session_id FROM {} "
                "WHERE LEAST(idle_expires_at, absolute_expires_at) <= 1"
            ).format(ident)
        ).fetchall()
    assert f"{table}_by_user" in str(listing)
    assert "Sort" not in str(listing)
    assert f"{table}_by_expiry" in str(purge)


# ------------------------------------------------------------------ purge


def test_purge_deletes_dead_sessions_in_batches(sync_store: PostgresStore) -> None:
    user = "purge-" + secrets.token_hex(4)
    for n in range(7):
        sync_store.create(_session(f"{user}-dead-{n}", user, T0, idle=10.0)[0])
    for n in range(3):
        sync_store.create(_session(f"{user}-live-{n}", user, T0, idle=1000.0)[0])
    # Other tests' rows in this table may be dead at T0 + 100 as well; count ours.
    purged = sync_store.purge(now=T0 + 100, batch_size=2)
    assert purged >= 7
    live = sync_store.sessions_of(user, now=T0 + 100)
    assert [i.session_id for i in live] == [f"{user}-live-{n}" for n in range(3)]
    assert sync_store.revoke_user(user) == 3
    with pytest.raises(ValueError, match="batch_size"):
        sync_store.purge(now=T0, batch_size=0)


# ------------------------------------------------------------------ connections and configuration


def test_configuration_is_validated(conninfo: str) -> None:
    for bad in ["", "1table", "a.b.c", "drop table x;", "x" * 51, 'quoted"name']:
        with pytest.raises(ConfigError, match="table name"):
            PostgresStore(conninfo, table=bad)
    with psycopg.connect(conninfo) as conn, pytest.raises(ConfigError, match="autocommit"):
        PostgresStore(conn)
    with pytest.raises(ConfigError, match="ConnectionPool"):
        PostgresStore(42)  # type: ignore[arg-type]
    with (
        psycopg.connect(conninfo, autocommit=True) as conn,
        pytest.raises(ConfigError, match="AsyncConnectionPool"),
    ):
        AsyncPostgresStore(conn)  # type: ignore[arg-type]


def test_repr_shows_no_connection_details(conninfo: str, table: str) -> None:
    with PostgresStore(conninfo + " password=hunter2", table=table) as store:
        assert repr(store) == f"PostgresStore(table={table!r})"
        assert "hunter2" not in repr(store)


def test_conninfo_string_gets_an_owned_pool(conninfo: str, table: str) -> None:
    with PostgresStore(conninfo, table=table) as store:
        new, secret = _session("own-" + secrets.token_hex(4), "own-user", T0)
        store.create(new)
        assert store.rotate(_rotation(new.info.session_id, secret, T0 + 1)).outcome is (
            RotationOutcome.ROTATED
        )
        assert store.revoke(new.info.session_id)
    with pytest.raises(psycopg.Error):  # closed with the store
        store.revoke("x")


@pytest.mark.asyncio
async def test_async_conninfo_string_gets_an_owned_pool(conninfo: str, table: str) -> None:
    async with AsyncPostgresStore(conninfo, table=table) as store:
        new, secret = _session("aown-" + secrets.token_hex(4), "aown-user", T0)
        await store.create(new)
        result = await store.rotate(_rotation(new.info.session_id, secret, T0 + 1))
        assert result.outcome is RotationOutcome.ROTATED
        assert await store.revoke_user("aown-user") == 1


def test_single_autocommit_connection(conninfo: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        store = PostgresStore(conn, table=table)
        check_session_store(lambda: store, max_examples=5, threads=4, rounds=2)


def test_pool_without_autocommit_is_still_correct(conninfo: str, table: str, sizes: Any) -> None:
    # The pool wraps each operation in BEGIN/COMMIT: slower, same answers,
    # and no transaction (or row lock) outlives an operation.
    with ConnectionPool(conninfo, min_size=1, max_size=20, open=True) as pool:
        store = PostgresStore(pool, table=table)
        check_session_store(lambda: store, max_examples=5, threads=4, rounds=2)
        report = run_rotation_race(
            store, callers=20, trials=sizes.pick(5, 20), label="postgres non-autocommit pool"
        )
        print("\n" + report.summary())
        report.assert_ok()


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_stricter_isolation_defaults_are_retried(
    conninfo: str, table: str, level: str, sizes: Any
) -> None:
    # With these defaults the loser of a race gets a serialization failure
    # instead of waiting for the newest row; the store retries, and the retry
    # sees the winner's row: the answers are the same as at READ COMMITTED.
    options = "-c default_transaction_isolation=" + level.replace(" ", "\\ ")
    with ConnectionPool(
        conninfo,
        min_size=1,
        max_size=20,
        kwargs={"autocommit": True, "options": options},
        open=True,
    ) as pool:
        with pool.connection() as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone() == (level,)
        report = run_rotation_race(
            PostgresStore(pool, table=table),
            callers=20,
            trials=sizes.pick(5, 30),
            label=f"postgres {level}",
        )
    print("\n" + report.summary())
    report.assert_ok()


# ------------------------------------------------------------------ a race, step by step


def _blocked_rotation(
    conninfo: str, store: PostgresStore, winner_sql: Any, loser: Rotation
) -> tuple[Any, bool]:
    """Run ``winner_sql`` in an open transaction, start ``loser`` (which must
    block on the row lock), commit the winner; return the loser's answer and
    whether it was really blocked."""
    answer: list[Any] = []
    with psycopg.connect(conninfo) as winner:  # not autocommit: the transaction stays open
        winner.execute(*winner_sql)
        thread = threading.Thread(target=lambda: answer.append(store.rotate(loser)))
        thread.start()
        thread.join(0.5)
        blocked = thread.is_alive()
        winner.commit()
        thread.join(10)
    return answer[0], blocked


@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
def test_a_blocked_loser_sees_the_winners_rotation(conninfo: str, table: str, level: str) -> None:
    # The loser's statement starts (and takes its snapshot) while the winner
    # holds the row; once the winner commits, the loser must judge the
    # winner's row, not the one in its snapshot: GRACE with the winner's salt.
    # READ COMMITTED does it in place (the row lock re-reads the newest row);
    # REPEATABLE READ raises a serialization failure, which the store retries.
    options = "-c default_transaction_isolation=" + level.replace(" ", "\\ ")
    with ConnectionPool(
        conninfo, min_size=1, max_size=2, kwargs={"autocommit": True, "options": options}
    ) as pool:
        store = PostgresStore(pool, table=table)
        new, secret = _session("blocked-" + secrets.token_hex(4), "blocked-user", T0)
        store.create(new)
        winner = _rotation(new.info.session_id, secret, T0 + 1)
        loser = _rotation(new.info.session_id, secret, T0 + 1)
        # The store's own rotation statement, run by the winner's transaction.
        winner_sql = (store._sql.rotate, store._sql.rotate_params(winner))
        result, blocked = _blocked_rotation(conninfo, store, winner_sql, loser)
    assert blocked, "the loser should have waited for the winner's row lock"
    assert result.outcome is RotationOutcome.GRACE
    assert result.salt == winner.salt
    assert result.session.generation == 1


def test_a_blocked_loser_of_a_revocation_finds_no_session(conninfo: str, table: str) -> None:
    with ConnectionPool(conninfo, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        store = PostgresStore(pool, table=table)
        new, secret = _session("gone-" + secrets.token_hex(4), "gone-user", T0)
        store.create(new)
        delete = (
            sql.SQL("DELETE FROM {} WHERE session_id = %s").format(sql.Identifier(table)),
            (new.info.session_id,),
        )
        loser = _rotation(new.info.session_id, secret, T0 + 1)
        result, blocked = _blocked_rotation(conninfo, store, delete, loser)
    assert blocked
    assert result.outcome is RotationOutcome.UNKNOWN_SESSION


def test_without_retries_repeatable_read_would_fail(
    conninfo: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control experiment for the retry: one attempt only, and the blocked
    # loser surfaces the serialization failure (a 503 for the client).
    import tokenflow.stores.postgres as module

    monkeypatch.setattr(module, "_ATTEMPTS", 1)
    options = "-c default_transaction_isolation=repeatable\\ read"
    with ConnectionPool(
        conninfo, min_size=1, max_size=2, kwargs={"autocommit": True, "options": options}
    ) as pool:
        store = PostgresStore(pool, table=table)
        new, secret = _session("noretry-" + secrets.token_hex(4), "noretry-user", T0)
        store.create(new)
        winner = _rotation(new.info.session_id, secret, T0 + 1)
        winner_sql = (store._sql.rotate, store._sql.rotate_params(winner))
        errors: list[BaseException] = []

        def loser() -> None:
            try:
                store.rotate(_rotation(new.info.session_id, secret, T0 + 1))
            except psycopg.errors.SerializationFailure as exc:
                errors.append(exc)

        with psycopg.connect(conninfo) as conn:
            conn.execute(*winner_sql)
            thread = threading.Thread(target=loser)
            thread.start()
            thread.join(0.5)
            conn.commit()
            thread.join(10)
    assert len(errors) == 1


# ------------------------------------------------------------------ round trips


def _round_trips(conn: psycopg.Connection[Any], action: Any) -> list[str]:
    """The frontend messages libpq sent while running ``action``, one per line."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    return [line.split("\t")[2] for line in lines if line.startswith(("F\t", "B\t"))]


def test_rotation_is_one_statement_and_one_round_trip(conninfo: str, table: str) -> None:
    n = 20
    with psycopg.connect(conninfo, autocommit=True) as conn:
        store = PostgresStore(conn, table=table)
        sessions = [_session(f"rt-{secrets.token_hex(4)}", "rt-user", T0) for _ in range(n + 10)]
        for new, _ in sessions:
            store.create(new)
        cold = sessions[:10]  # psycopg prepares a statement at its 6th execution
        hot = sessions[10:]
        cold_messages = _round_trips(
            conn, lambda: [store.rotate(_rotation(s.info.session_id, k, T0 + 1)) for s, k in cold]
        )
        hot_messages = _round_trips(
            conn, lambda: [store.rotate(_rotation(s.info.session_id, k, T0 + 1)) for s, k in hot]
        )
        store.revoke_user("rt-user")
    # Each Sync ends one request; the server answers each with ReadyForQuery.
    cold_trips = cold_messages.count("Sync")
    hot_trips = hot_messages.count("Sync")
    print(
        f"\npostgres: first 10 rotations on a connection -> {cold_trips} round trips "
        f"({cold_messages.count('Parse')} Parse, one of them the one-time PREPARE); "
        f"next {n} -> {hot_trips} round trips, {hot_messages.count('Execute')} statements"
    )
    assert cold_trips == 10 + 1
    assert hot_trips == n
    assert hot_messages.count("Execute") == n
    assert hot_messages.count("ReadyForQuery") == n
    assert "Parse" not in hot_messages


# ------------------------------------------------------------------ races


def _race_trials(sizes: Any, callers: int) -> int:
    return sizes.pick(4 if callers == 100 else 20, 200)


@pytest.mark.parametrize("callers", [2, 20, 100])
def test_concurrent_rotations_threads(conninfo: str, table: str, callers: int, sizes: Any) -> None:
    # A pool as big as the race (up to RACE_POOL_SIZE), filled before the
    # first trial, so that callers really meet at the row lock.
    size = min(callers, RACE_POOL_SIZE)
    trials = _race_trials(sizes, callers)
    with ConnectionPool(
        conninfo, min_size=size, max_size=size, kwargs={"autocommit": True}, open=True
    ) as race_pool:
        race_pool.wait()
        store = PostgresStore(race_pool, table=table)
        report = run_rotation_race(
            store, callers=callers, trials=trials, label=f"postgres sync/threads (pool {size})"
        )
    print("\n" + report.summary())
    report.assert_ok()
    assert report.trials == trials
    assert report.outcomes[RotationOutcome.ROTATED] == trials
    assert report.outcomes[RotationOutcome.GRACE] == trials * (callers - 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("callers", [2, 20, 100])
async def test_concurrent_rotations_tasks(
    conninfo: str, table: str, callers: int, sizes: Any
) -> None:
    size = min(callers, RACE_POOL_SIZE)
    trials = _race_trials(sizes, callers)
    async with AsyncConnectionPool(
        conninfo, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    ) as apool:
        await apool.wait()
        store = AsyncPostgresStore(apool, table=table)
        label = f"postgres async/tasks (pool {size})"
        report = await run_rotation_race_async(store, callers=callers, trials=trials, label=label)
    print("\n" + report.summary())
    report.assert_ok()
    assert report.trials == trials
    assert report.outcomes[RotationOutcome.ROTATED] == trials
    assert report.outcomes[RotationOutcome.GRACE] == trials * (callers - 1)


def test_no_connections_leak(conninfo: str, table: str) -> None:
    # Runs last in this module: every pool the tests opened has been closed.
    # Only this module's table counts: other test runs may share the server.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND pid <> pg_backend_pid() AND datname = current_database() "
            "AND strpos(query, %s) > 0",
            (table,),
        ).fetchone() or (0,)
    assert count == 0, "a transaction was left open (row locks would outlive an operation)"
