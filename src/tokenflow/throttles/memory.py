"""In-memory login throttles: one process, safe under threads and asyncio."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from .._errors import ConfigError
from .._throttle import NO_FAILURES, FailureCount, ThrottlePolicy

__all__ = ["AsyncMemoryThrottle", "MemoryThrottle", "ThrottleFull"]


class ThrottleFull(RuntimeError):
    """A :class:`MemoryThrottle` holds ``max_keys`` keys, all of them throttled.

    A new key is refused rather than let in by evicting a throttled one (which
    would free an account under attack): the flow answers that login
    Unavailable (503) and reports the throttle port's failure. It ends when a
    throttled key's delay runs out.
    """


class MemoryThrottle:
    """A :class:`~tokenflow.ports.LoginThrottle` in a dict, guarded by one lock.

    Counts live in this process only: with several processes or servers,
    each counts on its own and a guesser gets that many more tries; use a
    shared backend there.

    At most ``max_keys`` keys are kept, so memory stays bounded however many
    usernames and addresses an attacker sprays. Past that, keys whose window
    has run out go first, then keys that are not throttled (least recently
    failed first). A throttled key (one the ``policy``, the flow's
    :class:`~tokenflow.ThrottlePolicy`, still makes wait) is never evicted:
    spraying fresh usernames cannot free the account under attack. When every
    key is throttled, a reservation that needs a new key raises
    :class:`ThrottleFull` (the flow answers 503): fail closed. Pass the same
    ``policy`` as the flow's ``FlowConfig.throttle``.
    """

    def __init__(self, *, max_keys: int = 100_000, policy: ThrottlePolicy | None = None) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys must be a positive whole number")
        policy = ThrottlePolicy() if policy is None else policy
        if not isinstance(policy, ThrottlePolicy):
            raise ConfigError("policy must be a ThrottlePolicy (the flow's FlowConfig.throttle)")
        self._max_keys = max_keys
        self._policy = policy
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
        # A count released back to 0 reads as no failures at all.
        if entry is None or not now < entry[2] or entry[0] == 0:
            return NO_FAILURES
        return FailureCount(entry[0], entry[1])

    def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``, atomically."""
        if len(expected) != len(keys):
            raise ValueError("reserve needs one expected count per key")
        with self._lock:
            if any(self._read(k, now).count != n for k, n in zip(keys, expected, strict=True)):
                return False
            new = sum(1 for key in keys if key not in self._counts)
            if new and len(self._counts) + new > self._max_keys:
                self._evict(now, len(self._counts) + new - self._max_keys)
            self._add(keys, now, window)
            return True

    def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, unconditionally; the new counts."""
        with self._lock:
            new = sum(1 for key in keys if key not in self._counts)
            if new and len(self._counts) + new > self._max_keys:
                self._evict(now, len(self._counts) + new - self._max_keys)
            return self._add(keys, now, window)

    def _add(self, keys: Sequence[str], now: float, window: float) -> list[FailureCount]:
        counted = []
        for key in keys:
            count = self._read(key, now).count + 1
            self._counts[key] = (count, now, now + window)
            self._counts.move_to_end(key)
            counted.append(FailureCount(count, now))
        return counted

    def _throttled(self, key: str, count: int, last: float, now: float) -> bool:
        return self._policy.retry_after((key,), (FailureCount(count, last),), now) > 0

    def _evict(self, now: float, needed: int) -> None:
        """Make room for ``needed`` new keys, or raise ThrottleFull (nothing evicted then)."""
        dead = [k for k, (_, _, expiry) in self._counts.items() if not now < expiry]
        if len(dead) < needed:
            # Oldest failures first, throttled keys never: collected before any
            # deletion, so a refusal leaves the throttle as it was.
            for key, (count, last, expiry) in self._counts.items():
                if now < expiry and not self._throttled(key, count, last, now):
                    dead.append(key)
                    if len(dead) >= needed:
                        break
        if len(dead) < needed:
            raise ThrottleFull(
                f"MemoryThrottle holds {len(self._counts)} keys (max_keys), all throttled"
            )
        for key in dead:
            del self._counts[key]

    def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key (never below 0)."""
        with self._lock:
            for key in keys:
                entry = self._counts.get(key)
                if entry is not None and now < entry[2] and entry[0] > 0:
                    self._counts[key] = (entry[0] - 1, entry[1], entry[2])

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
    Pass ``sync`` to share counts with a sync :class:`MemoryThrottle`, or
    the same ``max_keys`` and ``policy`` as :class:`MemoryThrottle` takes.
    """

    def __init__(
        self,
        sync: MemoryThrottle | None = None,
        *,
        max_keys: int = 100_000,
        policy: ThrottlePolicy | None = None,
    ) -> None:
        self.sync: MemoryThrottle = (
            sync if sync is not None else MemoryThrottle(max_keys=max_keys, policy=policy)
        )

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        """Each key's failure count at ``now``."""
        return self.sync.failures(keys, now=now)

    async def reserve(
        self, keys: Sequence[str], expected: Sequence[int], *, now: float, window: float
    ) -> bool:
        """Count one failure on every key if their counts are still ``expected``, atomically."""
        return self.sync.reserve(keys, expected, now=now, window=window)

    async def release(self, keys: Sequence[str], *, now: float) -> None:
        """Take one reserved attempt back from every key."""
        self.sync.release(keys, now=now)

    async def record_failure(
        self, keys: Sequence[str], *, now: float, window: float
    ) -> list[FailureCount]:
        """Count one more failure for every key, unconditionally; the new counts."""
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
