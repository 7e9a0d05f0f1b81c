"""In-memory login throttles: one process, safe under threads and asyncio."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from .._errors import ConfigError
from .._throttle import NO_FAILURES, FailureCount

__all__ = ["AsyncMemoryThrottle", "MemoryThrottle"]


class MemoryThrottle:
    """A :class:`~tokenflow.ports.LoginThrottle` in a dict, guarded by one lock.

    Counts live in this process only: with several processes or servers,
    each counts on its own and a guesser gets that many more tries; use a
    shared backend there. At most ``max_keys`` keys are kept: past that, keys
    whose window has run out go first, then the keys failed least recently,
    so memory stays bounded however many usernames and addresses an attacker
    sprays.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys must be a positive whole number")
        self._max_keys = max_keys
        self._lock = threading.Lock()
        # key -> (count, last failure, expiry); ordered from least to most recently failed.
        self._counts: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"MemoryThrottle(keys={len(self._counts)})"

    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now`` (zero once its window ran out)."""
        with self._lock:
            return [self._read(key, now) for key in keys]

    def _read(self, key: str, now: float) -> FailureCount:
        entry = self._counts.get(key)
        if entry is None or not now < entry[2]:
            return NO_FAILURES
        return FailureCount(entry[0], entry[1])

    def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, atomically; the new counts."""
        counted = []
        with self._lock:
            for key in keys:
                count = self._read(key, now).count + 1
                self._counts[key] = (count, now, now + window)
                self._counts.move_to_end(key)
                counted.append(FailureCount(count, now))
            if len(self._counts) > self._max_keys:
                self._evict(now)
        return counted

    def _evict(self, now: float) -> None:
        for key in [k for k, (_, _, expiry) in self._counts.items() if not now < expiry]:
            del self._counts[key]
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        with self._lock:
            for key in keys:
                self._counts.pop(key, None)

    def purge(self, *, now: float) -> int:
        """Drop every key whose window has run out; how many were dropped."""
        with self._lock:
            dead = [k for k, (_, _, expiry) in self._counts.items() if not now < expiry]
            for key in dead:
                del self._counts[key]
            return len(dead)

    def close(self) -> None:
        """Nothing to release: present so that code can close any throttle the same way."""
        return

    def __enter__(self) -> MemoryThrottle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncMemoryThrottle:
    """The async face of :class:`MemoryThrottle` (same semantics).

    No call awaits while holding the lock, so it is safe on an event loop.
    Pass ``sync`` to share counts with a sync :class:`MemoryThrottle`.
    """

    def __init__(self, sync: MemoryThrottle | None = None) -> None:
        self.sync: MemoryThrottle = sync if sync is not None else MemoryThrottle()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now``."""
        return self.sync.failures(keys, now=now)

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, atomically; the new counts."""
        return self.sync.record_failure(keys, now=now, window=window)

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures."""
        self.sync.reset(keys)

    async def purge(self, *, now: float) -> int:
        """Drop every key whose window has run out."""
        return self.sync.purge(now=now)

    async def aclose(self) -> None:
        """Nothing to release: present so that code can close any throttle the same way."""
        return

    async def __aenter__(self) -> AsyncMemoryThrottle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
