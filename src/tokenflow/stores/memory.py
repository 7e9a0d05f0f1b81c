"""In-memory session stores: one process, safe under threads and asyncio."""

from __future__ import annotations

import threading

from .._sessions import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_binding,
    apply_rotation,
)
from ._values import check_metadata, stored_times

__all__ = ["AsyncMemoryStore", "MemoryStore"]


class MemoryStore:
    """A :class:`~tokenflow.ports.SessionStore` in a dict, guarded by one lock.

    Everything is lost when the process exits, and nothing is shared with
    other processes: use it for tests and single-process development. An
    expired session is dropped when a rotation meets it and skipped by
    :meth:`sessions_of`; call :meth:`purge` to drop the rest.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, StoredSession] = {}
        self._by_user: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._sessions)})"

    def _delete(self, session_id: str) -> bool:
        stored = self._sessions.pop(session_id, None)
        if stored is None:
            return False
        ids = self._by_user.get(stored.info.user_id)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._by_user[stored.info.user_id]
        return True

    def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        info = session.info
        # Checked like every other store's, though a dict could hold anything:
        # all stores accept and refuse the same sessions.
        stored_times(info)
        check_metadata(info.metadata)
        with self._lock:
            if info.session_id in self._sessions:
                raise ValueError("session id already exists")
            self._sessions[info.session_id] = StoredSession.new(session)
            self._by_user.setdefault(info.user_id, set()).add(info.session_id)

    def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the reference rotation rule under the store's lock."""
        with self._lock:
            stored = self._sessions.get(rotation.session_id)
            if stored is None:
                return RotationResult(RotationOutcome.UNKNOWN_SESSION)
            result, state = apply_rotation(stored, rotation)
            if state is None:
                self._delete(rotation.session_id)
            elif state is not stored:
                self._sessions[rotation.session_id] = state
            return result

    def revoke(self, session_id: str) -> bool:
        """Delete one session."""
        with self._lock:
            return self._delete(session_id)

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        """Bind a live, unbound session to a device key; the session after the call."""
        with self._lock:
            stored = self._sessions.get(session_id)
            if stored is None:
                return None
            info, state = apply_binding(stored, device_key, now)
            if state is not None:
                self._sessions[session_id] = state
            return info

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        with self._lock:
            stored = self._sessions.get(session_id)
        if stored is None or not stored.info.is_live(now):
            return None
        return stored.info.device_key

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user."""
        with self._lock:
            ids = list(self._by_user.get(user_id, ()))
            return sum(self._delete(i) for i in ids)

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        with self._lock:
            infos = [self._sessions[i].info for i in self._by_user.get(user_id, ())]
        return sorted(
            (i for i in infos if i.is_live(now)), key=lambda i: (i.created_at, i.session_id)
        )

    def purge(self, *, now: float) -> int:
        """Drop every session that is no longer live; the number dropped."""
        with self._lock:
            dead = [sid for sid, s in self._sessions.items() if not s.info.is_live(now)]
            return sum(self._delete(sid) for sid in dead)

    def close(self) -> None:
        """Nothing to release: present so that code can close any store the same way."""
        return

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncMemoryStore:
    """The async face of :class:`MemoryStore` (same semantics).

    Operations never await while holding the lock, so a plain lock is safe on
    an event loop and across threads alike. Pass ``store`` to share state with
    a sync :class:`MemoryStore`.
    """

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.sync: MemoryStore = store if store is not None else MemoryStore()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        self.sync.create(session)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the reference rotation rule atomically."""
        return self.sync.rotate(rotation)

    async def revoke(self, session_id: str) -> bool:
        """Delete one session."""
        return self.sync.revoke(session_id)

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user."""
        return self.sync.revoke_user(user_id)

    async def bind_device(
        self, session_id: str, device_key: str, *, now: float
    ) -> SessionInfo | None:
        """Bind a live, unbound session to a device key; the session after the call."""
        return self.sync.bind_device(session_id, device_key, now=now)

    async def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        return self.sync.device_key_of(session_id, now=now)

    async def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        return self.sync.sessions_of(user_id, now=now)

    async def purge(self, *, now: float) -> int:
        """Drop every session that is no longer live."""
        return self.sync.purge(now=now)

    async def aclose(self) -> None:
        """Nothing to release: present so that code can close any store the same way."""
        return

    async def __aenter__(self) -> AsyncMemoryStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
