"""Second factors: TOTP (RFC 6238) with recovery codes, for two-step login and step-up.

Needs the ``mfa`` extra (``pip install 'tokenflow[mfa]'``): codes are
computed by ``pyotp`` and the enrolment QR code drawn by ``segno``, locally.
Build a :class:`SecondFactors` over a store and hand it to the flow::

    factors = SecondFactors(keyring, SQLiteSecondFactorStore("app.db"), issuer="Example")
    flow = Flow(keyring, store, users, passwords=passwords, second_factors=factors)

Secrets are sealed with the key ring before they reach the store, recovery
codes are stored as hashes, and every code is accepted once. See docs/mfa.md.
"""

from __future__ import annotations

try:
    from ._service import AsyncSecondFactors, SecondFactors
except ModuleNotFoundError as _missing:  # pragma: no cover - exercised without the extra
    if _missing.name not in ("pyotp", "segno"):
        raise
    raise ImportError(
        "tokenflow.mfa needs the mfa extra: pip install 'tokenflow[mfa]'"
    ) from _missing
from ._types import RecoveryCodes, SecondFactorStore, TotpEnrolment
from .memory import MemorySecondFactorStore

__all__ = [
    "AsyncSecondFactors",
    "MemorySecondFactorStore",
    "RecoveryCodes",
    "SecondFactorStore",
    "SecondFactors",
    "TotpEnrolment",
]
