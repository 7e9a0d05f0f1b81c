"""The middleware's access path builds nothing the application does not read.

On a signed-in request (a valid access token) and on an anonymous request
that sets no cookie, the application gets the server's own ``send``: the
response goes out untouched, with no wrapper per message. The FastAPI
example's dependencies run on the event loop (``async def``), not in a
worker thread.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from _web_client import ALICE, SAME_ORIGIN, Jar, asgi_call, ports
from tokenflow import Flow, KeyRing, Process, Reissue, Unauthorized
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
FORM = ("content-type", "application/x-www-form-urlencoded")


class App:
    def __init__(self) -> None:
        self.sends: list[Any] = []
        self.decisions: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.sends.append(send)
        self.decisions.append(auth_of(scope).decision)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _signed_in() -> tuple[FakeClock, App, TokenflowMiddleware, Jar]:
    clock = FakeClock()
    users, passwords = ports(clock)
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords, clock=clock)
    app = App()
    asgi = TokenflowMiddleware(app, flow)
    jar = Jar()
    body = f"username={ALICE.username}&password={ALICE.password}".encode()
    assert asgi_call(asgi, "POST", "/auth/login", [*SAME_ORIGIN, FORM], body, jar=jar).status == 303
    return clock, app, asgi, jar


def _call(asgi: TokenflowMiddleware, headers: list[tuple[bytes, bytes]]) -> Any:
    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "client": None}
    asyncio.run(asgi(scope, receive, send))
    return send


def test_a_signed_in_request_gets_the_servers_own_send() -> None:
    _, app, asgi, jar = _signed_in()
    cookie = "; ".join(f"{k}={v}" for k, v in jar.cookies.items()).encode()
    send = _call(asgi, [(b"cookie", cookie)])
    assert isinstance(app.decisions[-1], Process)
    assert app.sends[-1] is send


def test_an_anonymous_request_without_cookies_gets_the_servers_own_send() -> None:
    _, app, asgi, _ = _signed_in()
    send = _call(asgi, [])
    assert isinstance(app.decisions[-1], Unauthorized)
    assert app.sends[-1] is send


def test_a_refresh_wraps_send_to_append_its_cookies() -> None:
    clock, app, asgi, jar = _signed_in()
    clock.advance(600)
    cookie = "; ".join(f"{k}={v}" for k, v in jar.cookies.items()).encode()
    send = _call(asgi, [(b"cookie", cookie)])
    assert isinstance(app.decisions[-1], Reissue)
    assert app.sends[-1] is not send


def test_the_fastapi_dependencies_run_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "sessions.db"))
    sys.modules.pop("examples.fastapi_app", None)
    from examples import fastapi_app

    # FastAPI runs a plain ``def`` dependency in a worker thread.
    assert inspect.iscoroutinefunction(fastapi_app.current_auth)
    assert inspect.iscoroutinefunction(fastapi_app.current_user)
