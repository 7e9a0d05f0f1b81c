"""In-process passkey repository and challenge ledger: tests, demos, one process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from ._types import StoredPasskey

__all__ = ["MemoryChallengeLedger", "MemoryPasskeyRepository"]


class MemoryPasskeyRepository:
    """A :class:`~tokenflow.passkeys.PasskeyRepository` in a dict. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[bytes, StoredPasskey] = {}

    def add(self, passkey: StoredPasskey) -> None:
        """Store a new passkey (ValueError if its credential id exists)."""
        with self._lock:
            if passkey.credential_id in self._by_id:
                raise ValueError("a passkey with this credential id exists")
            self._by_id[passkey.credential_id] = passkey

    def find(self, credential_id: bytes) -> StoredPasskey | None:
        """The passkey with this credential id, or None."""
        with self._lock:
            return self._by_id.get(credential_id)

    def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """The user's passkeys, oldest first."""
        with self._lock:
            owned = [p for p in self._by_id.values() if p.user_id == user_id]
        return sorted(owned, key=lambda p: p.created_at)

    def user_handle_of(self, user_id: str) -> bytes | None:
        """The user handle of the user's passkeys, or None."""
        owned = self.passkeys_of(user_id)
        return owned[0].user_handle if owned else None

    def record_use(
        self, credential_id: bytes, sign_count: int, backed_up: bool, now: float
    ) -> bool:
        """Move the counter forward and record the use, atomically."""
        with self._lock:
            passkey = self._by_id.get(credential_id)
            if passkey is None or not _moves_forward(passkey.sign_count, sign_count):
                return False
            self._by_id[credential_id] = replace(
                passkey, sign_count=sign_count, backed_up=backed_up, last_used_at=now
            )
            return True

    def rename(self, user_id: str, credential_id: bytes, name: str) -> bool:
        """Rename one of the user's passkeys; whether it existed."""
        with self._lock:
            passkey = self._by_id.get(credential_id)
            if passkey is None or passkey.user_id != user_id:
                return False
            self._by_id[credential_id] = replace(passkey, name=name)
            return True

    def remove(self, user_id: str, credential_id: bytes) -> bool:
        """Remove one of the user's passkeys; whether it existed."""
        with self._lock:
            passkey = self._by_id.get(credential_id)
            if passkey is None or passkey.user_id != user_id:
                return False
            del self._by_id[credential_id]
            return True


def _moves_forward(stored: int, presented: int) -> bool:
    """The counter rule: strictly forward, or both 0 (an authenticator that does not count)."""
    return presented > stored or presented == stored == 0


class MemoryChallengeLedger:
    """A :class:`~tokenflow.passkeys.ChallengeLedger` in a dict: one process only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[bytes, float] = {}

    def use(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record a used challenge: True the first time only."""
        with self._lock:
            if len(self._used) > 1024:
                # Expired records can go: their challenges no longer verify.
                self._used = {k: e for k, e in self._used.items() if e > now}
            if key in self._used and self._used[key] > now:
                return False
            self._used[key] = expires_at
            return True
