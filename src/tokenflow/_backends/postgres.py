"""PostgreSQL connection rules shared by the PostgreSQL store and throttle."""

from __future__ import annotations

import re
from typing import Any, Final

from .._errors import ConfigError

__all__ = ["TABLE_RE", "owned_pool_kwargs", "single_connection_error"]

TABLE_RE: Final = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,49})")
"""A table name, optionally schema-qualified: what ``table=`` accepts."""


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
