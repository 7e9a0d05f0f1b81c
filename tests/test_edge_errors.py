"""No session lost to an application error.

A request whose access token has expired refreshes: the flow rotates the
refresh token and the response must carry the new one. If the application
raises on that request before it starts its response, the middleware answers
500 itself with the cookies; otherwise the browser keeps the rotated-away
token, and its next request after the grace window is a reuse that revokes
the session. Each test below: log in, let the access token expire, request a
route that raises, wait past the grace window, and request again: it must
refresh, with no reuse event, whatever framework runs the route.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from _web_client import ALICE, SAME_ORIGIN, Jar, Reply, asgi_call, ports, wsgi_call
from tokenflow import Decision, Flow, KeyRing, Reissue, Request
from tokenflow.events import ReuseDetected
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent


class Boom(RuntimeError):
    """What the application raises."""


def need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("TOKENFLOW_REQUIRE_EXAMPLES") == "1":
            raise
        pytest.skip(f"{module} is not installed (pip install 'tokenflow[examples]')")


@dataclass
class Session:
    """A flow on a fake clock, a signed-in browser, and every decision seen."""

    clock: FakeClock = field(default_factory=FakeClock)
    decisions: list[Decision] = field(default_factory=list)
    jar: Jar = field(default_factory=Jar)
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        users, passwords = ports(self.clock)
        self.flow = Flow(
            KeyRing.generate(), MemoryStore(), users, passwords=passwords, clock=self.clock
        )
        login = self.flow.login(Request.from_headers("POST", SAME_ORIGIN, credentials=ALICE))
        assert isinstance(login, Reissue)
        self.jar.receive(login.set_cookies)

    def check(self, failing: Callable[[], Reply], fine: Callable[[], Reply]) -> None:
        self.clock.advance(self.flow.config.access_ttl + 60)  # the access token expired
        refreshed = dict(self.jar.cookies)
        reply = failing()
        assert reply.status == 500
        assert len(reply.set_cookies) == 2, reply.headers
        assert reply.header("cache-control") == "no-store"
        assert self.jar.cookies != refreshed  # the browser learnt the rotated token
        self.clock.advance(self.flow.config.grace_seconds + 30)
        self.clock.advance(self.flow.config.access_ttl + 60)  # expired again: refresh
        after = fine()
        assert after.status == 200, after
        assert b"alice" in after.body
        assert len(after.set_cookies) == 2  # a refresh, not a reuse
        reuse = [e for d in self.decisions for e in d.events if isinstance(e, ReuseDetected)]
        assert reuse == []
        assert self.flow.sessions_of("alice", now=self.clock())


# -- bare ASGI and WSGI ------------------------------------------------------------------


def test_bare_asgi() -> None:
    from tokenflow.asgi import TokenflowMiddleware, auth_of

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise Boom
        body = (auth_of(scope).user_id or "").encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    session = Session()
    asgi = TokenflowMiddleware(app, session.flow, on_decision=session.decisions.append)
    session.check(
        lambda: asgi_call(asgi, "GET", "/boom", jar=session.jar, raises=Boom),
        lambda: asgi_call(asgi, "GET", "/ok", jar=session.jar),
    )


def test_bare_asgi_error_after_the_response_started_is_only_reraised() -> None:
    from tokenflow.asgi import TokenflowMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise Boom

    session = Session()
    session.clock.advance(session.flow.config.access_ttl + 60)
    asgi = TokenflowMiddleware(app, session.flow)
    reply = asgi_call(asgi, "GET", "/", jar=session.jar, raises=Boom)
    # One response start only (the app's), with the cookies on it.
    assert (reply.status, len(reply.set_cookies), reply.chunks) == (200, 2, [])


def test_bare_wsgi() -> None:
    from tokenflow.wsgi import TokenflowMiddleware, auth_of

    def app(environ: Any, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise Boom
        start_response("200 OK", [])
        return [(auth_of(environ).user_id or "").encode()]

    session = Session()
    wsgi = TokenflowMiddleware(app, session.flow, on_decision=session.decisions.append)
    session.check(
        lambda: wsgi_call(wsgi, "GET", "/boom", jar=session.jar),
        lambda: wsgi_call(wsgi, "GET", "/ok", jar=session.jar),
    )


@pytest.mark.parametrize("where", ["before start_response", "in the body, before any bytes"])
def test_bare_wsgi_error_reported_with_exc_info(where: str) -> None:
    from tokenflow.wsgi import TokenflowMiddleware

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        if where == "before start_response":
            raise Boom("the app failed")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()

    def body() -> Iterator[bytes]:
        yield b""
        raise Boom("the app failed")

    session = Session()
    session.clock.advance(session.flow.config.access_ttl + 60)
    wsgi = TokenflowMiddleware(app, session.flow)
    errors = io.StringIO()
    calls: list[tuple[str, Any]] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        calls.append((status, headers, exc_info))
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": errors,
        "HTTP_COOKIE": session.jar.header()[0][1],
    }
    body_bytes = b"".join(wsgi(environ, start_response))
    status, headers, exc_info = calls[-1]
    assert status.startswith("500 ")
    assert exc_info is not None
    assert exc_info[0] is Boom
    assert len([v for n, v in headers if n.lower() == "set-cookie"]) == 2
    assert b"internal_server_error" in body_bytes
    assert "Boom: the app failed" in errors.getvalue()


# -- frameworks --------------------------------------------------------------------------


def test_starlette() -> None:
    need("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tokenflow.asgi import TokenflowMiddleware

    async def boom(request: StarletteRequest) -> PlainTextResponse:
        raise Boom

    async def ok(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(request.state.tokenflow.user_id or "")

    session = Session()
    app = Starlette(
        routes=[Route("/boom", boom), Route("/ok", ok)],
        middleware=[
            Middleware(TokenflowMiddleware, flow=session.flow, on_decision=session.decisions.append)
        ],
    )
    session.check(
        lambda: asgi_call(app, "GET", "/boom", jar=session.jar, raises=Boom),
        lambda: asgi_call(app, "GET", "/ok", jar=session.jar),
    )


def test_fastapi() -> None:
    need("fastapi")
    from fastapi import FastAPI
    from fastapi import Request as FastAPIRequest
    from fastapi.responses import PlainTextResponse

    from tokenflow.asgi import TokenflowMiddleware

    session = Session()
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise Boom

    def ok(request: Any) -> str:
        return str(request.state.tokenflow.user_id)

    # Annotations are strings here: give FastAPI the class itself.
    ok.__annotations__["request"] = FastAPIRequest
    app.get("/ok", response_class=PlainTextResponse)(ok)

    app.add_middleware(TokenflowMiddleware, flow=session.flow, on_decision=session.decisions.append)
    session.check(
        lambda: asgi_call(app, "GET", "/boom", jar=session.jar, raises=Boom),
        lambda: asgi_call(app, "GET", "/ok", jar=session.jar),
    )


@pytest.mark.parametrize("propagate", [True, False])
def test_flask(propagate: bool) -> None:
    need("flask")
    from flask import Flask

    from tokenflow.wsgi import TokenflowMiddleware, auth_of

    session = Session()
    app = Flask(__name__)
    # Flask answers its own 500 unless it propagates errors (testing, debug).
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.get("/boom")
    def boom() -> str:
        raise Boom

    @app.get("/ok")
    def ok() -> str:
        from flask import request

        return str(auth_of(request.environ).user_id)

    app.wsgi_app = TokenflowMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, session.flow, on_decision=session.decisions.append
    )
    session.check(
        lambda: wsgi_call(app, "GET", "/boom", jar=session.jar),
        lambda: wsgi_call(app, "GET", "/ok", jar=session.jar),
    )


def test_django_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    need("django")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    monkeypatch.syspath_prepend(str(ROOT))
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, HttpResponse
    from django.urls import clear_url_caches, path

    if not settings.configured:
        django.setup()
    for name in ("urls", "views", "auth"):  # no stale module for later tests to meet
        monkeypatch.delitem(sys.modules, f"examples.django_app.{name}", raising=False)
    auth = importlib.import_module("examples.django_app.auth")
    session = Session()
    monkeypatch.setattr(auth, "flow", lambda: session.flow)

    def boom(request: HttpRequest) -> HttpResponse:
        raise Boom

    def ok(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(auth.user_of(request)))

    urls = ModuleType("edge_error_urls")
    urls.urlpatterns = [path("boom", boom), path("ok", ok)]  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "ROOT_URLCONF", urls)
    monkeypatch.setattr(settings, "MIDDLEWARE", ["examples.django_app.auth.TokenflowMiddleware"])
    clear_url_caches()
    handler = WSGIHandler()

    def call(route: str) -> Reply:
        return wsgi_call(handler, "GET", route, [("host", "testserver")], jar=session.jar)

    # Django turns the view's error into its 500 inside the middleware chain,
    # so the example's middleware puts the cookies on it.
    try:
        session.check(lambda: call("/boom"), lambda: call("/ok"))
    finally:
        for name in ("urls", "views", "auth"):
            sys.modules.pop(f"examples.django_app.{name}", None)
        clear_url_caches()
