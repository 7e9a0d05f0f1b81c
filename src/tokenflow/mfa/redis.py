"""A Redis second-factor store (needs the ``redis`` extra too).

Each user has three keys sharing one hash tag (so they live on one shard of
a cluster): ``<prefix>{<user>}:t``, a hash of the sealed secret and the last
used time step; ``<prefix>{<user>}:p``, the pending enrolment; and
``<prefix>{<user>}:r``, the set of recovery-code hashes. Every change is one
Lua script, which Redis runs atomically: a time step is accepted only if it
is greater than the stored one, a recovery code only by the ``SREM`` that
removes it. Redis must persist (AOF or snapshots) for enrolments to survive
a restart: without it a restart removes every second factor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from .._backends.redis import check_binary_client, check_prefix

__all__ = ["RedisSecondFactorStore"]

_PENDING_KEEP_MS: Final = 86_400_000
"""Redis forgets a pending enrolment a day after it was begun, whatever its own
expiry (which is checked against the caller's ``now``, never Redis's clock)."""

_CONFIRM: Final = """
local p = redis.call('GET', KEYS[1])
if not p or string.sub(p, 9) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'secret', ARGV[1], 'step', ARGV[2])
redis.call('DEL', KEYS[3])
for i = 3, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
return 1
"""
_USE_STEP: Final = """
local s = redis.call('HGET', KEYS[1], 'step')
if not s or tonumber(s) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[1])
return 1
"""
_USE_CODE: Final = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then return redis.call('SCARD', KEYS[1]) end
return -1
"""
_REPLACE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for i = 1, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
"""
_REMOVE: Final = """
local n = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[3])
return n
"""
_EXPIRY: Final = struct.Struct(">d")


class RedisSecondFactorStore:
    """A :class:`~tokenflow.mfa.SecondFactorStore` in Redis (a ``redis.Redis`` client
    with ``decode_responses=False``)."""

    def __init__(self, client: Any, *, prefix: str = "tokenflow:mfa:") -> None:
        check_binary_client(client, "RedisSecondFactorStore")
        self._client = client
        self._prefix = check_prefix(prefix).encode()
        self._confirm = client.register_script(_CONFIRM)
        self._use_step = client.register_script(_USE_STEP)
        self._use_code = client.register_script(_USE_CODE)
        self._replace = client.register_script(_REPLACE)
        self._remove = client.register_script(_REMOVE)

    def __repr__(self) -> str:
        return f"RedisSecondFactorStore(prefix={self._prefix.decode()!r})"

    def _keys(self, user_id: str) -> tuple[bytes, bytes, bytes]:
        base = self._prefix + b"{" + user_id.encode("utf-8", "surrogatepass") + b"}:"
        return base + b"t", base + b"p", base + b"r"

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        """Keep a pending enrolment (replacing the user's previous one)."""
        _, pending, _ = self._keys(user_id)
        self._client.set(pending, _EXPIRY.pack(expires_at) + sealed, px=_PENDING_KEEP_MS)

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        """The sealed secret of the user's live pending enrolment, or None."""
        _, pending, _ = self._keys(user_id)
        value = self._client.get(pending)
        if value is None or len(value) < _EXPIRY.size:
            return None
        (expires_at,) = _EXPIRY.unpack_from(value)
        return bytes(value[_EXPIRY.size :]) if now < expires_at else None

    def confirm(self, user_id: str, sealed: bytes, step: int, code_hashes: Sequence[bytes]) -> bool:
        """Turn the pending enrolment ``sealed`` into the confirmed one (one script)."""
        totp, pending, codes = self._keys(user_id)
        done = self._confirm(keys=[pending, totp, codes], args=[sealed, step, *code_hashes])
        return int(done) == 1

    def totp_of(self, user_id: str) -> bytes | None:
        """The user's confirmed sealed secret, or None."""
        totp, _, _ = self._keys(user_id)
        value = self._client.hget(totp, b"secret")
        return None if value is None else bytes(value)

    def use_step(self, user_id: str, step: int) -> bool:
        """Record a used time step if it is later than the last (one script)."""
        totp, _, _ = self._keys(user_id)
        return int(self._use_step(keys=[totp], args=[step])) == 1

    def use_recovery_code(self, user_id: str, code_hash: bytes) -> int | None:
        """Delete one recovery code; the number left, or None if it was not there."""
        _, _, codes = self._keys(user_id)
        left = int(self._use_code(keys=[codes], args=[code_hash]))
        return None if left < 0 else left

    def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[bytes]) -> bool:
        """Replace all of the user's recovery codes; whether the user has a secret."""
        totp, _, codes = self._keys(user_id)
        return int(self._replace(keys=[totp, codes], args=list(code_hashes))) == 1

    def recovery_codes_left(self, user_id: str) -> int:
        """How many unused recovery codes the user has."""
        _, _, codes = self._keys(user_id)
        return int(self._client.scard(codes))

    def remove(self, user_id: str) -> bool:
        """Forget the user's second factors; whether there was anything."""
        return int(self._remove(keys=list(self._keys(user_id)), args=[])) > 0
