"""A clock for tests: time that moves only when told to."""

from __future__ import annotations

import math
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A clock for tests: returns ``start`` until :meth:`advance` moves it.

    Call it like ``time.time``: ``clock()`` is the current time in seconds
    since the epoch. Safe to read and advance from several threads.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        if not math.isfinite(start):
            raise ValueError("FakeClock start must be a finite number of seconds")
        self._lock = threading.Lock()
        self._now = float(start)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0); the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("FakeClock only moves forward: seconds must be finite and >= 0")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self()!r})"
