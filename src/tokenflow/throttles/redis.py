"""Redis login throttles: failure counts shared by every application server.

Layout, under a ``prefix`` (default ``tokenflow``)::

    {prefix}:lf:{key}   hash: n (count), last (last failure), exp (last + window)

**One round trip per call.** ``record_failure`` sends one small Lua script per
key, all in one non-transactional pipeline. Each script reads and rewrites
one hash atomically on the server, so N concurrent failures of a key count
exactly N. The script never touches two keys: a username's key and an
address's key usually live in different Redis Cluster slots, and a one-key
script is valid wherever its key lives (a cluster client splits the pipeline
per node). The script text travels with each call (``EVAL``, which Redis
caches compiled): ``EVALSHA`` in a pipeline would need an extra ``SCRIPT
EXISTS`` round trip on every call.

**Reservations.** ``reserve`` sends one script per key (pipelined), which
counts the attempt only if the key's live count is still the one the flow
read: of simultaneous reservations on a key exactly one wins. Keys of one
call may live in different cluster slots, so they cannot change in one
atomic step: when one key loses, the keys that won are released again before
the call answers False. Between those two moments a count is one too high,
which can only make a concurrent attempt wait, never pass.

**Times.** Counting uses the ``now`` passed in, never the server's clock:
``exp`` decides whether a count is still live. Each write also sets the
key's TTL to the window (relative, so clock skew between the application
and Redis does not matter): Redis forgets a key on its own once its window
has run out, and there is nothing to purge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import redis
import redis.asyncio
import redis.cluster

from .._backends.redis import check_binary_client, check_prefix
from .._throttle import NO_FAILURES, FailureCount

__all__ = ["AsyncRedisThrottle", "RedisThrottle"]

# KEYS[1]: the key's hash. ARGV[1]: now, ARGV[2]: now + window (Python's repr
# of floats: tonumber() parses them exactly), ARGV[3]: TTL in ms.
# Returns {count, now}.
_RECORD_LUA: Final = """
local h = redis.call('HMGET', KEYS[1], 'n', 'exp')
local n = 1
if h[1] and tonumber(ARGV[1]) < tonumber(h[2]) then
  n = tonumber(h[1]) + 1
end
redis.call('HSET', KEYS[1], 'n', n, 'last', ARGV[1], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {n, ARGV[1]}
"""

# Reservation of one key. KEYS[1]: the key's hash. ARGV[1]: now, ARGV[2]:
# now + window, ARGV[3]: TTL in ms, ARGV[4]: the expected live count.
# Returns 1 (counted) or 0 (the count moved: nothing changed).
_RESERVE_LUA: Final = """
local h = redis.call('HMGET', KEYS[1], 'n', 'exp')
local n = 0
if h[1] and tonumber(ARGV[1]) < tonumber(h[2]) then
  n = tonumber(h[1])
end
if n ~= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], 'n', n + 1, 'last', ARGV[1], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Take one attempt back. KEYS[1]: the key's hash. ARGV[1]: now. The count of a
# live key drops by one, never below 0; times and TTL are left as they are.
_RELEASE_LUA: Final = """
local h = redis.call('HMGET', KEYS[1], 'n', 'exp')
if h[1] and tonumber(h[1]) > 0 and tonumber(ARGV[1]) < tonumber(h[2]) then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0
"""

_MAX_TTL_MS: Final = 10**14


def _record_args(now: float, window: float) -> tuple[str, str, int]:
    if not (math.isfinite(now) and math.isfinite(window) and window > 0):
        raise ValueError("now must be finite and window a positive number of seconds")
    ttl = min(_MAX_TTL_MS, max(1, math.ceil(window * 1000)))
    return repr(float(now)), repr(float(now + window)), ttl


def _reserve_args(
    keys: Sequence[str], expected: Sequence[int], now: float, window: float
) -> list[tuple[str, tuple[str, str, int, int]]]:
    if len(expected) != len(keys):
        raise ValueError("reserve needs one expected count per key")
    record = _record_args(now, window)
    return [(key, (*record, int(count))) for key, count in zip(keys, expected, strict=True)]


def _count_of(reply: Any) -> FailureCount:
    count, last = reply
    return FailureCount(int(count), float(last))


def _read(reply: Any, now: float) -> FailureCount:
    count, last, expires = reply
    if count is None or last is None or expires is None or not now < float(expires):
        return NO_FAILURES
    if int(count) == 0:  # released back to 0
        return NO_FAILURES
    return FailureCount(int(count), float(last))


class RedisThrottle:
    """A :class:`~tokenflow.ports.LoginThrottle` in Redis.

    ``client`` is a :class:`redis.Redis` or :class:`redis.cluster.RedisCluster`
    with ``decode_responses=False``; the throttle never closes it (its
    :meth:`close` does nothing). ``prefix`` namespaces the keys. Every call
    is one pipelined round trip; see the module docs for the layout.
    """

    def __init__(
        self, client: redis.Redis | redis.cluster.RedisCluster, *, prefix: str = "tokenflow"
    ) -> None:
        check_binary_client(client, "RedisThrottle")
        self._client = client
        self._prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        # The client is left out: its repr names hosts, and a URL may carry a password.
        return f"RedisThrottle(prefix={self._prefix!r})"

    def _key(self, key: str) -> bytes:
        return f"{self._prefix}:lf:{key}".encode("utf-8", "surrogatepass")

    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now``; one pipelined round trip."""
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._key(key), ["n", "last", "exp"])
        return [_read(reply, now) for reply in pipe.execute()]

    def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key (one atomic script each, one round trip)."""
        if not keys:
            return []
        args = _record_args(now, window)
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_RECORD_LUA, 1, self._key(key), *args)
        return [_count_of(reply) for reply in pipe.execute()]

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``.

        One atomic script per key (keys may live in different cluster slots),
        pipelined: if any key's count moved, the keys that were counted are
        released again before the answer, and the answer is False.
        """
        steps = _reserve_args(keys, expected, now, window)
        if not steps:
            return True
        pipe = self._client.pipeline(transaction=False)
        for key, args in steps:
            pipe.eval(_RESERVE_LUA, 1, self._key(key), *args)
        won = [int(reply) == 1 for reply in pipe.execute()]
        if all(won):
            return True
        self.release([key for (key, _), ok in zip(steps, won, strict=True) if ok], now=now)
        return False

    def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (one script each, pipelined)."""
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_RELEASE_LUA, 1, self._key(key), repr(float(now)))
        pipe.execute()

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures (one DEL per key, pipelined: keys may span slots)."""
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(self._key(key))
        pipe.execute()

    def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""
        return

    def __enter__(self) -> RedisThrottle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRedisThrottle:
    """The async variant of :class:`RedisThrottle`, on a :class:`redis.asyncio.Redis`.

    Same layout and semantics; the client is never closed by the throttle.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        prefix: str = "tokenflow",
    ) -> None:
        check_binary_client(client, "AsyncRedisThrottle")
        self._client = client
        self._prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"AsyncRedisThrottle(prefix={self._prefix!r})"

    def _key(self, key: str) -> bytes:
        return f"{self._prefix}:lf:{key}".encode("utf-8", "surrogatepass")

    async def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now``; one pipelined round trip."""
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._key(key), ["n", "last", "exp"])
        return [_read(reply, now) for reply in await pipe.execute()]

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key (one atomic script each, one round trip)."""
        if not keys:
            return []
        args = _record_args(now, window)
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_RECORD_LUA, 1, self._key(key), *args)
        return [_count_of(reply) for reply in await pipe.execute()]

    async def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``."""
        steps = _reserve_args(keys, expected, now, window)
        if not steps:
            return True
        pipe = self._client.pipeline(transaction=False)
        for key, args in steps:
            pipe.eval(_RESERVE_LUA, 1, self._key(key), *args)
        won = [int(reply) == 1 for reply in await pipe.execute()]
        if all(won):
            return True
        await self.release([key for (key, _), ok in zip(steps, won, strict=True) if ok], now=now)
        return False

    async def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (one script each, pipelined)."""
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_RELEASE_LUA, 1, self._key(key), repr(float(now)))
        await pipe.execute()

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(self._key(key))
        await pipe.execute()

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the caller."""
        return

    async def __aenter__(self) -> AsyncRedisThrottle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
