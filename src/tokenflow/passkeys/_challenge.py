"""Passkey challenges: stateless, authenticated, bound to their ceremony, used once.

A challenge is issued with no store write (an options request is anonymous
for a login: it must cost nothing to ask for one) and carries, under an
HMAC of the key ring's active key, everything its verification needs::

    version (1) | kid length (1) | kid | expires (8, big-endian) | nonce (16)
      | user handle (32, registrations only) | HMAC-SHA-256 (32)

The MAC also covers what the challenge is bound to but does not carry: the
purpose (``login`` or ``register``), the rp id, the origin that asked for
it, and for a registration the session that asked. A challenge issued for
one of these never verifies for another. Being used once is the ledger's
job (:class:`tokenflow.passkeys.ChallengeLedger`), after the signature
verifies, so nobody can burn a challenge without the authenticator.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._keyring import KeyRing

_VERSION: Final = 1
_NONCE: Final = 16
_MAC: Final = 32
HANDLE_BYTES: Final = 32
_LABEL: Final = b"tokenflow/passkey-challenge/v1"


class Verdict(enum.Enum):
    """What opening a challenge found."""

    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Opened:
    """An opened challenge: the verdict and, when valid, the sealed user handle."""

    verdict: Verdict
    user_handle: bytes | None = None


def _mac_key(secret: bytes) -> bytes:
    # A key of its own, derived from the ring's key: a challenge MAC can never
    # be confused with anything else the same key authenticates.
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def _context(purpose: str, rp_id: str, origin: str, subject: str) -> bytes:
    parts = (purpose, rp_id, origin, subject)
    return b"".join(len(p.encode()).to_bytes(2, "big") + p.encode() for p in parts)


def issue(
    keyring: KeyRing,
    *,
    purpose: str,
    rp_id: str,
    origin: str,
    subject: str,
    now: float,
    ttl: int,
    random: Callable[[int], bytes],
    user_handle: bytes | None = None,
) -> bytes:
    """A fresh challenge for one ceremony, valid for ``ttl`` seconds."""
    key = keyring.active
    kid = key.kid.encode()
    body = bytes((_VERSION, len(kid))) + kid + (int(now) + ttl).to_bytes(8, "big")
    body += random(_NONCE) + (user_handle or b"")
    tag = hmac.new(_mac_key(key.secret), _context(purpose, rp_id, origin, subject) + body, "sha256")
    return body + tag.digest()


def open_challenge(
    keyring: KeyRing,
    challenge: bytes,
    *,
    purpose: str,
    rp_id: str,
    origin: str,
    subject: str,
    now: float,
    with_handle: bool,
) -> Opened:
    """Check a challenge's MAC (constant time) before trusting anything in it."""
    fixed = 2 + 8 + _NONCE + _MAC + (HANDLE_BYTES if with_handle else 0)
    if len(challenge) < fixed + 1 or challenge[0] != _VERSION:
        return Opened(Verdict.INVALID)
    kid_len = challenge[1]
    if len(challenge) != fixed + kid_len:
        return Opened(Verdict.INVALID)
    try:
        kid = challenge[2 : 2 + kid_len].decode("ascii")
    except UnicodeDecodeError:
        return Opened(Verdict.INVALID)
    key = keyring.get(kid)
    if key is None:
        return Opened(Verdict.INVALID)
    body, tag = challenge[:-_MAC], challenge[-_MAC:]
    expected = hmac.new(
        _mac_key(key.secret), _context(purpose, rp_id, origin, subject) + body, "sha256"
    ).digest()
    if not hmac.compare_digest(tag, expected):
        return Opened(Verdict.INVALID)
    # Authenticated: the expiry and the handle can be read now.
    start = 2 + kid_len
    expires = int.from_bytes(body[start : start + 8], "big")
    if now >= expires:
        return Opened(Verdict.EXPIRED)
    handle = body[-HANDLE_BYTES:] if with_handle else None
    return Opened(Verdict.VALID, handle)


def expiry_of(challenge: bytes) -> int:
    """The expiry of a challenge :func:`open_challenge` found valid."""
    start = 2 + challenge[1]
    return int.from_bytes(challenge[start : start + 8], "big")


def ledger_key(challenge: bytes) -> bytes:
    """What the ledger records for a used challenge: its SHA-256 (fixed size, no secret)."""
    return hashlib.sha256(challenge).digest()
