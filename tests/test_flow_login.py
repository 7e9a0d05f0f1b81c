"""Explicit login and logout: switching accounts, no fixation, logout as a success.

``decide`` keeps the flow's order (a valid cookie wins over credentials);
``login`` verifies the credentials whatever the cookies say, and on success
replaces the session those cookies name. ``logout`` answers LoggedOut (200).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from _review import ReviewWorld
from tokenflow import (
    AsyncFlow,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    Forbidden,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
)
from tokenflow.events import (
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    PortFailed,
    SessionRevoked,
    SessionRevokedReason,
    UnauthorizedReason,
)
from tokenflow.ports import ExternalIdentity
from tokenflow.stores import (
    AsyncMemoryStore,
    MemoryStore,
)
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
    Fault,
    FaultyStore,
)

ALICE = PasswordCredentials("alice@example.com", "alice's long passphrase")
BOB = PasswordCredentials("bob@example.com", "bob's long passphrase")
REFRESH = "__Host-tf_refresh"
ACCESS = "__Host-tf_access"


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    memory: MemoryStore = field(default_factory=MemoryStore)
    faulty: FaultyStore = field(init=False)
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        users = FakeUserDirectory()
        users.add_user("alice")
        users.add_user("bob")
        passwords = FakePasswordVerifier()
        passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
        passwords.set_password(BOB.username, BOB.password, user_id="bob")
        self.faulty = FaultyStore(self.memory)
        self.flow = Flow(
            KeyRing.generate(), self.faulty, users, passwords=passwords, clock=self.clock
        )

    def browser(self) -> Browser:
        return Browser(self.clock)

    def live(self, user_id: str) -> list[str]:
        return [s.session_id for s in self.memory.sessions_of(user_id, now=self.clock())]


def signed_in(world: World, credentials: PasswordCredentials = ALICE) -> tuple[Browser, Reissue]:
    browser = world.browser()
    decision = world.flow.login(browser.request("POST", credentials=credentials))
    assert isinstance(decision, Reissue)
    browser.receive(decision.set_cookies)
    return browser, decision


def test_decide_keeps_the_flow_order_a_valid_cookie_wins_over_credentials() -> None:
    world = World()
    browser, _ = signed_in(world)
    decision = world.flow.decide(browser.request("POST", credentials=BOB))
    assert isinstance(decision, Process)
    assert decision.user_id == "alice"


def test_login_as_someone_else_switches_accounts_and_ends_the_old_session() -> None:
    world = World()
    browser, alice = signed_in(world)
    decision = world.flow.login(browser.request("POST", credentials=BOB))
    assert isinstance(decision, Reissue)
    assert decision.user_id == "bob"
    assert decision.events == (
        LoggedIn("bob", decision.session_id, "password"),
        SessionRevoked("alice", alice.session_id, SessionRevokedReason.REPLACED),
    )
    browser.receive(decision.set_cookies)
    assert world.live("alice") == []
    assert world.live("bob") == [decision.session_id]
    # The browser now speaks as Bob; Alice's old refresh token is dead.
    assert world.flow.decide(browser.request()).user_id == "bob"  # type: ignore[union-attr]


def test_logging_in_again_never_continues_the_old_session() -> None:
    world = World()
    browser, first = signed_in(world)
    again = world.flow.login(browser.request("POST", credentials=ALICE))
    assert isinstance(again, Reissue)
    assert again.session_id != first.session_id
    assert world.live("alice") == [again.session_id]


def test_a_stolen_old_cookie_dies_with_the_replaced_session() -> None:
    world = World()
    browser, _ = signed_in(world)
    stolen = browser.clone()
    browser.receive(world.flow.login(browser.request("POST", credentials=ALICE)).set_cookies)
    world.clock.advance(200)  # past the access token's lifetime
    decision = world.flow.decide(stolen.request())
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.SESSION_ENDED


def test_a_failed_login_leaves_the_current_session_and_its_cookies_alone() -> None:
    world = World()
    browser, alice = signed_in(world)
    wrong = PasswordCredentials(BOB.username, "not bob's passphrase")
    decision = world.flow.login(browser.request("POST", credentials=wrong))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED
    assert decision.set_cookies == ()  # nothing cleared
    assert decision.events == (
        LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", BOB.username),
    )
    assert world.live("alice") == [alice.session_id]
    assert isinstance(world.flow.decide(browser.request()), Process)


def test_login_without_credentials_is_unauthorized_and_changes_nothing() -> None:
    world = World()
    browser, alice = signed_in(world)
    decision = world.flow.login(browser.request("POST"))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.NO_CREDENTIALS
    assert decision.set_cookies == ()
    assert world.live("alice") == [alice.session_id]


def test_a_cross_site_login_is_forbidden_even_as_a_get() -> None:
    world = World()
    request = Request(
        "GET", credentials=ALICE, sec_fetch_site="cross-site", origin="https://evil.example"
    )
    assert isinstance(world.flow.login(request), Forbidden)
    assert world.live("alice") == []


def test_store_failure_while_replacing_keeps_the_old_session_whole() -> None:
    world = World()
    browser, alice = signed_in(world)
    world.faulty.arm(Fault.BEFORE_COMMIT, ["revoke"])
    decision = world.flow.login(browser.request("POST", credentials=BOB))
    assert isinstance(decision, Unavailable)
    assert decision.port == "store"
    assert decision.set_cookies == ()  # the browser keeps Alice's cookies
    assert isinstance(decision.events[-1], PortFailed)
    world.faulty.disarm()
    assert world.live("alice") == [alice.session_id]
    assert isinstance(world.flow.decide(browser.request()), Process)


def test_logout_is_a_success_that_clears_both_cookies() -> None:
    world = World()
    browser, alice = signed_in(world)
    decision = world.flow.logout(browser.request("POST"))
    assert isinstance(decision, LoggedOut)
    assert decision.status == 200
    assert [c.split("=")[0] for c in decision.set_cookies] == [ACCESS, REFRESH]
    assert all("Max-Age=0" in c for c in decision.set_cookies)
    assert decision.events == (
        SessionRevoked("alice", alice.session_id, SessionRevokedReason.LOGOUT),
    )


@pytest.mark.parametrize("planted", [1, 8, 9, 200])
def test_logout_tries_every_copy_of_a_planted_refresh_cookie(planted: int) -> None:
    world = World()
    browser, alice = signed_in(world)
    real = browser.cookies()[REFRESH]
    # A sibling subdomain planted copies before the real one: the real copy is last.
    header = "; ".join([f"{REFRESH}=planted{i}" for i in range(planted)] + [f"{REFRESH}={real}"])
    decision = world.flow.logout(Request("POST", cookie_header=header))
    assert isinstance(decision, LoggedOut)
    assert SessionRevoked("alice", alice.session_id, SessionRevokedReason.LOGOUT) in (
        decision.events
    )
    assert world.live("alice") == []


def test_logout_finds_a_copy_anywhere_in_the_first_64_kib() -> None:
    world = World()
    browser, _ = signed_in(world)
    real = browser.cookies()[REFRESH]
    bloat = "; ".join(f"{REFRESH}=x{i}" for i in range(2500))  # about 60 KB of copies
    assert len(bloat) < 64 * 1024 - len(real) - 40
    decision = world.flow.logout(Request("POST", cookie_header=f"{bloat}; {REFRESH}={real}"))
    assert isinstance(decision, LoggedOut)
    assert world.live("alice") == []


def test_the_async_driver_logs_in_and_out_alike() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        users = AsyncFakeUserDirectory()
        users.sync.add_user("alice")
        users.sync.add_user("bob")
        passwords = AsyncFakePasswordVerifier()
        passwords.sync.set_password(ALICE.username, ALICE.password, user_id="alice")
        passwords.sync.set_password(BOB.username, BOB.password, user_id="bob")
        store = AsyncMemoryStore()
        faulty = AsyncFaultyStore(store)
        flow = AsyncFlow(KeyRing.generate(), faulty, users, passwords=passwords, clock=clock)
        browser = Browser(clock)
        alice = await flow.login(browser.request("POST", credentials=ALICE))
        assert isinstance(alice, Reissue)
        browser.receive(alice.set_cookies)
        bob = await flow.login(browser.request("POST", credentials=BOB))
        assert isinstance(bob, Reissue)
        assert SessionRevoked("alice", alice.session_id, SessionRevokedReason.REPLACED) in (
            bob.events
        )
        browser.receive(bob.set_cookies)
        out = await flow.logout(browser.request("POST"))
        assert isinstance(out, LoggedOut)
        assert await store.sessions_of("bob", now=clock()) == []

    asyncio.run(scenario())


def test_flows_built_with_a_config_keep_it() -> None:
    config = FlowConfig(access_ttl=60)
    flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory(), config=config)
    assert flow.config is config


# ================================================================== hostile edge cases


# -- logout cannot be dodged ---------------------------------------------------


def test_logout_revokes_through_a_duplicated_refresh_cookie() -> None:
    world = ReviewWorld()
    browser = world.login()
    refresh = browser.cookies()["__Host-tf_refresh"]
    header = f"__Host-tf_refresh=planted; __Host-tf_refresh={refresh}"
    decision = world.flow.logout(Request(method="POST", cookie_header=header))
    assert isinstance(decision, LoggedOut)
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert world.flow.sessions_of("ada") == []


def test_logout_revokes_through_an_oversized_header() -> None:
    world = ReviewWorld()
    browser = world.login()
    refresh = browser.cookies()["__Host-tf_refresh"]
    header = "bloat=" + "x" * 20_000 + f"; __Host-tf_refresh={refresh}"
    decision = world.flow.logout(Request(method="POST", cookie_header=header))
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert world.flow.sessions_of("ada") == []


# -- external identities --------------------------------------------------------


def test_a_verifier_cannot_vouch_for_another_provider() -> None:
    world = ReviewWorld()
    world.users.link("facebook", "victim-subject", "ada")
    linked: list[ExternalIdentity] = []
    link = world.users.link_external

    def recording_link(identity: ExternalIdentity) -> str | None:
        linked.append(identity)
        return link(identity)

    world.users.link_external = recording_link  # type: ignore[method-assign]

    class SelfHosted:
        """Registered as "selfhosted", but labels its identities as Facebook's."""

        def verify_token(self, token: str, *, now: float) -> ExternalIdentity:
            return ExternalIdentity("facebook", "victim-subject")

    flow = Flow(world.ring, world.store, world.users, external={"selfhosted": SelfHosted()})
    credentials = ExternalTokenCredentials("selfhosted", "anything")
    decision = flow.decide(Browser(world.clock).request("POST", credentials=credentials))
    # The identity reaches the directory under the name the verifier is
    # registered with, so Facebook's user "victim-subject" is never linked.
    assert [(i.provider, i.subject) for i in linked] == [("selfhosted", "victim-subject")]
    assert isinstance(decision, Unauthorized)
    assert LoginFailed(LoginFailedReason.NOT_LINKED, "selfhosted") in decision.events
    assert world.store._sessions == {}


def test_a_verifier_registered_under_another_name_still_logs_in() -> None:
    world = ReviewWorld()
    verifier = FakeExternalTokenVerifier()  # labels its identities "fake-idp"
    world.users.link("corporate-sso", "emp-7", "ada")
    flow = Flow(
        world.ring,
        world.store,
        world.users,
        external={"corporate-sso": verifier},
        clock=world.clock,
    )
    token = verifier.issue("emp-7", expires_at=world.clock() + 60)
    credentials = ExternalTokenCredentials("corporate-sso", token)
    decision = flow.decide(Browser(world.clock).request("POST", credentials=credentials))
    assert isinstance(decision, Reissue)
    assert decision.user_id == "ada"


def test_client_text_in_events_is_clipped() -> None:
    world = ReviewWorld()
    credentials = ExternalTokenCredentials("p" * 10_000, "token")
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=credentials))
    (event,) = [e for e in decision.events if isinstance(e, LoginFailed)]
    assert len(event.method) <= 201
    big = ExternalTokenCredentials(10**5000, "token")  # type: ignore[arg-type]
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=big))
    assert LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, "int") in decision.events
