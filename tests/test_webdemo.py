"""The web demo's server side, through raw ASGI calls (no browser, no uvicorn).

The browser scenarios are in test_browser.py; these check what the page
relies on: the journal, the Set-Cookie log, the stolen-token replay, the
attacker page, and the command line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import types
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import _webdemo as webdemo
from tokenflow.__main__ import main
from tokenflow._webdemo import (
    DEMO_USERS,
    WebDemo,
    bind,
    demo_config,
    origin_of,
    run_web_demo,
    serve,
)
from tokenflow.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
SITE = "http://127.0.0.1:8000"
ATTACKER = "http://127.0.0.1:8001"
USERNAME, _, PASSWORD = DEMO_USERS[0]
SAME_ORIGIN = [("origin", SITE), ("sec-fetch-site", "same-origin")]
FORM = ("content-type", "application/x-www-form-urlencoded")


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Jar:
    cookies: dict[str, str] = field(default_factory=dict)

    def receive(self, reply: Reply) -> None:
        for line in reply.all("set-cookie"):
            name, _, value = line.partition(";")[0].partition("=")
            if value and "Max-Age=0" not in line:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    jar: Jar | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    query: bytes = b"",
) -> Reply:
    sent = [("host", "127.0.0.1:8000"), *headers]
    if jar is not None and jar.cookies:
        sent.append(("cookie", "; ".join(f"{k}={v}" for k, v in jar.cookies.items())))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "scheme": "http",
        "headers": [(n.encode(), v.encode()) for n, v in sent],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    reply = Reply(0, [])

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = [(bytes(n).decode(), bytes(v).decode()) for n, v in message["headers"]]
        else:
            reply.body += message.get("body", b"")

    await app(scope, receive, send)
    if jar is not None:
        jar.receive(reply)
    return reply


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def demo(tmp_path: Path, clock: FakeClock) -> AsyncIterator[WebDemo]:
    site = WebDemo(str(tmp_path / "sessions.sqlite3"), site=SITE, attacker=ATTACKER, clock=clock)
    yield site
    await site.aclose()


async def log_in(demo: WebDemo, jar: Jar) -> Reply:
    body = f"username={USERNAME}&password={PASSWORD.replace(' ', '+')}&next=/".encode()
    reply = await call(
        demo.app, "POST", "/auth/login", jar=jar, headers=[*SAME_ORIGIN, FORM], body=body
    )
    assert reply.status == 303
    return reply


def events(entries: list[dict[str, Any]]) -> list[str]:
    return [e for entry in entries if entry["kind"] == "decision" for e in entry["events"]]


def test_the_demo_config_is_short_lived_and_plain_http() -> None:
    config = demo_config()
    assert config.access_ttl == 10
    assert config.refresh_idle_ttl == 120
    assert config.cookies.names == ("tf_access", "tf_refresh")
    assert not config.cookies.secure


@pytest.mark.asyncio
async def test_login_is_journalled_with_its_cookies_shortened(demo: WebDemo) -> None:
    jar = Jar()
    reply = await log_in(demo, jar)
    entries = demo.journal.since(0)
    # Each decision once, whichever inner path of the flow took it.
    decisions = [(e["op"], e["decision"]) for e in entries if e["kind"] == "decision"]
    assert decisions == [("POST /auth/login", "Reissue")]
    assert "LoggedIn user_id=alice" in " ".join(events(entries))
    logged = {e["name"]: e for e in entries if e["kind"] == "set-cookie"}
    assert set(logged) == {"tf_access", "tf_refresh"}
    assert logged["tf_access"]["max_age"] == 10
    assert logged["tf_refresh"]["max_age"] == 120
    assert all(e["http_only"] and not e["secure"] for e in logged.values())
    assert "SameSite=Lax" in logged["tf_access"]["attributes"]
    # The page shows a token's tail, never a usable token.
    shown = json.dumps(entries)
    for token in jar.cookies.values():
        assert token not in shown
        assert token[-10:] in shown
    assert len(reply.all("set-cookie")) == 2


@pytest.mark.asyncio
async def test_polling_the_journal_touches_no_session(demo: WebDemo, clock: FakeClock) -> None:
    jar = Jar()
    await log_in(demo, jar)
    seq = demo.journal.since(0)[-1]["seq"]
    clock.advance(60)  # the access token has expired: any decision would refresh
    reply = await call(demo.app, "GET", "/demo/log", jar=jar, query=f"after={seq}".encode())
    assert reply.status == 200
    assert reply.json() == {"entries": []}
    assert reply.all("set-cookie") == []
    # A bad cursor reads the whole journal rather than failing.
    everything = await call(demo.app, "GET", "/demo/log", query=b"after=x")
    assert len(everything.json()["entries"]) == seq


@pytest.mark.asyncio
async def test_the_api_refreshes_silently_after_the_access_token_expires(
    demo: WebDemo, clock: FakeClock
) -> None:
    jar = Jar()
    await log_in(demo, jar)
    first = await call(demo.app, "GET", "/api/me", jar=jar)
    assert first.json()["decision"] == "Process"
    # The access path is journalled too, though it never reaches the store.
    last = demo.journal.since(0)[-1]
    assert (last["op"], last["decision"], last["status"]) == ("GET /api/me", "Process", 200)
    clock.advance(11)
    jar.cookies.pop("tf_access")  # the browser drops it at Max-Age
    again = await call(demo.app, "GET", "/api/me", jar=jar)
    assert again.status == 200
    assert again.json()["refreshed"] is True
    assert again.json()["cookies_sent"] == ["tf_refresh"]
    assert again.json()["session_id"] == first.json()["session_id"]


@pytest.mark.asyncio
async def test_the_api_requires_a_user(demo: WebDemo) -> None:
    assert (await call(demo.app, "GET", "/api/me")).status == 401
    assert (await call(demo.app, "POST", "/demo/replay", headers=SAME_ORIGIN)).status == 401


@pytest.mark.asyncio
async def test_replaying_a_stolen_refresh_token_revokes_the_session(
    demo: WebDemo, clock: FakeClock
) -> None:
    jar = Jar()
    await log_in(demo, jar)
    early = await call(demo.app, "POST", "/demo/replay", jar=jar, headers=SAME_ORIGIN)
    assert early.status == 409, "nothing to replay before the first rotation"

    clock.advance(11)
    jar.cookies.pop("tf_access")
    assert (await call(demo.app, "GET", "/api/me", jar=jar)).json()["refreshed"]
    inside = await call(demo.app, "POST", "/demo/replay", jar=jar, headers=SAME_ORIGIN)
    # Inside the grace window the predecessor gets the same successor back.
    assert inside.json()["decision"] == "Reissue"
    assert inside.json()["events"] == ["Refreshed"]

    clock.advance(3)  # past the 2 s grace window
    seq = demo.journal.since(0)[-1]["seq"]
    thief = await call(demo.app, "POST", "/demo/replay", jar=jar, headers=SAME_ORIGIN)
    assert thief.status == 200
    assert thief.json()["decision"] == "Unauthorized"
    assert "ReuseDetected" in thief.json()["events"]
    ops = [e["op"] for e in demo.journal.since(seq) if e["kind"] == "decision"]
    assert "thief replays an old refresh token" in ops

    clock.advance(11)  # the victim's access token expires: the session is gone
    jar.cookies.pop("tf_access", None)
    assert (await call(demo.app, "GET", "/api/me", jar=jar)).status == 401


@pytest.mark.asyncio
async def test_cross_origin_form_post_is_refused(demo: WebDemo) -> None:
    jar = Jar()
    await log_in(demo, jar)
    attack = [("origin", ATTACKER), ("sec-fetch-site", "same-site"), FORM]
    reply = await call(
        demo.app, "POST", "/api/transfer", jar=jar, headers=attack, body=b"amount=1000"
    )
    assert reply.status == 403
    refused = [e for e in demo.journal.since(0) if e.get("decision") == "Forbidden"]
    assert refused
    assert refused[-1]["op"] == "POST /api/transfer"
    assert (await call(demo.app, "GET", "/api/me", jar=jar)).status == 200
    ok = await call(demo.app, "POST", "/api/transfer", jar=jar, headers=[*SAME_ORIGIN, FORM])
    assert ok.status == 200


@pytest.mark.asyncio
async def test_drop_access_clears_only_the_access_cookie(demo: WebDemo) -> None:
    jar = Jar()
    await log_in(demo, jar)
    reply = await call(demo.app, "POST", "/demo/drop-access", jar=jar)
    assert reply.status == 204
    assert reply.all("set-cookie") == ["tf_access=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"]
    assert set(jar.cookies) == {"tf_refresh"}
    assert (await call(demo.app, "GET", "/api/me", jar=jar)).json()["refreshed"]


@pytest.mark.asyncio
async def test_sign_out_everywhere(demo: WebDemo) -> None:
    laptop, phone = Jar(), Jar()
    await log_in(demo, laptop)
    await log_in(demo, phone)
    json_headers = [*SAME_ORIGIN, ("content-type", "application/json")]
    others = await call(
        demo.app,
        "POST",
        "/auth/sessions/revoke-others",
        jar=laptop,
        headers=json_headers,
        body=b"{}",
    )
    assert others.json() == {"revoked": 1}
    out = await call(demo.app, "POST", "/auth/logout", jar=laptop, headers=json_headers, body=b"{}")
    assert out.status == 200
    assert laptop.cookies == {}
    assert await demo.flow.sessions_of("alice") == []


@pytest.mark.asyncio
async def test_pages_are_served_with_a_content_security_policy(demo: WebDemo) -> None:
    page = await call(demo.app, "GET", "/")
    assert page.status == 200
    assert b'<script src="/demo.js"' in page.body
    assert "script-src 'self'" in page.all("content-security-policy")[0]
    script = await call(demo.app, "GET", "/demo.js")
    assert script.all("content-type") == ["text/javascript; charset=utf-8"]
    assert b"document.cookie" in script.body
    assert (await call(demo.app, "GET", "/favicon.ico")).status == 204
    # Assets need no user: only the page itself went through the flow.
    ops = [e["op"] for e in demo.journal.since(0) if e["kind"] == "decision"]
    assert ops == ["GET /"]
    assert (await call(demo.app, "GET", "/nowhere")).status == 404
    config = (await call(demo.app, "GET", "/demo/config")).json()
    assert config["attacker"] == ATTACKER
    assert config["users"][0] == {"username": USERNAME, "password": PASSWORD}


@pytest.mark.asyncio
async def test_the_attacker_page_posts_to_the_site(demo: WebDemo) -> None:
    page = await call(demo.attacker_app, "GET", "/")
    assert page.status == 200
    assert f'action="{SITE}/api/transfer"'.encode() in page.body
    assert f"form-action {SITE}" in page.all("content-security-policy")[0]
    assert (await call(demo.attacker_app, "POST", "/")).status == 404


def decisions_of(demo: WebDemo, seq: int = 0) -> list[dict[str, Any]]:
    return [e for e in demo.journal.since(seq) if e["kind"] == "decision"]


@pytest.mark.asyncio
async def test_the_log_says_what_the_browser_got_in_the_words_of_the_docs(
    demo: WebDemo,
) -> None:
    # A public page for an anonymous visitor: the flow says Unauthorized, the
    # browser gets the page. The log says so, and does not call it a refusal.
    assert (await call(demo.app, "GET", "/")).status == 200
    (page,) = decisions_of(demo)
    assert (page["op"], page["decision"], page["status"]) == ("GET /", "Unauthorized", 401)
    assert page["http_status"] == 200
    assert page["summary"] == "200: a public page served to an anonymous visitor (not an error)"

    # A failed form login: 303 back to the form, no cookie.
    seq = demo.journal.since(0)[-1]["seq"]
    body = f"username={USERNAME}&password=wrong&next=/".encode()
    bad = await call(demo.app, "POST", "/auth/login", headers=[*SAME_ORIGIN, FORM], body=body)
    assert (bad.status, bad.all("location")) == (303, ["/?error=login_failed&next=/"])
    (failed,) = decisions_of(demo, seq)
    assert failed["http_status"] == 303
    assert failed["summary"] == (
        "303 See Other to /?error=login_failed&next=/, back to the form: "
        "login failed: wrong username or password"
    )

    # A login is a 303 with two cookies; the decision comes before its cookies.
    seq = demo.journal.since(0)[-1]["seq"]
    jar = Jar()
    await log_in(demo, jar)
    entries = demo.journal.since(seq)
    assert [e["kind"] for e in entries] == ["decision", "set-cookie", "set-cookie"]
    assert entries[0]["http_status"] == 303
    assert entries[0]["summary"] == (
        "303 See Other to /: logged in (password): a new session, 2 cookies set"
    )

    # A refused API call is a 401, named for what it is.
    seq = demo.journal.since(0)[-1]["seq"]
    assert (await call(demo.app, "GET", "/api/me")).status == 401
    (refused,) = decisions_of(demo, seq)
    assert refused["summary"] == "401: no valid auth cookie and no credentials: anonymous"

    # Logout: 303, the session revoked and both cookies cleared.
    seq = demo.journal.since(0)[-1]["seq"]
    out = await call(demo.app, "POST", "/auth/logout", jar=jar, headers=[*SAME_ORIGIN, FORM])
    assert out.status == 303
    (logged_out,) = decisions_of(demo, seq)
    assert logged_out["summary"] == (
        "303 See Other to /: logged out: the session revoked, both cookies cleared"
    )


@pytest.mark.asyncio
async def test_the_replayed_token_is_logged_without_an_http_status(
    demo: WebDemo, clock: FakeClock
) -> None:
    jar = Jar()
    await log_in(demo, jar)
    clock.advance(11)
    jar.cookies.pop("tf_access")
    await call(demo.app, "GET", "/api/me", jar=jar)
    clock.advance(3)
    seq = demo.journal.since(0)[-1]["seq"]
    await call(demo.app, "POST", "/demo/replay", jar=jar, headers=SAME_ORIGIN)
    thief = [e for e in decisions_of(demo, seq) if e["op"].startswith("thief")]
    assert len(thief) == 1
    assert thief[0]["http_status"] is None
    assert thief[0]["summary"] == (
        "an old refresh token came back: reuse detected, the whole session revoked"
    )
    assert "ReuseDetected user_id=alice" in " ".join(thief[0]["events"])


@pytest.mark.asyncio
async def test_the_page_shows_a_first_path_and_links_its_docs(demo: WebDemo) -> None:
    page = (await call(demo.app, "GET", "/")).body.decode()
    assert "Try this first" in page
    assert 'id="docs-link"' in page
    assert "docs/web-demo.md" in page
    config = (await call(demo.app, "GET", "/demo/config")).json()
    assert config["docs"]["page"] == "docs/web-demo.md"
    assert (ROOT / config["docs"]["page"]).is_file()
    assert config["docs"]["served"] == "http://127.0.0.1:8000/web-demo/"
    # The login form hides itself once signed in (checked in a browser by test_browser.py).
    script = (await call(demo.app, "GET", "/demo.js")).body.decode()
    assert '$("login-section").hidden = signedIn' in script


def test_the_default_port_is_not_the_docs_servers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert webdemo.DEFAULT_PORT == 8765
    assert run_web_demo.__defaults__ is not None
    assert run_web_demo.__defaults__[0] == webdemo.DEFAULT_PORT
    with pytest.raises(SystemExit):
        main(["web-demo", "--help"])
    assert f"default: {webdemo.DEFAULT_PORT}" in capsys.readouterr().out
    asked: list[tuple[int, int, str | None]] = []

    def fake_run(port: int, attacker_port: int, db: str | None) -> int:
        asked.append((port, attacker_port, db))
        return 0

    monkeypatch.setattr(webdemo, "run_web_demo", fake_run)
    assert main(["web-demo"]) == 0
    assert main(["web-demo", "--port", "9001"]) == 0
    assert asked == [(webdemo.DEFAULT_PORT, 0, None), (9001, 0, None)]


def test_the_command_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tokenflow[demo]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["web-demo", "--help"])
    assert "tokenflow[demo]" in capsys.readouterr().out


def test_without_uvicorn_the_command_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    lines: list[str] = []
    assert run_web_demo(0, 0, out=lines.append) == 2
    assert lines == [
        "tokenflow web-demo: uvicorn is not installed: "
        "pip install 'tokenflow[demo]'  (the demo runs on uvicorn)"
    ]


async def lifespan(app: Any) -> list[str]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


@pytest.mark.asyncio
async def test_lifespan_closes_the_store(tmp_path: Path) -> None:
    site = WebDemo(str(tmp_path / "s.sqlite3"), site=SITE, attacker=ATTACKER)
    done = ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert await lifespan(site.attacker_app) == done
    assert await lifespan(site.app) == done
    with pytest.raises(sqlite3.ProgrammingError):
        site.store.sync.sessions_of("alice", now=0)


@pytest.mark.asyncio
async def test_websocket_scopes_are_not_served(demo: WebDemo) -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing is read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for app in (demo.app, demo.attacker_app):
        await app({"type": "websocket", "path": "/"}, receive, send)
    assert sent == []


def test_bind_listens_on_loopback_only() -> None:
    sock = bind(0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert origin_of(sock) == f"http://127.0.0.1:{port}"
        with pytest.raises(OSError, match="in use"):
            bind(port)
    finally:
        sock.close()


def test_the_command_prints_where_to_go_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    served: list[WebDemo] = []

    async def fake_serve(demo: WebDemo, site: Any, attacker: Any) -> None:
        served.append(demo)
        await demo.aclose()
        raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(webdemo, "serve", fake_serve)
    lines: list[str] = []
    assert run_web_demo(0, 0, out=lines.append) == 0
    (demo,) = served
    assert lines[0] == f"tokenflow web demo on {demo.origins.site}/  (Ctrl-C to stop)"
    assert lines[1] == f"  attacker page (another origin): {demo.origins.attacker}/"
    assert "  access tokens live 10 s, sessions 120 s idle, grace 2 s" in lines
    assert f"  demo user: {USERNAME} / {PASSWORD}" in lines
    assert lines[-1] == (
        "  what to try first: on the page; what it shows: docs/web-demo.md "
        "(http://127.0.0.1:8000/web-demo/)"
    )
    assert not Path(demo.store.sync.path).exists(), "the temporary database was left behind"


def test_the_command_reports_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    busy = bind(0)
    try:
        lines: list[str] = []
        port = busy.getsockname()[1]
        assert run_web_demo(port, 0, out=lines.append) == 2
        assert lines[0].startswith(f"tokenflow web-demo: cannot listen on 127.0.0.1:{port}:")
    finally:
        busy.close()


def test_serve_runs_both_origins_until_stopped(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    site_sock, attacker_sock = bind(0), bind(0)
    site = WebDemo(
        str(tmp_path / "s.sqlite3"), site=origin_of(site_sock), attacker=origin_of(attacker_sock)
    )
    pages: dict[str, bytes] = {}

    async def main() -> None:
        stop = asyncio.Event()
        up = asyncio.Event()
        task = asyncio.create_task(serve(site, site_sock, attacker_sock, stop=stop, started=up.set))
        await asyncio.wait_for(up.wait(), 10)
        for origin in (site.origins.site, site.origins.attacker):
            pages[origin] = await asyncio.to_thread(fetch, origin + "/")
        stop.set()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        site_sock.close()
        attacker_sock.close()
    assert b"tokenflow web demo" in pages[site.origins.site]
    assert b"You won a prize" in pages[site.origins.attacker]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1
        body: bytes = answer.read()
    return body


def test_the_command_stops_cleanly_on_sigterm() -> None:
    pytest.importorskip("uvicorn")
    command = [sys.executable, "-u", "-m", "tokenflow", "web-demo", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        site = lines[0].split()[4].rstrip("/")
        database = Path(lines[2].split(": ", 1)[1].strip())
        assert b"tokenflow web demo" in fetch(site + "/")
        assert database.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert not database.parent.exists(), "the temporary database was left behind"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("ports", [(70000, 0), (0, -1)])
def test_the_command_refuses_a_bad_port(
    monkeypatch: pytest.MonkeyPatch, ports: tuple[int, int]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    lines: list[str] = []
    assert run_web_demo(*ports, out=lines.append) == 2
    assert lines[0].endswith("is not a port number (0-65535; 0 picks a free one)")


def test_the_command_reports_a_store_it_cannot_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    lines: list[str] = []
    missing = tmp_path / "no-such-directory" / "sessions.sqlite3"
    assert run_web_demo(0, 0, str(missing), out=lines.append) == 2
    assert lines[0].startswith(f"tokenflow web-demo: cannot open the session store {missing}:")


@settings(max_examples=50, deadline=None)
@given(query=st.binary(max_size=64))
def test_any_journal_cursor_gets_an_answer(tmp_path_factory: Any, query: bytes) -> None:
    async def run() -> Reply:
        path = tmp_path_factory.mktemp("log") / "s.sqlite3"
        site = WebDemo(str(path), site=SITE, attacker=ATTACKER)
        try:
            site.journal.note("one entry")
            return await call(site.app, "GET", "/demo/log", query=query)
        finally:
            await site.aclose()

    reply = asyncio.run(run())
    assert reply.status == 200
    assert isinstance(reply.json()["entries"], list)


@pytest.mark.asyncio
async def test_logging_in_as_the_other_user_switches_accounts(demo: WebDemo) -> None:
    jar = Jar()
    await log_in(demo, jar)
    alice = (await call(demo.app, "GET", "/api/me", jar=jar)).json()["session_id"]
    username, _, password = DEMO_USERS[1]
    body = f"username={username}&password={password.replace('&', '%26')}&next=/".encode()
    reply = await call(
        demo.app, "POST", "/auth/login", jar=jar, headers=[*SAME_ORIGIN, FORM], body=body
    )
    assert reply.status == 303
    me = (await call(demo.app, "GET", "/api/me", jar=jar)).json()
    assert me["user_id"] == "bob"
    assert me["name"] == "Bob"
    assert alice not in [info.session_id for info in await demo.flow.sessions_of("alice")]


@pytest.mark.asyncio
async def test_a_passkey_is_added_and_signs_in_on_localhost(demo: WebDemo) -> None:
    from tokenflow.testing.passkeys import SoftAuthenticator

    local = "http://localhost:8000"
    config = (await call(demo.app, "GET", "/demo/config")).json()
    assert config["passkeys"] == local
    script = await call(demo.app, "GET", "/tokenflow-passkeys.js")
    assert b"tokenflowPasskeys" in script.body
    jar = Jar()
    await log_in(demo, jar)
    here = [("host", "localhost:8000"), ("origin", local), ("sec-fetch-site", "same-origin")]
    json_post = [*here, ("content-type", "application/json"), ("accept", "application/json")]
    options = await call(
        demo.app, "POST", "/auth/passkeys/register/options", jar=jar, headers=json_post, body=b"{}"
    )
    authenticator = SoftAuthenticator()
    created = authenticator.create(options.json(), local)
    added = await call(
        demo.app,
        "POST",
        "/auth/passkeys/register",
        jar=jar,
        headers=json_post,
        body=json.dumps({"response": created}).encode(),
    )
    assert added.status == 201
    fresh = Jar()
    options = await call(
        demo.app, "POST", "/auth/passkeys/login/options", jar=fresh, headers=json_post, body=b"{}"
    )
    assertion = authenticator.get(options.json(), local)
    signed_in = await call(
        demo.app,
        "POST",
        "/auth/login",
        jar=fresh,
        headers=json_post,
        body=json.dumps({"passkey": assertion}).encode(),
    )
    assert signed_in.status == 200
    assert signed_in.json()["user_id"] == "alice"
    me = await call(demo.app, "GET", "/api/me", jar=fresh, headers=here)
    assert me.json()["amr"] == ["hwk", "user"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _where_the_provider_sends_the_browser(url: str) -> str:
    """GET ``url`` at the local provider, as a browser would, and read its redirect."""
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(url, timeout=5)
    assert answer.value.code in (302, 303)
    return str(answer.value.headers["location"])


@pytest.mark.asyncio
async def test_sign_in_with_the_demo_provider(tmp_path: Path) -> None:
    # A real clock: the local provider stamps its ID tokens with the wall clock.
    demo = WebDemo(str(tmp_path / "sessions.sqlite3"), site=SITE, attacker=ATTACKER)
    try:
        config = (await call(demo.app, "GET", "/demo/config")).json()
        assert config["providers"] == [webdemo.PROVIDER]
        jar = Jar()
        start = await call(
            demo.app, "GET", f"/auth/oidc/{webdemo.PROVIDER}/start", jar=jar, query=b"next=/"
        )
        assert start.status == 302
        location = start.all("location")[0]
        assert "code_challenge_method=S256" in location
        assert "state=" in location
        assert "nonce=" in location
        back = await asyncio.to_thread(_where_the_provider_sends_the_browser, location)
        callback = f"{SITE}/auth/oidc/{webdemo.PROVIDER}/callback?"
        assert back.startswith(callback)
        # The provider's redirect is a cross-site navigation, as in a browser.
        done = await call(
            demo.app,
            "GET",
            f"/auth/oidc/{webdemo.PROVIDER}/callback",
            jar=jar,
            query=back[len(callback) :].encode(),
            headers=[("sec-fetch-site", "cross-site")],
        )
        assert done.status in (302, 303)
        assert done.all("location") == ["/"]
        assert {"tf_access", "tf_refresh"} <= set(jar.cookies)
        me = await call(
            demo.app, "GET", "/api/me", jar=jar, headers=[("accept", "application/json")]
        )
        assert me.status == 200
        assert webdemo.PROVIDER in json.dumps(me.json())
        logged_in = [e for e in events(demo.journal.since(0)) if e.startswith("LoggedIn")]
        assert logged_in
        assert f"method={webdemo.PROVIDER}" in logged_in[-1]
    finally:
        await demo.aclose()
