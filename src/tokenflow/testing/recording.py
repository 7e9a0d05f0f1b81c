"""Call-recording session stores: see exactly what the flow asked of its store.

:class:`RecordingStore` and :class:`AsyncRecordingStore` wrap a store, pass
every call through unchanged, and append a :class:`RecordedCall` (the method,
its arguments, what it returned or raised) to :attr:`RecordingStore.calls`.
Tests assert on them::

    store = RecordingStore(MemoryStore())
    flow = Flow(config, ring, store, users, passwords, clock=clock)
    flow.decide(request)
    assert store.methods == ["rotate"]

Nothing secret shows in a repr: the store's own repr gives the wrapped type
and the number of calls, and the recorded arguments and results are tokenflow
values whose verifiers and salts are left out of their reprs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._sessions import NewSession, Rotation, RotationResult, SessionInfo
from ..ports import AsyncSessionStore, SessionStore

__all__ = ["AsyncRecordingStore", "RecordedCall", "RecordingStore"]


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One store call: ``method(*args, **kwargs)``, and what came of it."""

    method: str
    """The port method called: ``create``, ``rotate``, ``revoke``, ``revoke_user``
    or ``sessions_of``."""
    args: tuple[object, ...]
    """Positional arguments, as passed."""
    kwargs: Mapping[str, object] = field(default_factory=dict)
    """Keyword arguments, as passed (``now`` for ``sessions_of``)."""
    result: object = None
    """What the call returned (``None`` when it raised)."""
    error: BaseException | None = None
    """What the call raised, or ``None``. Cancellation of an async call counts."""


class _Log:
    """The shared record of both wrappers; safe to append to from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[RecordedCall] = []

    def add(self, call: RecordedCall) -> None:
        with self._lock:
            self.calls.append(call)


class _Recorder:
    """What both wrappers offer besides the port methods."""

    _log: _Log
    store: object

    @property
    def calls(self) -> list[RecordedCall]:
        """Every call so far, oldest first (a copy)."""
        with self._log._lock:
            return list(self._log.calls)

    @property
    def methods(self) -> list[str]:
        """The method names of :attr:`calls`, oldest first."""
        return [c.method for c in self.calls]

    def calls_to(self, method: str) -> list[RecordedCall]:
        """The calls to one method, oldest first."""
        return [c for c in self.calls if c.method == method]

    def clear(self) -> None:
        """Forget every call recorded so far."""
        with self._log._lock:
            self._log.calls.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.store).__name__}, calls={len(self._log.calls)})"


class RecordingStore(_Recorder):
    """A sync store wrapper that records every call (see the module docstring)."""

    def __init__(self, store: SessionStore) -> None:
        self.store: SessionStore = store
        """The wrapped store; calls made on it directly are not recorded."""
        self._log = _Log()

    def _call(self, method: str, *args: object, **kwargs: object) -> Any:
        try:
            result = getattr(self.store, method)(*args, **kwargs)
        except BaseException as exc:
            self._log.add(RecordedCall(method, args, kwargs, error=exc))
            raise
        self._log.add(RecordedCall(method, args, kwargs, result))
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
        result: bool = self._call("revoke", session_id)
        return result

    def revoke_user(self, user_id: str) -> int:
        """See :meth:`tokenflow.ports.SessionStore.revoke_user`."""
        result: int = self._call("revoke_user", user_id)
        return result

    def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """See :meth:`tokenflow.ports.SessionStore.sessions_of`."""
        result: Sequence[SessionInfo] = self._call("sessions_of", user_id, now=now)
        return result


class AsyncRecordingStore(_Recorder):
    """The async counterpart of :class:`RecordingStore`."""

    def __init__(self, store: AsyncSessionStore) -> None:
        self.store: AsyncSessionStore = store
        """The wrapped store; calls made on it directly are not recorded."""
        self._log = _Log()

    async def _call(self, method: str, *args: object, **kwargs: object) -> Any:
        try:
            result = await getattr(self.store, method)(*args, **kwargs)
        except BaseException as exc:
            self._log.add(RecordedCall(method, args, kwargs, error=exc))
            raise
        self._log.add(RecordedCall(method, args, kwargs, result))
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
        result: bool = await self._call("revoke", session_id)
        return result

    async def revoke_user(self, user_id: str) -> int:
        """See :meth:`tokenflow.ports.AsyncSessionStore.revoke_user`."""
        result: int = await self._call("revoke_user", user_id)
        return result

    async def sessions_of(self, user_id: str, *, now: float) -> Sequence[SessionInfo]:
        """See :meth:`tokenflow.ports.AsyncSessionStore.sessions_of`."""
        result: Sequence[SessionInfo] = await self._call("sessions_of", user_id, now=now)
        return result
