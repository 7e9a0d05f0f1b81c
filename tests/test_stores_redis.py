"""RedisStore and AsyncRedisStore against a real Redis server.

Skipped when no server answers on 127.0.0.1:6379, unless
TOKENFLOW_REQUIRE_SERVICES=1 makes that a failure. Every key lives under a
prefix unique to this run and is deleted at the end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.connection

from tokenflow import ConfigError
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import (
    NewSession,
    Rotation,
    RotationOutcome,
    SessionInfo,
)
from tokenflow.stores.redis import AsyncRedisStore, RedisStore
from tokenflow.testing import (
    check_async_session_store,
    check_session_store,
    run_rotation_race,
    run_rotation_race_async,
)

T0 = 1_700_000_000.5


@pytest.fixture(scope="module")
def client(redis_client: Any) -> Any:
    return redis_client


@pytest.fixture(scope="module")
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture(scope="module")
def sync_store(client: Any, prefix: str) -> RedisStore:
    return RedisStore(client, prefix=prefix)


@pytest.fixture(scope="module")
def async_store(redis_url: str, prefix: str, blocking: Any) -> Iterator[Any]:
    loop, face = blocking
    aclient = redis.asyncio.Redis.from_url(redis_url, socket_timeout=30)
    yield face(AsyncRedisStore(aclient, prefix=prefix))
    loop.run_until_complete(aclient.aclose())


@pytest.fixture(scope="module", params=["sync", "async"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_store")


def _session(
    sid: str, user: str, now: float, idle: float = 1800.0, absolute: float = 86400.0
) -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(sid, user, now, now, now + idle, now + absolute)
    return NewSession(info, verifier_of(secret)), secret


def _rotation(sid: str, secret: bytes, now: float, idle: float = 1800.0) -> tuple[Rotation, bytes]:
    salt = secrets.token_bytes(16)
    successor = derive_successor(secret, salt)
    rotation = Rotation(sid, verifier_of(secret), verifier_of(successor), salt, now, idle, 30.0)
    return rotation, successor


# ------------------------------------------------------------------ the contract (the kit)

KIT_CALLERS = 8


def test_redis_store_conforms(client: Any, prefix: str, sizes: Any) -> None:
    store = RedisStore(client, prefix=prefix)
    rounds = sizes.pick(5, 20)
    check_session_store(lambda: store, threads=KIT_CALLERS, rounds=rounds)


@pytest.mark.asyncio
async def test_async_redis_store_conforms(redis_url: str, prefix: str, sizes: Any) -> None:
    aclient = redis.asyncio.Redis.from_url(redis_url, socket_timeout=30)
    try:
        store = AsyncRedisStore(aclient, prefix=prefix)
        rounds = sizes.pick(5, 20)
        await check_async_session_store(lambda: store, tasks=KIT_CALLERS, rounds=rounds)
    finally:
        await aclient.aclose()


def test_sync_and_async_stores_share_sessions(sync_store: RedisStore, async_store: Any) -> None:
    new, secret = _session("shared-" + secrets.token_hex(4), "shared-user", T0)
    sync_store.create(new)
    rotation, _ = _rotation(new.info.session_id, secret, T0 + 1)
    assert async_store.rotate(rotation).outcome is RotationOutcome.ROTATED
    assert sync_store.rotate(rotation).outcome is RotationOutcome.GRACE


# ------------------------------------------------------------------ layout, TTLs, index


def test_values_are_stored_as_raw_bytes(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    sid = "raw-" + secrets.token_hex(4)
    verifier = bytes(range(256))[::8]  # NUL, 0x80, 0xF8...: no text decoding survives this
    info = SessionInfo(sid, "raw-user", T0, T0, T0 + 60, T0 + 120, metadata={"k": "\udc80 ü"})
    store.create(NewSession(info, verifier))
    key = f"{prefix}:s:{sid}"
    assert client.hget(key, "cur") == verifier
    salt = b"\x00\xff" * 8
    rotation = Rotation(sid, verifier, b"\x00" * 32, salt, T0 + 1, 60.0, 30.0)
    assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
    assert client.hmget(key, "prev", "cur", "salt") == [verifier, b"\x00" * 32, salt]
    grace = store.rotate(rotation)
    assert grace.outcome is RotationOutcome.GRACE
    assert grace.salt == salt
    assert grace.session is not None
    assert grace.session.metadata == {"k": "\udc80 ü"}


def test_keys_carry_ttls_from_the_rotation_clock(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, expiry_margin=60.0)
    user = "ttl-" + secrets.token_hex(4)
    long_new, long_secret = _session(f"{user}-long", user, T0)
    short_new, short_secret = _session(f"{user}-short", user, T0, idle=1800.0, absolute=1200.0)
    store.create(long_new)
    store.create(short_new)
    long_key, short_key, index_key = (
        f"{prefix}:s:{user}-long",
        f"{prefix}:s:{user}-short",
        f"{prefix}:u:{user}",
    )
    # TTL = remaining life (measured from the session's own clock, not the
    # server's: T0 is far in the past) + the 60 s margin.
    assert 1_850_000 < client.pttl(long_key) <= 1_860_000
    assert 1_250_000 < client.pttl(short_key) <= 1_260_000  # absolute (1200 s) < idle
    # The index outlives the longest absolute expiry by a day, and never shrinks.
    index_ttl = client.pttl(index_key)
    assert 172_800_000 < index_ttl <= 172_860_000

    rotation, _ = _rotation(f"{user}-long", long_secret, T0 + 1000.0)
    assert store.rotate(rotation).outcome is RotationOutcome.ROTATED
    assert 1_850_000 < client.pttl(long_key) <= 1_860_000  # renewed from T0 + 1000
    # GRACE writes nothing, so the TTL is not renewed by a replayed token.
    before = client.pttl(long_key)
    replay = Rotation(
        rotation.session_id, rotation.presented, b"x" * 32, b"y" * 16, T0 + 1001, 1e6, 30
    )
    assert store.rotate(replay).outcome is RotationOutcome.GRACE
    assert client.pttl(long_key) <= before

    # Renewal capped at the absolute expiry: min(T0 + 1000 + 1800, T0 + 1200).
    short_rotation, _ = _rotation(f"{user}-short", short_secret, T0 + 1000.0)
    result = store.rotate(short_rotation)
    assert result.outcome is RotationOutcome.ROTATED
    assert result.session is not None
    assert result.session.idle_expires_at == T0 + 1200.0
    assert 250_000 < client.pttl(short_key) <= 260_000
    assert client.pttl(index_key) <= index_ttl  # a rotation never touches the index


def test_index_ttl_only_grows(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, expiry_margin=0.0)
    user = "grow-" + secrets.token_hex(4)
    store.create(_session(f"{user}-a", user, T0, absolute=86400.0)[0])
    first = client.pttl(f"{prefix}:u:{user}")
    store.create(_session(f"{user}-b", user, T0, absolute=60.0)[0])
    assert first - 1000 < client.pttl(f"{prefix}:u:{user}") <= first


def test_dead_session_vanishes_by_real_ttl(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, expiry_margin=0.0)
    user = "real-ttl-" + secrets.token_hex(4)
    now = time.time()
    new, secret = _session(f"{user}-s", user, now, idle=1.0)
    store.create(new)
    key = f"{prefix}:s:{user}-s"
    assert 0 < client.pttl(key) <= 1000
    deadline = time.monotonic() + 5
    while client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.exists(key), "the key should have expired by its TTL"
    rotation, _ = _rotation(f"{user}-s", secret, time.time())
    assert store.rotate(rotation).outcome is RotationOutcome.UNKNOWN_SESSION
    index = f"{prefix}:u:{user}"
    assert client.zcard(index) == 1  # stale until someone looks
    assert store.sessions_of(user, now=time.time()) == []
    assert not client.exists(index)  # cleaned, and empty sorted sets vanish


def test_user_index_lists_and_cleans_stale_entries(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    user = "index-" + secrets.token_hex(4)
    made = [_session(f"{user}-{n}", user, T0 + n) for n in range(5)]
    for new, _ in made:
        store.create(new)
    index = f"{prefix}:u:{user}"
    assert client.zrange(index, 0, -1) == [f"{user}-{n}".encode() for n in range(5)]
    listed = store.sessions_of(user, now=T0 + 10)
    assert [i.session_id for i in listed] == [f"{user}-{n}" for n in range(5)]

    client.delete(f"{prefix}:s:{user}-1")  # as if its TTL ran out
    stranger, _ = _rotation(f"{user}-2", b"\x01" * 32, T0 + 11)
    assert store.rotate(stranger).outcome is RotationOutcome.REUSED_UNKNOWN  # deletes -2
    assert store.revoke(f"{user}-3") is True  # revoke drops its own entry at once
    assert client.zscore(index, f"{user}-3") is None
    assert client.zcard(index) == 4  # -1 and -2 are stale entries now

    assert [i.session_id for i in store.sessions_of(user, now=T0 + 12)] == [
        f"{user}-0",
        f"{user}-4",
    ]
    assert client.zcard(index) == 2  # stale entries removed by the listing
    assert store.revoke_user(user) == 2
    assert not client.exists(index)
    assert store.revoke_user(user) == 0


def test_revoke_user_counts_only_existing_sessions(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    user = "count-" + secrets.token_hex(4)
    for n in range(3):
        store.create(_session(f"{user}-{n}", user, T0)[0])
    client.delete(f"{prefix}:s:{user}-0")
    assert store.revoke_user(user) == 2
    assert not client.exists(f"{prefix}:u:{user}")


class _CreatesDuringRevoke:
    """A client proxy that opens a new session right after revoke_user reads the index."""

    def __init__(self, client: Any, other: RedisStore, new: NewSession) -> None:
        self._client, self._other, self._new = client, other, new

    def zrange(self, *args: Any, **kwargs: Any) -> Any:
        members = self._client.zrange(*args, **kwargs)
        self._other.create(self._new)
        return members

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_revoke_user_keeps_the_entry_of_a_concurrent_login(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    user = "concurrent-" + secrets.token_hex(4)
    store.create(_session(f"{user}-old", user, T0)[0])
    late, _ = _session(f"{user}-late", user, T0 + 1)
    store._client = _CreatesDuringRevoke(client, RedisStore(client, prefix=prefix), late)
    assert store.revoke_user(user) == 1
    # The login that raced the revocation keeps its index entry, so the next
    # "log out everywhere" still finds it.
    store._client = client
    assert [i.session_id for i in store.sessions_of(user, now=T0 + 2)] == [f"{user}-late"]
    assert store.revoke_user(user) == 1


def test_duplicate_session_id_is_refused(store: Any, client: Any, prefix: str) -> None:
    sid = "dup-" + secrets.token_hex(4)
    original, secret = _session(sid, "dup-user-a", T0)
    store.create(original)
    intruder, _ = _session(sid, "dup-user-b", T0)
    with pytest.raises(ValueError, match="already exists"):
        store.create(intruder)
    assert client.zscore(f"{prefix}:u:dup-user-b", sid) is None
    rotation, _ = _rotation(sid, secret, T0 + 1)
    result = store.rotate(rotation)
    assert result.outcome is RotationOutcome.ROTATED
    assert result.session is not None
    assert result.session.user_id == "dup-user-a"


def test_script_cache_flush_is_survived(client: Any, prefix: str) -> None:
    # EVALSHA answers NOSCRIPT after a restart or failover to a server that
    # never saw the script; redis-py's Script then loads it and retries.
    store = RedisStore(client, prefix=prefix)
    new, secret = _session("flush-" + secrets.token_hex(4), "flush-user", T0)
    store.create(new)
    client.script_flush()
    rotation, _ = _rotation(new.info.session_id, secret, T0 + 1)
    assert store.rotate(rotation).outcome is RotationOutcome.ROTATED


# ------------------------------------------------------------------ configuration


def test_configuration_is_validated(client: Any, redis_url: str) -> None:
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses=False"):
        RedisStore(text_client)
    text_client.close()
    with pytest.raises(ConfigError, match="decode_responses=False"):
        AsyncRedisStore(redis.asyncio.Redis.from_url(redis_url, decode_responses=True))
    with pytest.raises(ConfigError, match="prefix"):
        RedisStore(client, prefix="")
    with pytest.raises(ConfigError, match="expiry_margin"):
        RedisStore(client, expiry_margin=-1)
    with pytest.raises(ConfigError, match="expiry_margin"):
        RedisStore(client, expiry_margin=float("nan"))


def test_nan_times_are_refused(client: Any, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    info = SessionInfo("nan-session", "nan-user", T0, T0, float("nan"), T0 + 10)
    with pytest.raises(ValueError, match="NaN"):
        store.create(NewSession(info, b"v" * 32))


def test_repr_shows_no_connection_details() -> None:
    secret_client = redis.Redis(host="10.0.0.1", password="hunter2")
    assert repr(RedisStore(secret_client, prefix="app")) == "RedisStore(prefix='app')"
    secret_client.close()


# ------------------------------------------------------------------ round trips


class CountingConnection(redis.connection.Connection):
    """Counts what goes over the wire: each flush is one request/response round trip."""

    flushes: list[list[bytes]] = []  # noqa: RUF012

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # Every command tokenflow sends is small enough to be packed in one frame.
        frames = [command] if isinstance(command, (bytes, str)) else list(command)
        CountingConnection.flushes.append([bytes(frames[0]).split(b"\r\n")[2]])
        super().send_packed_command(command, check_health)


def test_rotation_is_one_round_trip(client: Any, prefix: str, redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    counted = redis.Redis(connection_pool=pool)
    store = RedisStore(counted, prefix=prefix)
    n = 50
    sessions = [_session(f"rt-{secrets.token_hex(4)}", "rt-user", T0) for _ in range(n)]
    for new, _ in sessions:
        store.create(new)
    warm, _ = _rotation("rt-missing", b"\x00" * 32, T0)
    store.rotate(warm)  # loads the script if this server never saw it
    before = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    CountingConnection.flushes.clear()
    for new, secret in sessions:
        assert store.rotate(_rotation(new.info.session_id, secret, T0 + 1)[0]).outcome is (
            RotationOutcome.ROTATED
        )
    flushes = list(CountingConnection.flushes)
    after = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    commands = {name for names in flushes for name in names}
    print(
        f"\nredis: {n} rotations -> {len(flushes)} round trips, commands {commands}, "
        f"server evalsha calls +{after - before}"
    )
    assert flushes == [[b"EVALSHA"]] * n
    assert after - before >= n  # the server saw them (other clients may add more)
    counted.close()


# ------------------------------------------------------------------ races


@pytest.mark.parametrize("callers", [2, 20, 100])
def test_concurrent_rotations_threads(client: Any, prefix: str, callers: int, sizes: Any) -> None:
    store = RedisStore(client, prefix=prefix)
    trials = sizes.pick(4 if callers == 100 else 20, 200)
    report = run_rotation_race(store, callers=callers, trials=trials, label="redis sync/threads")
    print("\n" + report.summary())
    report.assert_ok()
    assert report.trials == trials
    assert report.outcomes[RotationOutcome.ROTATED] == trials
    assert report.outcomes[RotationOutcome.GRACE] == trials * (callers - 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("callers", [2, 20, 100])
async def test_concurrent_rotations_tasks(
    redis_url: str, prefix: str, callers: int, sizes: Any
) -> None:
    aclient = redis.asyncio.Redis.from_url(redis_url, socket_timeout=30)
    trials = sizes.pick(4 if callers == 100 else 20, 200)
    try:
        store = AsyncRedisStore(aclient, prefix=prefix)
        report = await run_rotation_race_async(
            store, callers=callers, trials=trials, label="redis async/tasks"
        )
    finally:
        await aclient.aclose()
    print("\n" + report.summary())
    report.assert_ok()
    assert report.trials == trials
    assert report.outcomes[RotationOutcome.ROTATED] == trials
    assert report.outcomes[RotationOutcome.GRACE] == trials * (callers - 1)
