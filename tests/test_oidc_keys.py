"""The key-set cache: lifetimes, staleness, refetch cooldown, single flight, transport.

Time is the ``now`` handed to the verifier (the flow's clock): no test sleeps
through a lifetime or a cooldown.
"""

from __future__ import annotations

import asyncio
import random
import string
import threading
import time
from collections.abc import Mapping

import pytest

from _oidc import CLIENT, NOW, World, google_world
from tokenflow import ConfigError, oidc
from tokenflow.oidc import (
    CachePolicy,
    Fetched,
    FetchError,
    HttpKeySetSource,
    ProviderUnavailable,
    Rejected,
    RejectedReason,
)
from tokenflow.oidc._http import check_url
from tokenflow.oidc._keys import lifetime_of
from tokenflow.testing.oidc import (
    FakeEndpoints,
    FakeKeySetSource,
    FakeProvider,
    LoopbackServer,
)

KEYS = "https://www.googleapis.com/oauth2/v3/certs"


@pytest.mark.parametrize(
    ("cache_control", "age", "lifetime"),
    [
        (None, None, 3600),
        ("public, max-age=20000, must-revalidate, no-transform", None, 20000),
        ("public, max-age=20000", "5000", 15000),
        ("max-age=60", None, 300),
        ("max-age=10000000", None, 86400),
        ("max-age=0", None, 300),
        ("no-cache", None, 300),
        ("no-store, max-age=9000", None, 300),
        ("max-age=soon", None, 300),
        ('max-age="7200"', None, 7200),
        # str.isdigit() passes these, float() refuses them: the cautious end.
        ("max-age=\u00b2", None, 300),
        ("max-age=\u0661\u0662\u0660\u0660\u0660", None, 300),
        ("max-age=\uff17\uff12\uff10\uff10", None, 300),
        ("max-age=7200", "\u00b2", 7200),
        ("max-age=7200", "+5", 7200),
        ("private", None, 3600),
    ],
)
def test_lifetime_from_cache_control_is_clamped(
    cache_control: str | None, age: str | None, lifetime: float
) -> None:
    headers = {}
    if cache_control is not None:
        headers["cache-control"] = cache_control
    if age is not None:
        headers["age"] = age
    assert lifetime_of(Fetched(200, b"", headers)) == lifetime


def fresh(max_age: int = 600) -> World:
    world = google_world()
    world.endpoints.cache_control[KEYS] = f"max-age={max_age}"
    return world


def test_the_key_set_is_refetched_when_its_lifetime_ends() -> None:
    world = fresh(600)
    token = world.token(lifetime=7200)
    for now in (NOW, NOW + 300, NOW + 599):
        assert world.verifier.verify_token(token, now=now) is not None
    assert world.endpoints.hits(KEYS) == 1
    assert world.verifier.verify_token(token, now=NOW + 600) is not None
    assert world.endpoints.hits(KEYS) == 2


def test_stale_keys_serve_through_an_outage_up_to_the_bound() -> None:
    world = fresh(600)
    token = world.token(lifetime=86400)
    assert world.verifier.verify_token(token, now=NOW) is not None
    world.endpoints.fail(KEYS, 503)
    max_stale = world.verifier.cache.max_stale
    for later in (NOW + 600, NOW + 3600, NOW + 600 + max_stale - 1):
        assert world.verifier.verify_token(token, now=later) is not None  # served stale
    with pytest.raises(ProviderUnavailable, match="older than the allowed staleness"):
        world.verifier.verify_token(token, now=NOW + 600 + max_stale)
    world.endpoints.heal()
    assert world.verifier.verify_token(token, now=NOW + 600 + max_stale + 60) is not None


def test_failed_refreshes_are_spaced_out() -> None:
    world = fresh(600)
    token = world.token(lifetime=86400)
    world.verifier.verify_token(token, now=NOW)
    world.endpoints.fail(KEYS, 500)
    start = NOW + 600
    for step in range(100):  # a request every 0.1 s for 10 s
        world.verifier.verify_token(token, now=start + step / 10)
    assert world.endpoints.hits(KEYS) == 2  # the first fetch, and one failed refresh
    world.verifier.verify_token(token, now=start + 10)
    assert world.endpoints.hits(KEYS) == 3


def test_no_key_set_and_no_answer_is_an_outage_not_a_bad_token() -> None:
    world = google_world()
    world.endpoints.fail(KEYS, 500)
    with pytest.raises(ProviderUnavailable, match=r"no key set fetched yet.*500"):
        world.verifier.verify_token(world.token(), now=NOW)


def random_kid(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=20))


def test_a_kid_storm_costs_at_most_one_fetch_per_cooldown() -> None:
    world = google_world()
    provider = world.provider
    assert world.verifier.verify_token(world.token(), now=NOW) is not None
    assert world.endpoints.hits(KEYS) == 1
    rng = random.Random(7)
    body = world.provider.claims(NOW, audience=CLIENT)
    cooldown = world.verifier.cache.refetch_cooldown
    tokens = [provider.sign(body, header={"kid": random_kid(rng)}) for _ in range(200)]
    # 10,000 requests with random kids inside one cooldown (the last 200 forged
    # tokens cycled): every one is refused, and they cost one fetch between them.
    for i in range(10_000):
        now = NOW + cooldown + i * (cooldown - 1) / 10_000
        verdict = world.verifier.check(tokens[i % len(tokens)], now=now)
        assert verdict == Rejected(RejectedReason.UNKNOWN_KEY)
    assert world.endpoints.hits(KEYS) == 2
    # The next cooldown allows one more.
    fresh_kid = provider.sign(body, header={"kid": random_kid(rng)})
    world.verifier.check(fresh_kid, now=NOW + 2 * cooldown + 1)
    assert world.endpoints.hits(KEYS) == 3
    assert world.verifier.verify_token(world.token(), now=NOW + 2 * cooldown + 2) is not None


def test_an_unknown_kid_is_negatively_cached() -> None:
    world = google_world()
    world.verifier.verify_token(world.token(), now=NOW)
    body = world.provider.claims(NOW, audience=CLIENT)
    bogus = world.provider.sign(body, header={"kid": "gone"})
    policy = world.verifier.cache
    world.verifier.check(bogus, now=NOW + policy.refetch_cooldown)
    assert world.endpoints.hits(KEYS) == 2
    # After the cooldown the same kid still costs nothing, until its entry ends.
    for later in (2, 3, 4):
        world.verifier.check(bogus, now=NOW + later * policy.refetch_cooldown)
    assert world.endpoints.hits(KEYS) == 2
    world.verifier.check(bogus, now=NOW + policy.refetch_cooldown + policy.unknown_kid_ttl)
    assert world.endpoints.hits(KEYS) == 3


def test_a_rotated_key_is_picked_up_by_one_refetch() -> None:
    world = google_world()
    assert world.verifier.verify_token(world.token(), now=NOW) is not None
    old = world.provider.kid
    new = world.provider.rotate()
    later = NOW + world.verifier.cache.refetch_cooldown
    token = world.token(later)
    assert world.verifier.verify_token(token, now=later) is not None
    assert world.endpoints.hits(KEYS) == 2
    world.provider.retire(old)
    assert new != old


class BlockingSource:
    """A source whose fetches wait for a gate; counts them."""

    def __init__(self, endpoints: FakeEndpoints) -> None:
        self.inner = FakeKeySetSource(endpoints)
        self.gate = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        with self._lock:
            self.calls += 1
        assert self.gate.wait(5)
        return self.inner.fetch(url, params)


def test_one_refresh_in_flight_and_cold_readers_wait_for_it() -> None:
    world = google_world()
    source = BlockingSource(world.endpoints)
    verifier = oidc.google([CLIENT], source=source)
    token = world.token()
    results: list[object] = []

    def verify() -> None:
        results.append(verifier.verify_token(token, now=NOW))

    threads = [threading.Thread(target=verify) for _ in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # let every thread reach the cache
    source.gate.set()
    for thread in threads:
        thread.join(5)
    assert source.calls == 1
    assert len(results) == 16
    assert all(result is not None for result in results)


def test_readers_with_usable_keys_do_not_wait_for_a_refresh() -> None:
    world = fresh(600)
    source = BlockingSource(world.endpoints)
    source.gate.set()
    verifier = oidc.google([CLIENT], source=source)
    token = world.token(lifetime=7200)
    assert verifier.verify_token(token, now=NOW) is not None
    source.gate.clear()
    refresher = threading.Thread(
        target=verifier.verify_token, args=(token,), kwargs={"now": NOW + 700}
    )
    refresher.start()
    time.sleep(0.05)  # the refresh is now in flight, blocked in the source
    results: list[object] = []
    reader = threading.Thread(
        target=lambda: results.append(verifier.verify_token(token, now=NOW + 701))
    )
    reader.start()
    # A reader that waited for the refresh could not finish while the source is
    # blocked: the gate stays closed until after this join.
    reader.join(30)
    assert not reader.is_alive()
    assert not source.gate.is_set()
    assert results != [None]  # the stale set served
    assert len(results) == 1
    source.gate.set()
    refresher.join(5)
    assert source.calls == 2


@pytest.mark.asyncio
async def test_async_single_flight() -> None:
    world = google_world()
    token = world.token()
    results = await asyncio.gather(
        *(world.averifier.verify_token(token, now=NOW) for _ in range(50))
    )
    assert all(result is not None for result in results)
    assert world.endpoints.hits(KEYS) == 1
    assert world.averifier.key_set_fetches == 1


# -- documents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "is not JSON"),
        (b"[]", "is not a JSON object"),
        (b'{"keys": {}}', "not a JWK Set"),
        (b'{"keys": []}', "no usable signature key"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no usable signature key"),
        (b'{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}', "no usable signature key"),
        (b'{"keys": [{"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"}]}', "no usable"),
    ],
)
def test_malformed_key_sets_give_clear_errors(body: bytes, message: str) -> None:
    world = google_world()
    world.endpoints.serve(KEYS, lambda _params: _answer(body))
    with pytest.raises(ProviderUnavailable, match=message):
        world.verifier.verify_token(world.token(), now=NOW)


def _answer(body: bytes) -> object:
    from tokenflow.testing.oidc import Answer

    return Answer(200, body, {})


def test_private_members_of_published_keys_are_dropped() -> None:
    provider = FakeProvider.generic("https://leaky.example.com")
    endpoints = FakeEndpoints()
    leaked = provider.signing[-1].as_dict(private=True)
    endpoints.serve_json(provider.keys_url, {"keys": [leaked]})
    verifier = oidc.oidc(
        provider.issuer, ["app"], jwks_url=provider.keys_url, source=FakeKeySetSource(endpoints)
    )
    assert verifier.verify_token(provider.id_token(NOW, audience="app"), now=NOW) is not None
    state = verifier._keys._state
    assert state.snapshot is not None
    (key,) = state.snapshot.by_kid.values()
    assert not key[0].is_private


def test_cache_policy_is_validated() -> None:
    for bad in (
        {"refetch_cooldown": 29},
        {"refetch_cooldown": 7200},
        {"max_stale": -1},
        {"max_stale": 8 * 86400},
        {"unknown_kid_ttl": 10},
        {"retry_after_failure": 0},
        {"max_stale": float("nan")},
    ):
        with pytest.raises(ConfigError):
            CachePolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        oidc.google([CLIENT], cache={"max_stale": 1})  # type: ignore[arg-type]


# -- transport ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> object:
    with LoopbackServer() as running:
        yield running


def loop_world(server: LoopbackServer, timeout: float = 0.3) -> tuple[World, HttpKeySetSource]:
    world = google_world()
    server.endpoints = world.endpoints
    source = server.source(timeout=timeout)
    world.verifier = oidc.google([CLIENT], source=source)
    return world, source.inner


def test_over_http_cache_control_is_honoured(server: LoopbackServer) -> None:
    world, _ = loop_world(server)
    world.endpoints.cache_control[KEYS] = "public, max-age=1200"
    token = world.token(lifetime=7200)
    assert world.verifier.verify_token(token, now=NOW) is not None
    assert world.verifier.verify_token(token, now=NOW + 1199) is not None
    assert world.endpoints.hits(KEYS) == 1
    assert world.verifier.verify_token(token, now=NOW + 1200) is not None
    assert world.endpoints.hits(KEYS) == 2


def test_over_http_redirects_are_not_followed(server: LoopbackServer) -> None:
    world, _ = loop_world(server)
    elsewhere = "https://attacker.example/keys"
    world.endpoints.serve_json(elsewhere, world.provider.jwks())
    world.endpoints.redirect(KEYS, server.url_for(elsewhere))
    with pytest.raises(ProviderUnavailable, match="redirect"):
        world.verifier.verify_token(world.token(), now=NOW)
    assert world.endpoints.hits(elsewhere) == 0


@pytest.mark.parametrize("status", [500, 502, 503, 404, 401])
def test_over_http_error_statuses_are_outages(server: LoopbackServer, status: int) -> None:
    world, _ = loop_world(server)
    world.endpoints.fail(KEYS, status)
    with pytest.raises(ProviderUnavailable, match=str(status)):
        world.verifier.verify_token(world.token(), now=NOW)


def test_over_http_a_hanging_server_times_out(server: LoopbackServer) -> None:
    world, _ = loop_world(server, timeout=0.2)
    world.endpoints.hang(KEYS, 3)
    started = time.perf_counter()
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        world.verifier.verify_token(world.token(), now=NOW)
    assert time.perf_counter() - started < 2


def test_over_http_oversized_bodies_are_refused(server: LoopbackServer) -> None:
    world, _ = loop_world(server)
    world.endpoints.oversize(KEYS, 70_000)
    with pytest.raises(ProviderUnavailable, match="body over 65536 bytes"):
        world.verifier.verify_token(world.token(), now=NOW)


def test_over_http_a_dropped_connection_is_an_outage(server: LoopbackServer) -> None:
    world, _ = loop_world(server)
    world.endpoints.unreachable(KEYS)
    with pytest.raises(ProviderUnavailable):
        world.verifier.verify_token(world.token(), now=NOW)


@pytest.mark.asyncio
async def test_async_source_over_http(server: LoopbackServer) -> None:
    world = google_world()
    server.endpoints = world.endpoints
    source = server.async_source(timeout=1.0)
    verifier = oidc.async_google([CLIENT], source=source)
    assert await verifier.verify_token(world.token(), now=NOW) is not None
    world.endpoints.hang(KEYS, 3)
    cold = oidc.async_google([CLIENT], source=source)
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await cold.verify_token(world.token(), now=NOW)
    world.endpoints.heal()
    world.endpoints.oversize(KEYS)
    with pytest.raises(ProviderUnavailable, match="body over"):
        await oidc.async_google([CLIENT], source=source).verify_token(world.token(), now=NOW)
    await source.inner.aclose()


def test_plain_http_only_to_loopback_and_only_when_allowed() -> None:
    assert check_url("https://example.com/keys") == "https://example.com/keys"
    assert check_url("http://127.0.0.1:8080/k", allow_loopback_http=True)
    assert check_url("http://[::1]/k", allow_loopback_http=True)
    for url in ("http://example.com/keys", "http://10.0.0.1/keys", "file:///etc/passwd"):
        with pytest.raises(ConfigError):
            check_url(url, allow_loopback_http=True)
    with pytest.raises(ConfigError, match="allow_loopback_http"):
        check_url("http://127.0.0.1/keys")
    source = HttpKeySetSource()
    with pytest.raises(FetchError, match="allow_loopback_http"):
        source.fetch("http://127.0.0.1:9/keys")
    with pytest.raises(FetchError, match="https"):
        source.fetch("http://example.com/keys")
    source.close()


def test_source_limits_are_bounded() -> None:
    for bad in ({"timeout": 6}, {"timeout": 0}, {"max_bytes": 65537}, {"max_bytes": 0}):
        with pytest.raises(ConfigError):
            HttpKeySetSource(**bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            oidc.AsyncHttpKeySetSource(**bad)  # type: ignore[arg-type]
