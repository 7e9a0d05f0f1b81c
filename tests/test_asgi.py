"""The ASGI middleware, driven by raw ASGI calls: what a browser and an app would notice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _web_client import (
    ALICE,
    BOB,
    CROSS_SITE,
    FORM,
    HOST,
    JSON,
    SAME_ORIGIN,
    Jar,
    Reply,
    asgi_call,
    ports,
)
from tokenflow import (
    AsyncFlow,
    ConfigError,
    Flow,
    FlowConfig,
    KeyRing,
    Process,
    Reissue,
    ThrottlePolicy,
    ThrottleRule,
    Unauthorized,
    Unavailable,
)
from tokenflow.asgi import Auth, Endpoints, TokenflowMiddleware, auth_of
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakeExternalTokenVerifier,
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    AsyncFaultyStore,
    FakeClock,
    FakeExternalTokenVerifier,
    Fault,
)
from tokenflow.throttles import AsyncMemoryThrottle


@dataclass
class App:
    """An application that streams its answer in two chunks and records what it saw."""

    seen: list[Auth] = field(default_factory=list)
    calls: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        auth = auth_of(scope)
        assert scope["state"]["tokenflow"] is auth
        self.seen.append(auth)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")],
            }
        )
        await send({"type": "http.response.body", "body": b"hello, ", "more_body": True})
        who = (auth.user_id or "anonymous").encode()
        await send({"type": "http.response.body", "body": who, "more_body": False})


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    app: App = field(default_factory=App)
    store: AsyncFaultyStore = field(init=False)
    google: FakeExternalTokenVerifier = field(default_factory=lambda: FakeExternalTokenVerifier())
    throttle: bool = False
    endpoints: Endpoints = field(default_factory=Endpoints)
    decisions: list[Any] = field(default_factory=list)
    asgi: TokenflowMiddleware = field(init=False)

    def __post_init__(self) -> None:
        users, passwords = ports(self.clock)
        users.link("google", "g-alice", "alice")
        self.store = AsyncFaultyStore(AsyncMemoryStore())
        extra: dict[str, Any] = {}
        if self.throttle:
            extra = {
                "throttle": AsyncMemoryThrottle(),
                "config": FlowConfig(throttle=ThrottlePolicy(username=ThrottleRule(2, 30, 60))),
            }
        flow = AsyncFlow(
            KeyRing.generate(),
            self.store,
            AsyncFakeUserDirectory(users),
            passwords=AsyncFakePasswordVerifier(passwords),
            external={"google": AsyncFakeExternalTokenVerifier(self.google)},
            clock=self.clock,
            **extra,
        )
        self.asgi = TokenflowMiddleware(
            self.app,
            flow,
            required=["/account"],
            endpoints=self.endpoints,
            on_decision=self.decisions.append,
        )

    def call(self, method: str, path: str, headers: Any = (), body: Any = b"", **kw: Any) -> Reply:
        return asgi_call(self.asgi, method, path, headers, body, **kw)

    def login(self, jar: Jar, who: Any = ALICE) -> Reply:
        body = json.dumps({"username": who.username, "password": who.password}).encode()
        reply = self.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
        assert reply.status == 200, reply.body
        return reply


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def test_json_login_then_the_app_sees_the_user() -> None:
    world, jar = World(), Jar()
    reply = world.login(jar)
    assert reply.json()["user_id"] == "alice"
    assert len(reply.set_cookies) == 2
    assert all("HttpOnly" in c for c in reply.set_cookies)
    assert reply.header("cache-control") == "no-store"
    page = world.call("GET", "/account/home", [("host", HOST)], jar=jar)
    assert (page.status, page.body) == (200, b"hello, alice")
    assert world.app.seen[-1].session_id == reply.json()["session_id"]
    # The access path sets no cookie, and the app's own caching is left alone.
    assert page.set_cookies == []
    assert page.header("cache-control") == "max-age=60"


def test_form_login_redirects_303_to_a_same_site_next_with_its_cookies() -> None:
    world, jar = World(), Jar()
    body = form(username=ALICE.username, password=ALICE.password, next="/account/inbox?x=1")
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], body, jar=jar)
    assert reply.status == 303
    assert reply.header("location") == "/account/inbox?x=1"
    assert len(reply.set_cookies) == 2
    assert reply.header("cache-control") == "no-store"
    assert world.call("GET", "/account/inbox", jar=jar).body == b"hello, alice"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ok\x00",
        "javascript:alert(1)",
        "evil.example",
        "",
    ],
)
def test_form_login_refuses_an_open_redirect(target: str) -> None:
    world = World()
    body = form(username=ALICE.username, password=ALICE.password, next=target)
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], body)
    assert reply.status == 303
    location = reply.header("location")
    assert location is not None
    assert location == "/"


@pytest.mark.parametrize("target", ["/account?tab=2#top", "/%0a/evil.example", "/a//b"])
def test_form_login_keeps_a_same_site_next(target: str) -> None:
    world = World()
    body = form(username=ALICE.username, password=ALICE.password, next=target)
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], body)
    assert reply.header("location") == target


def test_failed_form_login_returns_to_the_login_page_and_keeps_the_session() -> None:
    world = World(endpoints=Endpoints(login_page="/signin"))
    jar = Jar()
    world.login(jar)
    kept = dict(jar.cookies)
    body = form(username=BOB.username, password="wrong", next="/account")
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], body, jar=jar)
    assert reply.status == 303
    assert reply.header("location") == "/signin?error=login_failed&next=/account"
    assert reply.set_cookies == []
    assert jar.cookies == kept
    assert world.call("GET", "/account", jar=jar).body == b"hello, alice"


def test_login_as_someone_else_switches_the_account() -> None:
    world, jar = World(), Jar()
    world.login(jar, ALICE)
    world.login(jar, BOB)
    assert world.call("GET", "/account", jar=jar).body == b"hello, bob"


def test_id_token_login() -> None:
    world, jar = World(), Jar()
    token = world.google.issue("g-alice", expires_at=world.clock() + 300)
    body = json.dumps({"provider": "google", "id_token": token}).encode()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    assert (reply.status, reply.json()["user_id"]) == (200, "alice")
    bad = world.call(
        "POST", "/auth/login", [*SAME_ORIGIN, JSON], b'{"provider":"google","id_token":"forged"}'
    )
    assert (bad.status, bad.json()) == (401, {"error": "login_failed"})


def test_required_routes_answer_401_optional_routes_pass_anonymous_through() -> None:
    world = World()
    denied = world.call("GET", "/account/settings")
    assert (denied.status, denied.json()) == (401, {"error": "unauthorized"})
    assert world.app.calls == 0
    # "/accounts" is not under "/account".
    page = world.call("GET", "/accounts")
    assert (page.status, page.body) == (200, b"hello, anonymous")
    assert world.app.seen[-1].denial_status == 401
    assert not world.app.seen[-1].authenticated


def test_a_refresh_appends_cookies_to_a_streamed_response_and_forbids_caching() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    old = dict(jar.cookies)
    world.clock.advance(600)  # the access token has expired; the refresh token has not
    page = world.call("GET", "/account", jar=jar)
    assert page.chunks == [b"hello, ", b"alice"]
    assert isinstance(world.app.seen[-1].decision, Reissue)
    assert len(page.set_cookies) == 2
    assert page.all("cache-control") == ["no-store"]
    assert jar.cookies != old


def test_a_cross_site_form_post_is_403_and_the_session_survives() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    calls = world.app.calls
    attack = world.call("POST", "/account/transfer", [*CROSS_SITE, FORM], form(to="eve"), jar=jar)
    assert attack.status == 403
    assert world.app.calls == calls
    logout = world.call("POST", "/auth/logout", [*CROSS_SITE, FORM], b"", jar=jar)
    assert (logout.status, logout.set_cookies) == (403, [])
    assert world.call("GET", "/account", jar=jar).body == b"hello, alice"


def test_a_cross_site_login_is_403() -> None:
    world = World()
    body = form(username=ALICE.username, password=ALICE.password)
    assert world.call("POST", "/auth/login", [*CROSS_SITE, FORM], body).status == 403


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([FORM], b""),  # no credentials at all
        ([FORM], b"username=alice"),  # no password
        ([("content-type", "text/plain")], b"x"),  # a body the endpoint cannot read
        ([FORM], b"a" * 40_000),  # a body over the limit
    ],
)
@pytest.mark.parametrize("path", ["/auth/login", "/auth/logout", "/auth/sessions/revoke"])
def test_a_cross_site_post_to_an_endpoint_is_403_before_its_body(
    path: str, headers: Any, body: bytes
) -> None:
    world = World()
    reads: list[object] = []

    async def receive() -> Any:
        reads.append(None)
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": [(n.encode(), v.encode()) for n, v in [*CROSS_SITE, *headers]],
        "client": ("192.0.2.10", 4000),
    }
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(world.asgi(scope, receive, send))
    assert sent[0]["status"] == 403
    assert reads == []  # the body was never read
    assert [type(d).__name__ for d in world.decisions] == ["Forbidden"]


def test_too_many_failed_logins_is_429_with_retry_after() -> None:
    world = World(throttle=True)
    bad = json.dumps({"username": ALICE.username, "password": "nope"}).encode()
    statuses = [
        world.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], bad).status for _ in range(4)
    ]
    assert statuses[:2] == [401, 401]
    slow = world.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], bad)
    assert slow.status == 429
    retry = slow.header("retry-after")
    assert retry is not None
    assert int(retry) > 0
    assert slow.json()["retry_after"] == int(retry)


def test_store_down_public_routes_pass_through_required_routes_are_503() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    world.clock.advance(600)  # only the refresh cookie is still good: the store is needed
    world.store.arm(Fault.BEFORE_COMMIT)
    public = world.call("GET", "/", jar=jar)
    assert (public.status, public.body) == (200, b"hello, anonymous")
    assert isinstance(world.app.seen[-1].decision, Unavailable)
    assert world.app.seen[-1].denial_status == 503
    assert public.set_cookies == []  # nothing cleared
    private = world.call("GET", "/account", jar=jar)
    assert private.status == 503
    assert private.set_cookies == []
    world.store.disarm()
    assert world.call("GET", "/account", jar=jar).body == b"hello, alice"


def test_a_stale_cookie_on_a_public_route_is_cleared() -> None:
    world = World()
    jar = Jar({"__Host-tf_access": "garbage", "__Host-tf_refresh": "garbage"})
    page = world.call("GET", "/", jar=jar)
    assert page.status == 200
    assert isinstance(world.app.seen[-1].decision, Unauthorized)
    assert len(page.set_cookies) == 2
    assert jar.cookies == {}


@pytest.mark.parametrize("chunks", [[b"x" * 20_000], [b"x" * 9000, b"x" * 9000]])
def test_the_login_body_is_bounded(chunks: list[bytes]) -> None:
    world = World()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], chunks)
    assert (reply.status, reply.json()) == (413, {"error": "body_too_large"})


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ([("content-type", "text/plain")], b"username=a&password=b", 415),
        ([JSON], b"[1, 2]", 415),
        ([JSON], b"{not json", 415),
        ([JSON], b'{"username": "a"}', 401),
        ([JSON], b'{"username": 1, "password": 2}', 401),
    ],
)
def test_malformed_login_bodies(headers: Any, body: bytes, status: int) -> None:
    world = World()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, *headers], body)
    assert reply.status == status


def test_endpoints_refuse_other_methods() -> None:
    world = World()
    reply = world.call("GET", "/auth/login", [("host", HOST)])
    assert (reply.status, reply.header("allow")) == (405, "POST")


def test_logout_form_redirects_json_answers_and_the_session_is_gone() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    stolen = dict(jar.cookies)
    out = world.call("POST", "/auth/logout", [*SAME_ORIGIN, FORM], form(next="/bye"), jar=jar)
    assert (out.status, out.header("location")) == (303, "/bye")
    assert len(out.set_cookies) == 2
    assert jar.cookies == {}
    world.clock.advance(600)
    replay = world.call("GET", "/account", jar=Jar(stolen))
    assert replay.status == 401
    jar2 = Jar()
    world.login(jar2)
    out = world.call(
        "POST", "/auth/logout", [*SAME_ORIGIN, ("accept", "application/json")], jar=jar2
    )
    assert (out.status, out.json()) == (200, {"logged_out": True})


def test_sessions_list_revoke_own_only_and_sign_out_elsewhere() -> None:
    world = World()
    laptop, phone, tablet, bob = Jar(), Jar(), Jar(), Jar()
    for jar in (laptop, phone, tablet):
        world.login(jar)
    bob_session = world.login(bob, BOB).json()["session_id"]
    listed = world.call("GET", "/auth/sessions", jar=laptop).json()["sessions"]
    assert len(listed) == 3
    assert [s["current"] for s in listed].count(True) == 1
    phone_id = world.call("GET", "/auth/sessions", jar=phone).json()["sessions"]
    phone_session = next(s["session_id"] for s in phone_id if s["current"])

    # Another user's session: 404, and Bob stays signed in.
    body = json.dumps({"session_id": bob_session}).encode()
    refused = world.call("POST", "/auth/sessions/revoke", [*SAME_ORIGIN, JSON], body, jar=laptop)
    assert refused.status == 404
    world.clock.advance(600)
    assert world.call("GET", "/account", jar=bob).body == b"hello, bob"

    body = json.dumps({"session_id": phone_session}).encode()
    done = world.call("POST", "/auth/sessions/revoke", [*SAME_ORIGIN, JSON], body, jar=laptop)
    assert (done.status, done.json()) == (200, {"revoked": 1})
    assert world.call("GET", "/account", jar=phone).status == 401

    others = world.call(
        "POST", "/auth/sessions/revoke-others", [*SAME_ORIGIN, JSON], b"{}", jar=laptop
    )
    assert (others.status, others.json()) == (200, {"revoked": 1})
    assert world.call("GET", "/account", jar=tablet).status == 401
    assert world.call("GET", "/account", jar=laptop).body == b"hello, alice"
    mine = world.call("GET", "/auth/sessions", jar=laptop).json()["sessions"]
    assert [s["current"] for s in mine] == [True]


def test_sessions_need_a_signed_in_user_and_a_same_site_post() -> None:
    world, jar = World(), Jar()
    assert world.call("GET", "/auth/sessions").status == 401
    world.login(jar)
    attack = world.call("POST", "/auth/sessions/revoke-others", [*CROSS_SITE, FORM], b"", jar=jar)
    assert attack.status == 403


def test_sessions_store_failure_is_503() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    world.store.arm(Fault.BEFORE_COMMIT, ["sessions_of"])
    assert world.call("GET", "/auth/sessions", jar=jar).status == 503


def test_a_sync_flow_works_under_asgi() -> None:
    clock = FakeClock()
    users, passwords = ports(clock)
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords, clock=clock)
    app = App()
    asgi = TokenflowMiddleware(app, flow)
    jar = Jar()
    body = form(username=ALICE.username, password=ALICE.password)
    assert asgi_call(asgi, "POST", "/auth/login", [*SAME_ORIGIN, FORM], body, jar=jar).status == 303
    assert isinstance(_decision(app, asgi, jar), Process)
    clock.advance(600)
    assert isinstance(_decision(app, asgi, jar), Reissue)


def _decision(app: App, asgi: TokenflowMiddleware, jar: Jar) -> object:
    asgi_call(asgi, "GET", "/", jar=jar)
    return app.seen[-1].decision


def test_endpoints_can_be_moved_or_turned_off() -> None:
    world = World(endpoints=Endpoints(login="/signin", logout=None, sessions=None))
    body = form(username=ALICE.username, password=ALICE.password)
    assert world.call("POST", "/signin", [*SAME_ORIGIN, FORM], body).status == 303
    # Not an endpoint any more: the application answers.
    assert world.call("GET", "/auth/sessions").body == b"hello, anonymous"


def test_lifespan_and_websocket_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    flow = AsyncFlow(KeyRing.generate(), AsyncMemoryStore(), AsyncFakeUserDirectory())
    asgi = TokenflowMiddleware(app, flow)

    async def nothing() -> Any:
        return {}

    async def ignore(message: Any) -> None:
        return None

    asyncio.run(asgi({"type": "lifespan"}, nothing, ignore))
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda f: TokenflowMiddleware(App(), object()), "AsyncFlow or Flow"),  # type: ignore[arg-type]
        (lambda f: TokenflowMiddleware(App(), f, required="/account"), "single string"),
        (lambda f: TokenflowMiddleware(App(), f, required=["account"]), "start with '/'"),
        (lambda f: Endpoints(login="auth"), "Endpoints.login"),
        (lambda f: Endpoints(after_login="//evil"), "Endpoints.after_login"),
        (lambda f: Endpoints(login="/x", logout="/x"), "share a path"),
        (lambda f: Endpoints(max_body=10), "max_body"),
    ],
)
def test_misconfiguration_is_a_config_error(build: Any, message: str) -> None:
    flow = AsyncFlow(KeyRing.generate(), AsyncMemoryStore(), AsyncFakeUserDirectory())
    with pytest.raises(ConfigError, match=message):
        build(flow)


def test_auth_of_without_the_middleware_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="TokenflowMiddleware"):
        auth_of({"type": "http"})


def test_the_middleware_imports_no_framework() -> None:
    code = (
        "import sys, tokenflow.asgi, tokenflow.wsgi\n"
        "bad = [m for m in ('fastapi', 'starlette', 'flask', 'django', 'werkzeug', 'httpx',"
        " 'uvicorn', 'anyio') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


_SHARED = World()
BODIES = st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "APPLICATION/JSON"]
)
PATHS = st.sampled_from(
    [
        "/auth/login",
        "/auth/logout",
        "/auth/sessions",
        "/auth/sessions/revoke",
        "/auth/sessions/revoke-others",
        "/account",
        "/",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    PATHS,
    st.sampled_from(["GET", "POST", "DELETE", "HEAD", "get"]),
    CONTENT_TYPES,
    BODIES,
    st.lists(
        st.tuples(
            st.sampled_from(
                ["cookie", "origin", "host", "sec-fetch-site", "accept", "content-type"]
            ),
            st.text(max_size=60),
        )
    ),
)
def test_any_request_gets_an_http_answer(
    path: str, method: str, content_type: str, body: bytes, headers: list[tuple[str, str]]
) -> None:
    latin = [(n, v.encode("utf-8").decode("latin-1")) for n, v in headers]
    reply = _SHARED.call(method, path, [*latin, ("content-type", content_type)], body)
    assert reply.status in {200, 303, 401, 403, 404, 405, 413, 415, 429, 503}
    if reply.status == 303:
        location = reply.header("location")
        assert location is not None
        assert location.startswith("/")
        assert not location.startswith(("//", "/\\"))


def test_on_decision_sees_the_events_of_requests_the_middleware_answers_itself() -> None:
    world, jar = World(), Jar()
    world.login(jar)
    (login,) = world.decisions
    assert isinstance(login, Reissue)
    assert [type(e).__name__ for e in login.events] == ["LoggedIn"]
    world.call("POST", "/account/transfer", [*CROSS_SITE, FORM], form(to="eve"), jar=jar)
    forbidden = world.decisions[-1]
    assert [type(e).__name__ for e in forbidden.events] == ["CrossOriginRejected"]
    bad = json.dumps({"username": ALICE.username, "password": "nope"}).encode()
    world.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], bad)
    assert [type(e).__name__ for e in world.decisions[-1].events] == ["LoginFailed"]
    before = len(world.decisions)
    assert world.call("GET", "/account", jar=jar).status == 200  # plain valid access
    assert len(world.decisions) == before  # a Process with no events is not reported
    world.call("POST", "/auth/logout", [*SAME_ORIGIN, FORM], b"", jar=jar)
    assert [type(e).__name__ for e in world.decisions[-1].events] == ["SessionRevoked"]


@pytest.mark.parametrize(
    "path",
    [
        "//auth/login",
        "/auth//login",
        "/auth/./login",
        "/AUTH/login",
        "/auth/login/",
        "/auth/%6cogin",
        "/auth/login;x",
    ],
)
def test_another_spelling_of_an_endpoint_is_required(path: str) -> None:
    world = World()
    reply = world.call("POST", path, [*SAME_ORIGIN, FORM], b"")
    assert (reply.status, reply.json()) == (401, {"error": "unauthorized"})
    assert world.app.calls == 0


def test_paths_are_matched_without_the_root_path() -> None:
    world, jar = World(), Jar()
    body = form(username=ALICE.username, password=ALICE.password)
    scope_extra = {"root_path": "/app"}
    login = asgi_call(
        world.asgi,
        "POST",
        "/app/auth/login",
        [*SAME_ORIGIN, FORM],
        body,
        jar=jar,
        scope=scope_extra,
    )
    assert login.status == 303
    anonymous = asgi_call(world.asgi, "GET", "/app/account", scope=scope_extra)
    assert (anonymous.status, world.app.calls) == (401, 0)
    assert asgi_call(world.asgi, "GET", "/app/account", jar=jar, scope=scope_extra).status == 200
