"""Login throttles: where the flow counts failed logins (:class:`~tokenflow.ports.LoginThrottle`).

Pick the backend you already run for sessions, so every application server
sees the same counts: a throttle kept in one process only slows guessing on
that process.

- :class:`MemoryThrottle` / :class:`AsyncMemoryThrottle`: one process; tests
  and single-process apps.
- :class:`SQLiteThrottle` / :class:`AsyncSQLiteThrottle`: one machine, any
  number of processes (standard library only).
- :class:`RedisThrottle` / :class:`AsyncRedisThrottle`: extra ``redis``.
- :class:`PostgresThrottle` / :class:`AsyncPostgresThrottle`: extra
  ``postgres``.

To lift an account's second-factor lockout (after
``ThrottlePolicy.second_factor_limit`` consecutive wrong codes), reset its key
on the flow's throttle: ``throttle.reset([second_factor_key(user_id)])``.

The Redis and PostgreSQL classes are imported on first use, so this package
imports without their drivers.
"""

from typing import TYPE_CHECKING, Any

from .._throttle import second_factor_key
from .memory import AsyncMemoryThrottle, MemoryThrottle, ThrottleFull
from .sqlite import AsyncSQLiteThrottle, SQLiteThrottle

if TYPE_CHECKING:
    from .postgres import AsyncPostgresThrottle, PostgresThrottle
    from .redis import AsyncRedisThrottle, RedisThrottle

__all__ = [
    "AsyncMemoryThrottle",
    "AsyncPostgresThrottle",
    "AsyncRedisThrottle",
    "AsyncSQLiteThrottle",
    "MemoryThrottle",
    "PostgresThrottle",
    "RedisThrottle",
    "SQLiteThrottle",
    "ThrottleFull",
    "second_factor_key",
]

_LAZY = {
    "RedisThrottle": "redis",
    "AsyncRedisThrottle": "redis",
    "PostgresThrottle": "postgres",
    "AsyncPostgresThrottle": "postgres",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenflow.throttles' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
