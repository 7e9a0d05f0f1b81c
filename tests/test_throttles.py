"""Login throttle backends: memory, SQLite, Redis and PostgreSQL, all held to the kit.

Redis and PostgreSQL are the real servers on 127.0.0.1 (see tests/conftest.py):
skipped when absent, a failure under TOKENFLOW_REQUIRE_SERVICES=1. Every run
uses its own key prefix and table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokenflow import (
    ConfigError,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unauthorized,
)
from tokenflow._throttle import FailureCount
from tokenflow.stores import MemoryStore
from tokenflow.testing import (
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    check_async_login_throttle,
    check_login_throttle,
)
from tokenflow.throttles import (
    AsyncMemoryThrottle,
    AsyncSQLiteThrottle,
    MemoryThrottle,
    SQLiteThrottle,
)

# --------------------------------------------------------------------------- memory, SQLite


def test_memory_throttle_conforms() -> None:
    check_login_throttle(MemoryThrottle)


@pytest.mark.asyncio
async def test_async_memory_throttle_conforms() -> None:
    await check_async_login_throttle(AsyncMemoryThrottle)


def test_sqlite_throttle_conforms(tmp_path: Any) -> None:
    with SQLiteThrottle(tmp_path / "throttle.sqlite3") as throttle:
        check_login_throttle(lambda: throttle)
        assert repr(throttle) == f"SQLiteThrottle({str(tmp_path / 'throttle.sqlite3')!r})"


@pytest.mark.asyncio
async def test_async_sqlite_throttle_conforms(tmp_path: Any) -> None:
    async with AsyncSQLiteThrottle(tmp_path / "throttle.sqlite3") as throttle:
        await check_async_login_throttle(lambda: throttle)


def test_sqlite_throttle_shares_a_file_with_the_session_store(tmp_path: Any) -> None:
    from tokenflow.stores import SQLiteStore

    path = tmp_path / "auth.sqlite3"
    with SQLiteStore(path), SQLiteThrottle(path) as throttle:
        throttle.record_failure(["u:x"], now=10.0, window=60.0)
    # Both reopen the file: the store's schema check is untouched by the throttle's table.
    with SQLiteStore(path), SQLiteThrottle(path) as throttle:
        assert throttle.failures(["u:x"], now=20.0) == [FailureCount(1, 10.0)]
        assert throttle.purge(now=69.0) == 0
        assert throttle.purge(now=70.0) == 1
        assert throttle.failures(["u:x"], now=20.0) == [FailureCount(0, 0.0)]


def test_sqlite_throttle_counts_across_processes(tmp_path: Any) -> None:
    """Two processes on one file: every failure counted once."""
    import multiprocessing

    path = str(tmp_path / "shared.sqlite3")
    SQLiteThrottle(path).close()
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.starmap(_fail_many, [(path, 25)] * 2)
    with SQLiteThrottle(path) as throttle:
        assert throttle.failures(["u:shared"], now=1.0) == [FailureCount(50, 1.0)]


def _fail_many(path: str, n: int) -> None:
    with SQLiteThrottle(path) as throttle:
        for _ in range(n):
            throttle.record_failure(["u:shared"], now=1.0, window=60.0)


def test_sqlite_throttle_config_errors(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        SQLiteThrottle(":memory:")
    with pytest.raises(ConfigError):
        SQLiteThrottle(tmp_path / "missing" / "t.sqlite3")
    with pytest.raises(ConfigError):
        SQLiteThrottle(tmp_path / "t.sqlite3", timeout=-1)
    throttle = SQLiteThrottle(tmp_path / "t.sqlite3")
    throttle.close()
    throttle.close()
    with pytest.raises(Exception, match="closed"):
        throttle.failures(["u:x"], now=1.0)


# --------------------------------------------------------------------------- Redis


def test_redis_throttle_conforms(redis_client: Any, redis_prefix: str) -> None:
    from tokenflow.throttles import RedisThrottle

    with RedisThrottle(redis_client, prefix=redis_prefix) as throttle:
        check_login_throttle(lambda: throttle)
        assert repr(throttle) == f"RedisThrottle(prefix={redis_prefix!r})"


def test_redis_throttle_sets_the_window_as_ttl(redis_client: Any, redis_prefix: str) -> None:
    from tokenflow.throttles import RedisThrottle

    throttle = RedisThrottle(redis_client, prefix=redis_prefix)
    throttle.record_failure(["u:ttl"], now=5.0, window=120.0)
    ttl = redis_client.pttl(f"{redis_prefix}:lf:u:ttl")
    assert 0 < ttl <= 120_000
    throttle.reset(["u:ttl"])
    assert redis_client.exists(f"{redis_prefix}:lf:u:ttl") == 0


@pytest.mark.asyncio
async def test_async_redis_throttle_conforms(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio

    from tokenflow.throttles import AsyncRedisThrottle

    client = redis.asyncio.Redis.from_url(redis_url)
    async with AsyncRedisThrottle(client, prefix=redis_prefix) as throttle:
        await check_async_login_throttle(lambda: throttle)
    await client.aclose()


def test_redis_throttle_refuses_decoding_clients() -> None:
    redis = pytest.importorskip("redis")
    from tokenflow.throttles import RedisThrottle

    with pytest.raises(ConfigError):
        RedisThrottle(redis.Redis(decode_responses=True))
    with pytest.raises(ConfigError):
        RedisThrottle(redis.Redis(), prefix="")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_table(
    postgres_conninfo: str, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str]]:
    import psycopg

    from tokenflow.throttles.postgres import apply_schema

    conninfo = postgres_conninfo
    name = unique_name("throttle")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_schema(conn, table=name)
        apply_schema(conn, table=name)  # idempotent
    yield conninfo, name
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_postgres_throttle_conforms(pg_table: tuple[str, str]) -> None:
    from tokenflow.throttles import PostgresThrottle

    conninfo, table = pg_table
    with PostgresThrottle(conninfo, table=table) as throttle:
        check_login_throttle(lambda: throttle)
        assert repr(throttle) == f"PostgresThrottle(table={table!r})"
        assert "password" not in repr(throttle)
        throttle.record_failure(["u:old"], now=1.0, window=10.0)
        assert throttle.purge(now=11.0) >= 1


@pytest.mark.asyncio
async def test_async_postgres_throttle_conforms(pg_table: tuple[str, str]) -> None:
    from tokenflow.throttles import AsyncPostgresThrottle

    conninfo, table = pg_table
    async with AsyncPostgresThrottle(conninfo, table=table) as throttle:
        await check_async_login_throttle(lambda: throttle)
        await throttle.record_failure(["u:old2"], now=1.0, window=10.0)
        assert await throttle.purge(now=11.0) >= 1


def test_postgres_throttle_config_errors(pg_table: tuple[str, str]) -> None:
    import psycopg

    from tokenflow.throttles import PostgresThrottle
    from tokenflow.throttles.postgres import schema_sql

    conninfo, _ = pg_table
    with pytest.raises(ConfigError):
        PostgresThrottle(conninfo, table="bad name; drop")
    with pytest.raises(ConfigError):
        PostgresThrottle(42)  # type: ignore[arg-type]
    with psycopg.connect(conninfo) as conn, pytest.raises(ConfigError):
        PostgresThrottle(conn)  # not autocommit
    assert "tokenflow_login_failures" in schema_sql()


# --------------------------------------------------------------------------- through the flow


def test_flow_slows_a_guesser_on_sqlite(tmp_path: Any) -> None:
    """A guesser is answered 429 with Retry-After; the owner gets back in after the delay."""
    clock = FakeClock()
    users = FakeUserDirectory()
    users.add_user("ada")
    passwords = FakePasswordVerifier()
    passwords.set_password("ada@example.com", "right", user_id="ada")
    policy = ThrottlePolicy(username=ThrottleRule(3, 1.0, 60.0))
    with SQLiteThrottle(tmp_path / "t.sqlite3") as throttle:
        flow = Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            passwords=passwords,
            throttle=throttle,
            config=FlowConfig(throttle=policy),
            clock=clock,
        )

        def attempt(password: str) -> object:
            return flow.decide(
                Request(
                    "POST",
                    credentials=PasswordCredentials("ada@example.com", password),
                    sec_fetch_site="same-origin",
                    client_address="192.0.2.1",
                )
            )

        assert [type(attempt("guess")) for _ in range(3)] == [Unauthorized] * 3
        first = attempt("right")  # even the right password waits: nothing is verified
        assert isinstance(first, TooManyRequests)
        assert first.retry_after == 1
        clock.advance(1)
        assert isinstance(attempt("guess"), Unauthorized)
        second = attempt("guess")
        assert isinstance(second, TooManyRequests)
        assert second.retry_after == 2  # the delay doubles
        clock.advance(2)
        assert isinstance(attempt("right"), Reissue)
        # Success cleared the username's count: the next mistake is not throttled.
        assert isinstance(attempt("typo"), Unauthorized)
        assert isinstance(attempt("right"), Reissue)


# --------------------------------------------------------------------------- the kit itself


class RacyThrottle(MemoryThrottle):
    """Reads, yields the CPU, then writes: concurrent failures get lost."""

    def record_failure(self, keys: Any, *, now: float, window: float) -> list[FailureCount]:
        before = self.failures(keys, now=now)
        time.sleep(0.001)
        counted = [FailureCount(c.count + 1, now) for c in before]
        with self._lock:
            for key, c in zip(keys, counted, strict=True):
                self._counts[key] = (c.count, now, now + window)
        return counted


class WallClockThrottle(MemoryThrottle):
    """Judges expiry by its own clock instead of ``now``."""

    def failures(self, keys: Any, *, now: float) -> list[FailureCount]:
        return super().failures(keys, now=time.time())


class ForgetfulThrottle(MemoryThrottle):
    """Never lets a count expire."""

    def record_failure(self, keys: Any, *, now: float, window: float) -> list[FailureCount]:
        return super().record_failure(keys, now=now, window=1e12)

    def failures(self, keys: Any, *, now: float) -> list[FailureCount]:
        return super().failures(keys, now=min(now, 1.5e9))


class TalkativeThrottle(MemoryThrottle):
    """Shows its keys in its repr."""

    def __repr__(self) -> str:
        return f"TalkativeThrottle({list(self._counts)})"


class CheckThenActThrottle(MemoryThrottle):
    """Compares, yields the CPU, then counts: the compare-and-set is not atomic."""

    def reserve(self, keys: Any, expected: Any, *, now: float, window: float) -> bool:
        if [c.count for c in self.failures(keys, now=now)] != list(expected):
            return False
        time.sleep(0.002)
        self.record_failure(keys, now=now, window=window)
        return True


class BlindReserveThrottle(MemoryThrottle):
    """Counts every reservation, whatever the counts: the pre-reservation throttle."""

    def reserve(self, keys: Any, expected: Any, *, now: float, window: float) -> bool:
        self.record_failure(keys, now=now, window=window)
        return True


class HalfRefusingThrottle(MemoryThrottle):
    """Counts the keys that matched even when another did not."""

    def reserve(self, keys: Any, expected: Any, *, now: float, window: float) -> bool:
        counts = self.failures(keys, now=now)
        matched = [k for k, c, n in zip(keys, counts, expected, strict=True) if c.count == n]
        self.record_failure(matched, now=now, window=window)
        return len(matched) == len(keys)


class ForgivingReleaseThrottle(MemoryThrottle):
    """Forgets a key's whole count on release, not the one reserved attempt."""

    def release(self, keys: Any, *, now: float) -> None:
        self.reset(keys)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (RacyThrottle, "parallel failures"),
        (CheckThenActThrottle, "simultaneous"),
        (BlindReserveThrottle, "moved must return False"),
        (HalfRefusingThrottle, "refused reservation changes no count"),
        (ForgivingReleaseThrottle, "takes one back"),
        (WallClockThrottle, "expected"),
        (ForgetfulThrottle, "window"),
        (TalkativeThrottle, "repr"),
    ],
)
def test_the_kit_catches_broken_throttles(broken: type[MemoryThrottle], message: str) -> None:
    throttle = broken()
    with pytest.raises(AssertionError, match=message):
        check_login_throttle(lambda: throttle)


def test_drivers_are_imported_only_when_their_backend_is_used() -> None:
    """``tokenflow.throttles`` imports without the redis and psycopg extras."""
    import subprocess
    import sys

    code = (
        "import sys, tokenflow.throttles as t\n"
        "assert 'redis' not in sys.modules and 'psycopg' not in sys.modules, 'eager import'\n"
        "t.RedisThrottle\n"
        "assert 'redis' in sys.modules\n"
        "try:\n"
        "    t.NoSuchThrottle\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_memory_throttles_close_like_the_others() -> None:
    with MemoryThrottle() as throttle:
        throttle.record_failure(["k"], now=1.0, window=60.0)
        assert throttle.failures(["k"], now=2.0)[0].count == 1

    async def scenario() -> int:
        async with AsyncMemoryThrottle() as throttle:
            await throttle.record_failure(["k"], now=1.0, window=60.0)
            return (await throttle.failures(["k"], now=2.0))[0].count

    assert asyncio.run(scenario()) == 1
