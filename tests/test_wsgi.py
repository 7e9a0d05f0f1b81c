"""The WSGI middleware, driven the way a WSGI server calls it (PEP 3333)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from _web_client import ALICE, CROSS_SITE, FORM, JSON, SAME_ORIGIN, Jar, Reply, ports, wsgi_call
from tokenflow import AsyncFlow, ConfigError, Flow, KeyRing, Reissue, Unavailable
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import AsyncFakeUserDirectory, FakeClock, Fault, FaultyStore
from tokenflow.wsgi import Auth, TokenflowMiddleware, auth_of


@dataclass
class App:
    """Streams its body through a generator; records the Auth it was given."""

    seen: list[Auth] = field(default_factory=list)
    closed: int = 0

    def __call__(self, environ: Any, start_response: Any) -> Iterator[bytes]:
        auth = auth_of(environ)
        self.seen.append(auth)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "public")])
        return self._body(auth)

    def _body(self, auth: Auth) -> Iterator[bytes]:
        try:
            yield b"hello, "
            yield (auth.user_id or "anonymous").encode()
        finally:
            self.closed += 1


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    app: App = field(default_factory=App)
    store: FaultyStore = field(default_factory=lambda: FaultyStore(MemoryStore()))
    decisions: list[Any] = field(default_factory=list)
    wsgi: TokenflowMiddleware = field(init=False)

    def __post_init__(self) -> None:
        users, passwords = ports(self.clock)
        flow = Flow(KeyRing.generate(), self.store, users, passwords=passwords, clock=self.clock)
        self.wsgi = TokenflowMiddleware(
            self.app, flow, required=["/account"], on_decision=self.decisions.append
        )

    def call(
        self, method: str, path: str, headers: Any = (), body: bytes = b"", **kw: Any
    ) -> Reply:
        return wsgi_call(self.wsgi, method, path, headers, body, **kw)


def login_form(next_path: str = "/account") -> bytes:
    return urlencode(
        {"username": ALICE.username, "password": ALICE.password, "next": next_path}
    ).encode()


def test_form_login_then_a_refresh_on_a_streamed_response() -> None:
    world, jar = World(), Jar()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], login_form(), jar=jar)
    assert (reply.status, reply.header("Location")) == (303, "/account")
    assert len(reply.set_cookies) == 2
    page = world.call("GET", "/account", jar=jar)
    assert page.chunks == [b"hello, ", b"alice"]
    assert page.set_cookies == []
    world.clock.advance(600)
    page = world.call("GET", "/account", jar=jar)
    assert page.chunks == [b"hello, ", b"alice"]
    assert isinstance(world.app.seen[-1].decision, Reissue)
    assert len(page.set_cookies) == 2
    assert page.all("cache-control") == ["no-store"]  # the app's "public" gave way
    assert world.app.closed == 2  # the app's iterable is closed as PEP 3333 requires


def test_json_login_and_logout() -> None:
    world, jar = World(), Jar()
    body = json.dumps({"username": ALICE.username, "password": ALICE.password}).encode()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, JSON], body, jar=jar)
    assert (reply.status, reply.json()["user_id"]) == (200, "alice")
    out = world.call("POST", "/auth/logout", [*SAME_ORIGIN, JSON], b"{}", jar=jar)
    assert (out.status, out.json()) == (200, {"logged_out": True})
    assert jar.cookies == {}


def test_required_and_optional_routes() -> None:
    world = World()
    assert world.call("GET", "/account").status == 401
    assert world.call("GET", "/").body == b"hello, anonymous"


def test_cross_site_post_is_403_before_the_app() -> None:
    world, jar = World(), Jar()
    world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], login_form(), jar=jar)
    seen = len(world.app.seen)
    assert world.call("POST", "/", [*CROSS_SITE, FORM], b"a=1", jar=jar).status == 403
    assert len(world.app.seen) == seen
    assert world.call("GET", "/account", jar=jar).body == b"hello, alice"


def test_store_down_public_pages_stay_up() -> None:
    world, jar = World(), Jar()
    world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], login_form(), jar=jar)
    world.clock.advance(600)
    world.store.arm(Fault.BEFORE_COMMIT)
    page = world.call("GET", "/", jar=jar)
    assert (page.status, page.set_cookies) == (200, [])
    assert isinstance(world.app.seen[-1].decision, Unavailable)
    assert world.call("GET", "/account", jar=jar).status == 503


@pytest.mark.parametrize("chunked", [False, True])
def test_body_limit(chunked: bool) -> None:
    world = World()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], b"a" * 40_000, chunked=chunked)
    assert reply.status == 413


def test_an_async_flow_is_refused() -> None:
    flow = AsyncFlow(KeyRing.generate(), AsyncMemoryStore(), AsyncFakeUserDirectory())
    with pytest.raises(ConfigError, match="AsyncFlow"):
        TokenflowMiddleware(App(), flow)  # type: ignore[arg-type]


def test_sessions_through_wsgi_and_a_store_failure() -> None:
    world = World()
    laptop, phone = Jar(), Jar()
    for jar in (laptop, phone):
        world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], login_form(), jar=jar)
    listed = world.call("GET", "/auth/sessions", jar=laptop).json()["sessions"]
    assert len(listed) == 2
    done = world.call(
        "POST", "/auth/sessions/revoke-others", [*SAME_ORIGIN, FORM], b"next=/account", jar=laptop
    )
    assert (done.status, done.header("location")) == (303, "/account")
    world.clock.advance(600)  # the phone's access token runs out; its refresh is revoked
    assert world.call("GET", "/account", jar=phone).status == 401
    assert world.call("GET", "/account", jar=laptop).status == 200
    world.store.arm(Fault.BEFORE_COMMIT, ["sessions_of"])
    assert world.call("GET", "/auth/sessions", jar=laptop).status == 503


def test_a_garbled_content_length_is_refused() -> None:
    world = World()
    environ_headers = [*SAME_ORIGIN, FORM, ("content-length", "12abc")]
    reply = world.call("POST", "/auth/login", environ_headers, login_form(), chunked=True)
    assert reply.status == 413


def test_on_decision_sees_logins_refusals_and_logouts() -> None:
    world, jar = World(), Jar()
    world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], login_form(), jar=jar)
    assert [type(e).__name__ for e in world.decisions[-1].events] == ["LoggedIn"]
    world.call("POST", "/account/x", [*CROSS_SITE, FORM], b"", jar=jar)
    assert [type(e).__name__ for e in world.decisions[-1].events] == ["CrossOriginRejected"]
    before = len(world.decisions)
    world.call("GET", "/account", jar=jar)
    assert len(world.decisions) == before  # a plain valid access is not reported
    world.call("POST", "/auth/logout", [*SAME_ORIGIN, FORM], b"", jar=jar)
    assert [type(e).__name__ for e in world.decisions[-1].events] == ["SessionRevoked"]


# -- request bodies as PEP 3333 reads them -------------------------------------------


class Unreadable(io.RawIOBase):
    """A wsgi.input that must not be read (a socket with nothing more to come)."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read without a length or wsgi.input_terminated")


def test_no_length_and_no_terminated_input_is_an_empty_body() -> None:
    world = World()
    environ_input = Unreadable()
    reply = world.call(
        "POST",
        "/auth/logout",
        [*SAME_ORIGIN, JSON],
        chunked=True,
        terminated=False,
        stream=environ_input,
    )
    assert reply.json() == {"logged_out": True}


@pytest.mark.parametrize(
    "length", ["+5", " 5", "5 ", "5_0", "\uff15", "\u0665", "-1", "0x5", "5" * 19]
)
def test_content_length_is_ascii_digits_only(length: str) -> None:
    world = World()
    reply = world.call(
        "POST",
        "/auth/logout",
        [*SAME_ORIGIN, FORM, ("content-length", length)],
        b"a=b",
        stream=Unreadable(),
    )
    assert reply.status == 413


def test_never_reads_past_content_length() -> None:
    world, jar = World(), Jar()
    body = login_form()
    stream = io.BytesIO(body + b"&username=mallory&next=/evil")
    reply = world.call(
        "POST",
        "/auth/login",
        [*SAME_ORIGIN, FORM, ("content-length", str(len(body)))],
        jar=jar,
        stream=stream,
    )
    assert (reply.status, reply.header("Location")) == (303, "/account")
    assert stream.tell() == len(body)


def test_wsgiref_answers_a_post_without_length_at_once() -> None:
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    world = World()
    server = make_server("127.0.0.1", 0, world.wsgi, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # HTTP/1.1 and the connection kept open: nothing tells the server
            # the body is over, so a read of wsgi.input would wait forever.
            sock.sendall(
                b"POST /auth/logout HTTP/1.1\r\nHost: app.example\r\n"
                b"Origin: https://app.example\r\nSec-Fetch-Site: same-origin\r\n"
                b"Content-Type: application/json\r\n\r\n"
            )
            answer = b""
            while b'{"logged_out":true}' not in answer:
                chunk = sock.recv(4096)  # times out (fails) after 5 s
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("body", [b"", b"username=alice", b"a" * 40_000])
@pytest.mark.parametrize("path", ["/auth/login", "/auth/logout"])
def test_a_cross_site_post_to_an_endpoint_is_403_before_its_body(path: str, body: bytes) -> None:
    world = World()
    headers = [*CROSS_SITE, FORM, ("content-length", str(len(body)))]
    reply = world.call("POST", path, headers, stream=Unreadable())
    assert reply.status == 403
    assert [type(d).__name__ for d in world.decisions] == ["Forbidden"]


def test_a_same_site_login_without_a_password_is_still_a_failed_login() -> None:
    world = World()
    reply = world.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], b"username=alice")
    assert (reply.status, reply.json()) == (401, {"error": "login_failed"})


@pytest.mark.parametrize(
    "path", ["//auth/logout", "/auth/./logout", "/Auth/Logout", "/auth/logout/"]
)
def test_another_spelling_of_an_endpoint_is_required(path: str) -> None:
    world = World()
    reply = world.call("POST", path, [*SAME_ORIGIN, FORM], b"")
    assert (reply.status, reply.json()) == (401, {"error": "unauthorized"})
    assert world.app.seen == []


def test_path_info_is_read_as_utf8() -> None:
    # PEP 3333: PATH_INFO carries the bytes as latin-1; "/café" arrives as "/cafÃ©".
    world = World()
    world.wsgi = TokenflowMiddleware(world.app, world.wsgi._flow, required=["/café"])
    reply = world.call("GET", "/café/x".encode().decode("latin-1"))
    assert reply.status == 401
