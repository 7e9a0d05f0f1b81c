"""Provider sign-in through the ASGI and WSGI middleware: start, callback, failures."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from _web_client import HOST, Jar, Reply
from tokenflow import (
    Flow,
    KeyRing,
    Reissue,
    Request,
    SecondFactorCredentials,
    Unauthorized,
    oidc,
)
from tokenflow.asgi import Endpoints as AsgiEndpoints
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock, FakeSecondFactors, FakeUserDirectory
from tokenflow.testing.oidc import FakeAuthorizationServer, FakeClient, Misbehaviour
from tokenflow.throttles import MemoryThrottle
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware

CLIENT_ID = "web-app"
SECRET = "web-app-secret"
REDIRECT = f"https://{HOST}/auth/oidc/fake/callback"


@pytest.fixture
def server() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer() as fake:
        fake.register(FakeClient(CLIENT_ID, (REDIRECT,), "client_secret_post", SECRET))
        yield fake


def build_flow(server: FakeAuthorizationServer, **options: Any) -> tuple[Flow, MemoryStore]:
    source = oidc.HttpKeySetSource(timeout=1.0, allow_loopback_http=True)
    verifier = oidc.oidc(server.issuer, client_ids=[CLIENT_ID], source=source)
    client = oidc.code_flow(
        verifier,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        client_auth=oidc.ClientAuth.CLIENT_SECRET_POST,
        redirect_uri=REDIRECT,
        source=source,
        allow_loopback_http=True,
    )
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        FakeUserDirectory(allow_signup=True),
        external={"fake": client},
        **options,
    )
    return flow, store


def app(environ_or_scope: Any, *rest: Any) -> Any:
    raise AssertionError("the endpoints answer themselves")


def asgi(middleware: Any, path: str, headers: list[tuple[str, str]], jar: Jar) -> Reply:
    target = urlsplit(path)
    sent = [*headers, *jar.header()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": target.path,
        "raw_path": target.path.encode(),
        "query_string": target.query.encode(),
        "root_path": "",
        "scheme": "https",
        "headers": [(n.lower().encode(), v.encode()) for n, v in sent],
        "client": ("192.0.2.10", 4000),
        "server": (HOST, 443),
    }
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    asyncio.run(middleware(scope, receive, send))
    reply = Reply(
        replies[0]["status"],
        [(bytes(n).decode(), bytes(v).decode()) for n, v in replies[0]["headers"]],
        [m.get("body", b"") for m in replies[1:]],
    )
    jar.receive(reply.set_cookies)
    return reply


def wsgi(middleware: Any, path: str, headers: list[tuple[str, str]], jar: Jar) -> Reply:
    target = urlsplit(path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": target.path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": target.query,
        "REMOTE_ADDR": "192.0.2.10",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "443",
        "CONTENT_LENGTH": "0",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "https",
    }
    for name, value in [*headers, *jar.header()]:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> Any:
        started.append((status, response_headers))
        return lambda data: None

    chunks: Iterable[bytes] = middleware(environ, start_response)
    body = list(chunks)
    status, response_headers = started[-1]
    reply = Reply(int(status.split()[0]), response_headers, body)
    jar.receive(reply.set_cookies)
    return reply


KINDS: dict[str, tuple[Callable[..., Any], Callable[..., Reply]]] = {
    "asgi": (AsgiMiddleware, asgi),
    "wsgi": (WsgiMiddleware, wsgi),
}


def at_provider(location: str) -> str:
    """The browser at the fake provider: the callback path and query it is sent back to."""
    answer = httpx.get(location, follow_redirects=False, timeout=5)
    assert answer.status_code == 302
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    return f"{back.path}?{back.query}"


CROSS_SITE = [("sec-fetch-site", "cross-site"), ("host", HOST)]
SAME_ORIGIN = [("sec-fetch-site", "none"), ("host", HOST)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_start_then_callback_signs_in_and_returns_to_next(
    server: FakeAuthorizationServer, kind: str
) -> None:
    middleware_type, call = KINDS[kind]
    flow, _store = build_flow(server)
    middleware = middleware_type(app, flow, endpoints=AsgiEndpoints(login_page="/login"))
    jar = Jar()
    started = call(middleware, "/auth/oidc/fake/start?next=/account", SAME_ORIGIN, jar)
    assert started.status == 302
    location = started.header("location")
    assert location is not None
    assert location.startswith(f"{server.issuer}/authorize?")
    assert [name for name in jar.cookies if "tf_oidc_" in name]
    back = call(middleware, at_provider(location), CROSS_SITE, jar)
    assert back.status == 303, back.body
    assert back.header("location") == "/account"
    assert back.header("cache-control") == "no-store"
    # Signed in: both auth cookies, and no transaction cookie left.
    assert set(jar.cookies) == {"__Host-tf_access", "__Host-tf_refresh"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_provider_sign_in_to_an_account_with_a_second_factor_asks_for_it(
    server: FakeAuthorizationServer, kind: str
) -> None:
    """The callback opens no session: it sends the browser to the second-factor
    page with the partial-login cookie, and only the code completes the sign-in."""
    middleware_type, call = KINDS[kind]
    user_id = f"fake:{server.subject}"
    factors = FakeSecondFactors()
    factors.enroll(user_id)
    clock = FakeClock(time.time())
    flow, store = build_flow(server, throttle=MemoryThrottle(), second_factors=factors, clock=clock)
    endpoints = AsgiEndpoints(login_page="/login", second_factor_page="/login/code")
    middleware = middleware_type(app, flow, endpoints=endpoints)
    jar = Jar()
    started = call(middleware, "/auth/oidc/fake/start?next=/account", SAME_ORIGIN, jar)
    back = call(middleware, at_provider(started.header("location") or ""), CROSS_SITE, jar)
    assert back.status == 303, back.body
    location = urlsplit(back.header("location") or "")
    assert location.path == "/login/code"
    assert parse_qs(location.query)["next"] == ["/account"]
    # Only the partial-login cookie: no session, no transaction left.
    assert set(jar.cookies) == {flow.partial_cookie_name}
    assert store.sessions_of(user_id, now=clock()) == []
    assert isinstance(flow.decide(Request(cookies=jar.cookies)), Unauthorized)
    code = SecondFactorCredentials(factors.code_at(user_id, clock()))
    completed = flow.login(
        Request(method="POST", cookies=jar.cookies, credentials=code, sec_fetch_site="same-origin")
    )
    assert isinstance(completed, Reissue)
    assert (completed.user_id, completed.aal, completed.amr) == (user_id, 2, ("otp",))


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_failed_callback_goes_to_the_login_page_and_clears_the_transaction(
    server: FakeAuthorizationServer, kind: str
) -> None:
    middleware_type, call = KINDS[kind]
    flow, store = build_flow(server)
    middleware = middleware_type(app, flow, endpoints=AsgiEndpoints(login_page="/login"))
    jar = Jar()
    started = call(middleware, "/auth/oidc/fake/start", SAME_ORIGIN, jar)
    server.misbehaviour = Misbehaviour.TOKEN_500
    back = call(middleware, at_provider(started.header("location") or ""), CROSS_SITE, jar)
    assert back.status == 303
    assert back.header("location") == "/login?error=unavailable"
    assert jar.cookies == {}
    assert store.sessions_of(f"fake:{server.subject}", now=0) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_callback_without_the_browsers_transaction_is_refused(
    server: FakeAuthorizationServer, kind: str
) -> None:
    """Login CSRF: the attacker's own callback URL, opened in the victim's browser."""
    middleware_type, call = KINDS[kind]
    flow, _store = build_flow(server)
    middleware = middleware_type(app, flow)
    attacker, victim = Jar(), Jar()
    started = call(middleware, "/auth/oidc/fake/start", SAME_ORIGIN, attacker)
    back = call(middleware, at_provider(started.header("location") or ""), CROSS_SITE, victim)
    assert back.status == 401
    assert victim.cookies == {}
    assert server.hits.get("/token", 0) == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_parameter_sent_twice_fails_the_sign_in(
    server: FakeAuthorizationServer, kind: str
) -> None:
    middleware_type, call = KINDS[kind]
    flow, _store = build_flow(server)
    middleware = middleware_type(app, flow)
    jar = Jar()
    started = call(middleware, "/auth/oidc/fake/start", SAME_ORIGIN, jar)
    path = at_provider(started.header("location") or "")
    state = parse_qs(urlsplit(path).query)["state"][0]
    back = call(middleware, f"{path}&state={state}", CROSS_SITE, jar)
    assert back.status == 401
    assert server.hits.get("/token", 0) == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_unknown_providers_and_other_methods_are_not_served(
    server: FakeAuthorizationServer, kind: str
) -> None:
    middleware_type, call = KINDS[kind]
    flow, _store = build_flow(server)
    middleware = middleware_type(app, flow)
    with pytest.raises(AssertionError, match="endpoints answer themselves"):
        call(middleware, "/auth/oidc/other/start", SAME_ORIGIN, Jar())


def post_call(
    kind: str, middleware: Any, path: str, body: bytes, headers: list[tuple[str, str]], jar: Jar
) -> Reply:
    """A POST (form) through either middleware."""
    sent = [*headers, ("content-type", "application/x-www-form-urlencoded"), *jar.header()]
    if kind == "asgi":
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "scheme": "https",
            "headers": [(n.lower().encode(), v.encode()) for n, v in sent],
            "client": ("192.0.2.10", 4000),
            "server": (HOST, 443),
        }
        replies: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            replies.append(message)

        asyncio.run(middleware(scope, receive, send))
        reply = Reply(
            replies[0]["status"],
            [(bytes(n).decode(), bytes(v).decode()) for n, v in replies[0]["headers"]],
            [m.get("body", b"") for m in replies[1:]],
        )
    else:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "REMOTE_ADDR": "192.0.2.10",
            "SERVER_NAME": HOST,
            "SERVER_PORT": "443",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "https",
        }
        for name, value in sent:
            key = name.upper().replace("-", "_")
            environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> Any:
            started.append((status, response_headers))
            return lambda data: None

        chunks = list(middleware(environ, start_response))
        status, response_headers = started[-1]
        reply = Reply(int(status.split()[0]), response_headers, chunks)
    jar.receive(reply.set_cookies)
    return reply


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_form_post_provider_signs_in_by_a_cross_site_post(
    server: FakeAuthorizationServer, kind: str
) -> None:
    middleware_type, call = KINDS[kind]
    source = oidc.HttpKeySetSource(timeout=1.0, allow_loopback_http=True)
    client = oidc.code_flow(
        oidc.oidc(server.issuer, client_ids=[CLIENT_ID], source=source),
        client_id=CLIENT_ID,
        client_secret=SECRET,
        client_auth=oidc.ClientAuth.CLIENT_SECRET_POST,
        redirect_uri=REDIRECT,
        source=source,
        allow_loopback_http=True,
        response_mode="form_post",
    )
    flow = Flow(
        KeyRing.generate(), MemoryStore(), FakeUserDirectory(allow_signup=True),
        external={"fake": client},
    )  # fmt: skip
    middleware = middleware_type(app, flow)
    jar = Jar()
    started = call(middleware, "/auth/oidc/fake/start?next=/account", SAME_ORIGIN, jar)
    page = httpx.get(started.header("location") or "", follow_redirects=False).text
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page))
    body = urlencode(fields).encode()
    cross_site = [*CROSS_SITE, ("origin", server.issuer)]
    # A GET to a form_post provider's callback is not served.
    callback = "/auth/oidc/fake/callback"
    assert call(middleware, f"{callback}?{body.decode()}", CROSS_SITE, Jar()).status == 405
    back = post_call(kind, middleware, callback, body, cross_site, jar)
    assert back.status == 303, back.body
    assert back.header("location") == "/account"
    assert set(jar.cookies) == {"__Host-tf_access", "__Host-tf_refresh"}
    # The same POST from another browser (no transaction cookie): refused.
    assert post_call(kind, middleware, callback, body, cross_site, Jar()).status == 401
