"""Fault injection for session stores: prove that failures fail closed.

:class:`FaultyStore` and :class:`AsyncFaultyStore` wrap a real store and, while
a fault is armed, make its calls fail in one of three ways:

- ``Fault.BEFORE_COMMIT``: raise without calling the store (nothing changed);
- ``Fault.AFTER_COMMIT``: call the store, then raise anyway: the change is
  committed but the caller never learns the outcome (a lost reply);
- ``Fault.HANG``: block past a deadline (sync: sleep ``hang_seconds`` then
  raise ``TimeoutError``, as a driver socket timeout would; async: sleep until
  cancelled by :class:`~tokenflow.AsyncFlow`'s ``port_timeout``).

The flow must answer Unavailable, mint nothing and clear nothing; after the
fault is cleared, the refresh token the client still holds must work (or, after
an AFTER_COMMIT rotation, its retry inside the grace window must get the same
successor).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from typing import Any

from .._sessions import NewSession, Rotation, RotationResult, SessionInfo
from ..ports import AsyncSessionStore, SessionStore

__all__ = ["AsyncFaultyStore", "Fault", "FaultyStore", "InjectedFault"]


class Fault(enum.Enum):
    """How an armed :class:`FaultyStore` fails."""

    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT = "after_commit"
    HANG = "hang"


class InjectedFault(ConnectionError):
    """The failure a :class:`FaultyStore` raises."""


class _Faults:
    """Which operations fail, and how. Shared by the sync and async wrappers."""

    def __init__(self, hang_seconds: float) -> None:
        self.fault: Fault | None = None
        self.operations: frozenset[str] = frozenset()
        self.hang_seconds = hang_seconds
        self.injected = 0
        self.error: Exception | None = None

    def arm(self, fault: Fault, operations: Sequence[str], error: Exception | None) -> None:
        self.fault = fault
        self.operations = frozenset(operations)
        self.error = error

    def failure(self, operation: str, what: str) -> Exception:
        return self.error if self.error is not None else InjectedFault(f"{operation}: {what}")

    def active(self, operation: str) -> Fault | None:
        if self.fault is not None and operation in self.operations:
            self.injected += 1
            return self.fault
        return None


_ALL = ("create", "rotate", "revoke", "revoke_user", "sessions_of")


class FaultyStore:
    """A sync store wrapper that fails on demand (see the module docstring)."""

    def __init__(self, store: SessionStore, *, hang_seconds: float = 0.2) -> None:
        self.store = store
        self._faults = _Faults(hang_seconds)

    def arm(
        self, fault: Fault, operations: Sequence[str] = _ALL, *, error: Exception | None = None
    ) -> None:
        """Make the named operations fail with ``fault`` until :meth:`disarm`.

        ``error``: the exception a failing call raises (the very object, so a
        test can find it in the decision), instead of :class:`InjectedFault`.
        ``Fault.HANG`` always ends in ``TimeoutError``.
        """
        self._faults.arm(fault, operations, error)

    def disarm(self) -> None:
        """Let every call through again."""
        self._faults.fault = None

    @property
    def injected(self) -> int:
        """How many calls have failed on purpose so far."""
        return self._faults.injected

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        fault = self._faults.active(operation)
        if fault is Fault.BEFORE_COMMIT:
            raise self._faults.failure(operation, "failed before commit (injected)")
        if fault is Fault.HANG:
            time.sleep(self._faults.hang_seconds)
            raise TimeoutError(f"{operation}: no answer within the deadline (injected)")
        result = getattr(self.store, operation)(*args, **kwargs)
        if fault is Fault.AFTER_COMMIT:
            raise self._faults.failure(operation, "committed, reply lost (injected)")
        return result

    def create(self, session: NewSession) -> None:
        """See :meth:`tokenflow.ports.SessionStore.create`."""
        self._call("create", session)

    def rotate(self, rotation: Rotation) -> RotationResult:
        """See :meth:`tokenflow.ports.SessionStore.rotate`."""
        result: RotationResult = self._call("rotate", rotation)
        return result

    def revoke(self, session_id: str) -> bool:
        """See :meth:`tokenflow.ports.SessionStore.revoke`."""
        return bool(self._call("revoke", session_id))

    def revoke_user(self, user_id: str) -> int:
        """See :meth:`tokenflow.ports.SessionStore.revoke_user`."""
        return int(self._call("revoke_user", user_id))

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """See :meth:`tokenflow.ports.SessionStore.sessions_of`."""
        result: Sequence[SessionInfo] = self._call("sessions_of", user_id, now=now)
        return result


class AsyncFaultyStore:
    """The async counterpart of :class:`FaultyStore`.

    ``Fault.HANG`` sleeps for ``hang_seconds`` (default one hour): pair it with
    ``AsyncFlow(port_timeout=...)``, which must cut it short.
    """

    def __init__(self, store: AsyncSessionStore, *, hang_seconds: float = 3600.0) -> None:
        self.store = store
        self._faults = _Faults(hang_seconds)

    def arm(
        self, fault: Fault, operations: Sequence[str] = _ALL, *, error: Exception | None = None
    ) -> None:
        """Make the named operations fail with ``fault`` until :meth:`disarm`.

        ``error``: the exception a failing call raises (the very object, so a
        test can find it in the decision), instead of :class:`InjectedFault`.
        ``Fault.HANG`` always ends in ``TimeoutError``.
        """
        self._faults.arm(fault, operations, error)

    def disarm(self) -> None:
        """Let every call through again."""
        self._faults.fault = None

    @property
    def injected(self) -> int:
        """How many calls have failed on purpose so far."""
        return self._faults.injected

    async def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        fault = self._faults.active(operation)
        if fault is Fault.BEFORE_COMMIT:
            raise self._faults.failure(operation, "failed before commit (injected)")
        if fault is Fault.HANG:
            await asyncio.sleep(self._faults.hang_seconds)
            raise TimeoutError(f"{operation}: no answer within the deadline (injected)")
        result = await getattr(self.store, operation)(*args, **kwargs)
        if fault is Fault.AFTER_COMMIT:
            raise self._faults.failure(operation, "committed, reply lost (injected)")
        return result

    async def create(self, session: NewSession) -> None:
        """See :meth:`tokenflow.ports.AsyncSessionStore.create`."""
        await self._call("create", session)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """See :meth:`tokenflow.ports.AsyncSessionStore.rotate`."""
        result: RotationResult = await self._call("rotate", rotation)
        return result

    async def revoke(self, session_id: str) -> bool:
        """See :meth:`tokenflow.ports.AsyncSessionStore.revoke`."""
        return bool(await self._call("revoke", session_id))

    async def revoke_user(self, user_id: str) -> int:
        """See :meth:`tokenflow.ports.AsyncSessionStore.revoke_user`."""
        return int(await self._call("revoke_user", user_id))

    async def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """See :meth:`tokenflow.ports.AsyncSessionStore.sessions_of`."""
        result: Sequence[SessionInfo] = await self._call("sessions_of", user_id, now=now)
        return result
