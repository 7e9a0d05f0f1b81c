"""Raw ASGI and WSGI calls with a cookie jar, for the middleware tests."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenflow import FlowConfig, KeyRing, PasswordCredentials
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory

ALICE = PasswordCredentials("alice@example.com", "alice's long passphrase")
BOB = PasswordCredentials("bob@example.com", "bob's long passphrase")
HOST = "app.example"
SAME_ORIGIN = [("host", HOST), ("origin", f"https://{HOST}"), ("sec-fetch-site", "same-origin")]
CROSS_SITE = [("host", HOST), ("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")]
FORM = ("content-type", "application/x-www-form-urlencoded")
JSON = ("content-type", "application/json")


def ports(clock: FakeClock) -> tuple[FakeUserDirectory, FakePasswordVerifier]:
    users = FakeUserDirectory()
    users.add_user("alice")
    users.add_user("bob")
    passwords = FakePasswordVerifier()
    passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
    passwords.set_password(BOB.username, BOB.password, user_id="bob")
    return users, passwords


def keyring() -> KeyRing:
    return KeyRing.generate()


def config() -> FlowConfig:
    return FlowConfig()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def set_cookies(self) -> list[str]:
        return self.all("set-cookie")


@dataclass
class Jar:
    cookies: dict[str, str] = field(default_factory=dict)

    def receive(self, set_cookies: Iterable[str]) -> None:
        for line in set_cookies:
            pair = line.split(";", 1)[0]
            name, _, value = pair.partition("=")
            name = name.strip()  # as browsers do (Django writes " name=value")
            if "Max-Age=0" in line or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> list[tuple[str, str]]:
        if not self.cookies:
            return []
        return [("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))]


def asgi_call(
    app: Callable[..., Any],
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    jar: Jar | None = None,
    client: tuple[str, int] = ("192.0.2.10", 4000),
    raises: type[BaseException] | None = None,
    scope: dict[str, Any] | None = None,
) -> Reply:
    """One request through an ASGI app; the jar (if any) sends and keeps cookies.

    ``raises``: the app is expected to raise that (after answering).
    ``scope``: entries to add to the scope (``root_path``...).
    """
    chunks = [body] if isinstance(body, bytes) else list(body)
    sent = [*headers, *(jar.header() if jar else [])]
    extra = scope or {}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "https",
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in sent],
        "client": client,
        "server": (HOST, 443),
        **extra,
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    if raises is None:
        asyncio.run(app(scope, receive, send))
    else:
        try:
            asyncio.run(app(scope, receive, send))
        except raises:
            pass
        else:
            raise AssertionError(f"the app did not raise {raises.__name__}")
    start = replies[0]
    assert start["type"] == "http.response.start"
    reply = Reply(
        start["status"],
        [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in start["headers"]],
        [m.get("body", b"") for m in replies[1:]],
    )
    if jar is not None:
        jar.receive(reply.set_cookies)
    return reply


def wsgi_call(
    app: Callable[..., Iterable[bytes]],
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    jar: Jar | None = None,
    chunked: bool = False,
    terminated: bool | None = None,
    stream: Any = None,
) -> Reply:
    """One request through a WSGI app (PEP 3333), the way a server calls it.

    ``chunked`` sends no ``CONTENT_LENGTH``; the stream is then marked
    ``wsgi.input_terminated`` (as a server that decodes chunked bodies does)
    unless ``terminated`` says otherwise. ``stream`` replaces the
    ``wsgi.input`` made of ``body``.
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.10",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "443",
        "wsgi.input": io.BytesIO(body) if stream is None else stream,
        "wsgi.url_scheme": "https",
    }
    if not chunked:
        environ["CONTENT_LENGTH"] = str(len(body))
    if chunked if terminated is None else terminated:
        environ["wsgi.input_terminated"] = True
    for name, value in [*headers, *(jar.header() if jar else [])]:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    iterable = app(environ, start_response)
    try:
        chunks = list(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    status, response_headers = started[-1]
    reply = Reply(int(status.split()[0]), response_headers, chunks)
    if jar is not None:
        jar.receive(reply.set_cookies)
    return reply
