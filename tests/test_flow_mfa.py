"""Second factors and step-up in the flow (issue 22): two-step login, assurance
claims carried over rotations, requirements, and Flow.step_up.

The second-factor port is tokenflow.testing's FakeSecondFactors, which
honours the port's contract (one use per time step, per recovery code)
without pyotp.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import (
    ConfigError,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    KeyRing,
    PasskeyCredentials,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    SecondFactorRequired,
    StepUpRequired,
    TooManyRequests,
    Unauthorized,
)
from tokenflow.events import (
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    SecondFactorChallenged,
    SecondFactorVerified,
    SteppedUp,
    TokenRejected,
)
from tokenflow.ports import PasskeyLogin, PasskeyRefused
from tokenflow.stores import MemoryStore
from tokenflow.testing import (
    AsyncFakeSecondFactors,
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.throttles import MemoryThrottle, SQLiteThrottle
from tokenflow.tokens import InvalidToken, Purpose, TokenCodec

ALICE = PasswordCredentials("alice@example.com", "correct horse battery staple")
BOB = PasswordCredentials("bob@example.com", "hunter2 hunter2")
WRONG = PasswordCredentials("alice@example.com", "wrong")
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
PARTIAL = "__Host-tf-2fa"
AAL2 = Requirement(aal=2)


class CountingFactors(FakeSecondFactors):
    """FakeSecondFactors that counts factors_of calls (which must not happen
    before the first factor is verified)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def factors_of(self, user_id: str) -> tuple[str, ...]:
        self.asked += 1
        return super().factors_of(user_id)


class FakePasskeys:
    """A passkey verifier that accepts the response ``"<user>:<amr,...>"``."""

    def verify_assertion(self, response: str, *, now: float) -> PasskeyLogin | PasskeyRefused:
        user, _, amr = response.partition(":")
        if not user:
            from tokenflow.ports import PasskeyFailure

            return PasskeyRefused(PasskeyFailure.SIGNATURE)
        methods = tuple(m for m in amr.split(",") if m)
        return PasskeyLogin(user, "cred-" + user, methods, "user" in methods)


@dataclass
class World:
    config: FlowConfig = field(default_factory=FlowConfig)
    second: bool = True
    throttle: Any = None
    clock: FakeClock = field(default_factory=FakeClock)
    store: MemoryStore = field(default_factory=MemoryStore)
    factors: CountingFactors = field(default_factory=CountingFactors)
    keyring: KeyRing = field(default_factory=KeyRing.generate)
    flow: Flow = field(init=False)
    users: FakeUserDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.users = FakeUserDirectory()
        self.users.add_user("alice", {"roles": ["admin"]})
        self.users.add_user("bob")
        passwords = FakePasswordVerifier()
        passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
        passwords.set_password(BOB.username, BOB.password, user_id="bob")
        self.flow = Flow(
            self.keyring,
            self.store,
            self.users,
            passwords=passwords,
            throttle=self.throttle if self.throttle is not None else MemoryThrottle(),
            config=self.config,
            clock=self.clock,
            second_factors=self.factors if self.second else None,
            passkeys=FakePasskeys(),  # type: ignore[arg-type]
        )

    def browser(self) -> Browser:
        return Browser(self.clock)

    def code(self, user: str = "alice") -> str:
        return self.factors.code_at(user, self.clock())

    def live(self, user: str = "alice") -> list[str]:
        return [s.session_id for s in self.store.sessions_of(user, now=self.clock())]


def post(browser: Browser, credentials: Any) -> Request:
    return browser.request("POST", credentials=credentials)


def get(browser: Browser, requirement: Requirement | None = None) -> Request:
    return replace(browser.request(), requirement=requirement)


def two_step(world: World, browser: Browser | None = None) -> tuple[Browser, Reissue]:
    """Log alice (enrolled) in with password and code."""
    browser = browser or world.browser()
    first = world.flow.login(post(browser, ALICE))
    assert isinstance(first, SecondFactorRequired)
    browser.receive(first.set_cookies)
    second = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(second, Reissue), second
    browser.receive(second.set_cookies)
    return browser, second


def one_step(world: World, credentials: PasswordCredentials = ALICE) -> tuple[Browser, Reissue]:
    browser = world.browser()
    decision = world.flow.login(post(browser, credentials))
    assert isinstance(decision, Reissue), decision
    browser.receive(decision.set_cookies)
    return browser, decision


# -- accounts without a second factor: the same answers as before ------------------


def shape(decision: Any) -> tuple[Any, ...]:
    """What a client (and the host's log) sees of a decision, minus random values."""
    events = tuple(
        (type(e).__name__, getattr(e, "reason", None), getattr(e, "method", None))
        for e in decision.events
    )
    claims = getattr(decision, "claims", None)
    kept = None if claims is None else {k: claims[k] for k in claims if k not in ("sid",)}
    return type(decision), decision.status, getattr(decision, "reason", None), events, kept


@pytest.mark.parametrize("credentials", [ALICE, WRONG, BOB], ids=["right", "wrong", "other"])
def test_an_account_without_a_second_factor_gets_the_answers_it_always_got(
    credentials: PasswordCredentials,
) -> None:
    with_port, without = World(), World(second=False)
    answers = []
    for world in (with_port, without):
        answers.append(shape(world.flow.login(post(world.browser(), credentials))))
    assert answers[0] == answers[1]
    # factors_of was asked only after a right password.
    assert with_port.factors.asked == (credentials is not WRONG)


def test_a_wrong_password_on_an_enrolled_account_is_the_ordinary_401_and_asks_nothing() -> None:
    enrolled, plain = World(), World()
    enrolled.factors.enroll("alice")
    answers = [shape(w.flow.login(post(w.browser(), WRONG))) for w in (enrolled, plain)]
    assert answers[0] == answers[1]
    assert answers[0][0] is Unauthorized
    assert enrolled.factors.asked == 0
    assert enrolled.factors.verified == 0


# -- two-step login -------------------------------------------------------------------


def test_a_right_password_on_an_enrolled_account_asks_for_the_second_factor() -> None:
    world = World()
    world.factors.enroll("alice")
    browser = world.browser()
    first = world.flow.login(post(browser, ALICE))
    assert isinstance(first, SecondFactorRequired)
    assert first.status == 401
    assert first.methods == ("totp",)
    assert [type(e) for e in first.events] == [SecondFactorChallenged]
    assert first.events[0] == SecondFactorChallenged("alice", "password", ("totp",))
    (cookie,) = first.set_cookies
    assert cookie.startswith(PARTIAL + "=")
    assert "Max-Age=300" in cookie
    assert "HttpOnly" in cookie
    assert world.live() == []  # no session yet
    browser.receive(first.set_cookies)
    # The partial cookie is no session.
    assert isinstance(world.flow.decide(browser.request()), Unauthorized)
    second = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(second, Reissue)
    assert (second.aal, second.amr, second.auth_time) == (2, ("pwd", "otp"), int(world.clock()))
    assert second.claims["roles"] == ["admin"]
    assert [type(e) for e in second.events] == [SecondFactorVerified, LoggedIn]
    assert second.events[0] == SecondFactorVerified("alice", "totp", None)
    assert any(c.startswith(PARTIAL + "=;") or (c.startswith(PARTIAL + "=") and "Max-Age=0" in c)
               for c in second.set_cookies)  # fmt: skip
    browser.receive(second.set_cookies)
    assert PARTIAL not in browser.cookies()
    assert world.live() == [second.session_id]
    assert isinstance(world.flow.decide(get(browser, AAL2)), Process)


def test_a_one_factor_login_is_aal1_with_its_auth_time() -> None:
    world = World()
    browser, decision = one_step(world)
    assert (decision.aal, decision.amr, decision.auth_time) == (1, ("pwd",), int(world.clock()))
    assert decision.claims["aal"] == 1
    assert isinstance(world.flow.decide(get(browser, AAL2)), StepUpRequired)


def test_a_wrong_code_is_a_401_that_keeps_the_partial_login() -> None:
    world = World()
    world.factors.enroll("alice")
    browser = world.browser()
    first = world.flow.login(post(browser, ALICE))
    browser.receive(first.set_cookies)
    wrong = "000000" if world.code() != "000000" else "111111"
    refused = world.flow.login(post(browser, SecondFactorCredentials(wrong)))
    assert isinstance(refused, Unauthorized)
    assert refused.set_cookies == ()
    assert LoginFailed(LoginFailedReason.BAD_SECOND_FACTOR, "password") in refused.events
    ok = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(ok, Reissue)


def test_a_code_is_accepted_once_per_time_step() -> None:
    world = World()
    world.factors.enroll("alice")
    two_step(world)
    browser = world.browser()
    browser.receive(world.flow.login(post(browser, ALICE)).set_cookies)
    replayed = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(replayed, Unauthorized)
    assert LoginFailed(LoginFailedReason.SECOND_FACTOR_REPLAYED, "password") in replayed.events
    world.clock.advance(30)
    assert isinstance(
        world.flow.login(post(browser, SecondFactorCredentials(world.code()))), Reissue
    )


def test_a_recovery_code_works_once() -> None:
    world = World()
    codes = world.factors.enroll("alice", recovery_codes=2)
    browser = world.browser()
    browser.receive(world.flow.login(post(browser, ALICE)).set_cookies)
    used = world.flow.login(post(browser, SecondFactorCredentials(codes[0])))
    assert isinstance(used, Reissue)
    assert used.aal == 2
    assert SecondFactorVerified("alice", "recovery", 1) in used.events
    again = world.browser()
    again.receive(world.flow.login(post(again, ALICE)).set_cookies)
    refused = world.flow.login(post(again, SecondFactorCredentials(codes[0])))
    assert isinstance(refused, Unauthorized)


def test_a_code_without_a_partial_login_or_past_its_expiry_is_refused() -> None:
    world = World(config=FlowConfig(second_factor_ttl=60))
    world.factors.enroll("alice")
    browser = world.browser()
    bare = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(bare, Unauthorized)
    assert LoginFailed(LoginFailedReason.NO_PARTIAL_LOGIN, "second_factor") in bare.events
    first = world.flow.login(post(browser, ALICE))
    browser.receive(first.set_cookies)
    kept = dict(browser.cookies())
    world.clock.advance(60 + 5 + 1)  # past the ttl and the leeway
    stale = Request(
        "POST",
        cookies=kept,
        credentials=SecondFactorCredentials(world.code()),
        sec_fetch_site="same-origin",
        origin=browser.origin,
        host=browser.host,
    )
    late = world.flow.login(stale)
    assert isinstance(late, Unauthorized)
    assert LoginFailed(LoginFailedReason.NO_PARTIAL_LOGIN, "second_factor") in late.events
    assert world.factors.verified == 0


def test_a_disabled_user_is_refused_at_the_second_step() -> None:
    world = World()
    world.factors.enroll("alice")
    browser = world.browser()
    browser.receive(world.flow.login(post(browser, ALICE)).set_cookies)
    world.users.disable("alice")
    refused = world.flow.login(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(refused, Unauthorized)
    assert world.live() == []


def test_passkey_logins_never_ask_for_a_second_factor_and_uv_counts_when_configured() -> None:
    for counts, expected in ((False, 1), (True, 2)):
        world = World(config=FlowConfig(passkey_user_verification_is_second_factor=counts))
        world.factors.enroll("alice")
        decision = world.flow.login(post(world.browser(), PasskeyCredentials("alice:hwk,user")))
        assert isinstance(decision, Reissue)
        assert decision.aal == expected
        assert world.factors.asked == 0
        # Without user verification it is one factor either way.
        other = world.flow.login(post(world.browser(), PasskeyCredentials("alice:swk")))
        assert isinstance(other, Reissue)
        assert other.aal == 1


def test_second_factors_need_a_throttle_and_ports_of_the_right_kind() -> None:
    users = FakeUserDirectory()
    with pytest.raises(ConfigError, match="throttle"):
        Flow(KeyRing.generate(), MemoryStore(), users, second_factors=FakeSecondFactors())
    with pytest.raises(ConfigError, match="factors_of"):
        Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            throttle=MemoryThrottle(),
            second_factors=object(),  # type: ignore[arg-type]
        )
    with pytest.raises(ConfigError, match="coroutine"):
        Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            throttle=MemoryThrottle(),
            second_factors=AsyncFakeSecondFactors(),  # type: ignore[arg-type]
        )


def test_a_failing_second_factor_port_is_unavailable_and_changes_nothing() -> None:
    world = World()
    world.factors.enroll("alice")
    world.factors.unavailable = True
    decision = world.flow.login(post(world.browser(), ALICE))
    assert decision.status == 503
    assert decision.set_cookies == ()
    assert world.live() == []


# -- the partial-login cookie's own purpose --------------------------------------------


@pytest.mark.parametrize("sealed", list(Purpose))
@pytest.mark.parametrize("opened", list(Purpose))
def test_a_token_opens_only_as_the_purpose_it_was_sealed_for(
    sealed: Purpose, opened: Purpose
) -> None:
    codec = TokenCodec(KeyRing.generate())
    token = codec.seal(sealed, {"sub": "alice", "sid": "s", "iat": 0, "exp": 10**10})
    if sealed is opened:
        assert codec.open(opened, token, now=1.0)["sub"] == "alice"
    else:
        with pytest.raises(InvalidToken):
            codec.open(opened, token, now=1.0)


def test_a_partial_cookie_is_never_a_session_nor_a_refresh_token() -> None:
    world = World()
    world.factors.enroll("alice")
    browser = world.browser()
    first = world.flow.login(post(browser, ALICE))
    browser.receive(first.set_cookies)
    partial = browser.cookies()[PARTIAL]
    for name in (ACCESS, REFRESH):
        request = Request(cookies={name: partial}, host="app.example")
        decision = world.flow.decide(request)
        assert isinstance(decision, Unauthorized)
        assert any(isinstance(e, TokenRejected) for e in decision.events)
        stepped = world.flow.step_up(
            Request(
                "POST",
                cookies={name: partial},
                credentials=SecondFactorCredentials(world.code()),
                sec_fetch_site="same-origin",
                origin=browser.origin,
                host=browser.host,
            )
        )
        assert isinstance(stepped, Unauthorized)
    assert world.live() == []


def test_a_session_token_is_never_a_partial_login() -> None:
    world = World()
    world.factors.enroll("bob")  # bob is enrolled, alice is not
    browser, _ = one_step(world)
    for name in (ACCESS, REFRESH):
        request = Request(
            "POST",
            cookies={PARTIAL: browser.cookies()[name]},
            credentials=SecondFactorCredentials(world.code("bob")),
            sec_fetch_site="same-origin",
            origin=browser.origin,
            host=browser.host,
        )
        refused = world.flow.login(request)
        assert isinstance(refused, Unauthorized)
        assert LoginFailed(LoginFailedReason.NO_PARTIAL_LOGIN, "second_factor") in refused.events


# -- guesses are throttled per account ---------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_fifty_parallel_guesses_are_verified_at_most_as_often_as_the_limit(
    backend: str, tmp_path: Path
) -> None:
    throttle = MemoryThrottle() if backend == "memory" else SQLiteThrottle(tmp_path / "t.db")
    world = World(throttle=throttle)
    world.factors.enroll("alice")
    browser = world.browser()
    browser.receive(world.flow.login(post(browser, ALICE)).set_cookies)
    right = world.code()
    now = world.clock()
    # Fifty wrong guesses (none of them the code of the step before or after).
    near = {world.factors.code_at("alice", now + d) for d in (-30, 0, 30)}
    guesses = [c for c in (f"{(int(right) + 7 + i) % 1_000_000:06d}" for i in range(60))
               if c not in near][:50]  # fmt: skip
    barrier = threading.Barrier(len(guesses))
    answers: list[Any] = []
    lock = threading.Lock()

    def guess(code: str) -> None:
        # Every guess from its own address: only the account's count limits them.
        request = replace(
            post(browser, SecondFactorCredentials(code)), client_address=f"10.0.{len(code)}.1"
        )
        barrier.wait()
        decision = world.flow.login(request, now=now)
        with lock:
            answers.append(decision)

    threads = [threading.Thread(target=guess, args=(code,)) for code in guesses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    free = world.flow.config.throttle.second_factor.free
    # The throttle's reservations let at most `free` codes reach the verifier.
    assert world.factors.verified <= free
    assert not any(isinstance(d, Reissue) for d in answers)
    assert sum(isinstance(d, TooManyRequests) for d in answers) >= len(guesses) - free
    # Now even the right code waits: the throttle answers before the verifier.
    late = world.flow.login(post(browser, SecondFactorCredentials(right)), now=now)
    assert isinstance(late, TooManyRequests)
    assert world.factors.verified <= free
    # Password guesses and code guesses are counted apart.
    assert isinstance(world.flow.login(post(world.browser(), ALICE), now=now), SecondFactorRequired)


class AccountKeyedPasswords(FakePasswordVerifier):
    """A password verifier whose accounts are their user ids, as
    tokenflow.passwords.PasswordVerifier names them (here: the usernames)."""

    def account_key(self, username: str) -> str | None:
        return username if username in ("alice", "second-factor\x00alice") else None


def test_no_account_shares_a_throttle_key_with_another_accounts_second_factor() -> None:
    """An account whose id spells ``second-factor\\0`` + a user id has its own
    password count: its logins neither lock nor reset that user's code count
    (else each of its successful logins would buy another round of free
    guesses at the victim's codes)."""
    clock = FakeClock()
    users = FakeUserDirectory()
    mallory = "second-factor\x00alice"
    users.add_user("alice")
    users.add_user(mallory)
    passwords = AccountKeyedPasswords()
    passwords.set_password("alice", "alice's password", user_id="alice")
    passwords.set_password(mallory, "mallory's password", user_id=mallory)
    factors = FakeSecondFactors()
    factors.enroll("alice")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=passwords,
        throttle=MemoryThrottle(),
        clock=clock,
        second_factors=factors,
    )
    # Mallory has alice's password, not her phone: guesses until throttled.
    browser = Browser(clock)
    first = flow.login(post(browser, PasswordCredentials("alice", "alice's password")))
    assert isinstance(first, SecondFactorRequired)
    browser.receive(first.set_cookies)
    right = factors.code_at("alice", clock())
    wrong = [f"{n:06d}" for n in range(1, 40) if f"{n:06d}" != right]
    free = flow.config.throttle.second_factor.free
    for code in wrong[:free]:
        assert isinstance(flow.login(post(browser, SecondFactorCredentials(code))), Unauthorized)
    assert isinstance(
        flow.login(post(browser, SecondFactorCredentials(wrong[free]))), TooManyRequests
    )
    # Signing in to her own account must not give alice's code count a fresh start.
    own = flow.login(post(Browser(clock), PasswordCredentials(mallory, "mallory's password")))
    assert isinstance(own, Reissue)
    assert isinstance(
        flow.login(post(browser, SecondFactorCredentials(wrong[free]))), TooManyRequests
    )


# -- assurance claims across rotations ------------------------------------------------


def assurance(decision: Any) -> tuple[int, tuple[str, ...], int | None]:
    return decision.aal, decision.amr, decision.auth_time


def test_aal_amr_and_auth_time_survive_every_rotation() -> None:
    world = World(config=FlowConfig(grace_seconds=5))
    world.factors.enroll("alice")
    browser, login = two_step(world)
    sealed = assurance(login)
    for _ in range(3):
        world.clock.advance(world.flow.config.access_ttl + 10)
        tab = browser.clone()
        refreshed = world.flow.decide(get(browser, AAL2))
        assert isinstance(refreshed, Reissue)
        assert assurance(refreshed) == sealed
        browser.receive(refreshed.set_cookies)
        # The predecessor inside the grace window gets the same successor, same claims.
        graced = world.flow.decide(tab.request())
        assert isinstance(graced, Reissue)
        assert assurance(graced) == sealed
        assert graced.session_id == login.session_id
    assert isinstance(world.flow.decide(get(browser, AAL2)), Process)


def test_a_refresh_that_falls_short_keeps_the_rotated_cookies() -> None:
    world = World()
    browser, _ = one_step(world)
    world.clock.advance(world.flow.config.access_ttl + 10)
    decision = world.flow.decide(get(browser, AAL2))
    assert isinstance(decision, StepUpRequired)
    assert len(decision.set_cookies) == 2  # the Reissue's new access and refresh tokens
    browser.receive(decision.set_cookies)
    assert isinstance(world.flow.decide(browser.request()), Process)


# -- requirements ---------------------------------------------------------------------


def test_requirements_check_aal_and_max_age() -> None:
    world = World()
    browser, _ = one_step(world)
    assert isinstance(world.flow.decide(get(browser, Requirement(max_age=60))), Process)
    world.clock.advance(61)
    short = world.flow.decide(get(browser, Requirement(max_age=60)))
    assert isinstance(short, StepUpRequired)
    assert short.status == 401
    assert short.www_authenticate == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A more recent authentication is required", max_age=60'
    )
    aal = world.flow.decide(get(browser, AAL2))
    assert isinstance(aal, StepUpRequired)
    assert 'acr_values="aal2"' in aal.www_authenticate
    assert isinstance(world.flow.decide(get(browser, Requirement())), Process)


@pytest.mark.parametrize(
    "bad", [{"aal": 3}, {"aal": 0}, {"aal": True}, {"max_age": 0}, {"max_age": 1.5}]
)
def test_a_requirement_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Requirement(**bad)


# -- step-up -------------------------------------------------------------------------


def test_step_up_raises_the_same_session_and_leaves_other_devices_alone() -> None:
    world = World()
    world.factors.enroll("alice")
    phone, phone_login = two_step(world)
    world.factors.remove("alice")
    laptop, before = one_step(world)  # alice, one factor now that she removed it
    world.factors.enroll("alice")
    world.clock.advance(31)
    stepped = world.flow.step_up(post(laptop, SecondFactorCredentials(world.code())))
    assert isinstance(stepped, Reissue)
    assert stepped.session_id == before.session_id
    assert (stepped.aal, stepped.amr, stepped.auth_time) == (2, ("pwd", "otp"), int(world.clock()))
    assert SteppedUp("alice", before.session_id, 2, "second_factor") in stepped.events
    assert sorted(world.live()) == sorted([before.session_id, phone_login.session_id])
    laptop_old = laptop.clone()
    laptop.receive(stepped.set_cookies)
    assert isinstance(world.flow.decide(get(laptop, AAL2)), Process)
    # The access token minted before the step-up is still aal 1.
    assert isinstance(world.flow.decide(get(laptop_old, AAL2)), StepUpRequired)
    assert isinstance(world.flow.decide(get(phone, AAL2)), Process)


def test_step_up_by_password_renews_auth_time_and_keeps_aal() -> None:
    world = World()
    browser, login = one_step(world)
    world.clock.advance(600)
    assert isinstance(world.flow.decide(get(browser, Requirement(max_age=300))), StepUpRequired)
    stepped = world.flow.step_up(post(browser, ALICE))
    assert isinstance(stepped, Reissue)
    assert stepped.session_id == login.session_id
    assert stepped.aal == 1
    assert stepped.auth_time == int(world.clock())
    browser.receive(stepped.set_cookies)
    assert isinstance(world.flow.decide(get(browser, Requirement(max_age=300))), Process)


@pytest.mark.parametrize(
    "credentials", [ALICE, PasskeyCredentials("alice:hwk")], ids=["password", "passkey-no-uv"]
)
def test_one_factor_never_renews_the_auth_time_of_an_aal2_session(credentials: Any) -> None:
    """``auth_time`` is when the session last authenticated at its level: a
    password re-entered on an aal-2 session must not make it look as if both
    factors had just been shown, or Requirement(aal=2, max_age=...) (re-prove
    the second factor before a sensitive action) would pass on the password
    of someone holding a stolen aal-2 session."""
    world = World()
    world.factors.enroll("alice")
    browser, login = two_step(world)
    world.clock.advance(1200)
    recent_aal2 = Requirement(aal=2, max_age=300)
    assert isinstance(world.flow.decide(get(browser, recent_aal2)), StepUpRequired)
    stepped = world.flow.step_up(post(browser, credentials))
    assert isinstance(stepped, Reissue)
    assert stepped.session_id == login.session_id
    assert (stepped.aal, stepped.auth_time) == (2, login.auth_time)
    browser.receive(stepped.set_cookies)
    assert isinstance(world.flow.decide(get(browser, recent_aal2)), StepUpRequired)
    # A code does renew it.
    coded = world.flow.step_up(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(coded, Reissue)
    assert (coded.aal, coded.auth_time) == (2, int(world.clock()))
    browser.receive(coded.set_cookies)
    assert isinstance(world.flow.decide(get(browser, recent_aal2)), Process)


@pytest.mark.parametrize(
    "credentials",
    [BOB, WRONG, SecondFactorCredentials("000000"), SecondFactorCredentials("x" * 65)],
    ids=["other-user", "wrong-password", "wrong-code", "oversized-code"],
)
def test_a_refused_step_up_clears_nothing_and_changes_nothing(credentials: Any) -> None:
    world = World()
    world.factors.enroll("alice")
    browser, login = two_step(world)
    world.clock.advance(31)
    if isinstance(credentials, SecondFactorCredentials) and credentials.code == world.code():
        credentials = SecondFactorCredentials("999999")
    refused = world.flow.step_up(post(browser, credentials))
    assert isinstance(refused, Unauthorized)
    assert refused.set_cookies == ()
    if credentials is BOB:
        assert LoginFailed(LoginFailedReason.WRONG_USER, "password", BOB.username) in refused.events
    assert world.live() == [login.session_id]
    assert isinstance(world.flow.decide(get(browser, AAL2)), Process)


def test_step_up_needs_a_session_and_credentials() -> None:
    world = World()
    world.factors.enroll("alice")
    anonymous = world.flow.step_up(post(world.browser(), SecondFactorCredentials(world.code())))
    assert isinstance(anonymous, Unauthorized)
    browser, _ = one_step(world, BOB)
    assert isinstance(world.flow.step_up(post(browser, None)), Unauthorized)
    cross = world.flow.step_up(browser.request("POST", credentials=BOB, same_origin=False))
    assert cross.status == 403


# -- external tokens, passkey step-up, and garbage at the second step ---------------


def test_an_external_token_login_takes_two_steps_for_an_enrolled_account() -> None:
    clock = FakeClock()
    users = FakeUserDirectory()
    users.add_user("alice")
    users.link("google", "g-alice", "alice")
    google = FakeExternalTokenVerifier("google")
    factors = FakeSecondFactors()
    factors.enroll("alice")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        external={"google": google},
        throttle=MemoryThrottle(),
        second_factors=factors,
        clock=clock,
    )
    browser = Browser(clock)
    token = google.issue("g-alice", expires_at=clock() + 60)
    first = flow.login(post(browser, ExternalTokenCredentials("google", token)))
    assert isinstance(first, SecondFactorRequired)
    assert first.events == (SecondFactorChallenged("alice", "google", ("totp",)),)
    browser.receive(first.set_cookies)
    second = flow.login(post(browser, SecondFactorCredentials(factors.code_at("alice", clock()))))
    assert isinstance(second, Reissue)
    assert second.aal == 2
    assert second.amr == ("otp",)
    assert LoggedIn("alice", second.session_id, "google") in second.events


def test_step_up_with_a_passkey_of_the_same_user_only() -> None:
    world = World(config=FlowConfig(passkey_user_verification_is_second_factor=True))
    browser, login = one_step(world)
    other = world.flow.step_up(post(browser, PasskeyCredentials("bob:hwk,user")))
    assert isinstance(other, Unauthorized)
    assert other.set_cookies == ()
    assert LoginFailed(LoginFailedReason.WRONG_USER, "passkey") in other.events
    stepped = world.flow.step_up(post(browser, PasskeyCredentials("alice:hwk,user")))
    assert isinstance(stepped, Reissue)
    assert stepped.session_id == login.session_id
    assert stepped.aal == 2
    assert stepped.amr == ("pwd", "hwk", "user")


codes = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=10),
    st.integers(),
    st.none(),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
)
_FUZZ_WORLD = World()
_FUZZ_WORLD.factors.enroll("alice")
_FUZZ_BROWSER = _FUZZ_WORLD.browser()
_FUZZ_BROWSER.receive(_FUZZ_WORLD.flow.login(post(_FUZZ_BROWSER, ALICE)).set_cookies)
_LIVE_PARTIAL = _FUZZ_BROWSER.cookies()[PARTIAL]
cookies = st.one_of(
    st.none(),
    st.text(max_size=120),
    st.sampled_from(["", "x" * 5000, _LIVE_PARTIAL, _LIVE_PARTIAL[:-1], _LIVE_PARTIAL + "A"]),
)


@settings(max_examples=200, deadline=None)
@given(code=codes, partial=cookies)
def test_any_second_step_is_a_decision_and_never_a_session_without_the_code(
    code: Any, partial: str | None
) -> None:
    world = _FUZZ_WORLD
    request = Request(
        "POST",
        cookies=None if partial is None else {PARTIAL: partial},
        credentials=SecondFactorCredentials(code),
        sec_fetch_site="same-origin",
        origin="https://app.example",
        host="app.example",
    )
    right = type(code) is str and code == world.code() and partial == _LIVE_PARTIAL
    decision = world.flow.login(request)
    # Wrong guesses pile up on the account's count: 401, then 429.
    refused = (Unauthorized, TooManyRequests)
    assert isinstance(decision, (Reissue, TooManyRequests) if right else refused)
    stepped = world.flow.step_up(request)
    assert isinstance(stepped, Unauthorized)


def test_decide_with_a_code_also_completes_the_login_and_clears_the_partial_cookie() -> None:
    world = World()
    world.factors.enroll("alice")
    browser = world.browser()
    browser.receive(world.flow.decide(post(browser, ALICE)).set_cookies)
    assert PARTIAL in browser.cookies()
    decision = world.flow.decide(post(browser, SecondFactorCredentials(world.code())))
    assert isinstance(decision, Reissue)
    assert decision.aal == 2
    browser.receive(decision.set_cookies)
    assert PARTIAL not in browser.cookies()


def test_an_observer_sees_step_up_and_the_second_factor_port_calls() -> None:
    from tokenflow.observers import FlowOperation, PortCall

    seen: list[Any] = []

    class Observer:
        def on_decision(self, operation: FlowOperation, request: Request, decision: Any) -> None:
            seen.append((operation, type(decision)))

        def on_port_call(self, call: PortCall) -> None:
            seen.append((call.port, call.method))

    world = World()
    passwords = FakePasswordVerifier()
    passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
    world.flow = Flow(
        world.keyring,
        world.store,
        world.users,
        passwords=passwords,
        throttle=MemoryThrottle(),
        second_factors=world.factors,
        clock=world.clock,
        observer=Observer(),
    )
    browser, _ = one_step(world)
    world.factors.enroll("alice")
    world.flow.step_up(post(browser, SecondFactorCredentials(world.code())))
    assert ("second_factors", "verify_second_factor") in seen
    assert (FlowOperation.STEP_UP, Reissue) in seen
