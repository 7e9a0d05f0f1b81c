"""The second-factor stores against their contract: memory, SQLite, PostgreSQL, Redis.

Each runs :func:`tokenflow.testing.mfa.check_second_factor_store`, whose
races put 50 threads on one time step, one recovery code and one
confirmation (each on its own store object, as separate servers): exactly
one may win.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenflow import KeyRing
from tokenflow.mfa import MemorySecondFactorStore, RecoveryCodes, SecondFactors
from tokenflow.mfa.sqlite import SQLiteSecondFactorStore
from tokenflow.ports import SecondFactorAccepted, SecondFactorFailure, SecondFactorRefused
from tokenflow.testing.mfa import check_second_factor_store, totp_code

T0 = 1_767_225_600.0


def test_memory_store_conforms() -> None:
    shared = MemorySecondFactorStore()
    check_second_factor_store(lambda: shared)


def test_sqlite_store_conforms(tmp_path: Path) -> None:
    path = tmp_path / "mfa.db"
    check_second_factor_store(lambda: SQLiteSecondFactorStore(path))


@pytest.fixture
def pg_table(postgres_conninfo: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    table = unique_name("mfa")
    yield table
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        for suffix in ("_totp", "_pending", "_recovery"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table + suffix)))


def test_postgres_store_conforms(postgres_conninfo: str, pg_table: str) -> None:
    from psycopg_pool import ConnectionPool

    from tokenflow.mfa.postgres import PostgresSecondFactorStore

    with ConnectionPool(postgres_conninfo, kwargs={"autocommit": True}, max_size=20) as pool:
        check_second_factor_store(lambda: PostgresSecondFactorStore(pool, table=pg_table))


def test_postgres_store_on_one_shared_connection(postgres_conninfo: str, pg_table: str) -> None:
    import psycopg

    from tokenflow.mfa.postgres import PostgresSecondFactorStore

    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        shared = PostgresSecondFactorStore(conn, table=pg_table)
        check_second_factor_store(lambda: shared, threads=8)


def test_redis_store_conforms(redis_client: Any, redis_prefix: str) -> None:
    from tokenflow.mfa.redis import RedisSecondFactorStore

    check_second_factor_store(lambda: RedisSecondFactorStore(redis_client, prefix=redis_prefix))


def test_kit_catches_a_store_that_accepts_a_step_twice() -> None:
    class Replaying(MemorySecondFactorStore):
        def use_step(self, user_id: str, step: int) -> bool:
            return self.totp_of(user_id) is not None

    with pytest.raises(AssertionError, match="step"):
        check_second_factor_store(Replaying)


def test_kit_catches_a_racy_recovery_code() -> None:
    class Racy(MemorySecondFactorStore):
        """Checks, then writes: simultaneous callers all pass the check."""

        def __init__(self) -> None:
            super().__init__()
            self.used: set[bytes] = set()

        def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
            live = self._codes.get(user_id, set())
            if code_hash in self.used or code_hash not in live:
                return None
            time.sleep(0.005)  # the window between the check and the write
            self.used.add(code_hash)
            live.discard(code_hash)
            return len(live)

    shared = Racy()
    with pytest.raises(AssertionError, match="simultaneous uses of one recovery code"):
        check_second_factor_store(lambda: shared)


# -- sealed at rest --------------------------------------------------------------


def test_a_dumped_sqlite_row_holds_no_secret_and_a_copied_row_opens_for_nobody(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mfa.db"
    factors = SecondFactors(KeyRing.generate(), SQLiteSecondFactorStore(path), issuer="Example")
    enrolment = factors.begin_totp("alice", account_name="alice@example.com", now=T0)
    codes = factors.confirm_totp("alice", totp_code(enrolment.secret, now=T0), now=T0)
    assert len(codes) == 10  # type: ignore[arg-type]
    import base64

    raw_secret = base64.b32decode(enrolment.secret)
    with sqlite3.connect(path) as conn:
        dump = "\n".join(conn.iterdump()).encode()
        rows = conn.execute("SELECT secret FROM tokenflow_mfa_totp").fetchall()
    for form in (raw_secret, raw_secret.hex().encode(), enrolment.secret.encode()):
        assert form not in dump
        assert form.lower() not in dump.lower()
    for code in codes:  # type: ignore[union-attr]
        assert code.encode() not in dump
        assert code.replace("-", "").upper().encode() not in dump
    # The same sealed row copied to bob: bob's secret does not open.
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO tokenflow_mfa_totp (user_id, secret, last_step) VALUES (?, ?, 0)",
            ("bob", rows[0][0]),
        )
    assert factors.factors_of("bob") == ("totp",)
    with pytest.raises(RuntimeError, match="does not open"):
        factors.verify_second_factor("bob", totp_code(enrolment.secret, now=T0 + 60), now=T0 + 60)


def test_redis_holds_no_secret(redis_client: Any, redis_prefix: str) -> None:
    from tokenflow.mfa.redis import RedisSecondFactorStore

    store = RedisSecondFactorStore(redis_client, prefix=redis_prefix + "seal:")
    factors = SecondFactors(KeyRing.generate(), store, issuer="Example")
    enrolment = factors.begin_totp("carol", account_name="carol", now=T0)
    factors.confirm_totp("carol", totp_code(enrolment.secret, now=T0), now=T0)
    import base64

    raw = base64.b32decode(enrolment.secret)
    for key in redis_client.scan_iter(match=(redis_prefix + "seal:*").encode()):
        kind = redis_client.type(key)
        values: list[bytes] = []
        if kind == b"hash":
            values = list(redis_client.hgetall(key).values())
        elif kind == b"set":
            values = list(redis_client.smembers(key))
        elif kind == b"string":
            values = [redis_client.get(key)]
        assert values
        for value in values:
            assert raw not in value
            assert enrolment.secret.encode() not in value


def test_sqlite_store_needs_a_file() -> None:
    from tokenflow import ConfigError

    with pytest.raises(ConfigError):
        SQLiteSecondFactorStore(":memory:")
    with pytest.raises(ConfigError):
        SQLiteSecondFactorStore(os.path.join("/nonexistent-dir-mfa", "x.db"))


# -- the service over every backend ----------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemorySecondFactorStore()
    elif request.param == "sqlite":
        yield SQLiteSecondFactorStore(tmp_path / "race.db")
    elif request.param == "postgres":
        from psycopg_pool import ConnectionPool

        from tokenflow.mfa.postgres import PostgresSecondFactorStore

        table = request.getfixturevalue("pg_table")
        conninfo = request.getfixturevalue("postgres_conninfo")
        with ConnectionPool(conninfo, kwargs={"autocommit": True}, max_size=20) as pool:
            yield PostgresSecondFactorStore(pool, table=table)
    else:
        from tokenflow.mfa.redis import RedisSecondFactorStore

        client = request.getfixturevalue("redis_client")
        prefix = request.getfixturevalue("redis_prefix")
        yield RedisSecondFactorStore(client, prefix=prefix + "svc:")


def _race(threads: int, call: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(threads)
    answers: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        answer = call()
        with lock:
            answers.append(answer)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(answers) == threads
    return answers


def test_fifty_logins_with_one_code_or_one_recovery_code_get_one_acceptance(
    any_store: Any,
) -> None:
    factors = SecondFactors(KeyRing.generate(), any_store, issuer="Example")
    user = f"racer-{os.urandom(4).hex()}"
    enrolment = factors.begin_totp(user, account_name="racer", now=T0)
    codes = factors.confirm_totp(user, totp_code(enrolment.secret, now=T0), now=T0)
    assert isinstance(codes, RecoveryCodes)
    now = T0 + 90
    code = totp_code(enrolment.secret, now=now)
    answers = _race(50, lambda: factors.verify_second_factor(user, code, now=now))
    assert answers.count(SecondFactorAccepted("totp", ("otp",))) == 1
    assert answers.count(SecondFactorRefused(SecondFactorFailure.REPLAYED)) == 49
    # The used step, and the one before it, stay refused afterwards.
    before = totp_code(enrolment.secret, now=now - 30)
    assert factors.verify_second_factor(user, before, now=now) == SecondFactorRefused(
        SecondFactorFailure.REPLAYED
    )
    recovery = next(iter(codes))
    answers = _race(50, lambda: factors.verify_second_factor(user, recovery, now=now))
    assert answers.count(SecondFactorAccepted("recovery", ("otp",), recovery_codes_left=9)) == 1
    assert answers.count(SecondFactorRefused(SecondFactorFailure.WRONG)) == 49
    assert factors.recovery_codes_left(user) == 9
    factors.remove(user)


@pytest.mark.parametrize("table", ["", "1abc", "a;drop", None, "x" * 45])
def test_postgres_store_refuses_bad_table_names(postgres_conninfo: str, table: object) -> None:
    from tokenflow import ConfigError
    from tokenflow.mfa.postgres import PostgresSecondFactorStore

    with pytest.raises(ConfigError):
        PostgresSecondFactorStore(postgres_conninfo, table=table)  # type: ignore[arg-type]
