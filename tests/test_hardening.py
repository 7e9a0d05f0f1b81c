"""Security properties added after review: each test fails without its fix."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from tokenflow import (
    AsyncFlow,
    ExternalIdentity,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    Forbidden,
    InvalidTokenReason,
    KeyRing,
    LoginFailed,
    LoginFailedReason,
    PasswordCredentials,
    Process,
    Purpose,
    Refreshed,
    Reissue,
    Request,
    SessionRevoked,
    TokenCodec,
    TokenRejected,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
)
from tokenflow._flow import Pending
from tokenflow.stores import (
    MemoryStore,
    Rotation,
    RotationOutcome,
    SessionInfo,
    StoredSession,
    apply_rotation,
)
from tokenflow.testing import (
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)

LOGIN = PasswordCredentials("ada@example.com", "analytical engine")


class World:
    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.ring = KeyRing.generate()
        self.store = MemoryStore()
        self.users = FakeUserDirectory()
        self.users.add_user("ada", {"roles": ["admin"]})
        self.passwords = FakePasswordVerifier()
        self.passwords.set_password(LOGIN.username, LOGIN.password, user_id="ada")
        self.google = FakeExternalTokenVerifier("google")
        self.flow = Flow(
            self.ring,
            self.store,
            self.users,
            passwords=self.passwords,
            external={"google": self.google},
            config=FlowConfig(**config),
            clock=self.clock,
        )

    def login(self) -> Browser:
        browser = Browser(self.clock)
        decision = self.flow.decide(browser.request("POST", credentials=LOGIN))
        assert isinstance(decision, Reissue)
        browser.receive(decision.set_cookies)
        return browser


def _tokens(browser: Browser) -> list[str]:
    return list(browser.cookies().values())


# -- bearer tokens stay out of reprs ----------------------------------------------


def test_reprs_of_requests_decisions_and_pending_state_hold_no_token() -> None:
    world = World()
    browser = world.login()
    tokens = _tokens(browser)
    world.clock.advance(130)
    request = browser.request()
    decision = world.flow.decide(request)
    assert isinstance(decision, Reissue)
    pending = world.flow._core.begin(request, world.clock())
    assert isinstance(pending, Pending)
    minted = [c.partition("=")[2].partition(";")[0] for c in decision.set_cookies]
    for text in (repr(request), repr(decision), str(decision), repr(pending)):
        for token in tokens + minted:
            assert token not in text


# -- nothing changes in the store when tokens cannot be sealed --------------------


def test_refresh_with_unsealable_claims_is_unavailable_and_rotates_nothing() -> None:
    world = World()
    browser = world.login()
    world.clock.advance(130)
    world.users.set_claims("ada", {"bio": "x" * 5000})  # too large for a cookie
    decision = world.flow.decide(browser.request())
    assert isinstance(decision, Unavailable)
    assert decision.port == "users"
    assert decision.set_cookies == ()
    (session,) = world.flow.sessions_of("ada")
    assert session.generation == 0  # not rotated
    world.users.set_claims("ada", {"roles": ["admin"]})
    world.clock.advance(60)  # long past the grace window: a rotation would now be reuse
    again = world.flow.decide(browser.request())
    assert isinstance(again, Reissue)


def test_login_with_unsealable_claims_leaves_no_session() -> None:
    world = World()
    world.users.set_claims("ada", {"not json": object()})
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=LOGIN))
    assert isinstance(decision, Unavailable)
    assert world.flow.sessions_of("ada") == []


def test_a_verifier_returning_a_non_string_user_id_is_a_port_failure() -> None:
    world = World()

    class Broken:
        def verify_password(self, username: str, password: str) -> Any:
            return 42

    flow = Flow(world.ring, world.store, world.users, passwords=Broken(), clock=world.clock)
    decision = flow.decide(Browser(world.clock).request("POST", credentials=LOGIN))
    assert isinstance(decision, Unavailable)
    assert decision.port == "passwords"
    assert world.store.sessions_of("42", world.clock()) == []


# -- the host's clock -----------------------------------------------------------


@pytest.mark.parametrize("now", [math.nan, math.inf, -1.0, 1e20])
def test_an_absurd_now_raises_before_any_session_is_created(now: float) -> None:
    world = World()
    with pytest.raises(ValueError, match="now must be"):
        world.flow.decide(Browser(world.clock).request("POST", credentials=LOGIN), now=now)
    assert world.store._sessions == {}


# -- access tokens must be this flow's ------------------------------------------


def test_an_access_purpose_token_without_a_session_id_is_not_a_login() -> None:
    world = World()
    now = int(world.clock())
    foreign = TokenCodec(world.ring).seal(
        Purpose.ACCESS, {"sub": "ada", "iat": now, "exp": now + 60, "purpose": "reset"}
    )
    decision = world.flow.decide(Request(cookies={"__Host-tf_access": foreign}))
    assert isinstance(decision, Unauthorized)
    assert TokenRejected(Purpose.ACCESS, InvalidTokenReason.BAD_CLAIMS) in decision.events


# -- request types ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"origin": b"https://evil.example"},
        {"cookie_header": b"a=b"},
        {"sec_fetch_site": b"cross-site"},
        {"host": b"app.example"},
        {"method": b"POST"},
        {"cookies": [("a", "b")]},
    ],
)
def test_request_refuses_non_text_headers_at_construction(fields: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Request(**fields)


# -- login and logout CSRF, whatever the method -----------------------------------


def test_a_cross_site_get_with_credentials_is_forbidden() -> None:
    world = World()
    request = Request(
        method="GET", credentials=LOGIN, sec_fetch_site="cross-site", host="app.example"
    )
    decision = world.flow.decide(request)
    assert isinstance(decision, Forbidden)
    assert world.store._sessions == {}


def test_a_cross_site_get_logout_is_forbidden_and_revokes_nothing() -> None:
    world = World()
    browser = world.login()
    request = Request(
        method="GET",
        cookie_header=browser.cookie_header(),
        sec_fetch_site="cross-site",
        host="app.example",
    )
    assert isinstance(world.flow.logout(request), Forbidden)
    assert len(world.flow.sessions_of("ada")) == 1


# -- logout cannot be dodged ---------------------------------------------------


def test_logout_revokes_through_a_duplicated_refresh_cookie() -> None:
    world = World()
    browser = world.login()
    refresh = browser.cookies()["__Host-tf_refresh"]
    header = f"__Host-tf_refresh=planted; __Host-tf_refresh={refresh}"
    decision = world.flow.logout(Request(method="POST", cookie_header=header))
    assert decision.reason is UnauthorizedReason.LOGGED_OUT
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert world.flow.sessions_of("ada") == []


def test_logout_revokes_through_an_oversized_header() -> None:
    world = World()
    browser = world.login()
    refresh = browser.cookies()["__Host-tf_refresh"]
    header = "bloat=" + "x" * 20_000 + f"; __Host-tf_refresh={refresh}"
    decision = world.flow.logout(Request(method="POST", cookie_header=header))
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert world.flow.sessions_of("ada") == []


# -- external identities --------------------------------------------------------


def test_a_verifier_cannot_vouch_for_another_provider() -> None:
    world = World()
    world.users.link("facebook", "victim-subject", "ada")

    class SelfHosted:
        """Registered as "selfhosted", but labels its identities as Facebook's."""

        def verify_token(self, token: str, now: float) -> ExternalIdentity:
            return ExternalIdentity("facebook", "victim-subject")

    flow = Flow(world.ring, world.store, world.users, external={"selfhosted": SelfHosted()})
    credentials = ExternalTokenCredentials("selfhosted", "anything")
    decision = flow.decide(Browser(world.clock).request("POST", credentials=credentials))
    assert isinstance(decision, Unauthorized)
    assert LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, "selfhosted") in decision.events
    assert world.store._sessions == {}


def test_client_text_in_events_is_clipped() -> None:
    world = World()
    credentials = ExternalTokenCredentials("p" * 10_000, "token")
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=credentials))
    (event,) = [e for e in decision.events if isinstance(e, LoginFailed)]
    assert len(event.method) <= 201
    big = ExternalTokenCredentials(10**5000, "token")  # type: ignore[arg-type]
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=big))
    assert LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, "int") in decision.events


# -- a closed grace window stays closed under clock lag -----------------------------


def test_grace_zero_is_reuse_even_from_a_server_whose_clock_lags() -> None:
    info = SessionInfo("s", "u", 1000.0, 1000.0, 3000.0, 9000.0)
    stored = StoredSession(info, b"v1", b"v0", rotated_at=1000.0, salt=b"s" * 16)
    lagging = Rotation("s", b"v0", b"v2", b"t" * 16, 998.0, 1800, 0)
    result, state = apply_rotation(stored, lagging)
    assert result.outcome is RotationOutcome.REUSED_PREVIOUS
    assert state is None


def test_grace_window_still_answers_the_predecessor() -> None:
    world = World(grace_seconds=5)
    browser = world.login()
    world.clock.advance(130)
    tab = browser.clone()
    first = world.flow.decide(browser.request())
    second = world.flow.decide(tab.request())
    assert isinstance(first, Reissue)
    assert isinstance(second, Reissue)
    graces = [e.grace for d in (first, second) for e in d.events if isinstance(e, Refreshed)]
    assert graces == [False, True]


# -- the async driver shares the core's checks --------------------------------------


def test_async_flow_applies_the_same_clock_check() -> None:
    from tokenflow.stores import AsyncMemoryStore

    world = World()
    flow = AsyncFlow(world.ring, AsyncMemoryStore(), AsyncFakeUserDirectory(world.users))
    request = Request(cookie_header="__Host-tf_refresh=x")
    with pytest.raises(ValueError, match="now must be"):
        asyncio.run(flow.decide(request, now=math.nan))


def test_a_valid_access_token_still_processes() -> None:
    world = World()
    browser = world.login()
    assert isinstance(world.flow.decide(browser.request()), Process)
