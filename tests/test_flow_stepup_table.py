"""Step-up bypasses: a table of forged, stale and downgraded claims that must all
be refused (issue 22's ``stepup_bypasses`` goal is 0), a property over every
sealed ``aal``/``auth_time`` value, carry-over through a device-bound refresh,
and both drivers deciding alike on the two-step path.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import (
    AsyncFlow,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    SecondFactorRequired,
    StepUpRequired,
    Unauthorized,
)
from tokenflow.events import SteppedUp, UnauthorizedReason
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeSecondFactors,
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle
from tokenflow.tokens import Purpose, TokenCodec

ALICE = PasswordCredentials("alice", "correct horse battery staple")
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
PARTIAL = "__Host-tf-2fa"
T0 = 1_700_000_000.0
AAL2 = Requirement(aal=2)
RECENT = Requirement(max_age=300)
BOTH = Requirement(aal=2, max_age=300)


@dataclass
class Setup:
    clock: FakeClock
    keyring: KeyRing
    flow: Flow
    factors: FakeSecondFactors
    store: MemoryStore

    def code(self) -> str:
        return self.factors.code_at("alice", self.clock())


def setup(**config: Any) -> Setup:
    clock = FakeClock(T0)
    users = FakeUserDirectory()
    users.add_user("alice")
    factors = FakeSecondFactors()
    keyring = KeyRing.generate()
    store = MemoryStore()
    flow = Flow(
        keyring,
        store,
        users,
        passwords=FakePasswordVerifier({ALICE.username: ALICE.password}),
        throttle=MemoryThrottle(),
        second_factors=factors,
        config=FlowConfig(**config),
        clock=clock,
    )
    return Setup(clock, keyring, flow, factors, store)


def login_one_factor(s: Setup) -> Browser:
    browser = Browser(s.clock)
    decision = s.flow.login(browser.request("POST", credentials=ALICE))
    assert isinstance(decision, Reissue)
    browser.receive(decision.set_cookies)
    return browser


def partial_login(s: Setup) -> Browser:
    s.factors.enroll("alice")
    browser = Browser(s.clock)
    first = s.flow.login(browser.request("POST", credentials=ALICE))
    assert isinstance(first, SecondFactorRequired)
    browser.receive(first.set_cookies)
    return browser


def only(cookies: dict[str, str]) -> Request:
    return Request(cookies=cookies, host="app.example")


def flip(token: str) -> str:
    """The token with one character of its ciphertext changed."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def reseal(s: Setup, token: str, purpose: Purpose, **changes: Any) -> str:
    """What an attacker holding the *wrong* key ring can make of a token: new
    claims, sealed under a key the server does not have."""
    claims = TokenCodec(s.keyring).open(purpose, token, now=s.clock())
    claims.update(changes)
    return TokenCodec(KeyRing.generate()).seal(purpose, claims)


# Each row: a name, and what builds the request (from a fresh setup) and the requirement.
Row = tuple[str, Callable[[Setup], Request], Requirement]


def tampered_access(s: Setup) -> Request:
    browser = login_one_factor(s)
    return only({ACCESS: flip(browser.cookies()[ACCESS])})


def aal1_access(s: Setup) -> Request:
    return only({ACCESS: login_one_factor(s).cookies()[ACCESS]})


def aal1_both_cookies(s: Setup) -> Request:
    return login_one_factor(s).request()


def aal1_refresh_only(s: Setup) -> Request:
    browser = login_one_factor(s)
    s.clock.advance(s.flow.config.access_ttl + 10)
    return only({REFRESH: browser.cookies()[REFRESH]})


def stale_auth_time(s: Setup) -> Request:
    browser = login_one_factor(s)
    s.clock.advance(61)  # the access token is still valid; its auth_time is 61 s old
    return only({ACCESS: browser.cookies()[ACCESS]})


def stale_through_refresh(s: Setup) -> Request:
    s.factors.enroll("alice")
    browser = Browser(s.clock)
    browser.receive(s.flow.login(browser.request("POST", credentials=ALICE)).set_cookies)
    second = s.flow.login(browser.request("POST", credentials=SecondFactorCredentials(s.code())))
    browser.receive(second.set_cookies)
    s.clock.advance(400)  # rotations carry auth_time: it stays 400 s old
    return only({REFRESH: browser.cookies()[REFRESH]})


def forged_aal(s: Setup) -> Request:
    browser = login_one_factor(s)
    return only({ACCESS: reseal(s, browser.cookies()[ACCESS], Purpose.ACCESS, aal=2)})


def forged_refresh_aal(s: Setup) -> Request:
    browser = login_one_factor(s)
    forged = reseal(s, browser.cookies()[REFRESH], Purpose.REFRESH, aal=2, auth_time=int(T0))
    return only({REFRESH: forged})


def partial_as_access(s: Setup) -> Request:
    return only({ACCESS: partial_login(s).cookies()[PARTIAL]})


def partial_as_refresh(s: Setup) -> Request:
    return only({REFRESH: partial_login(s).cookies()[PARTIAL]})


def partial_alone(s: Setup) -> Request:
    return only({PARTIAL: partial_login(s).cookies()[PARTIAL]})


def partial_expired_as_refresh(s: Setup) -> Request:
    partial = partial_login(s).cookies()[PARTIAL]
    s.clock.advance(s.flow.config.second_factor_ttl + 60)
    return only({REFRESH: partial, PARTIAL: partial})


def pre_step_up_access(s: Setup) -> Request:
    browser = login_one_factor(s)
    old = browser.cookies()[ACCESS]
    s.factors.enroll("alice")
    stepped = s.flow.step_up(browser.request("POST", credentials=SecondFactorCredentials(s.code())))
    assert isinstance(stepped, Reissue)
    assert stepped.aal == 2
    return only({ACCESS: old})


def pre_step_up_refresh_after_grace(s: Setup) -> Request:
    browser = login_one_factor(s)
    old = browser.cookies()[REFRESH]
    s.factors.enroll("alice")
    stepped = s.flow.step_up(browser.request("POST", credentials=SecondFactorCredentials(s.code())))
    assert isinstance(stepped, Reissue)
    s.clock.advance(s.flow.config.grace_seconds + 1)
    return only({REFRESH: old})


def access_of_another_ring(s: Setup) -> Request:
    codec = TokenCodec(KeyRing.generate())
    now = int(s.clock())
    claims = {"sub": "alice", "sid": "x", "iat": now, "exp": now + 60, "aal": 2, "auth_time": now}
    return only({ACCESS: codec.seal(Purpose.ACCESS, claims)})


def future_auth_time(s: Setup) -> Request:
    # Even with the right key, a token claiming an authentication in the
    # future (a faulty or skewed minting server) fails max_age.
    codec = TokenCodec(s.keyring)
    now = int(s.clock())
    claims = {
        "sub": "alice",
        "sid": "x",
        "iat": now,
        "exp": now + 60,
        "aal": 2,
        "auth_time": now + 3600,
    }
    return only({ACCESS: codec.seal(Purpose.ACCESS, claims)})


ROWS: list[Row] = [
    ("tampered access token", tampered_access, AAL2),
    ("aal1 access token to an aal2 route", aal1_access, AAL2),
    ("aal1 session, both cookies, to an aal2 route", aal1_both_cookies, AAL2),
    ("aal1 refresh token to an aal2 route", aal1_refresh_only, AAL2),
    ("auth_time too old", stale_auth_time, Requirement(max_age=60)),
    ("auth_time too old after rotations", stale_through_refresh, BOTH),
    ("aal forged in an access token under another key", forged_aal, AAL2),
    ("aal forged in a refresh token under another key", forged_refresh_aal, AAL2),
    ("partial cookie as the access token", partial_as_access, Requirement()),
    ("partial cookie as the refresh token", partial_as_refresh, Requirement()),
    ("partial cookie alone", partial_alone, Requirement()),
    ("partial cookie past its expiry", partial_expired_as_refresh, Requirement()),
    ("access token minted before a step-up", pre_step_up_access, AAL2),
    ("refresh token spent by a step-up, after grace", pre_step_up_refresh_after_grace, AAL2),
    ("aal2 token sealed under an unknown key ring", access_of_another_ring, AAL2),
    ("auth_time in the future", future_auth_time, RECENT),
]


@pytest.mark.parametrize(("name", "build", "requirement"), ROWS, ids=[r[0] for r in ROWS])
def test_every_forged_stale_or_downgraded_claim_is_refused(
    name: str, build: Callable[[Setup], Request], requirement: Requirement
) -> None:
    s = setup()
    request = replace(build(s), requirement=requirement)
    decision = s.flow.decide(request)
    assert not isinstance(decision, (Process, Reissue)), name
    assert decision.status == 401


def test_the_table_rows_pass_when_the_requirement_is_met() -> None:
    """The rows are refused for the claim they attack, not for being malformed
    requests: the honest counterparts are served."""
    s = setup()
    s.factors.enroll("alice")
    browser = Browser(s.clock)
    browser.receive(s.flow.login(browser.request("POST", credentials=ALICE)).set_cookies)
    second = s.flow.login(browser.request("POST", credentials=SecondFactorCredentials(s.code())))
    browser.receive(second.set_cookies)
    assert isinstance(s.flow.decide(replace(browser.request(), requirement=BOTH)), Process)
    s.clock.advance(s.flow.config.access_ttl + 10)
    refreshed = s.flow.decide(
        replace(only({REFRESH: browser.cookies()[REFRESH]}), requirement=BOTH)
    )
    assert isinstance(refreshed, Reissue)


# -- every sealed value of aal and auth_time ------------------------------------------

claim_values = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=5),
    st.integers(min_value=int(T0) - 1000, max_value=int(T0) + 1000),
    st.booleans(),
    st.text(max_size=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=2),
)
_CODEC_RING = KeyRing.generate()


@settings(max_examples=300, deadline=None)
@given(
    aal=claim_values,
    auth_time=claim_values,
    required_aal=st.sampled_from([1, 2]),
    max_age=st.one_of(st.none(), st.integers(min_value=1, max_value=2000)),
)
def test_an_access_token_is_served_only_when_its_sealed_claims_meet_the_requirement(
    aal: Any, auth_time: Any, required_aal: int, max_age: int | None
) -> None:
    clock = FakeClock(T0)
    users = FakeUserDirectory()
    flow = Flow(_CODEC_RING, MemoryStore(), users, clock=clock)
    claims: dict[str, Any] = {"sub": "u", "sid": "s", "iat": int(T0), "exp": int(T0) + 60}
    if aal is not None:
        claims["aal"] = aal
    if auth_time is not None:
        claims["auth_time"] = auth_time
    token = TokenCodec(_CODEC_RING).seal(Purpose.ACCESS, claims)
    requirement = Requirement(required_aal, max_age)
    decision = flow.decide(Request(cookies={ACCESS: token}, requirement=requirement))
    strong = type(aal) is int and aal == 2
    recent = type(auth_time) is int and auth_time >= 0 and -60 <= T0 - auth_time <= (max_age or 0)
    expected = (strong or required_aal == 1) and (max_age is None or recent)
    assert isinstance(decision, Process) == expected
    if not expected:
        assert isinstance(decision, StepUpRequired)
        assert decision.requirement == requirement


# -- a device-bound refresh carries the claims too ------------------------------------


def test_a_device_bound_refresh_carries_aal_amr_and_auth_time() -> None:
    pytest.importorskip("joserfc")
    from tokenflow import DeviceBinding, DeviceRegistered
    from tokenflow.dbsc import DbscProofVerifier
    from tokenflow.testing.dbsc import DbscClient

    clock = FakeClock(T0)
    users = FakeUserDirectory()
    users.add_user("alice")
    factors = FakeSecondFactors()
    factors.enroll("alice")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({ALICE.username: ALICE.password}),
        throttle=MemoryThrottle(),
        second_factors=factors,
        config=FlowConfig(device_binding=DeviceBinding()),
        clock=clock,
        proofs=DbscProofVerifier(),
    )
    client = DbscClient(clock)
    client.receive(flow.login(client.request("POST", credentials=ALICE)).set_cookies)
    code = factors.code_at("alice", clock())
    login = flow.login(client.request("POST", credentials=SecondFactorCredentials(code)))
    assert isinstance(login, Reissue)
    client.receive_decision(login)
    sealed = (login.aal, login.amr, login.auth_time)
    assert sealed == (2, ("pwd", "otp"), int(T0))
    registered = client.register(flow)
    assert isinstance(registered, DeviceRegistered)
    assert (registered.aal, registered.amr, registered.auth_time) == sealed
    for _ in range(2):
        clock.advance(121)
        refreshed = client.refresh(flow)
        assert isinstance(refreshed, Reissue)
        assert (refreshed.aal, refreshed.amr, refreshed.auth_time) == sealed
    assert isinstance(flow.decide(replace(client.request(), requirement=AAL2)), Process)


# -- both drivers, same decisions --------------------------------------------------

_TOKEN_VALUE = re.compile(r"^([^=;]+)=[^;]+")


def normalize(decision: Any) -> tuple[Any, ...]:
    cookies = tuple(_TOKEN_VALUE.sub(r"\1=<token>", c) for c in decision.set_cookies)
    claims = getattr(decision, "claims", None)
    return (
        type(decision).__name__,
        decision.status,
        getattr(decision, "reason", None),
        getattr(decision, "methods", None),
        getattr(decision, "requirement", None),
        None if claims is None else dict(claims),
        cookies,
        decision.events,
    )


def test_both_drivers_decide_the_two_step_path_alike() -> None:
    secret = b"0123456789abcdefghij"
    clock = FakeClock(T0)
    ring = KeyRing.generate()
    sync_factors = FakeSecondFactors()
    sync_factors.enroll("alice", secret=secret, recovery_codes=0)
    async_factors = AsyncFakeSecondFactors()
    async_factors.sync.enroll("alice", secret=secret, recovery_codes=0)
    sync_users, async_users = FakeUserDirectory(), FakeUserDirectory()
    for users in (sync_users, async_users):
        users.add_user("alice", {"roles": ["admin"]})
    passwords = {ALICE.username: ALICE.password}
    sync_flow = Flow(
        ring,
        MemoryStore(),
        sync_users,
        passwords=FakePasswordVerifier(passwords),
        throttle=MemoryThrottle(),
        second_factors=sync_factors,
        clock=clock,
    )
    async_flow = AsyncFlow(
        ring,
        AsyncMemoryStore(),
        AsyncFakeUserDirectory(async_users),
        passwords=AsyncFakePasswordVerifier(FakePasswordVerifier(passwords)),
        throttle=AsyncMemoryThrottle(),
        second_factors=async_factors,
        clock=clock,
    )
    sync_flow._random = random.Random(3).randbytes
    async_flow._random = random.Random(3).randbytes
    tabs = (Browser(clock), Browser(clock))

    def code(offset: int = 0) -> SecondFactorCredentials:
        return SecondFactorCredentials(sync_factors.code_at("alice", clock() + offset))

    steps: list[tuple[str, Any, Requirement | None]] = [
        ("login", PasswordCredentials(ALICE.username, "wrong"), None),
        ("login", ALICE, None),
        ("login", SecondFactorCredentials("000000"), None),
        ("login", "code", None),
        ("login", ALICE, None),
        ("login", "code", None),  # replayed
        ("decide", None, AAL2),
        ("advance", 130, None),
        ("decide", None, BOTH),
        ("advance", 400, None),
        ("decide", None, RECENT),
        ("step_up", "code", RECENT),
        ("decide", None, BOTH),
        ("step_up", PasswordCredentials("nobody", "x"), None),
    ]
    for kind, credentials, requirement in steps:
        if kind == "advance":
            clock.advance(credentials)
            continue
        if credentials == "code":
            credentials = code()
        answers = []
        for index, flow in enumerate((sync_flow, async_flow)):
            browser = tabs[index]
            method = "POST" if credentials is not None else "GET"
            request = replace(
                browser.request(method, credentials=credentials), requirement=requirement
            )
            call = getattr(flow, kind)
            decision = call(request)
            if asyncio.iscoroutine(decision):
                decision = asyncio.run(decision)
            browser.receive(decision.set_cookies)
            answers.append(normalize(decision))
        assert answers[0] == answers[1], kind
    assert sync_factors.verified == async_factors.sync.verified == 4


# -- step-up on a device-bound session ------------------------------------------------


def _bound_session(*, revoke_on_bare_refresh: bool = False) -> tuple[Any, Any, Any, Any]:
    """A password-only (aal 1) session bound to a device key: (flow, client, factors, clock)."""
    pytest.importorskip("joserfc")
    from tokenflow import DeviceBinding, DeviceRegistered
    from tokenflow.dbsc import DbscProofVerifier
    from tokenflow.testing.dbsc import DbscClient

    clock = FakeClock(T0)
    users = FakeUserDirectory()
    users.add_user("alice")
    factors = FakeSecondFactors()
    binding = DeviceBinding(revoke_on_bare_refresh=revoke_on_bare_refresh)
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({ALICE.username: ALICE.password}),
        throttle=MemoryThrottle(),
        second_factors=factors,
        config=FlowConfig(device_binding=binding),
        clock=clock,
        proofs=DbscProofVerifier(),
    )
    client = DbscClient(clock)
    client.receive_decision(flow.login(client.request("POST", credentials=ALICE)))
    assert isinstance(client.register(flow), DeviceRegistered)
    factors.enroll("alice")  # enrolled after the login: the session is at aal 1
    return flow, client, factors, clock


def test_a_device_bound_session_steps_up_with_its_live_bound_cookie() -> None:
    flow, client, factors, clock = _bound_session()
    assert isinstance(flow.decide(replace(client.request(), requirement=AAL2)), StepUpRequired)
    clock.advance(30)
    code = SecondFactorCredentials(factors.code_at("alice", clock()))
    stepped = flow.step_up(client.request("POST", credentials=code))
    assert isinstance(stepped, Reissue)
    assert stepped.aal == 2
    assert any(isinstance(event, SteppedUp) for event in stepped.events)
    # The answer names the refresh token it hands out in a fresh challenge,
    # so the device's next proof refreshes at once, without a 403 first.
    assert any(name == "Secure-Session-Challenge" for name, _ in stepped.headers)
    client.receive_decision(stepped)
    assert isinstance(flow.decide(replace(client.request(), requirement=AAL2)), Process)
    clock.advance(121)
    refreshed = client.refresh(flow)
    assert isinstance(refreshed, Reissue)
    assert client.forbidden == 0
    assert refreshed.aal == 2
    assert isinstance(flow.decide(replace(client.request(), requirement=AAL2)), Process)


@pytest.mark.parametrize("revoke", [False, True])
def test_a_copied_refresh_cookie_cannot_step_up_a_device_bound_session(revoke: bool) -> None:
    flow, client, factors, clock = _bound_session(revoke_on_bare_refresh=revoke)
    clock.advance(121)  # the bound access cookie has expired: the jar holds the refresh cookie
    thief = client.without_key()
    assert ACCESS not in thief.cookies()
    code = SecondFactorCredentials(factors.code_at("alice", clock()))
    refused = flow.step_up(thief.request("POST", credentials=code))
    assert isinstance(refused, Unauthorized)
    assert refused.reason is UnauthorizedReason.DEVICE_BOUND
    assert refused.set_cookies == ()
    # The device itself still refreshes (unless the host revokes on a bare cookie).
    refreshed = client.refresh(flow)
    assert isinstance(refreshed, Reissue) != revoke
