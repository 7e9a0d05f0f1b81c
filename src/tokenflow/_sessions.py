"""Session records and the rotation contract shared by the core and every store.

A refresh token carries a random 256-bit *secret*. Stores keep only its
*verifier*, SHA-256(secret): a leaked store holds no usable bearer secret, and
a leaked key ring cannot forge a secret whose verifier matches.

Rotation derives the successor secret as SHA-256(label || secret || salt)
with a fresh random 16-byte salt that the store keeps beside the verifiers.
When the immediate predecessor comes back inside the grace window, the store
returns that salt and the core re-derives the very same successor: parallel
tabs and lost responses converge on one generation. The salt alone is
useless: deriving the successor needs the predecessor secret, which the store
never saw.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "NewSession",
    "Rotation",
    "RotationOutcome",
    "RotationResult",
    "SessionInfo",
    "StoredSession",
    "apply_binding",
    "apply_rotation",
    "derive_successor",
    "verifier_of",
]

SECRET_BYTES = 32
SALT_BYTES = 16
_EMPTY: Mapping[str, str] = MappingProxyType({})


def verifier_of(secret: bytes) -> bytes:
    """What a store keeps for a refresh secret: its SHA-256 digest (32 bytes)."""
    return hashlib.sha256(secret).digest()


_SUCCESSOR_LABEL = b"tokenflow/v1 successor"


def derive_successor(secret: bytes, salt: bytes) -> bytes:
    """The secret of the next refresh generation, from this one and the rotation salt.

    SHA-256 over a label, the 32-byte secret and the 16-byte salt: fixed-length
    inputs, so no length-extension concern, and a third of HMAC's cost here.
    """
    return hashlib.sha256(_SUCCESSOR_LABEL + secret + salt).digest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live session as a store reports it. Holds no verifier and no secret.

    Times are seconds since the epoch. ``generation`` counts rotations (the
    first refresh token is generation 0). ``metadata`` is what the host passed
    at login (user agent, address...), for "your devices" pages.
    ``device_key`` is the public key the session is bound to (device-bound
    sessions: the canonical JWK JSON text), or ``None`` while it is unbound.
    """

    session_id: str
    user_id: str
    created_at: float
    refreshed_at: float
    idle_expires_at: float
    absolute_expires_at: float
    generation: int = 0
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    device_key: str | None = None

    def is_live(self, now: float) -> bool:
        """True while neither the idle nor the absolute lifetime has run out."""
        return now < self.idle_expires_at and now < self.absolute_expires_at


@dataclass(frozen=True, slots=True)
class NewSession:
    """What :meth:`SessionStore.create` stores: a session and its first verifier."""

    info: SessionInfo
    verifier: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rotation:
    """One refresh attempt, to be applied atomically by :meth:`SessionStore.rotate`.

    ``presented`` is the verifier of the secret the client sent; ``successor``
    the verifier of the secret that replaces it, derived with ``salt``.
    ``idle_seconds`` renews the idle expiry (capped at the absolute expiry);
    ``grace_seconds`` is how long after a rotation its predecessor is still
    answered with the same successor. ``device_key`` is the public key a
    proof of possession was verified against (``None`` for a bare refresh
    cookie): a session bound to a key rotates only with that same key.
    """

    session_id: str
    presented: bytes = field(repr=False)
    successor: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    now: float
    idle_seconds: float
    grace_seconds: float
    device_key: str | None = None


class RotationOutcome(enum.Enum):
    """Every way a rotation can end. The store decides; the core maps each to a decision."""

    ROTATED = "rotated"
    """``presented`` was current: the successor is now current."""
    GRACE = "grace"
    """``presented`` was the immediate predecessor, within the grace window:
    nothing changed; the result carries the stored salt to re-derive the successor."""
    REUSED_PREVIOUS = "reused_previous"
    """The immediate predecessor, after the grace window: the session is revoked."""
    REUSED_UNKNOWN = "reused_unknown"
    """Neither current nor predecessor (an older generation): the session is revoked."""
    EXPIRED = "expired"
    """Idle or absolute lifetime over: the session is deleted."""
    UNKNOWN_SESSION = "unknown_session"
    """No such session: never existed, revoked, logged out, or expired and purged."""
    DEVICE_BOUND = "device_bound"
    """The session is bound to a device key and the rotation did not carry that
    key (a bare refresh cookie, or another key): nothing changed."""


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What :meth:`SessionStore.rotate` returns.

    ``session`` is set on ROTATED and GRACE (the state after the call);
    ``salt`` on GRACE only (the salt stored by the rotation being replayed);
    ``generation`` on REUSED_UNKNOWN: the generation the store held when it
    revoked the session. The flow compares it with the generation sealed in
    the presented token to tell a store that lost rotations (token newer
    than the store) from a replay. Every store must set it (the
    conformance kit checks it); one that leaves it ``None`` gets every
    REUSED_UNKNOWN reported as a replay.
    """

    outcome: RotationOutcome
    session: SessionInfo | None = None
    salt: bytes | None = field(default=None, repr=False)
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session's full server-side state, as stores that keep Python objects hold it.

    ``current`` and ``previous`` are verifiers (never secrets); ``rotated_at``
    and ``salt`` describe the latest rotation (both ``None`` before the first).
    """

    info: SessionInfo
    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)
    rotated_at: float | None = None
    salt: bytes | None = field(default=None, repr=False)

    @classmethod
    def new(cls, session: NewSession) -> StoredSession:
        """The state of a session just created."""
        return cls(session.info, session.verifier)


def apply_rotation(
    stored: StoredSession, rotation: Rotation
) -> tuple[RotationResult, StoredSession | None]:
    """The reference rotation rule: ``(result, state to write back or None to delete)``.

    Stores that hold :class:`StoredSession` objects call this under their lock
    or transaction. Stores that run the rule elsewhere (a Lua script, one SQL
    statement) must give the same answers; the conformance kit in
    :mod:`tokenflow.testing` checks that against this function.
    """
    info = stored.info
    now = rotation.now
    if not info.is_live(now):
        return RotationResult(RotationOutcome.EXPIRED), None
    # Before the verifiers: a bound session ignores any refresh token that
    # comes without its key, whatever generation it is (no rotation, no
    # revocation), so a copied cookie can neither refresh nor end it.
    bound = info.device_key
    # A public key is no secret: plain equality.
    if bound is not None and rotation.device_key != bound:
        return RotationResult(RotationOutcome.DEVICE_BOUND), stored
    # Constant-time comparisons: verifiers are digests of unknown secrets, but
    # timing should not say how many leading bytes matched either way.
    if hmac.compare_digest(rotation.presented, stored.current):
        # Built directly rather than with dataclasses.replace, which introspects
        # the fields on every call: this runs on every refresh.
        renewed = SessionInfo(
            info.session_id,
            info.user_id,
            info.created_at,
            now,
            # Sliding renewal never passes the absolute lifetime.
            min(now + rotation.idle_seconds, info.absolute_expires_at),
            info.absolute_expires_at,
            info.generation + 1,
            info.metadata,
            info.device_key,
        )
        state = StoredSession(renewed, rotation.successor, stored.current, now, rotation.salt)
        return RotationResult(RotationOutcome.ROTATED, renewed), state
    if (
        stored.previous is not None
        and stored.rotated_at is not None  # always set with previous; checked, not asserted
        and hmac.compare_digest(rotation.presented, stored.previous)
    ):
        # "grace > 0" first: a server whose clock lags the rotating one sees a
        # negative age, which must not reopen a window configured as closed.
        grace = rotation.grace_seconds
        if grace > 0 and now - stored.rotated_at < grace:
            return RotationResult(RotationOutcome.GRACE, info, stored.salt), stored
        return RotationResult(RotationOutcome.REUSED_PREVIOUS), None
    return RotationResult(RotationOutcome.REUSED_UNKNOWN, generation=info.generation), None


def apply_binding(
    stored: StoredSession, device_key: str, now: float
) -> tuple[SessionInfo | None, StoredSession | None]:
    """The reference binding rule: ``(session after the call, state to write back)``.

    A live session without a key gets ``device_key``; a session that has one
    keeps it (the first key wins, and the caller compares); a session that is
    over answers ``None``. The state is ``None`` when nothing is to be written.
    """
    info = stored.info
    if not info.is_live(now):
        return None, None
    if info.device_key is not None:
        return info, None
    bound = SessionInfo(
        info.session_id,
        info.user_id,
        info.created_at,
        info.refreshed_at,
        info.idle_expires_at,
        info.absolute_expires_at,
        info.generation,
        info.metadata,
        device_key,
    )
    return bound, StoredSession(
        bound, stored.current, stored.previous, stored.rotated_at, stored.salt
    )
