"""A Redis challenge ledger (needs the ``redis`` extra too).

A used challenge is one ``SET key 1 NX PXAT expires``: Redis runs it
atomically, so of any number of simultaneous uses exactly one succeeds, and
the record expires with its challenge. Passkeys themselves belong in a
durable database (SQLite, PostgreSQL).
"""

from __future__ import annotations

import math
from typing import Any

from .._backends.redis import check_binary_client, check_prefix

__all__ = ["RedisChallengeLedger"]


class RedisChallengeLedger:
    """A :class:`~tokenflow.passkeys.ChallengeLedger` in Redis (a ``redis.Redis`` client
    with ``decode_responses=False``)."""

    def __init__(self, client: Any, *, prefix: str = "tokenflow:pkc:") -> None:
        check_binary_client(client, "RedisChallengeLedger")
        self._client = client
        self._prefix = check_prefix(prefix).encode()

    def __repr__(self) -> str:
        return f"RedisChallengeLedger(prefix={self._prefix.decode()!r})"

    def use(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record a used challenge: True the first time only (``SET NX``)."""
        # At least a second, so a record never expires before it was written.
        ttl_ms = max(1000, math.ceil((expires_at - now) * 1000))
        return bool(self._client.set(self._prefix + key, b"1", nx=True, px=ttl_ms))
