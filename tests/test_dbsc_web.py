"""DBSC through the ASGI and WSGI middleware: the headers and statuses Chrome sees."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest

pytest.importorskip("joserfc")

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from _web_client import ALICE, HOST, JSON, SAME_ORIGIN, Jar, Reply, asgi_call, wsgi_call
from tokenflow import AsyncFlow, DeviceBinding, Flow, FlowConfig, KeyRing
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
)
from tokenflow.testing.dbsc import sign_proof
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware

T0 = 1_700_000_000.0
CONFIG = FlowConfig(device_binding=DeviceBinding())


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


Call = Callable[..., Reply]


def _sync_ports() -> tuple[FakeUserDirectory, FakePasswordVerifier]:
    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
    return users, passwords


def _server(kind: str, clock: FakeClock) -> Call:
    users, passwords = _sync_ports()
    if kind == "asgi-async":
        ausers = AsyncFakeUserDirectory(users)
        apasswords = AsyncFakePasswordVerifier(passwords)
        flow: Any = AsyncFlow(
            KeyRing.generate(),
            AsyncMemoryStore(),
            ausers,
            passwords=apasswords,
            config=CONFIG,
            clock=clock,
            proofs=DbscProofVerifier(),
        )
    else:
        flow = Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            passwords=passwords,
            config=CONFIG,
            clock=clock,
            proofs=DbscProofVerifier(),
        )
    if kind == "wsgi":
        app: Any = WsgiMiddleware(wsgi_app, flow, required=["/private"])
        return lambda *args, **kwargs: wsgi_call(app, *args, **kwargs)
    app = AsgiMiddleware(asgi_app, flow, required=["/private"])
    return lambda *args, **kwargs: asgi_call(app, *args, **kwargs)


@pytest.fixture(params=["asgi-async", "asgi-sync", "wsgi"])
def server(request: pytest.FixtureRequest) -> tuple[Call, FakeClock]:
    clock = FakeClock(T0)
    return _server(request.param, clock), clock


REGISTRATION = re.compile(r'\(ES256 RS256\);path="([^"]+)";challenge="([^"]+)"')
CHALLENGE = re.compile(r'"([^"]+)";id="([^"]+)"')


def test_login_register_refresh_over_http(server: tuple[Call, FakeClock]) -> None:
    call, clock = server
    jar = Jar()
    body = json.dumps({"username": ALICE.username, "password": ALICE.password}).encode()
    login = call("POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    assert login.status == 200
    invitation = REGISTRATION.fullmatch(login.header("secure-session-registration") or "")
    assert invitation is not None
    path, challenge = invitation.groups()
    assert path == "/auth/dbsc/register"

    key = ec.generate_private_key(ec.SECP256R1())
    proof = sign_proof(key, {"jti": challenge}, with_jwk=True)
    # Chrome sends the JWT bare, without sf-string quotes.
    registered = call("POST", path, [*SAME_ORIGIN, ("secure-session-response", proof)], jar=jar)
    assert registered.status == 200
    assert registered.header("content-type") == "application/json"
    assert registered.header("cache-control") == "no-store"
    instructions = registered.json()
    session_id = instructions["session_identifier"]
    assert instructions["refresh_url"] == "/auth/dbsc/refresh"
    assert [c["name"] for c in instructions["credentials"]] == ["__Host-tf_access"]
    assert [c.split("=", 1)[0] for c in registered.set_cookies] == ["__Host-tf_access"]
    pre = CHALLENGE.fullmatch(registered.header("secure-session-challenge") or "")
    assert pre is not None
    assert pre.group(2) == session_id

    clock.advance(121)
    jar.cookies.pop("__Host-tf_access")  # the bound cookie expired in the browser
    # A bare refresh cookie no longer refreshes the bound session.
    assert call("GET", "/private", [("host", HOST)], jar=jar).status == 401
    # The refresh endpoint asks for a proof with 403, never 401.
    asked = call(
        "POST", "/auth/dbsc/refresh", [*SAME_ORIGIN, ("sec-secure-session-id", session_id)], jar=jar
    )
    assert asked.status == 403
    fresh = CHALLENGE.fullmatch(asked.header("secure-session-challenge") or "")
    assert fresh is not None
    assert fresh.group(2) == session_id
    # The proof, this time as a quoted sf-string, with a quoted session id.
    signed = sign_proof(key, {"jti": fresh.group(1)}, with_jwk=False)
    refreshed = call(
        "POST",
        "/auth/dbsc/refresh",
        [
            *SAME_ORIGIN,
            ("sec-secure-session-id", f'"{session_id}"'),
            ("secure-session-response", f'"{signed}"'),
        ],
        jar=jar,
    )
    assert refreshed.status == 200
    assert refreshed.body == b""
    assert refreshed.header("cache-control") == "no-store"
    assert refreshed.header("secure-session-challenge") is not None
    assert sorted(c.split("=", 1)[0] for c in refreshed.set_cookies) == [
        "__Host-tf_access",
        "__Host-tf_refresh",
    ]
    assert call("GET", "/private", [("host", HOST)], jar=jar).status == 200

    # Another key's proof: 401 (the browser ends that device-bound session).
    other = ec.generate_private_key(ec.SECP256R1())
    next_challenge = CHALLENGE.fullmatch(refreshed.header("secure-session-challenge") or "")
    assert next_challenge is not None
    forged = sign_proof(other, {"jti": next_challenge.group(1)}, with_jwk=False)
    thief = Jar(dict(jar.cookies))
    refused = call(
        "POST",
        "/auth/dbsc/refresh",
        [*SAME_ORIGIN, ("sec-secure-session-id", session_id), ("secure-session-response", forged)],
        jar=thief,
    )
    assert refused.status == 401
    assert refused.set_cookies == []
    # The endpoints take POST only.
    assert call("GET", "/auth/dbsc/refresh", [("host", HOST)], jar=jar).status == 405


def test_registration_without_a_session_is_refused(server: tuple[Call, FakeClock]) -> None:
    call, _ = server
    key = ec.generate_private_key(ec.SECP256R1())
    proof = sign_proof(key, {"jti": "x"}, with_jwk=True)
    reply = call("POST", "/auth/dbsc/register", [*SAME_ORIGIN, ("secure-session-response", proof)])
    assert reply.status == 401


def test_device_paths_may_not_collide_with_endpoints() -> None:
    from tokenflow import ConfigError
    from tokenflow.asgi import Endpoints

    users, passwords = _sync_ports()
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=passwords,
        config=FlowConfig(device_binding=DeviceBinding(registration_path="/auth/login")),
        proofs=DbscProofVerifier(),
    )
    with pytest.raises(ConfigError):
        AsgiMiddleware(asgi_app, flow, endpoints=Endpoints())


def _bound_over_http(call: Call, key: Any) -> tuple[Jar, str, str]:
    """Log in and register ``key`` over HTTP: the jar, the session id, the next challenge."""
    jar = Jar()
    body = json.dumps({"username": ALICE.username, "password": ALICE.password}).encode()
    login = call("POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    invitation = REGISTRATION.fullmatch(login.header("secure-session-registration") or "")
    assert invitation is not None
    path, challenge = invitation.groups()
    proof = sign_proof(key, {"jti": challenge}, with_jwk=True)
    registered = call("POST", path, [*SAME_ORIGIN, ("secure-session-response", proof)], jar=jar)
    assert registered.status == 200, registered
    found = CHALLENGE.fullmatch(registered.header("secure-session-challenge") or "")
    assert found is not None
    return jar, registered.json()["session_identifier"], found.group(1)


def test_rs256_key_registers_and_refreshes_over_http(server: tuple[Call, FakeClock]) -> None:
    call, clock = server
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jar, session_id, challenge = _bound_over_http(call, key)
    clock.advance(121)
    jar.cookies.pop("__Host-tf_access")
    signed = sign_proof(key, {"jti": challenge}, with_jwk=False)
    refreshed = call(
        "POST",
        "/auth/dbsc/refresh",
        [*SAME_ORIGIN, ("sec-secure-session-id", session_id), ("secure-session-response", signed)],
        jar=jar,
    )
    assert refreshed.status == 200  # the cached challenge, 121 s old: no 403 round trip
    assert call("GET", "/private", [("host", HOST)], jar=jar).status == 200


def test_logout_with_a_copied_refresh_cookie_keeps_the_bound_session(
    server: tuple[Call, FakeClock],
) -> None:
    call, clock = server
    key = ec.generate_private_key(ec.SECP256R1())
    jar, session_id, challenge = _bound_over_http(call, key)
    clock.advance(121)
    thief = Jar({"__Host-tf_refresh": jar.cookies["__Host-tf_refresh"]})
    out = call("POST", "/auth/logout", [*SAME_ORIGIN, JSON], b"{}", jar=thief)
    assert out.status == 200  # the thief's own cookies are cleared...
    assert "__Host-tf_refresh" not in thief.cookies
    # ...and the owner's session lives on: its next proof refreshes.
    jar.cookies.pop("__Host-tf_access")
    signed = sign_proof(key, {"jti": challenge}, with_jwk=False)
    refreshed = call(
        "POST",
        "/auth/dbsc/refresh",
        [*SAME_ORIGIN, ("sec-secure-session-id", session_id), ("secure-session-response", signed)],
        jar=jar,
    )
    assert refreshed.status == 200
    # The owner's logout carries the live bound cookie: the session ends.
    kept = dict(jar.cookies)
    assert call("POST", "/auth/logout", [*SAME_ORIGIN, JSON], b"{}", jar=jar).status == 200
    following = CHALLENGE.fullmatch(refreshed.header("secure-session-challenge") or "")
    assert following is not None
    kept.pop("__Host-tf_access")
    again = sign_proof(key, {"jti": following.group(1)}, with_jwk=False)
    ended = call(
        "POST",
        "/auth/dbsc/refresh",
        [*SAME_ORIGIN, ("sec-secure-session-id", session_id), ("secure-session-response", again)],
        jar=Jar(kept),
    )
    assert ended.status == 401  # the session is over, even for its own device
