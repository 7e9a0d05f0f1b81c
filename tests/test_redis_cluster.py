"""RedisStore and AsyncRedisStore on a Redis Cluster, through redis-py's cluster clients.

The cluster is the one ``.ci/services/redis-cluster.sh start`` runs: three
masters with a replica each, on 127.0.0.1:7000-7005 (``TOKENFLOW_REDIS_CLUSTER``
names another seed node, as ``host:port``). These tests skip when it does not
answer, and fail instead under ``TOKENFLOW_REQUIRE_SERVICES=1``, as CI sets it.

What they show: the conformance kit passes on both stores; racing tabs of
one browser converge (N = 2, 20, 100) with exactly one rotation per race;
injected faults fail closed; and the per-user index stays right when a
user's sessions, and the index itself, live on different masters.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tokenflow import (
    AsyncFlow,
    Flow,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Unauthorized,
    Unavailable,
)
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.events import Refreshed
from tokenflow.stores import NewSession, Rotation, RotationOutcome, SessionInfo
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    Fault,
    FaultyStore,
    InjectedFault,
    RaceReport,
    check_async_session_store,
    check_session_store,
    run_refresh_race,
    run_refresh_race_async,
)

REQUIRED = os.environ.get("TOKENFLOW_REQUIRE_SERVICES", "") == "1"
SEED = os.environ.get("TOKENFLOW_REDIS_CLUSTER", "127.0.0.1:7000")
HOW_TO_START = "start it with: .ci/services/redis-cluster.sh start"


def _missing(message: str) -> None:
    """Skip, or fail when servers are required (CI): a dead cluster never turns a run green."""
    message += f"; {HOW_TO_START}. Set TOKENFLOW_REQUIRE_SERVICES=1 to make this a failure."
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


try:
    import redis
    import redis.asyncio
    from redis.cluster import ClusterNode, RedisCluster
    from redis.crc import key_slot

    from tokenflow.stores.redis import AsyncRedisStore, RedisStore
except ImportError as exc:  # pragma: no cover - the redis extra is missing
    if REQUIRED:
        pytest.fail(f"redis is not installed ({exc})", pytrace=False)
    pytest.skip(f"redis is not installed ({exc})", allow_module_level=True)

LOGIN = PasswordCredentials("ada@example.com", "analytical engine")
USER = "ada"
# Tabs racing one session, and trials of each: every race rotates the token
# twice, so a clean run is 2 * trials rotations whatever the tab count.
RACES = {2: 30, 20: 10, 100: 4}


def _seed() -> tuple[str, int]:
    host, _, port = SEED.rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    host, port = _seed()
    try:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port)], socket_connect_timeout=2, socket_timeout=30
        )
        info = client.cluster_info()
        masters = client.get_primaries()
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        _missing(f"no Redis Cluster answers at {SEED} ({exc})")
    if info.get("cluster_state") != "ok" or len(masters) < 3:
        client.close()
        _missing(f"the Redis Cluster at {SEED} is not healthy (state {info.get('cluster_state')})")
    yield client
    client.close()


@pytest.fixture(scope="module")
def prefix(cluster: RedisCluster) -> Iterator[str]:
    prefix = f"tokenflow_test_cluster_{os.getpid()}_{secrets.token_hex(4)}"
    yield prefix
    for node in cluster.get_primaries():
        keys = list(cluster.scan_iter(match=f"{prefix}:*", count=1000, target_nodes=node))
        for key in keys:
            cluster.delete(key)


@pytest.fixture(scope="module")
def store(cluster: RedisCluster, prefix: str) -> RedisStore:
    return RedisStore(cluster, prefix=prefix)


@pytest_asyncio.fixture
async def async_store(cluster: RedisCluster, prefix: str) -> AsyncIterator[AsyncRedisStore]:
    host, port = _seed()
    client = redis.asyncio.RedisCluster(host=host, port=port, socket_timeout=30)
    yield AsyncRedisStore(client, prefix=prefix)
    await client.aclose()


def _master_of(cluster: RedisCluster, key: str) -> str:
    """The name (host:port) of the master serving ``key``'s slot."""
    node = cluster.get_node_from_key(key)
    assert node is not None
    return str(node.name)


# ------------------------------------------------------------------ the conformance kit


def test_kit_passes_on_the_cluster(store: RedisStore) -> None:
    check_session_store(lambda: store, max_examples=30)


@pytest.mark.asyncio
async def test_async_kit_passes_on_the_cluster(async_store: AsyncRedisStore) -> None:
    await check_async_session_store(lambda: async_store, max_examples=30)


def test_kit_passes_with_every_key_in_one_slot(cluster: RedisCluster, prefix: str) -> None:
    # A hash-tagged prefix puts the index and all sessions in one slot: valid too.
    tagged = RedisStore(cluster, prefix="{" + prefix + "}")
    check_session_store(lambda: tagged, max_examples=10, rounds=2)
    slots = {key_slot(k) for n in cluster.get_primaries() for k in _keys(cluster, n, tagged)}
    assert len(slots) == 1


def _keys(cluster: RedisCluster, node: Any, store: RedisStore) -> list[bytes]:
    return list(cluster.scan_iter(match=f"{store.prefix}:*", count=1000, target_nodes=node))


# ------------------------------------------------------------------ flows: races and faults


def _flow(store: Any, clock: FakeClock) -> Flow:
    users = FakeUserDirectory()
    users.add_user(USER)
    passwords = FakePasswordVerifier()
    passwords.set_password(LOGIN.username, LOGIN.password, user_id=USER)
    return Flow(KeyRing.generate(), store, users, passwords=passwords, clock=clock)


async def _async_flow(store: Any, clock: FakeClock, timeout: float | None = None) -> AsyncFlow:
    users = AsyncFakeUserDirectory()
    users.sync.add_user(USER)
    passwords = AsyncFakePasswordVerifier()
    passwords.sync.set_password(LOGIN.username, LOGIN.password, user_id=USER)
    return AsyncFlow(
        KeyRing.generate(), store, users, passwords=passwords, clock=clock, port_timeout=timeout
    )


def _logged_in(decision: Any, clock: FakeClock) -> Browser:
    assert isinstance(decision, Reissue), decision
    browser = Browser(clock)
    browser.receive(decision.set_cookies)
    return browser


def _assert_clean(report: RaceReport, tabs: int, trials: int) -> None:
    report.assert_ok()
    # Exactly one rotation per race: the race and the tab-by-tab refresh of
    # each trial rotate once each; every other tab got the grace replay.
    assert (report.completed, report.rotations) == (trials, 2 * trials)
    assert report.graces == 2 * tabs * trials
    assert (report.reuses, report.unavailable) == (0, 0)


@pytest.mark.parametrize("tabs", sorted(RACES))
def test_racing_tabs_converge_on_the_cluster(store: RedisStore, tabs: int) -> None:
    clock = FakeClock()
    flow = _flow(store, clock)
    browser = _logged_in(flow.decide(Browser(clock).request("POST", credentials=LOGIN)), clock)
    report = run_refresh_race(flow, browser, tabs=tabs, trials=RACES[tabs], label="cluster")
    _assert_clean(report, tabs, RACES[tabs])


@pytest.mark.asyncio
@pytest.mark.parametrize("tabs", sorted(RACES))
async def test_racing_tasks_converge_on_the_cluster(
    async_store: AsyncRedisStore, tabs: int
) -> None:
    clock = FakeClock()
    flow = await _async_flow(async_store, clock)
    login = await flow.decide(Browser(clock).request("POST", credentials=LOGIN))
    browser = _logged_in(login, clock)
    report = await run_refresh_race_async(
        flow, browser, tabs=tabs, trials=RACES[tabs], label="async cluster"
    )
    _assert_clean(report, tabs, RACES[tabs])


def _fail_closed(decision: Any) -> None:
    assert isinstance(decision, Unavailable)
    assert decision.status == 503
    assert decision.set_cookies == ()  # nothing minted, nothing cleared
    assert isinstance(decision.error, (InjectedFault, TimeoutError))


@pytest.mark.parametrize("fault", [Fault.BEFORE_COMMIT, Fault.AFTER_COMMIT, Fault.HANG])
def test_faults_fail_closed_and_recover(store: RedisStore, fault: Fault) -> None:
    clock = FakeClock()
    faulty = FaultyStore(store, hang_seconds=0.05)
    flow = _flow(faulty, clock)
    browser = _logged_in(flow.decide(Browser(clock).request("POST", credentials=LOGIN)), clock)
    clock.advance(130)  # the access token has run out: the next request refreshes

    faulty.arm(fault, ["rotate"])
    _fail_closed(flow.decide(browser.request()))
    faulty.disarm()

    clock.advance(1)
    retry = flow.decide(browser.request())
    assert isinstance(retry, Reissue)
    (refreshed,) = [e for e in retry.events if isinstance(e, Refreshed)]
    # Nothing was written before commit or on a hang: a fresh rotation. After
    # commit, the reply was lost: the retry gets the same successor (grace).
    assert refreshed.grace is (fault is Fault.AFTER_COMMIT)
    assert refreshed.generation == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [Fault.BEFORE_COMMIT, Fault.AFTER_COMMIT, Fault.HANG])
async def test_async_faults_fail_closed_and_recover(
    async_store: AsyncRedisStore, fault: Fault
) -> None:
    clock = FakeClock()
    faulty = AsyncFaultyStore(async_store)
    # Long enough for a real rotation on a busy machine; a HANG is cut short at it.
    flow = await _async_flow(faulty, clock, timeout=2.0)
    login = await flow.decide(Browser(clock).request("POST", credentials=LOGIN))
    browser = _logged_in(login, clock)
    clock.advance(130)

    faulty.arm(fault, ["rotate"])
    _fail_closed(await flow.decide(browser.request()))
    faulty.disarm()

    clock.advance(1)
    retry = await flow.decide(browser.request())
    assert isinstance(retry, Reissue)
    (refreshed,) = [e for e in retry.events if isinstance(e, Refreshed)]
    assert refreshed.grace is (fault is Fault.AFTER_COMMIT)
    assert refreshed.generation == 1


def test_failed_login_leaves_nothing_usable(store: RedisStore) -> None:
    clock = FakeClock()
    faulty = FaultyStore(store)
    flow = _flow(faulty, clock)
    faulty.arm(Fault.BEFORE_COMMIT, ["create"])
    _fail_closed(flow.decide(Browser(clock).request("POST", credentials=LOGIN)))
    faulty.disarm()
    before = {s.session_id for s in flow.sessions_of(USER)}
    # The failed login opened no session: a successful one opens exactly one.
    _logged_in(flow.decide(Browser(clock).request("POST", credentials=LOGIN)), clock)
    assert len({s.session_id for s in flow.sessions_of(USER)} - before) == 1


# ------------------------------------------------------------------ the index across masters


def _sessions_on_every_master(
    cluster: RedisCluster, store: RedisStore, user_id: str
) -> tuple[list[str], str]:
    """Session ids, one per master, none on the master holding ``user_id``'s index,
    where possible; and that index's master."""
    index_master = _master_of(cluster, f"{store.prefix}:u:{user_id}")
    chosen: dict[str, str] = {}
    masters = {str(n.name) for n in cluster.get_primaries()}
    n = 0
    while set(chosen) != masters:  # three masters: a few dozen draws at most
        sid = f"{user_id}-session-{n}"
        chosen.setdefault(_master_of(cluster, f"{store.prefix}:s:{sid}"), sid)
        n += 1
        assert n < 10_000
    return list(chosen.values()), index_master


def _new(sid: str, user: str, now: float) -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(sid, user, now, now, now + 1800, now + 86400)
    return NewSession(info, verifier_of(secret)), secret


def test_index_spans_masters(cluster: RedisCluster, store: RedisStore) -> None:
    user = f"spread-{secrets.token_hex(4)}"
    sids, index_master = _sessions_on_every_master(cluster, store, user)
    homes = {_master_of(cluster, f"{store.prefix}:s:{sid}") for sid in sids}
    assert len(homes) == 3, "one session on each master"
    # At least two sessions live on another master than the index does.
    assert len(homes - {index_master}) >= 2
    now = 1_700_000_000.0
    secrets_by_sid = {}
    for offset, sid in enumerate(sids):
        new, secret = _new(sid, user, now + offset)
        store.create(new)
        secrets_by_sid[sid] = secret
    assert [s.session_id for s in store.sessions_of(user, now=now + 10)] == sids

    # A session that dies on its own master (as by TTL) leaves a stale entry
    # on the index's master; the listing drops it there.
    gone = sids[1]
    cluster.delete(f"{store.prefix}:s:{gone}")
    assert cluster.zscore(f"{store.prefix}:u:{user}", gone) is not None
    assert [s.session_id for s in store.sessions_of(user, now=now + 10)] == [sids[0], sids[2]]
    assert cluster.zscore(f"{store.prefix}:u:{user}", gone) is None

    # revoke removes the session on its master and its entry on the index's.
    assert store.revoke(sids[0]) is True
    assert cluster.zscore(f"{store.prefix}:u:{user}", sids[0]) is None
    assert [s.session_id for s in store.sessions_of(user, now=now + 10)] == [sids[2]]
    assert store.revoke_user(user) == 1
    assert not cluster.exists(f"{store.prefix}:u:{user}")
    for sid in sids:
        assert not cluster.exists(f"{store.prefix}:s:{sid}")


def test_log_out_everywhere_reaches_every_master(cluster: RedisCluster, store: RedisStore) -> None:
    # Real logins (random session ids) until the user has a session on every
    # master; then "log out everywhere" must end all of them.
    clock = FakeClock()
    flow = _flow(store, clock)
    browsers: list[Browser] = []
    homes: set[str] = set()
    while len(homes) < 3:
        browser = _logged_in(flow.decide(Browser(clock).request("POST", credentials=LOGIN)), clock)
        browsers.append(browser)
        homes = {
            _master_of(cluster, f"{store.prefix}:s:{s.session_id}") for s in flow.sessions_of(USER)
        }
        assert len(browsers) < 200
    listed = flow.sessions_of(USER)
    assert len(listed) >= len(browsers)
    assert flow.revoke_user(USER) == len(listed)
    assert flow.sessions_of(USER) == []
    clock.advance(130)
    for browser in browsers:
        decision = flow.decide(browser.request())
        assert isinstance(decision, Unauthorized), decision
        assert decision.status == 401


@pytest.mark.asyncio
async def test_async_index_spans_masters(cluster: RedisCluster, async_store: Any) -> None:
    sync_view = RedisStore(cluster, prefix=async_store.prefix)
    user = f"aspread-{secrets.token_hex(4)}"
    sids, _ = _sessions_on_every_master(cluster, sync_view, user)
    now = 1_700_000_000.0
    pairs = [_new(sid, user, now + i) for i, sid in enumerate(sids)]
    for new, _ in pairs:
        await async_store.create(new)
    assert [s.session_id for s in await async_store.sessions_of(user, now=now + 5)] == sids
    # Sync and async stores share the layout: one rotates, the other sees it.
    sid, secret = sids[2], pairs[2][1]
    salt = secrets.token_bytes(16)
    rotation = Rotation(
        sid,
        verifier_of(secret),
        verifier_of(derive_successor(secret, salt)),
        salt,
        now + 6,
        1800.0,
        5.0,
    )
    assert (await async_store.rotate(rotation)).outcome is RotationOutcome.ROTATED
    assert sync_view.rotate(rotation).outcome is RotationOutcome.GRACE
    assert await async_store.revoke_user(user) == 3
    assert sync_view.sessions_of(user, now=now + 7) == []
