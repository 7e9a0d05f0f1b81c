"""Login throttling: the policy, the keys, and the order cross-origin -> throttle -> verify.

A throttled attempt is answered 429 before any credential is verified: the
password verifier is never called, so guessing costs no hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenflow import (
    AsyncFlow,
    ConfigError,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    Forbidden,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tokenflow._throttle import address_key, username_key
from tokenflow.events import LoginFailed, LoginThrottled
from tokenflow.ports import FailureCount
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle

USERNAME = "ada@example.com"
PASSWORD = "a long and correct passphrase"
ADDRESS = "203.0.113.7"


class CountingPasswords(FakePasswordVerifier):
    """Counts the verifications that actually ran (each one is a hash)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def verify_password(self, username: str, password: str) -> str | None:
        self.verified += 1
        return super().verify_password(username, password)


@dataclass
class World:
    policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    clock: FakeClock = field(default_factory=FakeClock)
    throttle: MemoryThrottle = field(default_factory=MemoryThrottle)
    passwords: CountingPasswords = field(default_factory=CountingPasswords)
    google: FakeExternalTokenVerifier = field(default_factory=lambda: FakeExternalTokenVerifier())
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        users = FakeUserDirectory(allow_signup=True)
        users.add_user("ada")
        self.passwords.set_password(USERNAME, PASSWORD, user_id="ada")
        self.flow = Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            passwords=self.passwords,
            external={"google": self.google},
            throttle=self.throttle,
            config=FlowConfig(throttle=self.policy),
            clock=self.clock,
        )

    def attempt(
        self, password: str, *, username: str = USERNAME, address: str | None = ADDRESS
    ) -> object:
        credentials = PasswordCredentials(username, password)
        return self.flow.login(Request("POST", credentials=credentials, client_address=address))


# -- the policy ---------------------------------------------------------------------


def test_delays_double_after_the_free_failures_and_stop_at_the_cap() -> None:
    rule = ThrottleRule(free=3, base=1.0, cap=10.0)
    assert [rule.delay(n) for n in range(8)] == [0, 0, 0, 1, 2, 4, 8, 10]
    assert rule.delay(10**9) == 10.0  # no overflow, whatever the count


def test_retry_after_is_the_longest_wait_of_any_key_rounded_up() -> None:
    policy = ThrottlePolicy(
        username=ThrottleRule(2, 1.0, 60.0), address=ThrottleRule(5, 1.0, 600.0)
    )
    keys = [username_key("ada"), address_key(ADDRESS)]
    now = 1000.0
    assert policy.retry_after(keys, [FailureCount(1, 999.0), FailureCount(4, 999.0)], now) == 0
    # Username: 3 failures -> 2 s after 999.5 -> 1.5 s left -> 2.
    assert policy.retry_after(keys, [FailureCount(3, 999.5), FailureCount(0, 0.0)], now) == 2
    # Address: 8 failures -> 8 s after 995 -> 3 s left; the username's 2 s is shorter.
    assert policy.retry_after(keys, [FailureCount(3, 999.5), FailureCount(8, 995.0)], now) == 3
    assert policy.retry_after(keys, [FailureCount(3, 990.0), FailureCount(8, 980.0)], now) == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ThrottleRule(-1, 1.0, 10.0), "cannot be negative"),
        (lambda: ThrottleRule(1, 0.0, 10.0), "base must be a positive"),
        (lambda: ThrottleRule(1, 5.0, 1.0), "cap must be at least"),
        (lambda: ThrottleRule(1.5, 1.0, 10.0), "whole number"),  # type: ignore[arg-type]
        (lambda: ThrottleRule(1, float("nan"), 10.0), "finite number"),
        (lambda: ThrottlePolicy(window=10.0), "window"),
        (lambda: ThrottlePolicy(username="5/min"), "must be a ThrottleRule"),  # type: ignore[arg-type]
        (lambda: FlowConfig(throttle={"free": 5}), "throttle must be a ThrottlePolicy"),  # type: ignore[arg-type]
    ],
)
def test_bad_throttle_settings_fail_at_construction(build: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()  # type: ignore[operator]


# -- the keys -----------------------------------------------------------------------


def test_usernames_share_a_count_however_they_are_typed() -> None:
    assert username_key("Ada@Example.com") == username_key("ada@example.com")
    full_width = "\uff21\uff24\uff21"  # "ADA" in full-width letters
    assert username_key(full_width) == username_key("ada")  # NFKC
    assert username_key("ada") != username_key("bob")


@given(st.text(max_size=5000))
def test_keys_are_bounded_and_hold_no_username(username: str) -> None:
    key = username_key(username)
    assert len(key) == 34
    assert not (len(username) > 3 and username.casefold() in key)
    assert len(address_key(username)) <= 45


def test_an_ipv6_client_is_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:203.0.113.7") == address_key("203.0.113.7")


# -- through the flow ------------------------------------------------------------------


def test_after_the_free_failures_a_guess_waits_and_is_never_verified() -> None:
    world = World()
    for _ in range(5):
        assert isinstance(world.attempt("wrong"), Unauthorized)
    assert world.passwords.verified == 5
    decision = world.attempt("still wrong")
    assert isinstance(decision, TooManyRequests)
    assert decision.status == 429
    assert decision.retry_after == 1
    assert decision.set_cookies == ()
    assert decision.events == (LoginThrottled("password", USERNAME, 1),)
    assert world.passwords.verified == 5  # no hash was computed for it
    # Even the right password waits: the throttle answers before anything is checked.
    assert isinstance(world.attempt(PASSWORD), TooManyRequests)
    assert world.passwords.verified == 5


def test_the_delay_grows_then_a_correct_login_clears_the_username() -> None:
    world = World()
    waits = []
    for _ in range(9):
        decision = world.attempt("wrong")
        if isinstance(decision, TooManyRequests):
            waits.append(decision.retry_after)
            world.clock.advance(decision.retry_after)
            decision = world.attempt("wrong")
        assert isinstance(decision, Unauthorized)
    assert waits == [1, 2, 4, 8]
    waiting = world.attempt(PASSWORD)
    assert isinstance(waiting, TooManyRequests)
    assert waiting.retry_after == 16
    world.clock.advance(16)
    assert isinstance(world.attempt(PASSWORD), Reissue)
    # The username starts over; the address keeps its count (9 < 100 free).
    assert world.throttle.failures([username_key(USERNAME)], now=world.clock()) == [
        FailureCount(0, 0.0)
    ]
    assert world.throttle.failures([address_key(ADDRESS)], now=world.clock())[0].count == 9


def test_an_attacker_who_stops_keeps_the_owner_waiting_at_most_the_cap() -> None:
    world = World()
    for _ in range(60):
        decision = world.attempt("guess")
        if isinstance(decision, TooManyRequests):
            world.clock.advance(decision.retry_after)
    world.clock.advance(300)  # the username cap
    assert isinstance(world.attempt(PASSWORD, address="198.51.100.1"), Reissue)


def test_one_address_guessing_many_usernames_is_slowed_by_the_address_count() -> None:
    world = World(ThrottlePolicy(address=ThrottleRule(10, 1.0, 900.0)))
    for i in range(10):
        assert isinstance(world.attempt("wrong", username=f"user{i}"), Unauthorized)
    decision = world.attempt("wrong", username="someone-new")
    assert isinstance(decision, TooManyRequests)
    # Another address is not affected.
    assert isinstance(
        world.attempt("wrong", username="someone-new", address="192.0.2.1"), Unauthorized
    )


def test_failures_are_forgotten_after_the_window() -> None:
    world = World(ThrottlePolicy(window=3600.0))
    for _ in range(5):
        world.attempt("wrong")
    assert isinstance(world.attempt("wrong"), TooManyRequests)
    world.clock.advance(3600)
    assert isinstance(world.attempt("wrong"), Unauthorized)


def test_without_a_client_address_only_the_username_counts() -> None:
    world = World()
    for _ in range(5):
        world.attempt("wrong", address=None)
    assert isinstance(world.attempt("wrong", address=None), TooManyRequests)


def test_external_token_failures_count_per_address_only() -> None:
    world = World(ThrottlePolicy(address=ThrottleRule(3, 1.0, 900.0)))
    bad = ExternalTokenCredentials("google", "forged")
    for _ in range(3):
        decision = world.flow.login(Request("POST", credentials=bad, client_address=ADDRESS))
        assert isinstance(decision, Unauthorized)
    decision = world.flow.login(Request("POST", credentials=bad, client_address=ADDRESS))
    assert isinstance(decision, TooManyRequests)
    assert decision.events == (LoginThrottled("google", None, 1),)


def test_a_cross_site_login_is_forbidden_before_the_throttle_is_asked() -> None:
    world = World()
    request = Request(
        "POST",
        credentials=PasswordCredentials(USERNAME, "wrong"),
        sec_fetch_site="cross-site",
        client_address=ADDRESS,
    )
    for _ in range(20):
        assert isinstance(world.flow.login(request), Forbidden)
    assert world.throttle.failures([address_key(ADDRESS)], now=world.clock())[0].count == 0
    assert world.passwords.verified == 0


def test_throttled_through_decide_too() -> None:
    world = World()
    credentials = PasswordCredentials(USERNAME, "wrong")
    for _ in range(5):
        world.flow.decide(Request("POST", credentials=credentials, client_address=ADDRESS))
    decision = world.flow.decide(Request("POST", credentials=credentials, client_address=ADDRESS))
    assert isinstance(decision, TooManyRequests)


class DownThrottle(MemoryThrottle):
    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        raise ConnectionError("throttle backend down")


class WrongThrottle(MemoryThrottle):
    def failures(self, keys: Sequence[str], *, now: float) -> list[FailureCount]:
        return [3] * len(keys)  # type: ignore[list-item]


@pytest.mark.parametrize("throttle", [DownThrottle(), WrongThrottle()])
def test_a_failing_throttle_is_unavailable_and_nothing_is_verified(
    throttle: MemoryThrottle,
) -> None:
    world = World(throttle=throttle)
    decision = world.attempt(PASSWORD)
    assert isinstance(decision, Unavailable)
    assert decision.port == "throttle"
    assert decision.set_cookies == ()
    assert world.passwords.verified == 0


def test_nothing_of_the_password_reaches_events_or_reprs() -> None:
    world = World()
    secret = "hunter2-" + "x" * 20
    for _ in range(5):
        decision = world.attempt(secret)
        assert isinstance(decision, Unauthorized)
        assert isinstance(decision.events[0], LoginFailed)
        assert secret not in repr(decision)
    throttled = world.attempt(secret)
    assert isinstance(throttled, TooManyRequests)
    assert secret not in repr(throttled)


def test_the_async_flow_throttles_alike() -> None:
    async def scenario() -> list[type]:
        clock = FakeClock()
        users = AsyncFakeUserDirectory()
        users.sync.add_user("ada")
        passwords = AsyncFakePasswordVerifier()
        passwords.sync.set_password(USERNAME, PASSWORD, user_id="ada")
        flow = AsyncFlow(
            KeyRing.generate(),
            AsyncMemoryStore(),
            users,
            passwords=passwords,
            throttle=AsyncMemoryThrottle(),
            clock=clock,
        )
        seen = []
        for password in ["w"] * 6 + [PASSWORD]:
            credentials = PasswordCredentials(USERNAME, password)
            request = Request("POST", credentials=credentials, client_address=ADDRESS)
            seen.append(type(await flow.login(request)))
        clock.advance(1)
        credentials = PasswordCredentials(USERNAME, PASSWORD)
        request = Request("POST", credentials=credentials, client_address=ADDRESS)
        seen.append(type(await flow.login(request)))
        return seen

    assert asyncio.run(scenario()) == [Unauthorized] * 5 + [TooManyRequests] * 2 + [Reissue]
