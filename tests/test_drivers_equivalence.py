"""Flow and AsyncFlow make the same decisions: one core, two drivers.

Each scenario is a list of steps run in lockstep on two worlds sharing one
FakeClock: a sync one (Flow, MemoryStore, sync fakes) and an async one
(AsyncFlow, AsyncMemoryStore, async fakes). Both flows draw their session ids
and rotation salts from identically seeded generators, so everything but the
token ciphertexts (random nonces inside the codec) must match exactly.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

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
from tokenflow._sessions import NewSession, Rotation, RotationResult, SessionInfo
from tokenflow.events import PortFailed
from tokenflow.ports import ExternalIdentity, Identity
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakeExternalTokenVerifier,
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

T0 = 1_700_000_000.0
ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse battery staple"
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
CONFIG = FlowConfig(grace_seconds=5, trusted_origins=["https://partner.example"])


# -- ports that can be switched off: FaultyStore for the store, the fakes' switches --


# -- the two worlds -----------------------------------------------------------------


@dataclass
class Fakes:
    users: FakeUserDirectory
    passwords: FakePasswordVerifier
    google: FakeExternalTokenVerifier


def make_fakes() -> Fakes:
    users = FakeUserDirectory()
    users.add_user("alice", {"roles": ["editor"]})
    users.add_user("bob", {"roles": ["viewer"]})
    users.link("google", "g-alice", "alice")
    passwords = FakePasswordVerifier()
    passwords.set_password(ALICE, PASSWORD, user_id="alice")
    passwords.set_password(BOB, PASSWORD, user_id="bob")
    google = FakeExternalTokenVerifier("google")
    google.register("google-id-token", "g-alice", expires_at=T0 + 3600)
    google.register("stranger-id-token", "g-stranger", expires_at=T0 + 3600)
    return Fakes(users, passwords, google)


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


@dataclass
class World:
    flow: Flow | AsyncFlow
    store: FaultyStore | AsyncFaultyStore
    fakes: Fakes
    clock: FakeClock
    tabs: dict[str, Browser] = field(default_factory=dict)

    def tab(self, name: str) -> Browser:
        if name not in self.tabs:
            self.tabs[name] = Browser(self.clock)
        return self.tabs[name]


def make_worlds(clock: FakeClock, seed: int) -> tuple[World, World]:
    ring = KeyRing.generate()
    sync_fakes, async_fakes = make_fakes(), make_fakes()
    sync_store, async_store = FaultyStore(MemoryStore()), AsyncFaultyStore(AsyncMemoryStore())
    sync_flow = Flow(
        ring,
        sync_store,
        sync_fakes.users,
        passwords=sync_fakes.passwords,
        external={"google": sync_fakes.google},
        config=CONFIG,
        clock=clock,
    )
    async_flow = AsyncFlow(
        ring,
        async_store,
        AsyncFakeUserDirectory(async_fakes.users),
        passwords=AsyncFakePasswordVerifier(async_fakes.passwords),
        external={"google": AsyncFakeExternalTokenVerifier(async_fakes.google)},
        config=CONFIG,
        clock=clock,
    )
    sync_flow._random = seeded(seed)
    async_flow._random = seeded(seed)
    return (
        World(sync_flow, sync_store, sync_fakes, clock),
        World(async_flow, async_store, async_fakes, clock),
    )


# -- comparing decisions --------------------------------------------------------------

_TOKEN_VALUE = re.compile(r"^([^=;]+)=[^;]+")


def normalize(decision: object) -> tuple[Any, ...]:
    """Everything a host sees, with token ciphertexts replaced by a placeholder."""
    assert type(decision) in (Process, Reissue, LoggedOut, Unauthorized, Forbidden, Unavailable)
    cookies = tuple(_TOKEN_VALUE.sub(r"\1=<token>", c) for c in decision.set_cookies)  # type: ignore[attr-defined]
    events = tuple(
        ("PortFailed", e.port, type(e.error).__name__, str(e.error))
        if isinstance(e, PortFailed)
        else e
        for e in decision.events  # type: ignore[attr-defined]
    )
    detail: Any = None
    if isinstance(decision, (Process, Reissue)):
        detail = dict(decision.claims)
    elif isinstance(decision, Unauthorized):
        detail = decision.reason
    elif isinstance(decision, Unavailable):
        detail = (decision.port, type(decision.error).__name__, str(decision.error))
    return (type(decision).__name__, decision.status, detail, cookies, events)  # type: ignore[attr-defined]


Step = tuple[Any, ...]


def request_for(world: World, step: Step) -> tuple[str, Request | None]:
    """Which flow call a step makes, and with which request (None: not a request).

    The tab named by the step receives the response, except for replays and raw
    headers, which come from a thief or a test client that keeps no cookies.
    """
    kind = step[0]
    if kind == "login":
        _, tab, username, password = step
        credentials = PasswordCredentials(username, password)
        return "decide", world.tab(tab).request("POST", credentials=credentials)
    if kind == "external":
        _, tab, provider, token = step
        external = ExternalTokenCredentials(provider, token)
        return "decide", world.tab(tab).request("POST", credentials=external)
    if kind == "get":
        return "decide", world.tab(step[1]).request()
    if kind == "post":
        return "decide", world.tab(step[1]).request("POST", same_origin=step[2])
    if kind == "logout":
        return "logout", world.tab(step[1]).request("POST", same_origin=step[2])
    if kind == "replay":  # a thief sends a tab's raw cookies, Max-Age or not
        jar = world.tab(step[1]).jar
        header = "; ".join(f"{name}={value}" for name, (value, _) in jar.items())
        return "decide", Request(cookie_header=header or None)
    if kind == "header":
        return "decide", Request(cookie_header=step[1])
    return "", None


def apply_local(world: World, step: Step) -> Any:
    """Steps that are not requests: clock, tabs, identity changes, outages."""
    kind = step[0]
    if kind == "clone":
        world.tabs[step[2]] = world.tab(step[1]).clone()
    elif kind == "drop_access":
        world.tab(step[1]).jar.pop(ACCESS, None)
    elif kind == "disable":
        world.fakes.users.disable(step[1])
    elif kind == "enable":
        world.fakes.users.enable(step[1])
    elif kind == "set_claims":
        world.fakes.users.set_claims(step[1], step[2])
    elif kind == "down":
        _, port, down = step
        if port == "store" and down:
            world.store.arm(Fault.BEFORE_COMMIT, error=ConnectionError("store down"))
        elif port == "store":
            world.store.disarm()
        else:
            getattr(world.fakes, port).unavailable = down
    else:
        raise AssertionError(f"unknown step {step!r}")


def run_sync(world: World, step: Step) -> Any:
    assert isinstance(world.flow, Flow)
    call, request = request_for(world, step)
    if request is not None:
        decision = getattr(world.flow, call)(request)
        if step[0] not in ("replay", "header"):
            world.tab(step[1]).receive(decision.set_cookies)
        return normalize(decision)
    if step[0] == "revoke_user":
        return world.flow.revoke_user(step[1])
    if step[0] == "sessions":
        return world.flow.sessions_of(step[1])
    return apply_local(world, step)


async def run_async(world: World, step: Step) -> Any:
    assert isinstance(world.flow, AsyncFlow)
    call, request = request_for(world, step)
    if request is not None:
        decision = await getattr(world.flow, call)(request)
        if step[0] not in ("replay", "header"):
            world.tab(step[1]).receive(decision.set_cookies)
        return normalize(decision)
    if step[0] == "revoke_user":
        return await world.flow.revoke_user(step[1])
    if step[0] == "sessions":
        return await world.flow.sessions_of(step[1])
    return apply_local(world, step)


async def run_both(steps: list[Step], seed: int = 7) -> list[Any]:
    """Run every step on both worlds in lockstep; the trace, checked identical."""
    clock = FakeClock(T0)
    sync_world, async_world = make_worlds(clock, seed)
    trace = []
    for step in steps:
        if step[0] == "advance":
            clock.advance(step[1])
            continue
        expected = run_sync(sync_world, step)
        got = await run_async(async_world, step)
        assert got == expected, f"drivers disagree at {step!r}"
        trace.append(expected)
    return trace


def kinds(trace: list[Any]) -> list[Any]:
    """Decision type names (and reasons for 401s) of the request steps of a trace."""
    out = []
    for item in trace:
        if isinstance(item, tuple) and item and isinstance(item[0], str):
            name, _, detail, _, _ = item
            out.append(detail.name if name == "Unauthorized" else name)
    return out


# -- scenarios ------------------------------------------------------------------------

HAPPY = [
    ("login", "laptop", ALICE, PASSWORD),
    ("get", "laptop"),
    ("advance", 130),
    ("clone", "laptop", "tab2"),
    ("get", "laptop"),
    ("advance", 2),
    ("get", "tab2"),
    ("get", "laptop"),
    ("advance", 300),
    ("get", "tab2"),
    ("advance", 1),
    ("get", "laptop"),
    ("sessions", "alice"),
    ("post", "laptop", True),
    ("post", "laptop", False),
    ("logout", "laptop", False),
    ("logout", "laptop", True),
    ("get", "laptop"),
    ("sessions", "alice"),
]

REUSE = [
    ("login", "laptop", ALICE, PASSWORD),
    ("clone", "laptop", "thief"),
    ("advance", 130),
    ("get", "laptop"),
    ("advance", 30),
    ("replay", "thief"),
    ("get", "laptop"),
    ("advance", 130),
    ("get", "laptop"),
    ("login", "laptop", ALICE, PASSWORD),
    ("drop_access", "laptop"),
    ("clone", "laptop", "old"),
    ("get", "laptop"),
    ("drop_access", "laptop"),
    ("get", "laptop"),
    ("replay", "old"),
    ("sessions", "alice"),
]

IDENTITY = [
    ("login", "laptop", ALICE, "wrong"),
    ("login", "laptop", "nobody@example.com", PASSWORD),
    ("external", "phone", "okta", "google-id-token"),
    ("external", "phone", "google", "forged"),
    ("external", "phone", "google", "stranger-id-token"),
    ("external", "phone", "google", "google-id-token"),
    ("login", "laptop", ALICE, PASSWORD),
    ("login", "desk", BOB, PASSWORD),
    ("set_claims", "alice", {"roles": ["admin"]}),
    ("advance", 130),
    ("get", "laptop"),
    ("disable", "alice"),
    ("advance", 130),
    ("get", "phone"),
    ("get", "laptop"),
    ("enable", "alice"),
    ("get", "laptop"),
    ("get", "desk"),
    ("revoke_user", "bob"),
    ("advance", 130),
    ("get", "desk"),
    ("sessions", "bob"),
]

OUTAGES = [
    ("down", "store", True),
    ("login", "laptop", ALICE, PASSWORD),
    ("down", "store", False),
    ("login", "laptop", ALICE, PASSWORD),
    ("down", "store", True),
    ("get", "laptop"),
    ("advance", 130),
    ("get", "laptop"),
    ("logout", "laptop", True),
    ("down", "store", False),
    ("down", "users", True),
    ("get", "laptop"),
    ("login", "desk", BOB, PASSWORD),
    ("down", "users", False),
    ("down", "passwords", True),
    ("login", "desk", BOB, PASSWORD),
    ("down", "passwords", False),
    ("down", "google", True),
    ("external", "phone", "google", "google-id-token"),
    ("down", "google", False),
    ("get", "laptop"),
]

HEADERS = [
    ("login", "laptop", ALICE, PASSWORD),
    ("header", "A" * 16_385),
    ("header", f"{ACCESS}=x; {ACCESS}=y; {REFRESH}=z"),
    ("header", f'{REFRESH}="not a token"; theme=dark'),
    ("header", ""),
    ("header", None),
    ("advance", 200),
    ("replay", "laptop"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            HAPPY,
            [
                "Reissue",
                "Process",
                "Reissue",
                "Reissue",
                "Process",
                "Reissue",
                "Reissue",
                "Process",
                "Forbidden",
                "Forbidden",
                "LoggedOut",
                "NO_CREDENTIALS",
            ],
            id="login-refresh-grace-logout",
        ),
        pytest.param(
            REUSE,
            [
                "Reissue",
                "Reissue",
                "REFRESH_REUSED",
                "Process",
                "SESSION_ENDED",
                "Reissue",
                "Reissue",
                "Reissue",
                "REFRESH_REUSED",
            ],
            id="reuse",
        ),
        pytest.param(
            IDENTITY,
            [
                "LOGIN_FAILED",
                "LOGIN_FAILED",
                "LOGIN_FAILED",
                "LOGIN_FAILED",
                "LOGIN_FAILED",
                "Reissue",
                "Reissue",
                "Reissue",
                "Reissue",
                "USER_DISABLED",
                "USER_DISABLED",
                "NO_CREDENTIALS",
                "Reissue",
                "SESSION_ENDED",
            ],
            id="identity",
        ),
        pytest.param(
            OUTAGES,
            [
                "Unavailable",
                "Reissue",
                "Process",
                "Unavailable",
                "Unavailable",
                "Unavailable",
                "Unavailable",
                "Unavailable",
                "Unavailable",
                "Reissue",
            ],
            id="outages",
        ),
        pytest.param(
            HEADERS,
            [
                "Reissue",
                "MALFORMED_REQUEST",
                "NO_CREDENTIALS",
                "NO_CREDENTIALS",
                "NO_CREDENTIALS",
                "NO_CREDENTIALS",
                "Reissue",
            ],
            id="headers",
        ),
    ],
)
async def test_both_drivers_decide_alike(steps: list[Step], expected: list[str]) -> None:
    trace = await run_both(steps)
    assert kinds(trace) == expected


@pytest.mark.asyncio
async def test_the_seeded_random_source_is_what_makes_the_ids_match() -> None:
    """The comparison is not vacuous: session ids are compared, and differ unseeded."""
    steps: list[Step] = [("login", "laptop", ALICE, PASSWORD), ("sessions", "alice")]
    first = await run_both(steps, seed=1)
    again = await run_both(steps, seed=1)
    other = await run_both(steps, seed=2)
    assert first[1] == again[1]
    assert first[1][0].session_id != other[1][0].session_id


@pytest.mark.asyncio
async def test_identity_and_sessions_listing_match() -> None:
    trace = await run_both(IDENTITY)
    (listing,) = [t for t in trace if isinstance(t, list)]
    assert listing == []
    logins = [t for t in trace if isinstance(t, tuple) and t[0] == "Reissue"]
    assert logins[0][2]["sub"] == "alice"
    assert logins[3][2]["roles"] == ["admin"]


# -- AsyncFlow's port timeout ------------------------------------------------------------


class HangingStore:
    """An async store whose every call hangs, like a database behind a dead network."""

    async def _hang(self) -> Any:
        await asyncio.sleep(10)
        raise AssertionError("the call should have been cancelled")

    async def create(self, session: NewSession) -> None:
        await self._hang()

    async def rotate(self, rotation: Rotation) -> RotationResult:
        return await self._hang()  # type: ignore[no-any-return]

    async def revoke(self, session_id: str) -> bool:
        return await self._hang()  # type: ignore[no-any-return]

    async def revoke_user(self, user_id: str) -> int:
        return await self._hang()  # type: ignore[no-any-return]

    async def sessions_of(self, user_id: str, now: float) -> list[SessionInfo]:
        return await self._hang()  # type: ignore[no-any-return]


class SlowUsers:
    """An async user directory that answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = AsyncFakeUserDirectory(make_fakes().users)

    async def load_user(self, user_id: str) -> Identity | None:
        await asyncio.sleep(self.delay)
        return await self.inner.load_user(user_id)

    async def link_external(self, identity: ExternalIdentity) -> str | None:
        await asyncio.sleep(self.delay)
        return await self.inner.link_external(identity)


def async_flow(store: Any, users: Any, timeout: float) -> AsyncFlow:
    return AsyncFlow(
        KeyRing.generate(),
        store,
        users,
        passwords=AsyncFakePasswordVerifier(make_fakes().passwords),
        clock=FakeClock(T0),
        port_timeout=timeout,
    )


@pytest.mark.asyncio
async def test_a_hanging_store_gives_unavailable_within_the_timeout() -> None:
    flow = async_flow(HangingStore(), AsyncFakeUserDirectory(make_fakes().users), 0.05)
    login = Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    decision = await flow.decide(login)
    assert isinstance(decision, Unavailable)
    assert decision.port == "store"
    assert isinstance(decision.error, TimeoutError)
    assert decision.set_cookies == ()
    assert decision.events == (PortFailed("store", decision.error),)

    logout = await flow.logout(Request("POST", cookies={REFRESH: "whatever"}))
    assert isinstance(logout, LoggedOut)  # no valid token: the store is never asked


@pytest.mark.asyncio
async def test_a_hanging_store_during_refresh_and_logout() -> None:
    store = AsyncFaultyStore(AsyncMemoryStore())
    users = AsyncFakeUserDirectory(make_fakes().users)
    clock = FakeClock(T0)
    ring = KeyRing.generate()
    healthy = AsyncFlow(
        ring,
        store,
        users,
        passwords=AsyncFakePasswordVerifier(make_fakes().passwords),
        clock=clock,
    )
    browser = Browser(clock)
    login = await healthy.decide(
        browser.request("POST", credentials=PasswordCredentials(ALICE, PASSWORD))
    )
    assert isinstance(login, Reissue)
    browser.receive(login.set_cookies)
    hanging = AsyncFlow(ring, HangingStore(), users, clock=clock, port_timeout=0.05)

    clock.advance(130)
    refresh = await hanging.decide(browser.request())
    assert isinstance(refresh, Unavailable)
    assert refresh.port == "store"
    assert isinstance(refresh.error, TimeoutError)
    logout = await hanging.logout(browser.request("POST"))
    assert isinstance(logout, Unavailable)
    assert logout.set_cookies == ()

    # Nothing was rotated or revoked: the healthy flow still rotates generation 0.
    recovered = await healthy.decide(browser.request())
    assert isinstance(recovered, Reissue)
    assert recovered.events[0].generation == 1  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_hanging_user_directory_gives_unavailable() -> None:
    flow = async_flow(AsyncMemoryStore(), SlowUsers(10), 0.05)
    decision = await flow.decide(Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD)))
    assert isinstance(decision, Unavailable)
    assert decision.port == "users"
    assert isinstance(decision.error, TimeoutError)


@pytest.mark.asyncio
async def test_ports_that_answer_in_time_are_unaffected_by_the_timeout() -> None:
    flow = async_flow(AsyncMemoryStore(), SlowUsers(0.001), 5.0)
    decision = await flow.decide(Request("POST", credentials=PasswordCredentials(ALICE, PASSWORD)))
    assert isinstance(decision, Reissue)
    assert decision.user_id == "alice"
