"""The flow and its ports: checked at construction, distrusted at run time.

A sync port given to AsyncFlow (or an async one to Flow) is a ConfigError
naming the port and the method, raised when the flow is built. A port that
answers with the wrong type at run time is a port failure (Unavailable),
never an exception out of ``decide``. A ``now`` that is not a finite number
is the host's bug: ValueError, before anything is parsed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from tokenflow import (
    AsyncFlow,
    ConfigError,
    Flow,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Reissue,
    Request,
    Unavailable,
)
from tokenflow._sessions import Rotation, RotationOutcome, RotationResult, SessionInfo
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakeExternalTokenVerifier,
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle

RING = KeyRing.generate()
LOGIN = PasswordCredentials("ada@example.com", "the right passphrase")


# -- construction ---------------------------------------------------------------------


def sync_ports() -> dict[str, Any]:
    return {
        "store": MemoryStore(),
        "users": FakeUserDirectory(),
        "passwords": FakePasswordVerifier(),
        "external": {"google": FakeExternalTokenVerifier()},
        "throttle": MemoryThrottle(),
    }


def async_ports() -> dict[str, Any]:
    return {
        "store": AsyncMemoryStore(),
        "users": AsyncFakeUserDirectory(),
        "passwords": AsyncFakePasswordVerifier(),
        "external": {"google": AsyncFakeExternalTokenVerifier()},
        "throttle": AsyncMemoryThrottle(),
    }


def build(flow: Callable[..., object], ports: dict[str, Any]) -> object:
    return flow(
        RING,
        ports["store"],
        ports["users"],
        passwords=ports["passwords"],
        external=ports["external"],
        throttle=ports["throttle"],
    )


def test_matching_ports_build() -> None:
    assert isinstance(build(Flow, sync_ports()), Flow)
    assert isinstance(build(AsyncFlow, async_ports()), AsyncFlow)


@pytest.mark.parametrize(
    ("port", "shown"),
    [
        ("store", "store.create (AsyncMemoryStore)"),
        ("users", "users.load_user (AsyncFakeUserDirectory)"),
        ("passwords", "passwords.verify_password (AsyncFakePasswordVerifier)"),
        ("external", "external['google'].verify_token (AsyncFakeExternalTokenVerifier)"),
        ("throttle", "throttle.failures (AsyncMemoryThrottle)"),
    ],
)
def test_an_async_port_in_a_sync_flow_is_a_config_error(port: str, shown: str) -> None:
    ports = sync_ports()
    ports[port] = async_ports()[port]
    with pytest.raises(ConfigError, match="is a coroutine function") as raised:
        build(Flow, ports)
    assert shown in str(raised.value)


@pytest.mark.parametrize(
    ("port", "shown"),
    [
        ("store", "store.create (MemoryStore)"),
        ("users", "users.load_user (FakeUserDirectory)"),
        ("passwords", "passwords.verify_password (FakePasswordVerifier)"),
        ("external", "external['google'].verify_token (FakeExternalTokenVerifier)"),
        ("throttle", "throttle.failures (MemoryThrottle)"),
    ],
)
def test_a_sync_port_in_an_async_flow_is_a_config_error(port: str, shown: str) -> None:
    ports = async_ports()
    ports[port] = sync_ports()[port]
    with pytest.raises(ConfigError, match="is not a coroutine function") as raised:
        build(AsyncFlow, ports)
    assert shown in str(raised.value)


def test_a_port_missing_a_method_is_a_config_error_naming_it() -> None:
    class HalfAStore:
        def create(self, session: object) -> None: ...

    ports = sync_ports()
    ports["store"] = HalfAStore()
    with pytest.raises(ConfigError, match=r"has no rotate\(\) method"):
        build(Flow, ports)


def test_a_store_with_one_async_method_among_sync_ones_is_caught() -> None:
    class Mixed(MemoryStore):
        async def revoke(self, session_id: str) -> bool:  # type: ignore[override]
            return True

    with pytest.raises(ConfigError, match=r"store\.revoke"):
        Flow(RING, Mixed(), FakeUserDirectory())


# -- wrong answers at run time -----------------------------------------------------------


_REAL = object()


class OddStore(MemoryStore):
    """A store whose rotate (or revoke) answers with something else."""

    def __init__(self, rotate_answer: Callable[[RotationResult], object] | None = None) -> None:
        super().__init__()
        self.rotate_answer = rotate_answer
        self.revoke_answer: object = _REAL

    def rotate(self, rotation: Rotation) -> RotationResult:
        real = super().rotate(rotation)
        return real if self.rotate_answer is None else self.rotate_answer(real)  # type: ignore[return-value]

    def revoke(self, session_id: str) -> bool:
        real = super().revoke(session_id)
        return real if self.revoke_answer is _REAL else self.revoke_answer  # type: ignore[return-value]


def _world(store: MemoryStore) -> tuple[Flow, Browser]:
    clock = FakeClock()
    users = FakeUserDirectory()
    users.add_user("ada")
    passwords = FakePasswordVerifier()
    passwords.set_password(LOGIN.username, LOGIN.password, user_id="ada")
    flow = Flow(RING, store, users, passwords=passwords, clock=clock)
    browser = Browser(clock)
    login = flow.login(browser.request("POST", credentials=LOGIN))
    assert isinstance(login, Reissue)
    browser.receive(login.set_cookies)
    clock.advance(200)  # the access token has expired: the next request refreshes
    return flow, browser


def _session(result: RotationResult) -> SessionInfo:
    assert result.session is not None
    return result.session


@pytest.mark.parametrize(
    "answer",
    [
        lambda real: None,
        lambda real: "ROTATED",
        lambda real: {"outcome": "rotated"},
        lambda real: RotationResult(RotationOutcome.ROTATED),  # no session
        lambda real: RotationResult(RotationOutcome.GRACE, _session(real)),  # no salt
        lambda real: RotationResult(RotationOutcome.GRACE, _session(real), b"short"),
        lambda real: RotationResult("rotated"),  # type: ignore[arg-type]
    ],
    ids=[
        "none",
        "str",
        "dict",
        "rotated-no-session",
        "grace-no-salt",
        "grace-short-salt",
        "str-outcome",
    ],
)
def test_a_malformed_rotation_answer_is_unavailable_not_an_exception(
    answer: Callable[[RotationResult], object],
) -> None:
    store = OddStore(answer)
    flow, browser = _world(store)
    decision = flow.decide(browser.request())
    assert isinstance(decision, Unavailable)
    assert decision.port == "store"
    assert isinstance(decision.error, TypeError)
    assert decision.set_cookies == ()  # the browser keeps its tokens


@pytest.mark.parametrize("answer", ["yes", 1, None, object()])
def test_a_revoke_answering_a_non_bool_is_unavailable(answer: object) -> None:
    store = OddStore()
    flow, browser = _world(store)
    store.revoke_answer = answer
    decision = flow.logout(browser.request("POST"))
    assert isinstance(decision, Unavailable)
    assert decision.port == "store"
    store.revoke_answer = _REAL
    assert isinstance(flow.logout(browser.request("POST")), LoggedOut)


# -- now ---------------------------------------------------------------------------------


@pytest.mark.parametrize("now", ["1700000000", None, math.nan, math.inf, -1.0, 2.0**63, True])
def test_a_bad_now_is_a_value_error_before_anything_is_parsed(now: object) -> None:
    flow, browser = _world(MemoryStore())
    request = browser.request()
    if now is None:
        flow._clock = lambda: math.nan  # a host clock gone wrong
    for call in (flow.decide, flow.login, flow.logout):
        with pytest.raises(ValueError, match="now must be seconds since the epoch"):
            call(request, now=now)  # type: ignore[arg-type]


def test_a_bad_now_is_a_value_error_in_the_async_flow_too() -> None:
    flow = AsyncFlow(RING, AsyncMemoryStore(), AsyncFakeUserDirectory())
    with pytest.raises(ValueError, match="now must be seconds"):
        asyncio.run(flow.decide(Request(), now="soon"))  # type: ignore[arg-type]
