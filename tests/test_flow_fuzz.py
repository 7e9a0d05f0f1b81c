"""Any input in, a decision out: the flow never raises on what a client sends.

Two parts. Property tests throw arbitrary requests (Cookie headers built from
near-miss names, quotes, huge values and real tokens spliced in; arbitrary
methods, CSRF headers, credentials with smuggled non-string members, cookie
mappings, and times up to ten years either side) at ``decide`` and ``logout``.
A state machine then drives browsers through logins, refreshes, clock jumps,
cloned tabs, replayed cookies, logouts, revocations and disabled users, and
checks the session-level invariants after every step.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tokenflow import (
    Decision,
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
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tokenflow.events import (
    LoggedIn,
    Refreshed,
    RefreshEnded,
    ReuseDetected,
    ReuseDetectedReason,
    SessionRevoked,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import (
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)
from tokenflow.web import parse_cookie_header

BASE = 1_700_000_000.0
TEN_YEARS = 10 * 365.25 * 86_400
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
PASSWORD = "correct horse battery staple"
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
STATUS = {
    Process: 200,
    Reissue: 200,
    LoggedOut: 200,
    Unauthorized: 401,
    Forbidden: 403,
    TooManyRequests: 429,
    Unavailable: 503,
}
CLEARING = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+=; Max-Age=0;")


@dataclass
class Fixture:
    flow: Flow
    config: FlowConfig
    google_token: str
    stale: tuple[str, ...]

    def mint(self) -> dict[str, str]:
        """Fresh tokens of a new session, issued at BASE."""
        login = self.flow.decide(
            Request("POST", credentials=PasswordCredentials("alice", PASSWORD)), now=BASE
        )
        assert isinstance(login, Reissue)
        values = [c.partition(";")[0].partition("=")[2] for c in login.set_cookies]
        return {"access": values[0], "refresh": values[1]}


@functools.lru_cache(maxsize=1)
def fixture() -> Fixture:
    """One flow shared by every example (hypothesis and function fixtures do not mix)."""
    clock = FakeClock(BASE)
    users = FakeUserDirectory()
    users.add_user("alice", {"roles": ["editor"]})
    passwords = FakePasswordVerifier({"alice": PASSWORD})
    google = FakeExternalTokenVerifier("google")
    users.link("google", "g-alice", "alice")
    google_token = google.issue("g-alice", expires_at=BASE + 3600)
    config = FlowConfig(trusted_origins=["https://partner.example"])
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=passwords,
        external={"google": google},
        config=config,
        clock=clock,
    )
    fx = Fixture(flow, config, google_token, ())
    fx.stale = tuple(v for _ in range(2) for v in fx.mint().values())
    return fx


@dataclass(frozen=True)
class Slot:
    """Where a token minted for the example goes, and how it is mangled."""

    kind: str
    shape: str

    def render(self, minted: Mapping[str, str]) -> str:
        t = minted[self.kind]
        return {
            "plain": t,
            "quoted": f'"{t}"',
            "truncated": t[:-1],
            "extended": t + "A",
            "split": t[: len(t) // 2] + ";" + t[len(t) // 2 :],
            "respaced": f" {t}\t",
        }[self.shape]


def render(pieces: Any, minted: Mapping[str, str]) -> Any:
    if isinstance(pieces, Slot):
        return pieces.render(minted)
    if isinstance(pieces, tuple):
        return "".join(render(p, minted) for p in pieces)
    if isinstance(pieces, dict):
        return {k: render(v, minted) for k, v in pieces.items()}
    return pieces


def has_slot(pieces: Any) -> bool:
    if isinstance(pieces, Slot):
        return True
    if isinstance(pieces, tuple):
        return any(has_slot(p) for p in pieces)
    if isinstance(pieces, dict):
        return any(has_slot(v) for v in pieces.values())
    return False


NAMES = [
    ACCESS,
    REFRESH,
    "__host-tf_access",
    "__Host-tf_access2",
    "__Host-tf_refres",
    "__Host-tf_access ",
    " __Host-tf_refresh",
    "__Host-tf_refresh\t",
    "tf_access",
    "theme",
    "",
    '"__Host-tf_access"',
]

slots = st.builds(
    Slot,
    st.sampled_from(["access", "refresh"]),
    st.sampled_from(["plain", "plain", "plain", "quoted", "truncated", "extended", "split"]),
)
cookie_values = st.one_of(
    slots,
    st.sampled_from(fixture().stale),
    st.text(max_size=40),
    st.text(alphabet="ABCDEFabcdef0123456789-_=+/\"' ", max_size=300),
    st.integers(0, 20_000).map(lambda n: "A" * n),
    st.sampled_from(['"', "", '""']),
)
pairs = st.tuples(
    st.one_of(st.sampled_from(NAMES), st.text(max_size=12)),
    st.sampled_from(["=", "", "==", " = "]),
    cookie_values,
    st.sampled_from([";", "; ", ";;", " ; ", ";\t", ",", ""]),
)
auth_pairs = st.tuples(
    st.sampled_from([ACCESS, REFRESH]), st.just("="), slots, st.sampled_from(["; ", ";"])
)
spliced = st.lists(st.one_of(auth_pairs, auth_pairs, pairs), min_size=1, max_size=5).map(
    lambda ps: tuple(piece for pair in ps for piece in pair)
)
cookie_headers = st.one_of(st.none(), st.text(), spliced, st.just("A" * 16_385))
clean = st.tuples(
    st.sampled_from(["", "theme=dark; "]),
    st.sampled_from([f"{ACCESS}=", f"{ACCESS}=bogus; {ACCESS}=", "nothing="]),
    st.builds(Slot, st.just("access"), st.sampled_from(["plain", "quoted", "respaced"])),
    st.sampled_from([f"; {REFRESH}=", "; other="]),
    st.builds(Slot, st.just("refresh"), st.sampled_from(["plain", "quoted", "truncated"])),
)
smuggled = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
    st.booleans(),
    st.tuples(st.text(max_size=4)),
    st.frozensets(st.integers(), max_size=2),
)
texts = st.one_of(st.text(max_size=30), smuggled)
credentials = st.one_of(
    st.none(),
    st.builds(
        PasswordCredentials,
        st.one_of(st.just("alice"), texts),
        st.one_of(st.just(PASSWORD), texts),
    ),
    st.builds(
        ExternalTokenCredentials,
        st.one_of(st.sampled_from(["google", "okta", ""]), texts),
        st.one_of(st.just(fixture().google_token), texts),
    ),
    smuggled,
    st.text(max_size=10),
)
cookie_mappings = st.one_of(
    st.none(),
    st.none(),
    st.dictionaries(
        st.one_of(st.sampled_from(NAMES), st.text(max_size=10)),
        st.one_of(cookie_values, smuggled),
        max_size=4,
    ),
)
methods = st.one_of(
    st.sampled_from(["GET", "GET", "GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "get"]),
    st.text(max_size=8),
)
sites = st.one_of(
    st.none(),
    st.sampled_from(["same-origin", "same-site", "cross-site", "none", "", " same-origin "]),
    st.text(max_size=16),
)
origins = st.one_of(
    st.none(),
    st.sampled_from(
        ["https://app.example", "https://partner.example", "null", "https://evil.example", ""]
    ),
    st.text(max_size=30),
)
hosts = st.one_of(st.none(), st.sampled_from(["app.example", ""]), st.text(max_size=16))
times = st.one_of(
    # Mostly around the minted tokens' lifetimes, so that valid tokens get through...
    st.sampled_from([BASE, BASE + 1.5, BASE + 119, BASE + 124.9, BASE + 125, BASE + 1804]),
    st.floats(BASE - 10, BASE + 200),
    st.floats(BASE - 10, BASE + 4_000),
    # ...and anywhere within ten years either side.
    st.floats(BASE - TEN_YEARS, BASE + TEN_YEARS),
)
drafts = st.one_of(
    # Anything at all...
    st.fixed_dictionaries(
        {
            "method": methods,
            "cookie_header": cookie_headers,
            "cookies": cookie_mappings,
            "credentials": credentials,
            "sec_fetch_site": sites,
            "origin": origins,
            "host": hosts,
        }
    ),
    # ...and what a same-origin page sends, so that the flow's deeper branches are reached.
    st.fixed_dictionaries(
        {
            "method": st.sampled_from(["GET", "POST", "HEAD"]),
            "cookie_header": st.one_of(spliced, clean),
            "cookies": st.one_of(
                st.none(),
                st.none(),
                st.fixed_dictionaries({ACCESS: slots, REFRESH: slots}),
            ),
            "credentials": st.one_of(st.none(), st.none(), credentials),
            "sec_fetch_site": st.sampled_from([None, "same-origin"]),
            "origin": st.sampled_from([None, "https://app.example"]),
            "host": st.just("app.example"),
        }
    ),
)


def build(draft: dict[str, Any]) -> Request:
    """The request, with fresh tokens minted for the example where it has slots."""
    minted = fixture().mint() if has_slot(draft) else {}
    return Request(**{k: render(v, minted) for k, v in draft.items()})


def assert_well_formed(
    decision: Decision, request: Request, now: float, leeway: int, *, logout: bool = False
) -> None:
    """The invariants every decision keeps, whatever the request."""
    assert type(decision) in STATUS, decision
    assert decision.status == STATUS[type(decision)]
    # Every port is healthy here: nothing the client sends may look like an outage.
    assert not isinstance(decision, Unavailable), decision
    if isinstance(decision, Forbidden):
        # Unsafe methods, and logins and logouts whatever their method, are
        # cross-origin checked.
        assert logout or request.method not in SAFE or request.credentials is not None
        assert decision.set_cookies == ()
    if isinstance(decision, Process):
        assert now < decision.claims["exp"] + leeway
        assert decision.claims["iat"] <= now + leeway
        assert isinstance(decision.user_id, str)
    if isinstance(decision, Reissue):
        assert [c.partition("=")[0] for c in decision.set_cookies] == [ACCESS, REFRESH]
        assert all(not CLEARING.match(c) for c in decision.set_cookies)
    else:
        assert all(CLEARING.match(c) for c in decision.set_cookies), decision.set_cookies


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draft=drafts, now=times)
def test_decide_always_returns_a_decision(draft: dict[str, Any], now: float) -> None:
    fx = fixture()
    request = build(draft)
    decision = fx.flow.decide(request, now=now)
    event(type(decision).__name__)
    for happened in decision.events:
        event(type(happened).__name__)
    assert_well_formed(decision, request, now, fx.config.leeway)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draft=drafts, now=times)
def test_logout_always_returns_logged_out_or_forbidden(draft: dict[str, Any], now: float) -> None:
    fx = fixture()
    request = build(draft)
    decision = fx.flow.logout(request, now=now)
    event(f"logout: {type(decision).__name__}, {len(decision.events)} events")
    assert_well_formed(decision, request, now, fx.config.leeway, logout=True)
    if isinstance(decision, LoggedOut):
        assert [c.partition("=")[0] for c in decision.set_cookies] == [ACCESS, REFRESH]
    else:
        assert isinstance(decision, Forbidden)


# The smuggled values above are all hashable; an unhashable provider still breaks decide().
@settings(max_examples=20, deadline=None)
@given(
    provider=st.one_of(
        st.lists(st.text(max_size=5), max_size=2), st.dictionaries(st.text(max_size=3), st.none())
    )
)
def test_unhashable_provider_never_raises(provider: Any) -> None:
    fx = fixture()
    request = Request("POST", credentials=ExternalTokenCredentials(provider, "token"))
    decision = fx.flow.decide(request, now=BASE)
    assert isinstance(decision, Unauthorized)


# -- the state machine ----------------------------------------------------------------

USERS = {"alice": "alice@example.com", "bob": "bob@example.com"}
STEPS = [0, 1, 2, 4, 6, 30, 61, 130, 301, 1000]


class BrowsersAgainstOneFlow(RuleBasedStateMachine):
    """Browsers (and thieves) against one flow, with a model of which sessions are dead."""

    def __init__(self) -> None:
        super().__init__()
        self.config = FlowConfig(
            access_ttl=60, refresh_idle_ttl=300, refresh_absolute_ttl=900, grace_seconds=5
        )
        self.clock = FakeClock(BASE)
        self.store = MemoryStore()
        self.users = FakeUserDirectory()
        self.passwords = FakePasswordVerifier()
        for user_id, email in USERS.items():
            self.users.add_user(user_id, {"roles": [user_id]})
            self.passwords.set_password(email, PASSWORD, user_id=user_id)
        self.flow = Flow(
            KeyRing.generate(),
            self.store,
            self.users,
            passwords=self.passwords,
            config=self.config,
            clock=self.clock,
        )
        self.browsers = [Browser(self.clock)]
        self.snapshots: list[dict[str, str]] = []
        self.owner: dict[str, str] = {}  # every session id ever opened -> its user
        self.dead: dict[str, float] = {}  # session id -> when it was revoked or ended
        self.disabled: dict[str, float] = {}  # user id -> when it was disabled
        # The rotation model: which generation each refresh token carries, each
        # session's current generation and the time of its latest rotation.
        self.generation_of: dict[str, tuple[str, int]] = {}  # refresh token -> (sid, gen)
        self.current: dict[str, int] = {}
        self.rotated_at: dict[str, float] = {}

    # -- helpers ----------------------------------------------------------------------

    def _browser(self, index: int) -> Browser:
        return self.browsers[index % len(self.browsers)]

    def _check_rotation(self, happened: Refreshed | ReuseDetected, presented: str | None) -> None:
        """The store's answer agrees with the generation of the token that was sent."""
        assert presented in self.generation_of, "a refresh event for a token never issued"
        sid, sent = self.generation_of[presented]
        assert sid == happened.session_id
        current = self.current[sid]
        inside = self.clock() - self.rotated_at.get(sid, -1e18) < self.config.grace_seconds
        if isinstance(happened, ReuseDetected):
            assert sent < current, "a current refresh token was called reuse"
            assert not (sent == current - 1 and inside), "the predecessor in grace was reuse"
            expected = (
                ReuseDetectedReason.PREDECESSOR_AFTER_GRACE
                if sent == current - 1
                else ReuseDetectedReason.OLDER_GENERATION
            )
            assert happened.reason is expected
        elif happened.grace:
            assert sent == current - 1, "grace for a token that is not the predecessor"
            assert inside, "grace outside the window"
            assert happened.generation == current
        else:
            assert sent == current, "a stale refresh token rotated"
            assert happened.generation == current + 1
            self.current[sid] = happened.generation
            self.rotated_at[sid] = self.clock()

    def _observe(self, decision: Decision, request: Request) -> None:
        now = self.clock()
        limit = self.config.access_ttl + self.config.leeway
        assert_well_formed(decision, request, now, self.config.leeway)
        presented = parse_cookie_header(request.cookie_header or "").get(REFRESH)
        event(type(decision).__name__)
        generation = 0
        for happened in decision.events:
            event(type(happened).__name__)
            if isinstance(happened, LoggedIn):
                assert happened.session_id not in self.owner, "a login reused a session id"
                self.owner[happened.session_id] = happened.user_id
                self.current[happened.session_id] = 0
            elif isinstance(happened, (Refreshed, ReuseDetected)):
                self._check_rotation(happened, presented)
            if isinstance(happened, (SessionRevoked, ReuseDetected, RefreshEnded)):
                self.dead.setdefault(happened.session_id, now)
            elif isinstance(happened, Refreshed):
                event(f"Refreshed(grace={happened.grace})")
                generation = happened.generation
        if isinstance(decision, Reissue):
            sid = decision.session_id
            assert sid not in self.dead, f"Reissue for dead session {sid}"
            assert decision.user_id not in self.disabled, "Reissue for a disabled user"
            assert self.owner[sid] == decision.user_id
            live = {s.session_id for s in self.store.sessions_of(decision.user_id, now=now)}
            assert sid in live
            (info,) = [
                s for s in self.store.sessions_of(decision.user_id, now=now) if s.session_id == sid
            ]
            assert info.generation == self.current[sid] == generation
            issued = parse_cookie_header(decision.set_cookies[1].partition(";")[0])[REFRESH]
            self.generation_of[issued] = (sid, generation)
        if isinstance(decision, Process):
            sid = decision.session_id
            if sid in self.dead:
                assert now < self.dead[sid] + limit, "revocation outlived an access lifetime"
            if decision.user_id in self.disabled:
                assert now < self.disabled[decision.user_id] + limit

    def _send(self, browser: Browser, request: Request) -> None:
        decision = self.flow.decide(request)
        self._observe(decision, request)
        browser.receive(decision.set_cookies)
        if isinstance(decision, Reissue) and len(self.snapshots) < 16:
            # What a thief copying the cookie jar right now would hold.
            self.snapshots.append({name: value for name, (value, _) in browser.jar.items()})

    @initialize(user=st.sampled_from(sorted(USERS)))
    def first_login(self, user: str) -> None:
        browser = self.browsers[0]
        self._send(
            browser, browser.request("POST", credentials=PasswordCredentials(USERS[user], PASSWORD))
        )

    # -- rules ------------------------------------------------------------------------

    @rule(index=st.integers(0, 7), user=st.sampled_from(sorted(USERS)), right=st.booleans())
    def login(self, index: int, user: str, right: bool) -> None:
        browser = self._browser(index)
        secret = PASSWORD if right else "wrong"
        request = browser.request("POST", credentials=PasswordCredentials(USERS[user], secret))
        self._send(browser, request)

    @rule(
        index=st.integers(0, 7),
        method=st.sampled_from(["GET", "POST"]),
        same_origin=st.booleans(),
    )
    def request(self, index: int, method: str, same_origin: bool) -> None:
        browser = self._browser(index)
        self._send(browser, browser.request(method, same_origin=same_origin))

    @rule(index=st.integers(0, 7))
    def refresh(self, index: int) -> None:
        """A request whose access cookie has gone (expired, or a tab that lost it)."""
        browser = self._browser(index)
        browser.jar.pop(ACCESS, None)
        self._send(browser, browser.request())

    @rule(index=st.integers(0, 7), gap=st.sampled_from([0, 1, 4, 5, 6]))
    def parallel_tabs(self, index: int, gap: int) -> None:
        """Two tabs holding the same refresh token refresh ``gap`` seconds apart."""
        first = self._browser(index)
        second = first.clone()
        for browser in (first, second):
            browser.jar.pop(ACCESS, None)
        self._send(first, first.request())
        self.clock.advance(gap)
        self._send(second, second.request())

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(index=st.integers(0, 7))
    def clone_tab(self, index: int) -> None:
        if len(self.browsers) < 6:
            self.browsers.append(self._browser(index).clone())

    @rule(index=st.integers(0, 15), refresh_only=st.booleans())
    def replay_old_cookies(self, index: int, refresh_only: bool) -> None:
        if not self.snapshots:
            return
        jar: Mapping[str, str] = self.snapshots[index % len(self.snapshots)]
        if refresh_only:
            jar = {k: v for k, v in jar.items() if k == REFRESH}
        thief = Browser(self.clock)
        header = "; ".join(f"{k}={v}" for k, v in jar.items()) or None
        self._send(thief, Request(cookie_header=header))

    @rule(index=st.integers(0, 7), same_origin=st.booleans())
    def logout(self, index: int, same_origin: bool) -> None:
        browser = self._browser(index)
        request = browser.request("POST", same_origin=same_origin)
        decision = self.flow.logout(request)
        self._observe(decision, request)
        if same_origin:
            assert isinstance(decision, LoggedOut)
        else:
            assert isinstance(decision, Forbidden)
        browser.receive(decision.set_cookies)

    @rule(user=st.sampled_from(sorted(USERS)))
    def revoke_user(self, user: str) -> None:
        now = self.clock()
        live = self.store.sessions_of(user, now=now)
        assert self.flow.revoke_user(user) >= len(live)
        for sid, owner in self.owner.items():
            if owner == user:
                self.dead.setdefault(sid, now)

    @rule(user=st.sampled_from(sorted(USERS)))
    def disable_user(self, user: str) -> None:
        self.users.disable(user)
        self.disabled.setdefault(user, self.clock())

    @rule(user=st.sampled_from(sorted(USERS)))
    def enable_user(self, user: str) -> None:
        self.users.enable(user)
        self.disabled.pop(user, None)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def dead_sessions_stay_dead(self) -> None:
        now = self.clock()
        for user in USERS:
            for info in self.store.sessions_of(user, now=now):
                assert info.session_id in self.owner
                assert info.session_id not in self.dead, "a dead session is live in the store"


# Sizes (examples, steps) come from the Hypothesis profile (tests/conftest.py).
BrowsersAgainstOneFlow.TestCase.settings = settings(deadline=None)
test_browsers_against_one_flow = BrowsersAgainstOneFlow.TestCase
