"""Login throttles: where the flow counts failed logins (:class:`~tokenflow.ports.LoginThrottle`).

Pick the backend you already run for sessions, so every application server
sees the same counts: a throttle kept in one process only slows guessing on
that process.

- :class:`MemoryThrottle` / :class:`AsyncMemoryThrottle`: one process; tests
  and single-process apps.
"""

from .memory import AsyncMemoryThrottle, MemoryThrottle

__all__ = ["AsyncMemoryThrottle", "MemoryThrottle"]
