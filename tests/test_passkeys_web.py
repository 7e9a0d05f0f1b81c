"""The passkey endpoints through the ASGI and WSGI middleware: add a passkey, sign in, manage."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from _web_client import (
    ALICE,
    CROSS_SITE,
    HOST,
    JSON,
    SAME_ORIGIN,
    Jar,
    asgi_call,
    ports,
    wsgi_call,
)
from tokenflow import AsyncFlow, Flow
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.passkeys import (
    AsyncPasskeys,
    MemoryChallengeLedger,
    MemoryPasskeyRepository,
    PasskeyConfig,
    Passkeys,
)
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import AsyncFakeUserDirectory, FakeClock
from tokenflow.testing.passkeys import SoftAuthenticator
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware

ORIGIN = f"https://{HOST}"


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app"})


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"app"]


def _passkeys(clock: FakeClock, keyring: Any) -> Passkeys:
    return Passkeys(
        PasskeyConfig(rp_id=HOST, rp_name="App", origins=(ORIGIN,)),
        keyring,
        MemoryPasskeyRepository(),
        MemoryChallengeLedger(),
        other_sign_in=lambda user_id: False,
        clock=clock,
    )


def _wsgi() -> Callable[..., Any]:
    from tokenflow import KeyRing

    clock = FakeClock(1_800_000_000.0)
    users, passwords = ports(clock)
    keyring = KeyRing.generate()
    passkeys = _passkeys(clock, keyring)
    flow = Flow(keyring, MemoryStore(), users, passwords=passwords, passkeys=passkeys, clock=clock)
    app = WsgiMiddleware(_wsgi_app, flow)
    return lambda method, path, headers=(), body=b"", jar=None: wsgi_call(
        app, method, path, headers, body, jar=jar
    )


def _asgi() -> Callable[..., Any]:
    from tokenflow import KeyRing
    from tokenflow.testing import AsyncFakePasswordVerifier

    clock = FakeClock(1_800_000_000.0)
    sync_users, sync_passwords = ports(clock)
    users = AsyncFakeUserDirectory(sync_users)
    passwords = AsyncFakePasswordVerifier(sync_passwords)
    keyring = KeyRing.generate()
    passkeys = AsyncPasskeys(_passkeys(clock, keyring))
    flow = AsyncFlow(
        keyring, AsyncMemoryStore(), users, passwords=passwords, passkeys=passkeys, clock=clock
    )
    app = AsgiMiddleware(_asgi_app, flow)
    return lambda method, path, headers=(), body=b"", jar=None: asgi_call(
        app, method, path, headers, body, jar=jar
    )


@pytest.fixture(params=["wsgi", "asgi"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return _wsgi() if request.param == "wsgi" else _asgi()


def _post(call: Callable[..., Any], path: str, payload: dict[str, str], jar: Jar) -> Any:
    return call("POST", path, [*SAME_ORIGIN, JSON], json.dumps(payload).encode(), jar)


def test_add_a_passkey_sign_out_sign_in_with_it(call: Callable[..., Any]) -> None:
    jar = Jar()
    login = _post(
        call, "/auth/login", {"username": ALICE.username, "password": ALICE.password}, jar
    )
    assert login.status == 200
    authenticator = SoftAuthenticator()
    options = _post(call, "/auth/passkeys/register/options", {}, jar)
    assert options.status == 200
    assert options.json()["rp"]["id"] == HOST
    created = authenticator.create(options.json(), ORIGIN)
    added = _post(call, "/auth/passkeys/register", {"response": created, "name": "Laptop"}, jar)
    assert added.status == 201
    assert added.json()["passkey"]["name"] == "Laptop"
    listed = call("GET", "/auth/passkeys", SAME_ORIGIN, b"", jar)
    assert [p["name"] for p in listed.json()["passkeys"]] == ["Laptop"]
    assert _post(call, "/auth/logout", {}, jar).status == 200
    assert not jar.cookies
    anonymous = Jar()
    options = _post(call, "/auth/passkeys/login/options", {}, anonymous)
    assert options.status == 200
    assertion = authenticator.get(options.json(), ORIGIN)
    signed_in = _post(call, "/auth/login", {"passkey": assertion}, anonymous)
    assert signed_in.status == 200
    assert signed_in.json()["user_id"] == "alice"
    # The captured assertion, replayed from another browser: refused.
    assert _post(call, "/auth/login", {"passkey": assertion}, Jar()).status == 401
    # The last passkey of a user with no other way in cannot be removed.
    credential_id = listed.json()["passkeys"][0]["credential_id"]
    removed = _post(call, "/auth/passkeys/remove", {"credential_id": credential_id}, anonymous)
    assert removed.status == 409
    renamed = _post(
        call, "/auth/passkeys/rename", {"credential_id": credential_id, "name": "Work"}, anonymous
    )
    assert renamed.status == 200


def test_passkey_endpoints_need_a_session_and_same_origin(call: Callable[..., Any]) -> None:
    assert _post(call, "/auth/passkeys/register/options", {}, Jar()).status == 401
    assert call("GET", "/auth/passkeys", SAME_ORIGIN, b"", Jar()).status == 401
    cross = call("POST", "/auth/passkeys/login/options", [*CROSS_SITE, JSON], b"{}", Jar())
    assert cross.status == 403
    jar = Jar()
    _post(call, "/auth/login", {"username": ALICE.username, "password": ALICE.password}, jar)
    cross = call("POST", "/auth/passkeys/register/options", [*CROSS_SITE, JSON], b"{}", jar)
    assert cross.status == 403


def test_options_for_a_foreign_origin_are_refused(call: Callable[..., Any]) -> None:
    headers = [("host", HOST), ("origin", "https://other.example"), JSON]
    assert call("POST", "/auth/passkeys/login/options", headers, b"{}", Jar()).status in (400, 403)
