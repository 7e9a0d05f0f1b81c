"""An in-process second-factor store: tests, demos, one process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

__all__ = ["MemorySecondFactorStore"]


class MemorySecondFactorStore:
    """A :class:`~tokenflow.mfa.SecondFactorStore` in dicts, under one lock. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[bytes, float]] = {}
        self._totp: dict[str, tuple[bytes, int]] = {}
        self._codes: dict[str, set[bytes]] = {}

    def __repr__(self) -> str:
        return "MemorySecondFactorStore()"

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        """Keep a pending enrolment (replacing the user's previous one)."""
        with self._lock:
            self._pending[user_id] = (sealed, expires_at)

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        """The sealed secret of the user's live pending enrolment, or None."""
        with self._lock:
            found = self._pending.get(user_id)
        return found[0] if found is not None and now < found[1] else None

    def confirm(self, user_id: str, sealed: bytes, step: int, code_hashes: Sequence[bytes]) -> bool:
        """Turn the pending enrolment ``sealed`` into the confirmed one, atomically."""
        with self._lock:
            found = self._pending.get(user_id)
            if found is None or found[0] != sealed:
                return False
            del self._pending[user_id]
            self._totp[user_id] = (sealed, step)
            self._codes[user_id] = set(code_hashes)
            return True

    def totp_of(self, user_id: str) -> bytes | None:
        """The user's confirmed sealed secret, or None."""
        with self._lock:
            found = self._totp.get(user_id)
        return None if found is None else found[0]

    def use_step(self, user_id: str, step: int) -> bool:
        """Record a used time step if it is later than the last: compare-and-set."""
        with self._lock:
            found = self._totp.get(user_id)
            if found is None or step <= found[1]:
                return False
            self._totp[user_id] = (found[0], step)
            return True

    def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
        """Delete one recovery code; the number left, or None if it was not there."""
        with self._lock:
            codes = self._codes.get(user_id)
            if codes is None or code_hash not in codes:
                return None
            codes.discard(code_hash)
            return len(codes)

    def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[bytes]) -> bool:
        """Replace all of the user's recovery codes; whether the user has a secret."""
        with self._lock:
            if user_id not in self._totp:
                return False
            self._codes[user_id] = set(code_hashes)
            return True

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        with self._lock:
            return len(self._codes.get(user_id, ()))

    def remove(self, user_id: str) -> bool:
        """Forget the user's second factors; whether there was anything."""
        with self._lock:
            had = self._totp.pop(user_id, None) is not None
            had = self._pending.pop(user_id, None) is not None or had
            self._codes.pop(user_id, None)
            return had
