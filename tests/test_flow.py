"""The whole decision flow, branch by branch, driven the way a browser drives it.

Every test builds a :class:`Flow` over a :class:`MemoryStore` (behind a
counting proxy), the fake identity ports and a :class:`FakeClock`, and talks
to it through :class:`Browser` cookie jars. Time only moves when a test says so.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from _review import ADA_LOGIN, ReviewWorld, tokens_of
from tokenflow import (
    AsyncFlow,
    ConfigError,
    CookiePolicy,
    Decision,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    Forbidden,
    Key,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
)
from tokenflow._flow import Pending
from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.events import (
    AmbiguousCookie,
    CrossOriginRejected,
    InvalidTokenReason,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    PortFailed,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    ReuseDetected,
    ReuseDetectedReason,
    SessionRevoked,
    SessionRevokedReason,
    TokenRejected,
    UnauthorizedReason,
)
from tokenflow.stores import (
    AsyncMemoryStore,
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
    Fault,
    FaultyStore,
    RecordingStore,
)
from tokenflow.tokens import Purpose, TokenCodec

T0 = 1_700_000_000.0
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Lax"
CLEAR_ACCESS = f"{ACCESS}=; Max-Age=0; {ATTRIBUTES}"
CLEAR_REFRESH = f"{REFRESH}=; Max-Age=0; {ATTRIBUTES}"
ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "Tr0ub4dor&3"


# -- the world a test runs in ------------------------------------------------------


@dataclass
class World:
    clock: FakeClock
    ring: KeyRing
    memory: MemoryStore
    faults: FaultyStore
    store: RecordingStore
    users: FakeUserDirectory
    passwords: FakePasswordVerifier
    google: FakeExternalTokenVerifier
    flow: Flow
    config: FlowConfig = field(default_factory=FlowConfig)

    def browser(self) -> Browser:
        return Browser(self.clock)

    def store_down(self, outage: Exception | None) -> None:
        """Every store call raises ``outage`` (recorded all the same); None ends it."""
        if outage is None:
            self.faults.disarm()
        else:
            self.faults.arm(Fault.BEFORE_COMMIT, error=outage)

    def send(
        self,
        browser: Browser,
        method: str = "GET",
        *,
        credentials: PasswordCredentials | ExternalTokenCredentials | None = None,
        same_origin: bool = True,
        flow: Flow | None = None,
    ) -> Decision:
        request = browser.request(method, credentials=credentials, same_origin=same_origin)
        decision = (flow or self.flow).decide(request)
        browser.receive(decision.set_cookies)
        return decision

    def login(self, browser: Browser, username: str = ALICE, password: str = PASSWORD) -> Reissue:
        decision = self.send(browser, "POST", credentials=PasswordCredentials(username, password))
        assert isinstance(decision, Reissue), decision
        return decision

    def logout(self, browser: Browser, *, same_origin: bool = True) -> Decision:
        decision = self.flow.logout(browser.request("POST", same_origin=same_origin))
        browser.receive(decision.set_cookies)
        return decision

    def live(self, user_id: str = "alice") -> list[str]:
        return [s.session_id for s in self.memory.sessions_of(user_id, now=self.clock())]

    def rebuild(self, ring: KeyRing) -> Flow:
        """Another server process over the same store and users, with another key ring."""
        return Flow(
            ring,
            self.store,
            self.users,
            passwords=self.passwords,
            external={"google": self.google},
            config=self.config,
            clock=self.clock,
        )


def make_world(config: FlowConfig | None = None, *, with_passwords: bool = True) -> World:
    config = config or FlowConfig()
    clock = FakeClock(T0)
    ring = KeyRing(Key.generate("k1"))
    memory = MemoryStore()
    faults = FaultyStore(memory)
    store = RecordingStore(faults)
    users = FakeUserDirectory()
    users.add_user("alice", {"roles": ["editor"], "tenant": "acme"})
    users.add_user("bob", {"roles": ["viewer"]})
    passwords = FakePasswordVerifier()
    passwords.set_password(ALICE, PASSWORD, user_id="alice")
    passwords.set_password(BOB, BOB_PASSWORD, user_id="bob")
    google = FakeExternalTokenVerifier("google")
    users.link("google", "g-alice", "alice")
    flow = Flow(
        ring,
        store,
        users,
        passwords=passwords if with_passwords else None,
        external={"google": google},
        config=config,
        clock=clock,
    )
    return World(clock, ring, memory, faults, store, users, passwords, google, flow, config)


@pytest.fixture
def world() -> World:
    return make_world()


# -- small readers -----------------------------------------------------------------


def set_cookie_map(set_cookies: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``{name: (value, max_age)}`` of Set-Cookie header values."""
    out: dict[str, tuple[str, int]] = {}
    for header in set_cookies:
        pair, _, attributes = header.partition(";")
        name, _, value = pair.partition("=")
        match = re.search(r"Max-Age=(-?\d+)", attributes)
        assert match is not None, header
        out[name] = (value, int(match.group(1)))
    return out


def tokens(decision: Decision) -> dict[str, str]:
    return {name: value for name, (value, _) in set_cookie_map(decision.set_cookies).items()}


def header(**cookies: str) -> str:
    names = {"access": ACCESS, "refresh": REFRESH}
    return "; ".join(f"{names.get(k, k)}={v}" for k, v in cookies.items())


def with_cookies(access: str | None = None, refresh: str | None = None, **kw: Any) -> Request:
    """A GET request carrying exactly the given auth cookies (whatever their Max-Age said)."""
    jar = {}
    if access is not None:
        jar["access"] = access
    if refresh is not None:
        jar["refresh"] = refresh
    return Request(cookie_header=header(**jar) or None, **kw)


def refresh_only(browser: Browser) -> Browser:
    """The browser without its access cookie, so that its next request refreshes."""
    browser.jar.pop(ACCESS, None)
    return browser


def open_refresh(ring: KeyRing, token: str, now: float) -> dict[str, Any]:
    return TokenCodec(ring).open(Purpose.REFRESH, token, now=now)


def kid_of(token: str) -> str:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw[2 : 2 + raw[1]].decode()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def tamper(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def is_clearing(set_cookie: str) -> bool:
    return bool(re.match(r"[^=]+=; Max-Age=0;", set_cookie))


# -- 1. the access token: stateless ------------------------------------------------


def test_valid_access_token_processes_without_touching_any_port(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(119)
    world.store.clear()
    world.store_down(ConnectionError("the store must not be called"))
    world.users.unavailable = True

    decision = world.send(browser)

    assert type(decision) is Process
    assert decision.status == 200
    assert decision.set_cookies == ()
    assert decision.events == ()
    assert decision.user_id == "alice"
    assert decision.session_id == login.session_id
    assert decision.claims["roles"] == ["editor"]
    assert decision.claims["tenant"] == "acme"
    assert decision.claims["iat"] == int(T0)
    assert decision.claims["exp"] == int(T0) + 120
    assert world.store.methods == []


def test_login_reissue_sets_both_cookies_with_secure_attributes(world: World) -> None:
    login = world.login(world.browser())
    assert login.status == 200
    assert len(login.set_cookies) == 2
    cookies = set_cookie_map(login.set_cookies)
    assert set(cookies) == {ACCESS, REFRESH}
    assert cookies[ACCESS][1] == 120
    assert cookies[REFRESH][1] == 1800
    for set_cookie in login.set_cookies:
        assert set_cookie.endswith(ATTRIBUTES)
        assert not is_clearing(set_cookie)
    assert login.claims["sub"] == "alice"
    assert login.claims["sid"] == login.session_id
    assert login.claims["roles"] == ["editor"]


def _access_variants(login: Reissue) -> dict[str, tuple[str, InvalidTokenReason]]:
    sent = tokens(login)
    return {
        "expired": (sent[ACCESS], InvalidTokenReason.EXPIRED),
        "tampered": (tamper(sent[ACCESS]), InvalidTokenReason.TAG_MISMATCH),
        "refresh token in the access cookie": (sent[REFRESH], InvalidTokenReason.TAG_MISMATCH),
        "garbage": ("not a token!", InvalidTokenReason.MALFORMED),
    }


@pytest.mark.parametrize(
    "variant", ["expired", "tampered", "refresh token in the access cookie", "garbage"]
)
def test_rejected_access_token_is_reported_then_the_refresh_token_takes_over(
    world: World, variant: str
) -> None:
    login = world.login(world.browser())
    access, failure = _access_variants(login)[variant]
    now = world.clock.advance(125)  # past the access token's exp + leeway
    world.store.clear()

    decision = world.flow.decide(with_cookies(access, tokens(login)[REFRESH]), now=now)

    assert isinstance(decision, Reissue)
    assert decision.events == (
        TokenRejected(Purpose.ACCESS, failure),
        Refreshed("alice", login.session_id, 1, False),
    )
    assert decision.session_id == login.session_id
    assert decision.claims["exp"] == int(now) + 120
    assert world.store.methods == ["rotate"]


def test_tokens_from_the_future_are_not_yet_valid(world: World) -> None:
    login = world.login(world.browser())
    sent = tokens(login)
    decision = world.flow.decide(with_cookies(sent[ACCESS], sent[REFRESH]), now=T0 - 6)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.NO_CREDENTIALS
    assert decision.events == (
        TokenRejected(Purpose.ACCESS, InvalidTokenReason.NOT_YET_VALID),
        TokenRejected(Purpose.REFRESH, InvalidTokenReason.NOT_YET_VALID),
    )
    assert world.store.methods == ["create"]
    # Within the leeway, a server whose clock is slightly behind accepts them.
    assert isinstance(world.flow.decide(with_cookies(sent[ACCESS]), now=T0 - 5), Process)


def test_access_token_in_the_refresh_cookie_is_rejected_as_a_wrong_purpose(world: World) -> None:
    login = world.login(world.browser())
    access = tokens(login)[ACCESS]
    decision = world.flow.decide(with_cookies(refresh=access), now=T0 + 1)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.NO_CREDENTIALS
    assert decision.events == (TokenRejected(Purpose.REFRESH, InvalidTokenReason.TAG_MISMATCH),)
    assert decision.set_cookies == (CLEAR_REFRESH,)
    assert world.live() == [login.session_id]


# -- 2. the refresh token: rotation --------------------------------------------------


def test_rotation_reissues_both_tokens_and_the_new_ones_work(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    first = tokens(login)
    world.clock.advance(130)  # the access cookie's Max-Age ran out

    rotated = world.send(browser)

    assert isinstance(rotated, Reissue)
    assert rotated.status == 200
    assert rotated.events == (Refreshed("alice", login.session_id, 1, False),)
    assert rotated.session_id == login.session_id
    new = tokens(rotated)
    assert set(new) == {ACCESS, REFRESH}
    assert new[ACCESS] != first[ACCESS]
    assert new[REFRESH] != first[REFRESH]
    assert rotated.claims["exp"] == int(T0) + 130 + 120
    assert [s.generation for s in world.memory.sessions_of("alice", now=world.clock())] == [1]

    # The new access token serves requests, the new refresh token rotates again.
    assert isinstance(world.send(browser), Process)
    world.clock.advance(130)
    again = world.send(browser)
    assert isinstance(again, Reissue)
    assert again.events == (Refreshed("alice", login.session_id, 2, False),)
    assert [s.generation for s in world.memory.sessions_of("alice", now=world.clock())] == [2]


def test_rotation_slides_the_idle_expiry(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(1000)
    rotated = world.send(browser)
    assert isinstance(rotated, Reissue)
    assert set_cookie_map(rotated.set_cookies)[REFRESH][1] == 1800
    (info,) = world.memory.sessions_of("alice", now=world.clock())
    assert info.idle_expires_at == T0 + 1000 + 1800
    assert info.created_at == T0
    assert info.refreshed_at == T0 + 1000
    # Past the first idle deadline, alive thanks to the renewal.
    world.clock.advance(1500)
    assert isinstance(world.send(browser), Reissue)
    assert world.live() == [login.session_id]


@pytest.mark.parametrize("first_to_rotate", ["tab_a", "tab_b"])
def test_grace_gives_a_second_tab_the_same_successor(world: World, first_to_rotate: str) -> None:
    """Two tabs refresh with the same token: both end up holding generation 1.

    Proved by behaviour: later, whichever tab rotates first makes generation 2,
    and the other tab's token is then accepted as its immediate predecessor (so
    it was the very same generation-1 secret), and that tab can rotate on.
    """
    tab_a = world.browser()
    login = world.login(tab_a)
    world.clock.advance(130)
    tab_b = tab_a.clone()

    first = world.send(tab_a)
    world.clock.advance(2)  # inside the 5 s window
    second = world.send(tab_b)

    assert isinstance(first, Reissue)
    assert isinstance(second, Reissue)
    assert first.events == (Refreshed("alice", login.session_id, 1, False),)
    assert second.events == (Refreshed("alice", login.session_id, 1, True),)
    assert second.session_id == login.session_id
    assert tokens(second)[REFRESH] != tokens(first)[REFRESH]  # fresh ciphertexts...
    assert second.claims["exp"] == int(world.clock()) + 120
    assert [s.generation for s in world.memory.sessions_of("alice", now=world.clock())] == [1]

    # ...of one secret: each tab's token is current or predecessor of the other's.
    leader, follower = (tab_a, tab_b) if first_to_rotate == "tab_a" else (tab_b, tab_a)
    world.clock.advance(200)
    led = world.send(leader)
    world.clock.advance(3)
    followed = world.send(follower)
    assert isinstance(led, Reissue)
    assert isinstance(followed, Reissue)
    assert led.events == (Refreshed("alice", login.session_id, 2, False),)
    assert followed.events == (Refreshed("alice", login.session_id, 2, True),)

    # And the next rotation succeeds from either tab.
    world.clock.advance(200)
    third = world.send(follower)
    assert isinstance(third, Reissue)
    assert third.events == (Refreshed("alice", login.session_id, 3, False),)


def test_grace_replay_does_not_extend_the_window(world: World) -> None:
    """The window counts from the rotation, not from the last replay."""
    tab_a = world.browser()
    world.login(tab_a)
    world.clock.advance(130)
    tab_b = tab_a.clone()
    tab_c = tab_a.clone()
    assert isinstance(world.send(tab_a), Reissue)
    world.clock.advance(4)
    assert isinstance(world.send(tab_b), Reissue)
    world.clock.advance(2)  # 6 s after the rotation, 2 s after the replay
    late = world.send(tab_c)
    assert isinstance(late, Unauthorized)
    assert late.reason is UnauthorizedReason.REFRESH_REUSED


def test_predecessor_after_the_grace_window_revokes_the_whole_session(world: World) -> None:
    tab_a = world.browser()
    login = world.login(tab_a)
    world.clock.advance(130)
    thief = tab_a.clone()
    assert isinstance(world.send(tab_a), Reissue)
    world.clock.advance(5)  # exactly the end of the window: no longer inside

    stolen = world.send(thief)

    assert isinstance(stolen, Unauthorized)
    assert stolen.status == 401
    assert stolen.reason is UnauthorizedReason.REFRESH_REUSED
    assert stolen.events == (
        ReuseDetected("alice", login.session_id, ReuseDetectedReason.PREDECESSOR_AFTER_GRACE),
        SessionRevoked("alice", login.session_id, SessionRevokedReason.REUSE),
    )
    assert stolen.set_cookies == (CLEAR_REFRESH,)
    assert world.live() == []
    assert thief.cookies() == {}

    # The legitimate tab keeps its (stateless) access token until it expires...
    assert isinstance(world.send(tab_a), Process)
    world.clock.advance(120)
    # ...then its refresh token names a session that no longer exists.
    ended = world.send(tab_a)
    assert isinstance(ended, Unauthorized)
    assert ended.reason is UnauthorizedReason.SESSION_ENDED
    assert ended.events == (RefreshEnded("alice", login.session_id, RefreshEndedReason.REVOKED),)
    assert tab_a.cookies() == {}


def test_older_generation_inside_the_window_is_reuse(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    generation_0 = browser.clone()
    world.clock.advance(1)
    assert isinstance(world.send(refresh_only(browser)), Reissue)  # generation 1
    world.clock.advance(1)
    assert isinstance(world.send(refresh_only(browser)), Reissue)  # generation 2
    world.clock.advance(1)  # inside the window of the last rotation

    old = world.send(refresh_only(generation_0))

    assert isinstance(old, Unauthorized)
    assert old.reason is UnauthorizedReason.REFRESH_REUSED
    assert old.events == (
        ReuseDetected("alice", login.session_id, ReuseDetectedReason.OLDER_GENERATION),
        SessionRevoked("alice", login.session_id, SessionRevokedReason.REUSE),
    )
    assert world.live() == []


def test_zero_grace_makes_any_predecessor_reuse() -> None:
    world = make_world(FlowConfig(grace_seconds=0))
    tab_a = world.browser()
    login = world.login(tab_a)
    world.clock.advance(130)
    tab_b = tab_a.clone()
    assert isinstance(world.send(tab_a), Reissue)
    same_instant = world.send(tab_b)
    assert isinstance(same_instant, Unauthorized)
    assert same_instant.reason is UnauthorizedReason.REFRESH_REUSED
    assert same_instant.events[0] == ReuseDetected(
        "alice", login.session_id, ReuseDetectedReason.PREDECESSOR_AFTER_GRACE
    )
    assert world.live() == []


def test_idle_expiry_ends_the_session(world: World) -> None:
    """Within the leeway after the idle deadline the refresh token still opens and
    the store reports the session expired; after the leeway the token itself is
    refused. A browser that honours Max-Age has dropped both cookies by then."""
    browser = world.browser()
    login = world.login(browser)
    refresh = tokens(login)[REFRESH]
    world.clock.advance(1800)
    assert browser.cookies() == {}
    nothing = world.send(browser)
    assert isinstance(nothing, Unauthorized)
    assert nothing.reason is UnauthorizedReason.NO_CREDENTIALS
    assert nothing.set_cookies == ()

    skewed = world.flow.decide(with_cookies(refresh=refresh))
    assert isinstance(skewed, Unauthorized)
    assert skewed.reason is UnauthorizedReason.SESSION_ENDED
    assert skewed.events == (RefreshEnded("alice", login.session_id, RefreshEndedReason.EXPIRED),)
    assert skewed.set_cookies == (CLEAR_REFRESH,)
    assert world.live() == []

    late = world.flow.decide(with_cookies(refresh=refresh), now=T0 + 1805)
    assert isinstance(late, Unauthorized)
    assert late.reason is UnauthorizedReason.NO_CREDENTIALS
    assert late.events == (TokenRejected(Purpose.REFRESH, InvalidTokenReason.EXPIRED),)


def test_sliding_renewal_never_passes_the_absolute_lifetime() -> None:
    config = FlowConfig(access_ttl=60, refresh_idle_ttl=600, refresh_absolute_ttl=1000)
    world = make_world(config)
    browser = world.browser()
    login = world.login(browser)
    end = int(T0) + 1000

    world.clock.advance(500)
    mid = world.send(browser)
    assert isinstance(mid, Reissue)
    assert set_cookie_map(mid.set_cookies)[REFRESH][1] == 500  # capped, not 600
    assert open_refresh(world.ring, tokens(mid)[REFRESH], world.clock())["exp"] == end
    assert mid.claims["exp"] == int(T0) + 560

    world.clock.advance(490)
    last = world.send(browser)
    assert isinstance(last, Reissue)
    assert last.claims["exp"] == end  # the access token stops at the session's end too
    assert set_cookie_map(last.set_cookies) == {
        ACCESS: (tokens(last)[ACCESS], 10),
        REFRESH: (tokens(last)[REFRESH], 10),
    }
    assert open_refresh(world.ring, tokens(last)[REFRESH], world.clock())["exp"] == end
    (info,) = world.memory.sessions_of("alice", now=world.clock())
    assert info.idle_expires_at == info.absolute_expires_at == end

    world.clock.advance(10)  # the absolute time
    kept = {name: value for name, (value, _) in browser.jar.items()}
    over = world.send(browser)
    assert isinstance(over, Unauthorized)
    assert over.reason is UnauthorizedReason.NO_CREDENTIALS
    # A client that ignores Max-Age gets nothing more out of the session.
    ended = world.flow.decide(Request(cookies={REFRESH: kept[REFRESH]}))
    assert isinstance(ended, Unauthorized)
    assert ended.events == (RefreshEnded("alice", login.session_id, RefreshEndedReason.EXPIRED),)
    past_leeway = world.flow.decide(Request(cookies=kept), now=end + config.leeway)
    assert isinstance(past_leeway, Unauthorized)
    assert past_leeway.events[0] == TokenRejected(Purpose.ACCESS, InvalidTokenReason.EXPIRED)


def test_revoked_session_refresh_is_session_ended(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    assert world.flow.revoke_session(login.session_id) is True
    assert world.flow.revoke_session(login.session_id) is False
    world.clock.advance(130)
    decision = world.send(browser)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.SESSION_ENDED
    assert decision.events == (RefreshEnded("alice", login.session_id, RefreshEndedReason.REVOKED),)
    assert decision.set_cookies == (CLEAR_REFRESH,)


# -- the user directory at refresh -------------------------------------------------------


def test_disabled_user_loses_the_session_at_the_next_refresh(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.users.disable("alice")
    # Stateless until the access token expires: within one access lifetime.
    assert isinstance(world.send(browser), Process)
    world.clock.advance(130)

    decision = world.send(browser)

    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.USER_DISABLED
    assert decision.events == (
        SessionRevoked("alice", login.session_id, SessionRevokedReason.USER_DISABLED),
    )
    assert decision.set_cookies == (CLEAR_REFRESH,)
    assert world.live() == []
    # Enabling the user again does not resurrect the session.
    world.users.enable("alice")
    replay = world.flow.decide(with_cookies(refresh=tokens(login)[REFRESH]))
    assert isinstance(replay, Unauthorized)
    assert replay.reason is UnauthorizedReason.SESSION_ENDED


def test_deleted_user_loses_the_session_too(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.users.delete("alice")
    world.clock.advance(130)
    decision = world.send(browser)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.USER_DISABLED
    assert world.memory.sessions_of("alice", now=world.clock()) == []
    assert login.session_id not in world.live()


def test_role_change_reaches_the_next_access_token_after_refresh(world: World) -> None:
    browser = world.browser()
    world.login(browser)
    world.users.set_claims("alice", {"roles": ["admin"]})
    before = world.send(browser)
    assert isinstance(before, Process)
    assert before.claims["roles"] == ["editor"]
    world.clock.advance(130)
    refreshed = world.send(browser)
    assert isinstance(refreshed, Reissue)
    assert refreshed.claims["roles"] == ["admin"]
    assert "tenant" not in refreshed.claims
    after = world.send(browser)
    assert isinstance(after, Process)
    assert after.claims["roles"] == ["admin"]


# -- 3. credentials ----------------------------------------------------------------------


def test_password_login_opens_a_session(world: World) -> None:
    browser = world.browser()
    login = world.send(browser, "POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    assert isinstance(login, Reissue)
    assert login.events == (LoggedIn("alice", login.session_id, "password"),)
    assert login.user_id == "alice"
    assert world.live() == [login.session_id]
    (info,) = world.memory.sessions_of("alice", now=world.clock())
    assert info.generation == 0
    assert info.created_at == info.refreshed_at == T0
    assert info.idle_expires_at == T0 + 1800
    assert info.absolute_expires_at == T0 + 12 * 3600
    assert isinstance(world.send(browser), Process)


def test_login_stores_the_request_metadata_with_the_session(world: World) -> None:
    browser = world.browser()
    request = browser.request(
        "POST",
        credentials=PasswordCredentials(ALICE, PASSWORD),
        metadata={"user_agent": "Firefox", "ip": "192.0.2.1"},
    )
    decision = world.flow.decide(request)
    assert isinstance(decision, Reissue)
    (info,) = world.flow.sessions_of("alice")
    assert dict(info.metadata) == {"user_agent": "Firefox", "ip": "192.0.2.1"}


@pytest.mark.parametrize(
    ("username", "password"),
    [(ALICE, "CORRECT HORSE BATTERY STAPLE"), ("mallory@example.com", PASSWORD)],
)
def test_bad_password_fails_and_never_leaks_the_password(
    world: World, username: str, password: str
) -> None:
    request = Request(
        "POST",
        credentials=PasswordCredentials(username, password),
        sec_fetch_site="same-origin",
    )
    decision = world.flow.decide(request)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED
    assert decision.events == (LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", username),)
    assert decision.set_cookies == ()
    assert world.store.methods == []
    for text in (repr(request), repr(decision), str(decision), repr(decision.events)):
        assert password not in text
    assert PASSWORD not in repr(Request(credentials=PasswordCredentials(ALICE, PASSWORD)))


def test_successful_login_never_shows_the_password(world: World) -> None:
    request = world.browser().request("POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    decision = world.flow.decide(request)
    assert isinstance(decision, Reissue)
    for text in (repr(request), repr(decision), repr(decision.events), repr(decision.claims)):
        assert PASSWORD not in text


def test_without_a_password_verifier_password_logins_fail() -> None:
    world = make_world(with_passwords=False)
    decision = world.flow.decide(Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD)))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED
    assert decision.events == (LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", None),)
    assert world.store.methods == []
    assert PASSWORD not in repr(decision)


def test_external_token_login_opens_a_session(world: World) -> None:
    token = world.google.issue("g-alice", expires_at=T0 + 600)
    browser = world.browser()
    login = world.send(browser, "POST", credentials=ExternalTokenCredentials("google", token))
    assert isinstance(login, Reissue)
    assert login.events == (LoggedIn("alice", login.session_id, "google"),)
    assert login.claims["roles"] == ["editor"]
    assert token not in repr(login)
    assert token not in repr(browser.request(credentials=ExternalTokenCredentials("google", token)))
    assert isinstance(world.send(browser), Process)


def test_external_sign_up_creates_the_user_when_the_directory_allows_it(world: World) -> None:
    world.users.allow_signup = True
    token = world.google.issue("g-newcomer", expires_at=T0 + 600)
    login = world.flow.decide(
        Request("POST", credentials=ExternalTokenCredentials("google", token))
    )
    assert isinstance(login, Reissue)
    assert login.user_id == "google:g-newcomer"


@pytest.mark.parametrize(
    ("provider", "token", "failure"),
    [
        ("okta", "issued", LoginFailedReason.UNKNOWN_PROVIDER),
        ("google", "never-issued", LoginFailedReason.BAD_EXTERNAL_TOKEN),
        ("google", "expired", LoginFailedReason.BAD_EXTERNAL_TOKEN),
        ("google", "unlinked", LoginFailedReason.NOT_LINKED),
    ],
)
def test_external_login_failures(world: World, provider: str, token: str, failure: Any) -> None:
    issued = {
        "issued": world.google.issue("g-alice", expires_at=T0 + 600),
        "never-issued": "forged-token",
        "expired": world.google.issue("g-alice", expires_at=T0),
        "unlinked": world.google.issue("g-stranger", expires_at=T0 + 600),
    }[token]
    decision = world.flow.decide(
        Request("POST", credentials=ExternalTokenCredentials(provider, issued))
    )
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED
    assert decision.events == (LoginFailed(failure, provider),)
    assert world.store.methods == []
    assert issued not in repr(decision)


@pytest.mark.parametrize("method", ["password", "google"])
def test_disabled_user_cannot_log_in(world: World, method: str) -> None:
    world.users.disable("alice")
    credentials: PasswordCredentials | ExternalTokenCredentials
    if method == "password":
        credentials = PasswordCredentials(ALICE, PASSWORD)
        expected = LoginFailed(LoginFailedReason.USER_DISABLED, "password")
    else:
        credentials = ExternalTokenCredentials(
            "google", world.google.issue("g-alice", expires_at=T0 + 60)
        )
        # The fake directory refuses to link a disabled user.
        expected = LoginFailed(LoginFailedReason.NOT_LINKED, "google")
    decision = world.flow.decide(Request("POST", credentials=credentials))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED
    assert decision.events == (expected,)
    assert world.live() == []


def test_unknown_credentials_type_fails_the_login(world: World) -> None:
    decision = world.flow.decide(Request("POST", credentials=("alice", "pw")))  # type: ignore[arg-type]
    assert isinstance(decision, Unauthorized)
    assert decision.events == (LoginFailed(LoginFailedReason.UNKNOWN_PROVIDER, "tuple"),)


@pytest.mark.parametrize("provider", [["google"], {"name": "google"}])
def test_unhashable_provider_is_a_failed_login_not_an_exception(
    world: World, provider: object
) -> None:
    credentials = ExternalTokenCredentials(provider, "token")  # type: ignore[arg-type]
    decision = world.flow.decide(Request("POST", credentials=credentials))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.LOGIN_FAILED


def test_non_string_token_for_a_known_provider_is_a_bad_token(world: World) -> None:
    credentials = ExternalTokenCredentials("google", 12345)  # type: ignore[arg-type]
    decision = world.flow.decide(Request("POST", credentials=credentials))
    assert isinstance(decision, Unauthorized)
    assert decision.events == (LoginFailed(LoginFailedReason.BAD_EXTERNAL_TOKEN, "google"),)


@pytest.mark.parametrize(
    "credentials",
    [
        PasswordCredentials(None, PASSWORD),  # type: ignore[arg-type]
        PasswordCredentials(ALICE, b"correct horse battery staple"),  # type: ignore[arg-type]
        PasswordCredentials(["alice"], {"pw": 1}),  # type: ignore[arg-type]
    ],
)
def test_smuggled_non_string_password_fields_fail_the_login(
    world: World, credentials: PasswordCredentials
) -> None:
    decision = world.flow.decide(Request("POST", credentials=credentials))
    assert isinstance(decision, Unauthorized)
    assert decision.events == (LoginFailed(LoginFailedReason.BAD_PASSWORD, "password", None),)
    assert world.store.methods == []


# -- sessions: new ids, listing, revocation, logout ----------------------------------------


def test_every_login_opens_a_new_session_id(world: World) -> None:
    laptop, phone = world.browser(), world.browser()
    first = world.login(laptop)
    world.clock.advance(1)
    second = world.login(phone)
    assert first.session_id != second.session_id
    sessions = world.flow.sessions_of("alice")
    assert [s.session_id for s in sessions] == [first.session_id, second.session_id]
    assert world.store.methods[-1] == "sessions_of"

    # Logging in again after a logout never revives the old id.
    world.logout(laptop)
    third = world.login(laptop)
    assert third.session_id not in {first.session_id, second.session_id}
    assert set(world.live()) == {second.session_id, third.session_id}


def test_credentials_after_a_reused_refresh_open_a_fresh_session(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(130)
    old = browser.clone()
    assert isinstance(world.send(browser), Reissue)
    world.clock.advance(10)
    decision = world.send(old, "POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    assert isinstance(decision, Reissue)
    assert decision.session_id != login.session_id
    assert [type(e) for e in decision.events] == [ReuseDetected, SessionRevoked, LoggedIn]
    assert world.live() == [decision.session_id]


def test_the_flow_order_puts_cookies_before_credentials(world: World) -> None:
    """Access, then refresh, then credentials (the documented order): while a cookie
    is valid the credentials are not consulted at all."""
    browser = world.browser()
    login = world.login(browser)
    bob_login = PasswordCredentials(BOB, BOB_PASSWORD)
    still_alice = world.send(browser, "POST", credentials=bob_login)
    assert isinstance(still_alice, Process)
    assert still_alice.session_id == login.session_id
    world.clock.advance(130)
    refreshed = world.send(browser, "POST", credentials=bob_login)
    assert isinstance(refreshed, Reissue)
    assert refreshed.user_id == "alice"
    assert refreshed.events == (Refreshed("alice", login.session_id, 1, False),)


def test_revoke_user_ends_every_session(world: World) -> None:
    laptop, phone = world.browser(), world.browser()
    world.login(laptop)
    world.login(phone)
    bob = world.browser()
    world.login(bob, BOB, BOB_PASSWORD)
    assert world.flow.revoke_user("alice") == 2
    assert world.flow.revoke_user("alice") == 0
    assert world.flow.sessions_of("alice") == []
    world.clock.advance(130)
    for browser in (laptop, phone):
        decision = world.send(browser)
        assert isinstance(decision, Unauthorized)
        assert decision.reason is UnauthorizedReason.SESSION_ENDED
    assert isinstance(world.send(bob), Reissue)


def test_logout_revokes_and_clears_both_cookies(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    other = world.login(world.browser())
    decision = world.logout(browser)
    assert isinstance(decision, LoggedOut)
    assert decision.status == 200
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)
    assert decision.events == (
        SessionRevoked("alice", login.session_id, SessionRevokedReason.LOGOUT),
    )
    assert browser.cookies() == {}
    assert world.live() == [other.session_id]


@pytest.mark.parametrize("which", [ACCESS, REFRESH])
def test_logout_works_from_either_token(world: World, which: str) -> None:
    login = world.login(world.browser())
    request = Request("POST", cookies={which: tokens(login)[which]}, sec_fetch_site="same-origin")
    decision = world.flow.logout(request)
    assert isinstance(decision, LoggedOut)
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)
    assert decision.events == (
        SessionRevoked("alice", login.session_id, SessionRevokedReason.LOGOUT),
    )
    assert world.live() == []


def test_logout_with_an_expired_access_token_only_revokes_through_the_refresh_token(
    world: World,
) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(600)  # the access token is long expired, the refresh one is not
    decision = world.logout(browser)
    assert decision.events == (
        SessionRevoked("alice", login.session_id, SessionRevokedReason.LOGOUT),
    )
    assert world.live() == []


def test_logout_without_cookies_still_clears_both(world: World) -> None:
    decision = world.flow.logout(Request("POST"))
    assert isinstance(decision, LoggedOut)
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)
    assert decision.events == ()
    assert world.store.methods == []


def test_cross_origin_logout_is_forbidden_and_revokes_nothing(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.store.clear()
    decision = world.logout(browser, same_origin=False)
    assert isinstance(decision, Forbidden)
    assert decision.status == 403
    assert decision.set_cookies == ()
    assert decision.events == (CrossOriginRejected("POST", "https://app.example", "cross-site"),)
    assert world.store.methods == []
    assert world.live() == [login.session_id]
    assert isinstance(world.send(browser), Process)


def test_logout_of_an_already_revoked_session_reports_no_revocation(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    assert world.flow.revoke_user("alice") == 1
    decision = world.logout(browser)
    assert isinstance(decision, LoggedOut)
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)
    assert (
        SessionRevoked("alice", login.session_id, SessionRevokedReason.LOGOUT)
        not in decision.events
    )


def test_disabled_user_with_an_already_revoked_session_reports_no_revocation(
    world: World,
) -> None:
    browser = world.browser()
    login = world.login(browser)
    assert world.flow.revoke_session(login.session_id) is True
    world.users.disable("alice")
    world.clock.advance(130)
    decision = world.send(browser)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.USER_DISABLED
    assert SessionRevoked("alice", login.session_id, SessionRevokedReason.USER_DISABLED) not in (
        decision.events
    )


# -- 4. 401 and the cookies it clears ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cookie_header", "cleared"),
    [
        (None, ()),
        ("", ()),
        ("theme=dark; lang=en", ()),
        (f"{ACCESS}=junk", (CLEAR_ACCESS,)),
        (f"{REFRESH}=junk", (CLEAR_REFRESH,)),
        (f"{ACCESS}=junk; {REFRESH}=junk", (CLEAR_ACCESS, CLEAR_REFRESH)),
        (f"theme=dark; {REFRESH}=; lang=en", (CLEAR_REFRESH,)),
        (f"__host-tf_access=x; {ACCESS}2=y; tf_refresh=z", ()),
    ],
)
def test_unauthorized_clears_exactly_the_auth_cookies_that_were_sent(
    world: World, cookie_header: str | None, cleared: tuple[str, ...]
) -> None:
    decision = world.flow.decide(Request(cookie_header=cookie_header))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.NO_CREDENTIALS
    assert decision.set_cookies == cleared
    assert world.store.methods == []


# -- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cross_site_unsafe_request_is_forbidden_even_with_a_valid_access_token(
    world: World, method: str
) -> None:
    browser = world.browser()
    world.login(browser)
    world.store.clear()
    decision = world.send(browser, method, same_origin=False)
    assert isinstance(decision, Forbidden)
    assert decision.status == 403
    assert decision.set_cookies == ()
    assert decision.events == (CrossOriginRejected(method, "https://app.example", "cross-site"),)
    assert world.store.methods == []


def test_cross_site_request_rotates_revokes_and_mints_nothing(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(130)  # a forged request would otherwise rotate the refresh token
    world.store.clear()
    forged = world.send(
        browser, "POST", credentials=PasswordCredentials(BOB, BOB_PASSWORD), same_origin=False
    )
    assert isinstance(forged, Forbidden)
    assert forged.set_cookies == ()
    assert world.store.methods == []
    assert world.flow.logout(browser.request("POST", same_origin=False)) == forged
    assert world.store.methods == []
    assert world.flow.sessions_of("bob") == []
    # The refresh token was left untouched: the real page rotates it to generation 1.
    real = world.send(browser)
    assert isinstance(real, Reissue)
    assert real.events == (Refreshed("alice", login.session_id, 1, False),)


def test_trusted_origin_may_post_cross_site() -> None:
    world = make_world(FlowConfig(trusted_origins=["https://Partner.Example:443"]))
    browser = world.browser()
    world.login(browser)
    request = Request(
        "POST",
        cookie_header=browser.cookie_header(),
        sec_fetch_site="cross-site",
        origin="https://partner.example",
        host="app.example",
    )
    assert isinstance(world.flow.decide(request), Process)
    untrusted = Request(
        "POST",
        cookie_header=browser.cookie_header(),
        sec_fetch_site="cross-site",
        origin="https://evil.example",
        host="app.example",
    )
    assert isinstance(world.flow.decide(untrusted), Forbidden)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_cross_site_safe_methods_are_allowed(world: World, method: str) -> None:
    browser = world.browser()
    login = world.login(browser)
    assert isinstance(world.send(browser, method, same_origin=False), Process)
    world.clock.advance(130)
    refreshed = world.send(browser, method, same_origin=False)
    assert isinstance(refreshed, Reissue)
    assert refreshed.session_id == login.session_id


def test_non_browser_post_without_origin_headers_is_allowed(world: World) -> None:
    browser = world.browser()
    world.login(browser)
    request = Request("POST", cookie_header=browser.cookie_header())
    assert isinstance(world.flow.decide(request), Process)


# -- the Cookie header ---------------------------------------------------------------------


def test_duplicated_access_cookie_is_ignored_and_reported(world: World) -> None:
    login = world.login(world.browser())
    sent = tokens(login)
    cookie_header = f"{ACCESS}={sent[ACCESS]}; {ACCESS}={sent[ACCESS]}; {REFRESH}={sent[REFRESH]}"
    decision = world.flow.decide(Request(cookie_header=cookie_header))
    assert isinstance(decision, Reissue)  # not Process: neither copy was trusted
    assert decision.events == (
        AmbiguousCookie(ACCESS),
        Refreshed("alice", login.session_id, 1, False),
    )


def test_duplicated_auth_cookies_alone_give_401_clearing_them(world: World) -> None:
    login = world.login(world.browser())
    sent = tokens(login)
    cookie_header = (
        f"{ACCESS}={sent[ACCESS]}; {REFRESH}={sent[REFRESH]}; {ACCESS}=planted; {REFRESH}=planted"
    )
    decision = world.flow.decide(Request(cookie_header=cookie_header))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.NO_CREDENTIALS
    assert decision.events == (AmbiguousCookie(ACCESS), AmbiguousCookie(REFRESH))
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)
    assert world.store.methods == ["create"]


def test_oversize_cookie_header_is_malformed_and_clears_both(world: World) -> None:
    login = world.login(world.browser())
    valid = f"{ACCESS}={tokens(login)[ACCESS]}"
    padding = "x=" + "a" * (16384 - len(valid) - len("; x="))
    at_limit = f"{valid}; {padding}"
    assert len(at_limit) == 16384
    assert isinstance(world.flow.decide(Request(cookie_header=at_limit)), Process)

    over = at_limit + "a"
    decision = world.flow.decide(Request(cookie_header=over))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.MALFORMED_REQUEST
    assert decision.set_cookies == (CLEAR_ACCESS, CLEAR_REFRESH)


@pytest.mark.parametrize("via", ["header", "mapping"])
def test_cookies_as_a_mapping_behave_like_the_header(world: World, via: str) -> None:
    def request(**jar: str) -> Request:
        cookies = {({"access": ACCESS, "refresh": REFRESH}[k]): v for k, v in jar.items()}
        if via == "header":
            return Request(cookie_header="; ".join(f"{k}={v}" for k, v in cookies.items()))
        return Request(cookies=cookies)

    login = world.login(world.browser())
    sent = tokens(login)
    processed = world.flow.decide(request(access=sent[ACCESS], refresh=sent[REFRESH]))
    assert isinstance(processed, Process)
    assert processed.session_id == login.session_id

    world.clock.advance(130)
    refreshed = world.flow.decide(request(access=sent[ACCESS], refresh=sent[REFRESH]))
    assert isinstance(refreshed, Reissue)
    assert refreshed.events == (
        TokenRejected(Purpose.ACCESS, InvalidTokenReason.EXPIRED),
        Refreshed("alice", login.session_id, 1, False),
    )

    junk = world.flow.decide(request(access="not a token!"))
    assert isinstance(junk, Unauthorized)
    assert junk.set_cookies == (CLEAR_ACCESS,)
    assert junk.events == (TokenRejected(Purpose.ACCESS, InvalidTokenReason.MALFORMED),)


def test_quoted_cookie_values_are_unquoted(world: World) -> None:
    login = world.login(world.browser())
    decision = world.flow.decide(Request(cookie_header=f'{ACCESS}="{tokens(login)[ACCESS]}"'))
    assert isinstance(decision, Process)


# -- Unavailable: ports that fail -----------------------------------------------------------


def _assert_unavailable(decision: Decision, port: str, error: BaseException) -> None:
    assert isinstance(decision, Unavailable)
    assert decision.status == 503
    assert decision.port == port
    assert decision.error is error
    assert decision.set_cookies == ()
    assert decision.events[-1] == PortFailed(port, error)


def test_store_down_at_refresh_is_unavailable_and_nothing_is_lost(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(130)
    outage = ConnectionError("store down")
    world.store_down(outage)

    decision = world.send(browser)

    _assert_unavailable(decision, "store", outage)
    assert browser.cookies().keys() == {REFRESH}
    world.store_down(None)
    world.clock.advance(1)
    recovered = world.send(browser)
    assert isinstance(recovered, Reissue)
    assert recovered.events == (Refreshed("alice", login.session_id, 1, False),)


def test_valid_access_token_still_processes_while_the_store_is_down(world: World) -> None:
    browser = world.browser()
    world.login(browser)
    world.store_down(ConnectionError("store down"))
    assert isinstance(world.send(browser), Process)


def test_store_down_at_login_and_logout(world: World) -> None:
    outage = TimeoutError("store timed out")
    world.store_down(outage)
    browser = world.browser()
    login = world.send(browser, "POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    _assert_unavailable(login, "store", outage)
    assert login.events == (PortFailed("store", outage),)  # no LoggedIn: nothing was opened

    world.store_down(None)
    session = world.login(browser)
    world.store_down(outage)
    logout = world.logout(browser)
    _assert_unavailable(logout, "store", outage)
    assert browser.cookies().keys() == {ACCESS, REFRESH}  # nothing cleared
    world.store_down(None)
    assert world.live() == [session.session_id]


def test_user_directory_down_at_refresh_and_login(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(130)
    world.users.unavailable = True
    world.store.clear()

    refresh = world.send(browser)
    assert isinstance(refresh, Unavailable)
    assert refresh.port == "users"
    assert isinstance(refresh.error, ConnectionError)
    assert refresh.events == (PortFailed("users", refresh.error),)
    assert world.store.methods == []  # the session was not touched

    fresh = world.send(world.browser(), "POST", credentials=PasswordCredentials(BOB, BOB_PASSWORD))
    assert isinstance(fresh, Unavailable)
    assert fresh.port == "users"
    external = world.flow.decide(
        Request(
            "POST",
            credentials=ExternalTokenCredentials(
                "google", world.google.issue("g-alice", expires_at=T0 + 600)
            ),
        )
    )
    assert isinstance(external, Unavailable)
    assert external.port == "users"

    world.users.unavailable = False
    recovered = world.send(browser)
    assert isinstance(recovered, Reissue)
    assert recovered.events == (Refreshed("alice", login.session_id, 1, False),)


def test_password_verifier_down_is_unavailable(world: World) -> None:
    world.passwords.unavailable = True
    decision = world.flow.decide(Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD)))
    assert isinstance(decision, Unavailable)
    assert decision.port == "passwords"
    assert isinstance(decision.error, ConnectionError)
    assert decision.set_cookies == ()
    assert decision.events == (PortFailed("passwords", decision.error),)
    assert PASSWORD not in repr(decision)
    assert world.store.methods == []


def test_external_verifier_down_is_unavailable(world: World) -> None:
    token = world.google.issue("g-alice", expires_at=T0 + 600)
    world.google.unavailable = True
    decision = world.flow.decide(
        Request("POST", credentials=ExternalTokenCredentials("google", token))
    )
    assert isinstance(decision, Unavailable)
    assert decision.port == "external"
    assert isinstance(decision.error, ConnectionError)
    assert decision.events == (PortFailed("external", decision.error),)
    assert token not in repr(decision)


def test_unavailable_keeps_the_events_that_came_before(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    outage = ConnectionError("down")
    world.store_down(outage)
    decision = world.flow.decide(
        with_cookies(tokens(login)[ACCESS], tokens(login)[REFRESH]), now=T0 + 200
    )
    assert isinstance(decision, Unavailable)
    assert decision.events == (
        TokenRejected(Purpose.ACCESS, InvalidTokenReason.EXPIRED),
        PortFailed("store", outage),
    )


def test_disabled_user_with_the_store_down_is_unavailable(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    world.users.disable("alice")
    world.clock.advance(130)
    world.store_down(ConnectionError("down"))
    decision = world.send(browser)
    assert isinstance(decision, Unavailable)
    assert decision.port == "store"
    assert SessionRevoked("alice", login.session_id, SessionRevokedReason.USER_DISABLED) not in (
        decision.events
    )


# -- key rotation -----------------------------------------------------------------------------


def test_tokens_sealed_before_a_key_rotation_still_work(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    rotated_ring = world.ring.rotated(Key.generate("k2"))
    rotated = world.rebuild(rotated_ring)
    assert kid_of(tokens(login)[ACCESS]) == "k1"

    assert isinstance(world.send(browser, flow=rotated), Process)
    world.clock.advance(130)
    refreshed = world.send(browser, flow=rotated)
    assert isinstance(refreshed, Reissue)
    assert refreshed.events == (Refreshed("alice", login.session_id, 1, False),)
    assert {kid_of(t) for t in tokens(refreshed).values()} == {"k2"}
    # The old process, still on the old ring, can no longer open the new tokens.
    old_view = world.send(browser.clone())
    assert isinstance(old_view, Unauthorized)
    assert old_view.events[0] == TokenRejected(Purpose.ACCESS, InvalidTokenReason.UNKNOWN_KEY)


def test_removing_the_old_key_after_the_refresh_lifetime_logs_out_nobody_alive(
    world: World,
) -> None:
    """Sessions that are alive one idle lifetime after the rotation have refreshed
    since, so all their tokens are sealed with the new key."""
    browser = world.browser()
    login = world.login(browser)
    rotated_ring = world.ring.rotated(Key.generate("k2"))
    rotated = world.rebuild(rotated_ring)
    world.clock.advance(1000)
    assert isinstance(world.send(browser, flow=rotated), Reissue)
    world.clock.advance(1000)  # 2000 s after the rotation: past refresh_idle_ttl + leeway

    pruned = world.rebuild(rotated_ring.without("k1"))
    decision = world.send(browser, flow=pruned)
    assert isinstance(decision, Reissue)
    assert decision.session_id == login.session_id


def test_removing_the_old_key_rejects_access_tokens_it_sealed(world: World) -> None:
    browser = world.browser()
    login = world.login(browser)
    pruned = world.rebuild(world.ring.rotated(Key.generate("k2")).without("k1"))
    decision = pruned.decide(with_cookies(tokens(login)[ACCESS]))
    assert isinstance(decision, Unauthorized)
    assert decision.events == (TokenRejected(Purpose.ACCESS, InvalidTokenReason.UNKNOWN_KEY),)


# -- leaked secrets --------------------------------------------------------------------------


def test_the_store_holds_a_verifier_never_the_refresh_secret(world: World) -> None:
    login = world.login(world.browser())
    secret_text = open_refresh(world.ring, tokens(login)[REFRESH], T0)["rs"]
    secret = base64.urlsafe_b64decode(secret_text + "=")
    stored = world.memory._sessions[login.session_id]
    assert stored.current == verifier_of(secret)
    assert secret not in (stored.current, stored.previous, stored.salt)
    assert secret_text not in repr(stored)


def _forged_refresh(world: World, session_id: str, secret: bytes, ring: KeyRing) -> str:
    now = int(world.clock())
    claims = {"sub": "alice", "sid": session_id, "rs": b64(secret), "iat": now, "exp": now + 600}
    return TokenCodec(ring).seal(Purpose.REFRESH, claims)


@pytest.mark.parametrize("secret_from", ["verifier", "random", "verifier_and_salt"])
def test_leaked_store_and_key_ring_still_open_no_session(world: World, secret_from: str) -> None:
    """Even with the key ring, what the store holds cannot be turned into a secret the
    store accepts: the attempt is reuse, and the victim's session is revoked."""
    browser = world.browser()
    login = world.login(browser)
    world.clock.advance(130)
    assert isinstance(world.send(browser), Reissue)  # so that a salt is stored too
    stored = world.memory._sessions[login.session_id]
    assert stored.salt is not None
    secret = {
        "verifier": stored.current,
        "random": secrets.token_bytes(32),
        "verifier_and_salt": derive_successor(stored.current, stored.salt),
    }[secret_from]
    forged = _forged_refresh(world, login.session_id, secret, world.ring)

    decision = world.flow.decide(with_cookies(refresh=forged))

    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.REFRESH_REUSED
    assert decision.events[0] == ReuseDetected(
        "alice", login.session_id, ReuseDetectedReason.OLDER_GENERATION
    )


def test_leaked_store_alone_cannot_even_seal_a_token(world: World) -> None:
    login = world.login(world.browser())
    stored = world.memory._sessions[login.session_id]
    guessed_ring = KeyRing(Key("k1", secrets.token_bytes(32)))  # the right kid, a guessed key
    forged = _forged_refresh(world, login.session_id, stored.current, guessed_ring)
    decision = world.flow.decide(with_cookies(refresh=forged))
    assert isinstance(decision, Unauthorized)
    assert decision.events == (TokenRejected(Purpose.REFRESH, InvalidTokenReason.TAG_MISMATCH),)
    assert world.live() == [login.session_id]


def test_leaked_key_ring_alone_cannot_forge_a_refresh(world: World) -> None:
    """A made-up secret for a live session id is treated as reuse: no Reissue, and the
    session is revoked (failing closed, at the cost of logging the victim out)."""
    browser = world.browser()
    login = world.login(browser)
    forged = _forged_refresh(world, login.session_id, secrets.token_bytes(32), world.ring)
    decision = world.flow.decide(with_cookies(refresh=forged))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.REFRESH_REUSED
    assert world.live() == []


@pytest.mark.parametrize(
    "rs",
    [None, 42, "", "A" * 42, "A" * 44, b64(bytes(32))[:-1] + "B", "+" * 43],
)
def test_refresh_token_with_a_malformed_secret_claim_is_bad_claims(
    world: World, rs: object
) -> None:
    login = world.login(world.browser())
    now = int(T0)
    claims = {"sub": "alice", "sid": login.session_id, "rs": rs, "iat": now, "exp": now + 600}
    forged = TokenCodec(world.ring).seal(Purpose.REFRESH, claims)
    decision = world.flow.decide(with_cookies(refresh=forged))
    assert isinstance(decision, Unauthorized)
    assert decision.events == (TokenRejected(Purpose.REFRESH, InvalidTokenReason.BAD_CLAIMS),)
    assert world.store.methods == ["create"]
    assert world.live() == [login.session_id]


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"access_ttl": 0}, "access_ttl must be a positive whole number of seconds, not 0"),
        ({"access_ttl": True}, "access_ttl must be a positive whole number of seconds, not True"),
        ({"access_ttl": 1.5}, "access_ttl must be a positive whole number of seconds, not 1.5"),
        ({"refresh_idle_ttl": -1}, "refresh_idle_ttl must be a positive whole number"),
        ({"refresh_absolute_ttl": "3600"}, "refresh_absolute_ttl must be a positive whole"),
        (
            {"access_ttl": 1800},
            "access_ttl (1800 s) must be shorter than refresh_idle_ttl (1800 s)",
        ),
        (
            {"refresh_idle_ttl": 7200, "refresh_absolute_ttl": 3600},
            "refresh_idle_ttl (7200 s) cannot exceed refresh_absolute_ttl (3600 s)",
        ),
        ({"grace_seconds": -0.5}, "grace_seconds must be between 0 and 60, not -0.5"),
        ({"grace_seconds": 61}, "grace_seconds must be between 0 and 60, not 61"),
        ({"grace_seconds": True}, "grace_seconds must be between 0 and 60, not True"),
        ({"grace_seconds": "5"}, "grace_seconds must be between 0 and 60, not '5'"),
        ({"grace_seconds": float("nan")}, "grace_seconds must be between 0 and 60, not nan"),
        ({"leeway": True}, "leeway must be whole seconds, not True"),
        ({"leeway": 1.0}, "leeway must be whole seconds, not 1.0"),
        ({"leeway": -1}, "leeway must be between 0 and 60 seconds, not -1"),
        ({"leeway": 61}, "leeway must be between 0 and 60 seconds, not 61"),
        ({"cookies": "strict"}, "cookies must be a CookiePolicy"),
        ({"trusted_origins": "https://a.example"}, "not one string"),
        ({"trusted_origins": ["https://a.example/"]}, "remove the trailing '/'"),
        ({"trusted_origins": ["null"]}, "it cannot be trusted"),
        ({"trusted_origins": ["https://*.example"]}, "wildcards are not supported"),
    ],
)
def test_flow_config_rejects_mistakes_with_a_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        FlowConfig(**kwargs)
    assert message in str(raised.value)


def test_flow_config_accepts_the_edges() -> None:
    config = FlowConfig(
        access_ttl=1,
        refresh_idle_ttl=2,
        refresh_absolute_ttl=2,
        grace_seconds=0,
        leeway=0,
        trusted_origins=["HTTPS://Partner.Example:443", "http://localhost:8080"],
    )
    assert config.trusted_origins == frozenset({"https://partner.example", "http://localhost:8080"})
    assert FlowConfig(grace_seconds=60, leeway=60).grace_seconds == 60
    local = FlowConfig(cookies=CookiePolicy.local_development())
    assert local.cookies.names == ("tf_access", "tf_refresh")


def test_flows_reject_bad_construction_arguments() -> None:
    ring = KeyRing.generate()
    with pytest.raises(ConfigError, match="config must be a FlowConfig"):
        Flow(ring, MemoryStore(), FakeUserDirectory(), config={"access_ttl": 60})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty provider names"):
        Flow(ring, MemoryStore(), FakeUserDirectory(), external={"": FakeExternalTokenVerifier()})
    with pytest.raises(ConfigError, match="needs a KeyRing"):
        Flow("*k:abc", MemoryStore(), FakeUserDirectory())  # type: ignore[arg-type]
    for timeout in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="port_timeout must be a positive number"):
            AsyncFlow(ring, AsyncMemoryStore(), AsyncFakeUserDirectory(), port_timeout=timeout)


def test_local_development_cookie_names_are_used_throughout() -> None:
    world = make_world(FlowConfig(cookies=CookiePolicy.local_development()))
    browser = world.browser()
    login = world.login(browser)
    assert set(tokens(login)) == {"tf_access", "tf_refresh"}
    assert all("Secure" not in c for c in login.set_cookies)
    assert isinstance(world.send(browser), Process)
    logout = world.logout(browser)
    assert logout.set_cookies == (
        "tf_access=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax",
        "tf_refresh=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax",
    )


def test_absurd_lifetimes_fail_at_construction_not_at_the_first_login() -> None:
    try:
        world = make_world(FlowConfig(refresh_idle_ttl=10**20, refresh_absolute_ttl=10**20))
    except ConfigError:
        return
    decision = world.flow.decide(Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD)))
    assert isinstance(decision, Reissue)


def test_mapping_cookie_values_that_are_not_strings_are_ignored(world: World) -> None:
    odd: Mapping[str, Any] = {ACCESS: 12, REFRESH: None}
    decision = world.flow.decide(Request(cookies=odd))
    assert isinstance(decision, Unauthorized)
    assert decision.set_cookies == (CLEAR_ACCESS,)
    assert decision.events == ()


# ================================================================== hostile edge cases


# -- bearer tokens stay out of reprs ----------------------------------------------


def test_reprs_of_requests_decisions_and_pending_state_hold_no_token() -> None:
    world = ReviewWorld()
    browser = world.login()
    tokens = tokens_of(browser)
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
    world = ReviewWorld()
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
    world = ReviewWorld()
    world.users.set_claims("ada", {"not json": object()})
    decision = world.flow.decide(Browser(world.clock).request("POST", credentials=ADA_LOGIN))
    assert isinstance(decision, Unavailable)
    assert world.flow.sessions_of("ada") == []


def test_a_verifier_returning_a_non_string_user_id_is_a_port_failure() -> None:
    world = ReviewWorld()

    class Broken:
        def verify_password(self, username: str, password: str) -> Any:
            return 42

    flow = Flow(world.ring, world.store, world.users, passwords=Broken(), clock=world.clock)
    decision = flow.decide(Browser(world.clock).request("POST", credentials=ADA_LOGIN))
    assert isinstance(decision, Unavailable)
    assert decision.port == "passwords"
    assert world.store.sessions_of("42", now=world.clock()) == []


# -- the host's clock -----------------------------------------------------------


@pytest.mark.parametrize("now", [math.nan, math.inf, -1.0, 1e20])
def test_an_absurd_now_raises_before_any_session_is_created(now: float) -> None:
    world = ReviewWorld()
    with pytest.raises(ValueError, match="now must be"):
        world.flow.decide(Browser(world.clock).request("POST", credentials=ADA_LOGIN), now=now)
    assert world.store._sessions == {}


# -- access tokens must be this flow's ------------------------------------------


def test_an_access_purpose_token_without_a_session_id_is_not_a_login() -> None:
    world = ReviewWorld()
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


# -- a closed grace window stays closed under clock lag -----------------------------


def test_grace_zero_is_reuse_even_from_a_server_whose_clock_lags() -> None:
    info = SessionInfo("s", "u", 1000.0, 1000.0, 3000.0, 9000.0)
    stored = StoredSession(info, b"v1", b"v0", rotated_at=1000.0, salt=b"s" * 16)
    lagging = Rotation("s", b"v0", b"v2", b"t" * 16, 998.0, 1800, 0)
    result, state = apply_rotation(stored, lagging)
    assert result.outcome is RotationOutcome.REUSED_PREVIOUS
    assert state is None


def test_grace_window_still_answers_the_predecessor() -> None:
    world = ReviewWorld(grace_seconds=5)
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

    world = ReviewWorld()
    flow = AsyncFlow(world.ring, AsyncMemoryStore(), AsyncFakeUserDirectory(world.users))
    request = Request(cookie_header="__Host-tf_refresh=x")
    with pytest.raises(ValueError, match="now must be"):
        asyncio.run(flow.decide(request, now=math.nan))


def test_a_valid_access_token_still_processes() -> None:
    world = ReviewWorld()
    browser = world.login()
    assert isinstance(world.flow.decide(browser.request()), Process)
