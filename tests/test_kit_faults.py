"""Fault injection: a failing store makes the flow fail closed, on every store.

For each store (memory, SQLite, and the real Redis and PostgreSQL servers),
a store that fails before commit, after commit (unknown outcome) or hangs past
a deadline must give Unavailable, mint nothing and clear nothing; after
recovery the client's old refresh token still works, and after an
unknown-outcome rotation a retry inside the grace window gets the same
successor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tokenflow import (
    AsyncFlow,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Unavailable,
)
from tokenflow.events import Refreshed
from tokenflow.stores import AsyncMemoryStore, AsyncSQLiteStore, MemoryStore, SQLiteStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    Fault,
    FaultyStore,
    InjectedFault,
)

LOGIN = PasswordCredentials("ada@example.com", "analytical engine")
STORES = ["memory", "sqlite", "redis", "postgres"]


@pytest.fixture(params=STORES)
def sync_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Any]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "faults.sqlite3")
        yield store
        store.close()
    elif kind == "redis":
        from tokenflow.stores.redis import RedisStore

        client = request.getfixturevalue("redis_client")
        # Under the module's prefix, whose keys are dropped at the end.
        prefix = f"{request.getfixturevalue('redis_prefix')}:{unique_name('faults')}"
        yield RedisStore(client, prefix=prefix)
    else:
        import psycopg

        from tokenflow.stores.postgres import PostgresStore, apply_schema

        table = unique_name("faults")
        conninfo = request.getfixturevalue("postgres_conninfo")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            apply_schema(conn, table=table)
            store = PostgresStore(conn, table=table)
            yield store
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest_asyncio.fixture(params=STORES)
async def async_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: Callable[[str], str]
) -> AsyncIterator[Any]:
    kind = request.param
    if kind == "memory":
        yield AsyncMemoryStore()
    elif kind == "sqlite":
        store = AsyncSQLiteStore(tmp_path / "faults.sqlite3")
        yield store
        await store.aclose()
    elif kind == "redis":
        import redis.asyncio

        from tokenflow.stores.redis import AsyncRedisStore

        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
        prefix = f"{request.getfixturevalue('redis_prefix')}:{unique_name('faults')}"
        yield AsyncRedisStore(client, prefix=prefix)
        await client.aclose()
    else:
        import psycopg

        from tokenflow.stores.postgres import AsyncPostgresStore, apply_schema_async

        conninfo = request.getfixturevalue("postgres_conninfo")
        table = unique_name("faults")
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        await apply_schema_async(conn, table=table)
        yield AsyncPostgresStore(conn, table=table)
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await conn.close()


def _sync_flow(store: Any, clock: FakeClock) -> Flow:
    users = FakeUserDirectory()
    users.add_user("ada")
    passwords = FakePasswordVerifier()
    passwords.set_password(LOGIN.username, LOGIN.password, user_id="ada")
    return Flow(
        KeyRing.generate(),
        store,
        users,
        passwords=passwords,
        config=FlowConfig(grace_seconds=5),
        clock=clock,
    )


def _logged_in(flow: Flow, clock: FakeClock) -> Browser:
    browser = Browser(clock)
    decision = flow.decide(browser.request("POST", credentials=LOGIN))
    assert isinstance(decision, Reissue)
    browser.receive(decision.set_cookies)
    clock.advance(130)  # the access token has expired: the next request must refresh
    return browser


def _assert_fail_closed(decision: Any) -> None:
    assert isinstance(decision, Unavailable)
    assert decision.status == 503
    assert decision.set_cookies == ()
    assert isinstance(decision.error, (InjectedFault, TimeoutError))


@pytest.mark.parametrize("fault", [Fault.BEFORE_COMMIT, Fault.HANG])
def test_failed_rotation_mints_nothing_and_old_token_still_works(
    sync_store: Any, fault: Fault
) -> None:
    clock = FakeClock()
    faulty = FaultyStore(sync_store, hang_seconds=0.05)
    flow = _sync_flow(faulty, clock)
    browser = _logged_in(flow, clock)

    faulty.arm(fault, ["rotate"])
    _assert_fail_closed(flow.decide(browser.request()))
    assert faulty.injected == 1

    faulty.disarm()
    clock.advance(60)  # well past the grace window: a committed rotation would now be reuse
    recovered = flow.decide(browser.request())
    assert isinstance(recovered, Reissue)
    assert any(isinstance(e, Refreshed) and not e.grace for e in recovered.events)


def test_unknown_outcome_rotation_retry_in_grace_gets_same_successor(sync_store: Any) -> None:
    clock = FakeClock()
    faulty = FaultyStore(sync_store)
    flow = _sync_flow(faulty, clock)
    browser = _logged_in(flow, clock)

    faulty.arm(Fault.AFTER_COMMIT, ["rotate"])
    _assert_fail_closed(flow.decide(browser.request()))  # committed, reply lost
    faulty.disarm()

    clock.advance(1)
    retry = flow.decide(browser.request())
    assert isinstance(retry, Reissue)
    (refreshed,) = [e for e in retry.events if isinstance(e, Refreshed)]
    assert refreshed.grace  # the rotation that was committed is replayed...
    assert refreshed.generation == 1  # ...with its successor, not a new one
    browser.receive(retry.set_cookies)

    # The successor is the live generation: it rotates normally later on.
    clock.advance(130)
    later = flow.decide(browser.request())
    assert isinstance(later, Reissue)
    (again,) = [e for e in later.events if isinstance(e, Refreshed)]
    assert (again.grace, again.generation) == (False, 2)


def test_valid_access_token_is_served_while_store_is_down(sync_store: Any) -> None:
    clock = FakeClock()
    faulty = FaultyStore(sync_store)
    flow = _sync_flow(faulty, clock)
    browser = Browser(clock)
    login = flow.decide(browser.request("POST", credentials=LOGIN))
    browser.receive(login.set_cookies)
    faulty.arm(Fault.BEFORE_COMMIT)
    assert isinstance(flow.decide(browser.request()), Process)
    assert faulty.injected == 0


def test_failed_login_creates_nothing_usable(sync_store: Any) -> None:
    clock = FakeClock()
    faulty = FaultyStore(sync_store)
    flow = _sync_flow(faulty, clock)
    browser = Browser(clock)
    faulty.arm(Fault.BEFORE_COMMIT, ["create"])
    _assert_fail_closed(flow.decide(browser.request("POST", credentials=LOGIN)))
    faulty.disarm()
    assert flow.sessions_of("ada") == []


def test_failed_logout_clears_nothing_and_can_be_retried(sync_store: Any) -> None:
    clock = FakeClock()
    faulty = FaultyStore(sync_store)
    flow = _sync_flow(faulty, clock)
    browser = Browser(clock)
    browser.receive(flow.decide(browser.request("POST", credentials=LOGIN)).set_cookies)
    faulty.arm(Fault.BEFORE_COMMIT, ["revoke"])
    _assert_fail_closed(flow.logout(browser.request("POST")))
    faulty.disarm()
    assert len(flow.sessions_of("ada")) == 1
    done = flow.logout(browser.request("POST"))
    assert done.status == 200
    assert flow.sessions_of("ada") == []


async def _async_flow(store: Any, clock: FakeClock, timeout: float | None) -> AsyncFlow:
    users = AsyncFakeUserDirectory()
    users.sync.add_user("ada")
    passwords = AsyncFakePasswordVerifier()
    passwords.sync.set_password(LOGIN.username, LOGIN.password, user_id="ada")
    return AsyncFlow(
        KeyRing.generate(),
        store,
        users,
        passwords=passwords,
        config=FlowConfig(grace_seconds=5),
        clock=clock,
        port_timeout=timeout,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [Fault.BEFORE_COMMIT, Fault.AFTER_COMMIT, Fault.HANG])
async def test_async_faults_fail_closed_and_recover(async_store: Any, fault: Fault) -> None:
    clock = FakeClock()
    faulty = AsyncFaultyStore(async_store)
    flow = await _async_flow(faulty, clock, timeout=0.2)
    browser = Browser(clock)
    login = await flow.decide(browser.request("POST", credentials=LOGIN))
    assert isinstance(login, Reissue)
    browser.receive(login.set_cookies)
    clock.advance(130)

    faulty.arm(fault, ["rotate"])
    failed = await asyncio.wait_for(flow.decide(browser.request()), timeout=10)
    _assert_fail_closed(failed)
    faulty.disarm()

    clock.advance(1)
    retry = await flow.decide(browser.request())
    assert isinstance(retry, Reissue)
    (refreshed,) = [e for e in retry.events if isinstance(e, Refreshed)]
    # Before commit / hang: nothing changed, a fresh rotation. After commit:
    # the committed rotation is replayed inside the grace window.
    assert refreshed.grace is (fault is Fault.AFTER_COMMIT)
    assert refreshed.generation == 1
