"""Redis session stores: sessions shared by every application server, expired by TTL.

Layout, under a ``prefix`` (default ``tokenflow``)::

    {prefix}:s:{session_id}   hash: uid ca ra ie ae gen meta cur [prev rot salt] [dk]
    {prefix}:u:{user_id}      sorted set: session ids scored by created_at

The hash holds one session: user id, the four times (``ca`` created,
``ra`` refreshed, ``ie``/``ae`` idle and absolute expiry, as exact decimal
float text), the generation, JSON metadata, the current verifier and, after
the first rotation, the previous verifier, the rotation time and its salt.
Verifiers are SHA-256 digests of refresh secrets, never the secrets.
``dk`` is the device key of a device-bound session, absent while unbound
(hashes written by older releases simply lack it: no migration is needed).

**Rotation is one Lua script on one key**, run with EVALSHA (redis-py's
:class:`redis.commands.core.Script` loads it and retries once if the server
answers NOSCRIPT): a single round trip that Redis executes atomically, so
concurrent rotations of one session are serialised by the server itself. The
script implements :func:`~tokenflow.stores.apply_rotation` line for line and
takes ``now`` from the :class:`~tokenflow.stores.Rotation`, never from the
server clock: every application server judges expiry by its own clock, as it
would with any other store.

**Expiry without a purge job.** Every write sets the session key's TTL to
the session's remaining life, ``min(idle, absolute expiry) - now``, plus
``expiry_margin`` seconds. The TTL is *relative* (PEXPIRE, not PEXPIREAT), so
a skew between the application's clock and the Redis server's clock does not
shorten or stretch sessions, and tests with a fake clock behave. The margin
keeps a just-dead session readable for a while, so that a late refresh is
reported as EXPIRED (its real cause) rather than UNKNOWN_SESSION; either way
the client gets a 401.

**Redis Cluster.** Rotation only knows the session id (that is all a
:class:`~tokenflow.stores.Rotation` carries), so the session key cannot be
hash-tagged by user id: session keys spread over all slots, and the user
index usually lives in another slot than its sessions. No operation is a
multi-key command or multi-key script; each touches one key per command, so
every operation is valid in a cluster. The price is that the index and the
sessions cannot be updated atomically together, and the order of the writes
is chosen so that the index can only ever be *too large*, never too small:

- ``create`` writes the session first, then adds it to the index. An index
  entry therefore always points to a session that existed; if the key is
  missing now, the session is gone for good (ids are 128 random bits and
  never reused), and removing the entry is safe however it races with other
  writers. If the process dies between the two writes, the unindexed session
  is an orphan nobody can use: the refresh token is only sent to the client
  after ``create`` returns. It vanishes with its TTL.
- Sessions that die by TTL, by rotation (reuse, expiry) or by ``revoke`` leave
  stale entries (``revoke`` removes its entry right away; the others cannot,
  as their script may only touch the session key). ``sessions_of`` and
  ``revoke_user`` look every entry up anyway and remove those whose session
  key is gone.
- The index key's TTL is only ever extended: to the longest absolute expiry
  among its sessions plus a day of slack, so it outlives every session it
  lists even across clock skew between application servers.

A prefix containing a ``{...}`` hash tag puts every key in one slot; that is
valid too, and only concentrates the load on one node.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

import redis
import redis.asyncio

from .._backends.redis import check_binary_client
from .._errors import ConfigError
from .._sessions import NewSession, Rotation, RotationOutcome, RotationResult, SessionInfo
from ._values import check_metadata, stored_times

__all__ = ["AsyncRedisStore", "RedisStore"]

# The index outlives its longest-lived session by this much: rotation renews a
# session key by the rotating server's clock but cannot touch the index (it
# may live in another cluster slot), so the slack absorbs clock skew between
# application servers. A day of a few bytes per user is cheap.
_INDEX_SLACK_MS = 86_400_000

# PEXPIRE refuses times that overflow the server's clock; no session needs
# more than a few millennia.
_MAX_TTL_MS = 10**14

# The hash fields, in the order the scripts and sessions_of read them.
_INFO_FIELDS = ("uid", "ca", "ra", "ie", "ae", "gen", "meta", "dk")

# KEYS[1]: the session hash. ARGV[1]: TTL in ms; ARGV[2...]: field, value pairs.
# EXISTS then HSET in one script: a colliding session id is refused instead of
# being merged into another session's hash.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1]: a user index. ARGV[1]: score (created_at), ARGV[2]: session id,
# ARGV[3]: TTL in ms. The TTL only ever grows: a short-lived session added
# later must not cut the life of the index under an older, longer-lived one.
# PTTL is -1 on the key that ZADD just created, so it gets its first TTL here.
_INDEX_LUA = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS[1]: the session hash. Returns the owner's user id, so that the caller
# can drop the index entry, or false if there was no such session.
_REVOKE_LUA = """
local uid = redis.call('HGET', KEYS[1], 'uid')
if uid then
  redis.call('DEL', KEYS[1])
end
return uid
"""

# KEYS[1]: the session hash. ARGV[1]: device key, ARGV[2]: now.
# Binds a live session's device key if it has none; returns the session's
# info fields (dk included) as they are after the call, or false when there
# is no live session.
_BIND_LUA = """
local s = redis.call('HMGET', KEYS[1], 'uid', 'ca', 'ra', 'ie', 'ae', 'gen', 'meta', 'dk')
if not s[1] then
  return false
end
local now = tonumber(ARGV[2])
if not (now < tonumber(s[4]) and now < tonumber(s[5])) then
  return false
end
if not s[8] then
  redis.call('HSET', KEYS[1], 'dk', ARGV[1])
  s[8] = ARGV[1]
end
return s
"""

# KEYS[1]: the session hash.
# ARGV: presented verifier, successor verifier, salt, now, idle_seconds,
#       grace_seconds, expiry margin in ms, device key ('' for none).
# Returns {outcome} or, on rotated and grace, {outcome, uid, ca, ra, ie, ae,
# gen, meta, dk} / {..., meta, salt, dk}: the session as it is after the call;
# on reused_unknown, {outcome, gen}: the generation the session was at.
#
# Numbers: Lua numbers are IEEE doubles, as Python floats are, and the times
# arrive as Python's repr (shortest round-trip text), which tonumber() parses
# exactly. Every comparison and the one addition therefore give the very bits
# apply_rotation computes. Times are written back either as the text received
# or with %.17g, which round-trips any double (tostring() would keep only 14
# digits).
_ROTATE_LUA = """
local key = KEYS[1]
local s = redis.call('HMGET', key,
  'cur', 'prev', 'rot', 'salt', 'uid', 'ca', 'ra', 'ie', 'ae', 'gen', 'meta', 'dk')
local current = s[1]
if not current then
  return {'unknown_session'}
end
local now = tonumber(ARGV[4])
local absolute = tonumber(s[9])
if not (now < tonumber(s[8]) and now < absolute) then
  redis.call('DEL', key)
  return {'expired'}
end
-- A bound session rotates only with its own device key; nothing changes otherwise.
if s[12] and s[12] ~= ARGV[8] then
  return {'device_bound'}
end
-- Plain string equality, not a constant-time compare (Lua has none). Timing
-- leaks nothing useful here: verifiers are SHA-256 digests of 256-bit random
-- secrets, so learning how many leading bytes of a digest matched does not
-- help anyone find a secret whose digest matches.
if ARGV[1] == current then
  -- min(now + idle, absolute), as Python's min() picks it.
  local idle_at = now + tonumber(ARGV[5])
  local idle_text
  if absolute < idle_at then
    idle_at, idle_text = absolute, s[9]
  else
    idle_text = string.format('%.17g', idle_at)
  end
  -- One HSET for every field, the generation included: a command fewer
  -- than HINCRBY + HSET on every rotation.
  local gen = tonumber(s[10]) + 1
  redis.call('HSET', key, 'cur', ARGV[2], 'prev', current, 'rot', ARGV[4],
    'salt', ARGV[3], 'ra', ARGV[4], 'ie', idle_text, 'gen', gen)
  local ttl = math.ceil((idle_at - now) * 1000)
  if not (ttl > 0) then ttl = 0 end
  ttl = ttl + tonumber(ARGV[7])
  if ttl < 1 then ttl = 1 end
  if ttl > 100000000000000 then ttl = 100000000000000 end
  redis.call('PEXPIRE', key, string.format('%d', ttl))
  return {'rotated', s[5], s[6], ARGV[4], idle_text, s[9], gen, s[11], s[12]}
end
if s[2] and ARGV[1] == s[2] then
  local grace = tonumber(ARGV[6])
  if grace > 0 and now - tonumber(s[3]) < grace then
    return {'grace', s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[4], s[12]}
  end
  redis.call('DEL', key)
  return {'reused_previous'}
end
redis.call('DEL', key)
return {'reused_unknown', s[10]}
"""

_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def _text(value: str) -> bytes:
    # surrogatepass: any Python str a host hands us (even a lone surrogate)
    # maps to distinct bytes and back, so ids never fail to encode.
    return value.encode("utf-8", "surrogatepass")


def _untext(value: bytes) -> str:
    return value.decode("utf-8", "surrogatepass")


def _num(value: float) -> str:
    """Exact decimal text of a time: repr is the shortest text that parses back
    to the same double, in Python and in Lua's tonumber() alike."""
    return repr(float(value))


def _ttl_ms(remaining: float, margin_ms: int) -> int:
    """A key TTL: the remaining life (never negative) plus the margin, at least 1 ms.

    ``remaining`` may be infinite (a session that never expires), or NaN when
    both of its times are the same infinity: neither is a number of
    milliseconds, and both get the longest TTL, which is safe (the script and
    sessions_of judge liveness from the stored times, never from the TTL).
    """
    if not remaining < _MAX_TTL_MS / 1000:
        return _MAX_TTL_MS
    ms = math.ceil(remaining * 1000) if remaining > 0 else 0
    return max(1, min(ms + margin_ms, _MAX_TTL_MS))


def _encode_metadata(metadata: Mapping[str, str]) -> bytes:
    # ASCII-only JSON: any str survives (lone surrogates too), byte-for-byte.
    return json.dumps(dict(metadata), separators=(",", ":"), sort_keys=True).encode("ascii")


def _decode_metadata(raw: bytes) -> Mapping[str, str]:
    if raw == b"{}":
        return _NO_METADATA
    decoded: dict[str, str] = json.loads(raw)
    return MappingProxyType(decoded)


def _info_of(session_id: str, row: Sequence[Any]) -> SessionInfo:
    """A SessionInfo from the values of ``_INFO_FIELDS``, in that order."""
    return SessionInfo(
        session_id=session_id,
        user_id=_untext(row[0]),
        created_at=float(row[1]),
        refreshed_at=float(row[2]),
        idle_expires_at=float(row[3]),
        absolute_expires_at=float(row[4]),
        generation=int(row[5]),
        metadata=_decode_metadata(row[6]),
        device_key=_untext(row[7]) if len(row) > 7 and row[7] is not None else None,
    )


class _Layout:
    """Key names and the pure encode/decode half of every operation,
    shared by the sync and async stores so that they cannot drift apart."""

    __slots__ = ("margin_ms", "prefix", "session_prefix", "user_prefix")

    def __init__(self, prefix: str, expiry_margin: float) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("the Redis key prefix must be a non-empty string")
        if not (
            isinstance(expiry_margin, (int, float))
            and math.isfinite(expiry_margin)
            and expiry_margin >= 0
        ):
            raise ConfigError("expiry_margin must be a finite number of seconds >= 0")
        self.prefix = prefix
        self.session_prefix = _text(prefix) + b":s:"
        self.user_prefix = _text(prefix) + b":u:"
        self.margin_ms = math.ceil(expiry_margin * 1000)

    def session_key(self, session_id: str | bytes) -> bytes:
        raw = session_id if isinstance(session_id, bytes) else _text(session_id)
        return self.session_prefix + raw

    def user_key(self, user_id: str | bytes) -> bytes:
        raw = user_id if isinstance(user_id, bytes) else _text(user_id)
        return self.user_prefix + raw

    def create_args(self, session: NewSession) -> tuple[list[Any], list[Any]]:
        """``(session script args, index script args)`` for a new session."""
        info = session.info
        # Lua's tonumber() reads "nan" as NaN, but the TTL could not be computed
        # from it: a NaN expiry is stored as -inf, expired just the same.
        created, refreshed, idle_at, absolute_at = stored_times(info)
        check_metadata(info.metadata)
        # create() carries no `now`: the session's own refreshed_at is the
        # creating server's clock reading, so the TTL is measured from it.
        ttl = _ttl_ms(min(idle_at, absolute_at) - refreshed, self.margin_ms)
        # The index must outlive every renewal, which never passes the absolute expiry.
        index_ttl = min(
            _ttl_ms(absolute_at - refreshed, self.margin_ms) + _INDEX_SLACK_MS, _MAX_TTL_MS
        )
        fields: list[Any] = [
            ttl,
            "uid",
            _text(info.user_id),
            "ca",
            _num(created),
            "ra",
            _num(refreshed),
            "ie",
            _num(idle_at),
            "ae",
            _num(absolute_at),
            "gen",
            int(info.generation),
            "meta",
            _encode_metadata(info.metadata),
            "cur",
            session.verifier,
        ]
        if info.device_key is not None:
            fields += ["dk", _text(info.device_key)]
        return fields, [_num(created), _text(info.session_id), index_ttl]

    def rotate_args(self, rotation: Rotation) -> list[Any]:
        return [
            rotation.presented,
            rotation.successor,
            rotation.salt,
            _num(rotation.now),
            _num(rotation.idle_seconds),
            _num(rotation.grace_seconds),
            self.margin_ms,
            b"" if rotation.device_key is None else _text(rotation.device_key),
        ]

    @staticmethod
    def rotation_result(session_id: str, reply: Sequence[Any]) -> RotationResult:
        outcome = RotationOutcome(bytes(reply[0]).decode("ascii"))
        # A false from Lua (no dk) arrives as None, or is cut off the end of the reply.
        if outcome is RotationOutcome.ROTATED:
            info = _info_of(session_id, [*reply[1:8], reply[8] if len(reply) > 8 else None])
            return RotationResult(outcome, info)
        if outcome is RotationOutcome.GRACE:
            info = _info_of(session_id, [*reply[1:8], reply[9] if len(reply) > 9 else None])
            return RotationResult(outcome, info, bytes(reply[8]))
        if outcome is RotationOutcome.REUSED_UNKNOWN:
            return RotationResult(outcome, generation=int(reply[1]))
        return RotationResult(outcome)

    def bind_args(self, device_key: str, now: float) -> list[Any]:
        return [_text(device_key), _num(now)]

    @staticmethod
    def bound(session_id: str, reply: Sequence[Any] | None) -> SessionInfo | None:
        return None if not reply else _info_of(session_id, reply)

    @staticmethod
    def device_key(row: Sequence[Any], now: float) -> str | None:
        """The device key from HMGET ie ae dk, if the session is live."""
        if row[0] is None or row[1] is None or row[2] is None:
            return None
        if not (now < float(row[0]) and now < float(row[1])):
            return None
        return _untext(row[2])

    @staticmethod
    def listing(
        members: Sequence[bytes], rows: Iterable[Sequence[Any]], user_id: str, now: float
    ) -> tuple[list[SessionInfo], list[bytes]]:
        """``(live sessions oldest first, index members to drop)`` from HMGET rows."""
        live: list[SessionInfo] = []
        stale: list[bytes] = []
        for member, row in zip(members, rows, strict=True):
            # A missing hash is a session gone for good (see the module docs).
            # The uid check is defence in depth: entries are only ever added
            # for the session's own user.
            if row[0] is None or _untext(row[0]) != user_id:
                stale.append(member)
                continue
            info = _info_of(_untext(member), row)
            if info.is_live(now):
                live.append(info)
        live.sort(key=lambda i: (i.created_at, i.session_id))
        return live, stale


class RedisStore:
    """A :class:`~tokenflow.ports.SessionStore` in Redis, for many application servers.

    ``client`` is a :class:`redis.Redis` (or :class:`redis.cluster.RedisCluster`)
    with ``decode_responses=False``; the store never closes it. Its connection
    pool is shared by every thread. ``prefix`` namespaces the keys, so that
    several applications (or test runs) can share one database.
    ``expiry_margin`` is how many seconds a dead session's key outlives its
    expiry (see the module docs); 0 drops keys at the exact expiry.

    Rotation is one EVALSHA round trip, atomic on the server. Expired sessions
    vanish by TTL: there is no purge job. See the module docs for the key
    layout and why it is valid in Redis Cluster.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = "tokenflow",
        expiry_margin: float = 60.0,
    ) -> None:
        self._layout = _Layout(prefix, expiry_margin)
        check_binary_client(client, "RedisStore")
        self._client = client
        self._create = client.register_script(_CREATE_LUA)
        self._index = client.register_script(_INDEX_LUA)
        self._revoke = client.register_script(_REVOKE_LUA)
        self._rotate = client.register_script(_ROTATE_LUA)
        self._bind = client.register_script(_BIND_LUA)

    def __repr__(self) -> str:
        # The client is left out: its repr names hosts, and a URL could carry a password.
        return f"RedisStore(prefix={self._layout.prefix!r})"

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._layout.prefix

    def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``.

        Two round trips: the session, then its index entry (see the module
        docs for why in this order).
        """
        fields, index_args = self._layout.create_args(session)
        sid = session.info.session_id
        if not self._create(keys=[self._layout.session_key(sid)], args=fields):
            raise ValueError("session id already exists")
        self._index(keys=[self._layout.user_key(session.info.user_id)], args=index_args)

    def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the rotation rule atomically, in one script round trip."""
        reply = self._rotate(
            keys=[self._layout.session_key(rotation.session_id)],
            args=self._layout.rotate_args(rotation),
        )
        return self._layout.rotation_result(rotation.session_id, reply)

    def revoke(self, session_id: str) -> bool:
        """Delete one session and its index entry; True if it existed."""
        uid = self._revoke(keys=[self._layout.session_key(session_id)])
        if uid is None:
            return False
        self._client.zrem(self._layout.user_key(uid), _text(session_id))
        return True

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        """Bind a live, unbound session to a device key (one script, atomic); the session."""
        reply = self._bind(
            keys=[self._layout.session_key(session_id)],
            args=self._layout.bind_args(device_key, now),
        )
        return self._layout.bound(session_id, reply)

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None (one HMGET)."""
        row = self._client.hmget(self._layout.session_key(session_id), ["ie", "ae", "dk"])
        return self._layout.device_key(cast("list[Any]", row), now)

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number that still existed.

        Exactly the index entries it read are removed (one ZREM naming them),
        never the index key:
        a session created concurrently keeps its fresh entry.
        """
        index = self._layout.user_key(user_id)
        members = cast("list[bytes]", self._client.zrange(index, 0, -1))
        if not members:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.delete(self._layout.session_key(member))
        deleted: int = sum(pipe.execute())
        self._client.zrem(index, *members)
        return deleted

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first; drops stale index entries."""
        index = self._layout.user_key(user_id)
        members = cast("list[bytes]", self._client.zrange(index, 0, -1))
        if not members:
            return []
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.hmget(self._layout.session_key(member), _INFO_FIELDS)
        live, stale = self._layout.listing(members, pipe.execute(), user_id, now)
        if stale:
            self._client.zrem(index, *stale)
        return live

    def close(self) -> None:
        """Nothing to release: the Redis client is the caller's to close, never the store's."""
        return

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRedisStore:
    """The async variant of :class:`RedisStore`, on a :class:`redis.asyncio.Redis`
    (or :class:`redis.asyncio.RedisCluster`) client, with the same layout and
    semantics: sync and async stores with the same prefix share sessions."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        prefix: str = "tokenflow",
        expiry_margin: float = 60.0,
    ) -> None:
        self._layout = _Layout(prefix, expiry_margin)
        check_binary_client(client, "AsyncRedisStore")
        self._client = client
        self._create = client.register_script(_CREATE_LUA)
        self._index = client.register_script(_INDEX_LUA)
        self._revoke = client.register_script(_REVOKE_LUA)
        self._rotate = client.register_script(_ROTATE_LUA)
        self._bind = client.register_script(_BIND_LUA)

    def __repr__(self) -> str:
        return f"AsyncRedisStore(prefix={self._layout.prefix!r})"

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._layout.prefix

    async def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        fields, index_args = self._layout.create_args(session)
        sid = session.info.session_id
        if not await self._create(keys=[self._layout.session_key(sid)], args=fields):
            raise ValueError("session id already exists")
        await self._index(keys=[self._layout.user_key(session.info.user_id)], args=index_args)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the rotation rule atomically, in one script round trip."""
        reply = await self._rotate(
            keys=[self._layout.session_key(rotation.session_id)],
            args=self._layout.rotate_args(rotation),
        )
        return self._layout.rotation_result(rotation.session_id, reply)

    async def revoke(self, session_id: str) -> bool:
        """Delete one session and its index entry; True if it existed."""
        uid = await self._revoke(keys=[self._layout.session_key(session_id)])
        if uid is None:
            return False
        await self._client.zrem(self._layout.user_key(uid), _text(session_id))
        return True

    async def bind_device(
        self, session_id: str, device_key: str, *, now: float
    ) -> SessionInfo | None:
        """Bind a live, unbound session to a device key (one script, atomic); the session."""
        reply = await self._bind(
            keys=[self._layout.session_key(session_id)],
            args=self._layout.bind_args(device_key, now),
        )
        return self._layout.bound(session_id, reply)

    async def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None (one HMGET)."""
        row = await self._client.hmget(self._layout.session_key(session_id), ["ie", "ae", "dk"])
        return self._layout.device_key(cast("list[Any]", row), now)

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number that still existed."""
        index = self._layout.user_key(user_id)
        members = cast("list[bytes]", await self._client.zrange(index, 0, -1))
        if not members:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.delete(self._layout.session_key(member))
        deleted: int = sum(await pipe.execute())
        await self._client.zrem(index, *members)
        return deleted

    async def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first; drops stale index entries."""
        index = self._layout.user_key(user_id)
        members = cast("list[bytes]", await self._client.zrange(index, 0, -1))
        if not members:
            return []
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.hmget(self._layout.session_key(member), _INFO_FIELDS)
        live, stale = self._layout.listing(members, await pipe.execute(), user_id, now)
        if stale:
            await self._client.zrem(index, *stale)
        return live

    async def aclose(self) -> None:
        """Nothing to release: the Redis client is the caller's to close, never the store's."""
        return

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
