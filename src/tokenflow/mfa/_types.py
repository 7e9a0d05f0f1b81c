"""The values and the store port of second factors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """A TOTP enrolment waiting for its first code: show it once, then forget it.

    ``secret`` is the base32 secret for typing into an app by hand, ``uri``
    the ``otpauth://`` URI (it holds the secret too) and ``qr_svg`` that URI
    as an inline ``<svg>`` QR code. None of them appear in ``repr``.
    ``expires_at`` is when the pending enrolment lapses (epoch seconds).
    """

    secret: str = field(repr=False)
    uri: str = field(repr=False)
    qr_svg: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True, slots=True)
class RecoveryCodes:
    """A fresh set of recovery codes, as shown to the user once (``xxxx-xxxx-xxxx-xxxx``).

    Only hashes are kept: after this object is gone, nobody can show them
    again. Iterating yields the codes; ``repr`` shows only how many there are.
    """

    codes: tuple[str, ...] = field(repr=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.codes)

    def __len__(self) -> int:
        return len(self.codes)


class SecondFactorStore(Protocol):
    """Where second factors are kept. Contract (checked by
    :func:`tokenflow.testing.mfa.check_second_factor_store`):

    - Secrets arrive sealed (opaque bytes) and are returned byte for byte;
      recovery codes arrive as hashes. The store never sees a usable secret.
    - ``begin`` keeps one pending enrolment per user (a new one replaces
      it) until ``expires_at``; ``pending_of`` returns its sealed secret
      while ``now < expires_at``, else None.
    - ``confirm`` is atomic: only if the user's pending enrolment still holds
      exactly ``sealed``, it becomes the confirmed TOTP secret (replacing any
      earlier one) with ``step`` as its last used time step, the recovery
      codes become exactly ``code_hashes``, the pending enrolment goes, and
      it returns True; otherwise it changes nothing and returns False. Of
      simultaneous confirms of one enrolment, exactly one returns True.
    - ``totp_of`` is the confirmed sealed secret, or None.
    - ``use_step`` is one atomic compare-and-set: it records ``step`` and
      returns True only if the user has a confirmed secret and ``step`` is
      greater than the last used step; else False, nothing changed. Of any
      number of simultaneous calls with one step, exactly one returns True.
    - ``use_recovery_code`` deletes the user's code with that hash and
      returns how many codes the user has left, or None if there was no such
      code (used, never issued, another user's). Of simultaneous uses of one
      code, exactly one gets a number.
    - ``replace_recovery_codes`` swaps all of the user's codes for
      ``code_hashes`` (atomically) if the user has a confirmed secret, and
      says whether they had; ``recovery_codes_left`` counts them.
    - ``remove`` forgets everything of the user (secret, pending enrolment,
      codes) and says whether there was a secret or a pending enrolment.

    Raise only on infrastructure failure.
    """

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        """Keep a pending enrolment (replacing the user's previous one)."""
        ...

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        """The sealed secret of the user's live pending enrolment, or None."""
        ...

    def confirm(self, user_id: str, sealed: bytes, step: int, code_hashes: Sequence[bytes]) -> bool:
        """Turn the pending enrolment ``sealed`` into the confirmed one, atomically."""
        ...

    def totp_of(self, user_id: str) -> bytes | None:
        """The user's confirmed sealed secret, or None."""
        ...

    def use_step(self, user_id: str, step: int) -> bool:
        """Record a used time step if it is later than the last: compare-and-set."""
        ...

    def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
        """Delete one recovery code; the number left, or None if it was not there."""
        ...

    def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[bytes]) -> bool:
        """Replace all of the user's recovery codes; whether the user has a secret."""
        ...

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        ...

    def remove(self, user_id: str) -> bool:
        """Forget the user's second factors; whether there was anything."""
        ...
