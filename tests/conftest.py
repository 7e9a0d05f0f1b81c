"""Shared fixtures: Hypothesis profiles, test sizes, and the local Redis and PostgreSQL servers.

Profiles
--------
``fast`` (the default) keeps everyday runs short; ``thorough`` (large race
counts, long fuzzing) is for CI. Pick one with ``HYPOTHESIS_PROFILE=thorough``
or ``pytest --hypothesis-profile=thorough``. Tests that are not Hypothesis
properties (race trials, say) take their size from the :func:`sizes` fixture,
which follows the same profile.

Servers
-------
The ``redis_*`` and ``postgres_*`` fixtures reach the servers on 127.0.0.1
(``TOKENFLOW_REDIS_URL`` / ``TOKENFLOW_POSTGRES_DSN`` override the address).
When a server does not answer, a test using them is skipped with a message
saying how to start it, unless ``TOKENFLOW_REQUIRE_SERVICES=1`` is set (CI):
then it fails, so a dead service can never turn the suite green by skipping.
Names (key prefixes, tables) are unique to the test run and the xdist worker,
so parallel workers and concurrent runs never collide, and everything created
under them is dropped at the end.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

# ------------------------------------------------------------------ Hypothesis profiles

settings.register_profile(
    "fast",
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@dataclass(frozen=True)
class Sizes:
    """How big the non-Hypothesis loops of a test are, by the active profile."""

    thorough: bool

    def pick(self, fast: int, thorough: int) -> int:
        """``thorough`` under the thorough profile, else ``fast``."""
        return thorough if self.thorough else fast


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    """Sizes for race trials and other loops, following the Hypothesis profile."""
    # Read at fixture time: --hypothesis-profile loads its profile after this
    # module registered the profiles.
    return Sizes(settings.default.max_examples >= settings.get_profile("thorough").max_examples)


# ------------------------------------------------------------------ servers

REQUIRE_ENV = "TOKENFLOW_REQUIRE_SERVICES"
REDIS_URL = os.environ.get("TOKENFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)

_HOW_TO_START = {
    "Redis": (
        "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
        '--save "" --appendonly no'
    ),
    "PostgreSQL": (
        "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    ),
}


def _services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def _missing(message: str) -> NoReturn:
    message += f". Set {REQUIRE_ENV}=1 to make this a failure instead of a skip."
    if _services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _client_library(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"{name} is not installed ({exc}); install tokenflow's extras to run this test")


@pytest.fixture(scope="session")
def unique_name() -> Callable[[str], str]:
    """Makes names no other test run or worker uses: ``unique_name("redis")``.

    Only ``[a-z0-9_]``, so a name is a valid SQL identifier and a Redis key
    prefix without glob characters.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")

    def make(kind: str) -> str:
        return f"tokenflow_test_{kind}_{worker}_{os.getpid()}_{secrets.token_hex(4)}"

    return make


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a Redis server that answered PING (or a skip / failure)."""
    redis = _client_library("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _missing(f"Redis is not reachable at {REDIS_URL} ({exc}); {_HOW_TO_START['Redis']}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Iterator[Any]:
    """A ``redis.Redis`` client for the module, closed at its end."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=30)
    yield client
    client.close()


def drop_redis_keys(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix:`` (a name without glob characters)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


@pytest.fixture(scope="module")
def redis_prefix(redis_client: Any, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A key prefix unique to this module's run; its keys are deleted at the end."""
    prefix = unique_name("redis")
    yield prefix
    drop_redis_keys(redis_client, prefix)


@pytest.fixture(scope="session")
def postgres_conninfo() -> str:
    """A conninfo string for a PostgreSQL server that accepted a connection."""
    psycopg = _client_library("psycopg")
    _client_library("psycopg_pool")
    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        error = str(exc).strip()
        _missing(
            f"PostgreSQL is not reachable at {POSTGRES_DSN} ({error}); "
            f"{_HOW_TO_START['PostgreSQL']}"
        )
    return POSTGRES_DSN


@pytest.fixture(scope="module")
def postgres_table(postgres_conninfo: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A sessions table (``apply_schema``) unique to this module's run, dropped at the end."""
    import psycopg
    from psycopg import sql

    from tokenflow.stores.postgres import apply_schema

    table = unique_name("pg")
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        apply_schema(conn, table=table)
    yield table
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


# ------------------------------------------------------------------ async stores in sync tests


class Blocking:
    """A sync face for an async store: each call runs to completion on ``loop``.

    For tests that put the same assertions to a store and to its async twin;
    the contract itself is checked natively by ``check_async_session_store``.
    """

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    def __repr__(self) -> str:
        return f"Blocking({self.store!r})"

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.run_until_complete(method(*args, **kwargs))

        return call


@pytest.fixture(scope="module")
def blocking() -> Iterator[tuple[asyncio.AbstractEventLoop, Callable[[Any], Blocking]]]:
    """A private event loop for the module, and a maker of :class:`Blocking` faces on it."""
    loop = asyncio.new_event_loop()
    yield loop, lambda store: Blocking(store, loop)
    loop.close()
