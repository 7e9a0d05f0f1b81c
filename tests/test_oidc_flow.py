"""ID-token logins through Flow and AsyncFlow: Reissue, 401 on a bad token, 503 on an outage."""

from __future__ import annotations

import pytest

from _oidc import CLIENT, NOW, google_world
from tokenflow import (
    AsyncFlow,
    ExternalTokenCredentials,
    Flow,
    KeyRing,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
    oidc,
)
from tokenflow.events import (
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    PortFailed,
    UnauthorizedReason,
)
from tokenflow.oidc import ProviderUnavailable
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import AsyncFakeUserDirectory, FakeClock, FakeUserDirectory
from tokenflow.testing.oidc import AsyncFakeKeySetSource, FakeEndpoints, FakeKeySetSource

KEYS = "https://www.googleapis.com/oauth2/v3/certs"


def login(token: str) -> Request:
    return Request("POST", credentials=ExternalTokenCredentials("google", token))


def test_flow_logs_in_with_a_google_id_token() -> None:
    world = google_world()
    users = FakeUserDirectory(allow_signup=True)
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        users,
        external={"google": oidc.google([CLIENT], source=FakeKeySetSource(world.endpoints))},
        clock=FakeClock(NOW),
    )
    decision = flow.decide(login(world.token(subject="g-42")))
    assert isinstance(decision, Reissue)
    assert decision.user_id == "google:g-42"
    assert decision.events == (LoggedIn("google:g-42", decision.session_id, "google"),)
    assert len(store.sessions_of("google:g-42", now=NOW)) == 1


def test_flow_refuses_a_bad_token_with_401() -> None:
    world = google_world()
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(allow_signup=True),
        external={"google": oidc.google([CLIENT], source=FakeKeySetSource(world.endpoints))},
        clock=FakeClock(NOW),
    )
    for token in (world.token(audience="someone-else"), world.token()[:-4] + "AAAA", "x.y.z"):
        decision = flow.decide(login(token))
        assert isinstance(decision, Unauthorized)
        assert decision.reason is UnauthorizedReason.LOGIN_FAILED
        assert decision.events == (LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, "google"),)
        assert decision.set_cookies == ()


def test_flow_answers_503_when_the_key_set_cannot_be_had() -> None:
    world = google_world()
    world.endpoints.fail(KEYS, 503)
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        FakeUserDirectory(allow_signup=True),
        external={"google": oidc.google([CLIENT], source=FakeKeySetSource(world.endpoints))},
        clock=FakeClock(NOW),
    )
    decision = flow.decide(login(world.token(subject="g-1")))
    assert isinstance(decision, Unavailable)
    assert decision.status == 503
    assert decision.set_cookies == ()
    assert isinstance(decision.error, ProviderUnavailable)
    assert decision.events == (PortFailed("external", decision.error),)
    assert store.sessions_of("google:g-1", now=NOW) == []


def test_flow_serves_stale_keys_through_an_outage() -> None:
    world = google_world()
    world.endpoints.cache_control[KEYS] = "max-age=300"
    clock = FakeClock(NOW)
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(allow_signup=True),
        external={"google": oidc.google([CLIENT], source=FakeKeySetSource(world.endpoints))},
        clock=clock,
    )
    assert isinstance(flow.decide(login(world.token())), Reissue)
    world.endpoints.fail(KEYS, 500)
    clock.advance(3600)
    assert isinstance(flow.decide(login(world.token(clock()))), Reissue)


@pytest.mark.asyncio
async def test_async_flow_logs_in_and_fails_the_same_way() -> None:
    world = google_world()
    endpoints: FakeEndpoints = world.endpoints
    flow = AsyncFlow(
        KeyRing.generate(),
        AsyncMemoryStore(),
        AsyncFakeUserDirectory(FakeUserDirectory(allow_signup=True)),
        external={"google": oidc.async_google([CLIENT], source=AsyncFakeKeySetSource(endpoints))},
        clock=FakeClock(NOW),
    )
    decision = await flow.decide(login(world.token(subject="g-7")))
    assert isinstance(decision, Reissue)
    assert decision.events == (LoggedIn("google:g-7", decision.session_id, "google"),)
    refused = await flow.decide(login(world.token(iss="https://accounts.google.com.evil")))
    assert isinstance(refused, Unauthorized)
    assert refused.events == (LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, "google"),)
    endpoints.fail(KEYS, 500)
    cold = AsyncFlow(
        KeyRing.generate(),
        AsyncMemoryStore(),
        AsyncFakeUserDirectory(FakeUserDirectory(allow_signup=True)),
        external={"google": oidc.async_google([CLIENT], source=AsyncFakeKeySetSource(endpoints))},
        clock=FakeClock(NOW),
    )
    down = await cold.decide(login(world.token()))
    assert isinstance(down, Unavailable)
    assert isinstance(down.error, ProviderUnavailable)
