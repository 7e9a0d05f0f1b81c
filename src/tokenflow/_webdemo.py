"""``python -m tokenflow web-demo``: the flow in a real browser, on loopback.

Two small ASGI applications served by uvicorn on 127.0.0.1:

* the demo site: tokenflow's own :class:`~tokenflow.asgi.TokenflowMiddleware`
  in front of a page with buttons, on an :class:`~tokenflow.AsyncFlow` over
  the embedded SQLite store, with short lifetimes so that expiry can be
  watched (access 10 s, idle 120 s by default);
* an "attacker" page on a second loopback port (another origin), whose form
  posts to the demo site: the cross-origin check answers 403.

Everything the server decides is written to a journal that the page polls
(``GET /demo/log``): every decision with its events, and every ``Set-Cookie``
header sent, since the page's scripts cannot read the HttpOnly auth cookies.
The journal lives outside the middleware, so polling it never refreshes a
session and never keeps an idle one alive.

The cookies use :meth:`~tokenflow.CookiePolicy.local_development` (plain
names, no ``Secure``): ``__Host-`` names need ``Secure``, which browsers honour
only over HTTPS. Production keeps the defaults.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import socket
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

from ._config import FlowConfig
from ._cookies import CookiePolicy, render_clear_cookie
from ._drivers import AsyncFlow, FlowOperation, PortCall
from ._errors import ConfigError
from ._keyring import KeyRing
from ._model import (
    Decision,
    Forbidden,
    LoggedIn,
    LoggedOut,
    Process,
    Reissue,
    Request,
    Requirement,
    Unauthorized,
    UnauthorizedReason,
)
from ._narrate import describe_event, meaning
from .stores.sqlite import AsyncSQLiteStore
from .testing import AsyncFakePasswordVerifier, AsyncFakeUserDirectory, FakeUserDirectory
from .throttles import AsyncMemoryThrottle
from .web.asgi import Endpoints, Message, Receive, Scope, Send, TokenflowMiddleware, auth_of

__all__ = ["DEMO_USERS", "Journal", "WebDemo", "demo_config", "run_web_demo", "serve"]

DEMO_USERS: Final = (
    ("alice@example.com", "alice", "correct horse battery staple"),
    ("bob@example.com", "bob", "tr0ub4dor&3"),
)
"""(username, user id, password) of the demo's users, shown on the page."""

DEFAULT_PORT: Final = 8765
"""The demo site's port: not 8000, which ``mkdocs serve`` takes for the docs."""

_JOURNAL_SIZE: Final = 1000
_TOKENS_PER_SESSION: Final = 32
_STATIC: Final = "_webdemo_static"
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ASSETS: Final = {
    "/demo.js": "text/javascript; charset=utf-8",
    "/demo.css": "text/css; charset=utf-8",
}
# The attacker page's form posts to the demo site: its CSP must allow that.
_ATTACKER_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"

_operation: contextvars.ContextVar[str] = contextvars.ContextVar("tokenflow_webdemo_operation")
_held: contextvars.ContextVar[list[tuple[str, Decision]] | None] = contextvars.ContextVar(
    "tokenflow_webdemo_held"
)
"""The decisions taken for the request being served, journalled when its response
starts: the journal then says what the browser got (a 200 page, a 303), not only
what the flow decided."""

DOCS: Final = {
    "page": "docs/web-demo.md",
    "served": "http://127.0.0.1:8000/web-demo/",
    "serve": "pip install -e '.[docs]' && mkdocs serve",
}
"""Where the demo's own documentation is: the page in a checkout, and where
``mkdocs serve`` shows it (port 8000, which is why the demo listens elsewhere)."""


def demo_config(
    *,
    access_ttl: int = 10,
    refresh_idle_ttl: int = 120,
    refresh_absolute_ttl: int = 3600,
    grace_seconds: float = 2.0,
) -> FlowConfig:
    """The demo's configuration: short lifetimes, and cookies for plain HTTP.

    ``leeway`` is 0: one server, one clock, and expiry then shows at the
    second the page announces.
    """
    return FlowConfig(
        access_ttl=access_ttl,
        refresh_idle_ttl=refresh_idle_ttl,
        refresh_absolute_ttl=refresh_absolute_ttl,
        grace_seconds=grace_seconds,
        leeway=0,
        cookies=CookiePolicy.local_development(),
    )


def _short(value: str) -> str:
    """A token shortened for display: enough to tell two apart, too little to use."""
    # The first characters are the format version and key id, the same for
    # every token: the tail tells two tokens apart.
    return value if len(value) <= 16 else f"…{value[-10:]} ({len(value)} chars)"


def _set_cookie_entry(header: str) -> dict[str, Any]:
    pair, _, rest = header.partition(";")
    name, _, value = pair.strip().partition("=")
    attributes = [part.strip() for part in rest.split(";") if part.strip()]
    max_age: int | None = None
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        if key.lower() == "max-age":
            max_age = int(raw) if raw.isascii() and raw.isdigit() else None
    return {
        "name": name,
        "value": _short(value) if value else "",
        "cleared": not value or max_age == 0,
        "max_age": max_age,
        "attributes": attributes,
        "secure": any(a.lower() == "secure" for a in attributes),
        "http_only": any(a.lower() == "httponly" for a in attributes),
    }


def summary(decision: Decision, http_status: int | None, location: str | None) -> str:
    """What a request's answer was, in the words of the docs.

    ``http_status`` is what the browser got, which is not always the
    decision's status: a public page is served (200) to an anonymous visitor
    whose decision is ``Unauthorized``, and a form login answers 303 with the
    two cookies. None for a decision no browser asked for (the replayed token).
    """
    said = meaning(decision)
    if http_status is None:
        return said
    if http_status == 303:
        target = f" to {location}" if location else ""
        if isinstance(decision, Reissue) and any(isinstance(e, LoggedIn) for e in decision.events):
            return f"303 See Other{target}: {said}"
        if isinstance(decision, LoggedOut):
            return f"303 See Other{target}: {said}"
        if isinstance(decision, Unauthorized):
            return f"303 See Other{target}, back to the form: {said}"
        return f"303 See Other{target}: {said}"
    if (
        http_status < 400
        and isinstance(decision, Unauthorized)
        and decision.reason is UnauthorizedReason.NO_CREDENTIALS
    ):
        return f"{http_status}: a public page served to an anonymous visitor (not an error)"
    return f"{http_status}: {said}"


def _describe(decision: Decision) -> str:
    if isinstance(decision, (Process, Reissue)):
        return f"user={decision.user_id} session={decision.session_id[:8]}…"
    if isinstance(decision, Unauthorized):
        return f"reason={decision.reason.value}"
    if isinstance(decision, Forbidden):
        return "cross-origin unsafe request refused"
    if isinstance(decision, LoggedOut):
        return "session revoked, cookies cleared"
    return ""


class Journal:
    """What the demo server did, in order: decisions, events and ``Set-Cookie`` headers.

    Also keeps every refresh token it issued per session (in memory only),
    so that the page can ask the server to replay an old one as a thief would.
    """

    def __init__(self, refresh_name: str) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=_JOURNAL_SIZE)
        self._seq = 0
        self._refresh_name = refresh_name
        self._refresh_tokens: dict[str, list[str]] = {}

    def _add(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        entry = {"seq": self._seq, "t": round(time.time(), 3), **entry}
        self._entries.append(entry)
        return entry

    def decision(
        self,
        operation: str,
        decision: Decision,
        http_status: int | None = None,
        location: str | None = None,
    ) -> None:
        """Record one decision of the flow, the answer the browser got, and its events.

        ``status`` is the decision's, ``http_status`` the response's (None when
        no browser asked: the replayed token); ``summary`` says both in words.
        """
        self._add(
            {
                "kind": "decision",
                "op": operation,
                "decision": type(decision).__name__,
                "status": decision.status,
                "http_status": http_status,
                "summary": summary(decision, http_status, location),
                "detail": _describe(decision),
                "events": [describe_event(event) for event in decision.events],
            }
        )
        if isinstance(decision, Reissue):
            for header in decision.set_cookies:
                pair = header.partition(";")[0]
                name, _, value = pair.partition("=")
                if name.strip() == self._refresh_name and value:
                    issued = self._refresh_tokens.setdefault(decision.session_id, [])
                    if not issued or issued[-1] != value:
                        issued.append(value)
                        del issued[1:-_TOKENS_PER_SESSION]

    def set_cookie(self, path: str, status: int, header: str) -> None:
        """Record one ``Set-Cookie`` header the server sent (value shortened)."""
        entry = _set_cookie_entry(header)
        self._add({"kind": "set-cookie", "path": path, "status": status, **entry})

    def note(self, text: str) -> None:
        """Record a line of explanation."""
        self._add({"kind": "note", "text": text})

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The entries after ``seq``, oldest first."""
        return [entry for entry in self._entries if entry["seq"] > seq]

    def stolen_token(self, session_id: str) -> str | None:
        """The oldest refresh token of a session that is no longer its current one."""
        issued = self._refresh_tokens.get(session_id, [])
        return issued[0] if len(issued) >= 2 else None


class _Recorder:
    """The flow's observer: writes every decision the flow takes to the journal.

    Whichever path took it (the middleware's access step on the loop, a
    refresh, a login, a logout), the flow reports each decision to its
    observer exactly once.
    """

    __slots__ = ("_journal",)

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        """Journal one decision, once its response starts when a browser asked for it."""
        op = _operation.get(operation.value)
        held = _held.get(None)
        if held is None:
            self._journal.decision(op, decision)
        else:
            held.append((op, decision))

    def on_port_call(self, call: PortCall) -> None:
        """Port timings are not shown on the page."""


def _static(name: str) -> bytes:
    return resources.files("tokenflow").joinpath(_STATIC).joinpath(name).read_bytes()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: object) -> None:
    await _respond(send, status, json.dumps(payload).encode(), "application/json")


async def _drain(receive: Receive) -> None:
    """Read the request body to its end; the demo's own routes ignore it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


@dataclass(frozen=True, slots=True)
class _Origins:
    site: str
    attacker: str


class WebDemo:
    """The demo's two ASGI applications over one SQLite file.

    ``site`` and ``attacker`` are the origins the two are served on
    (``http://127.0.0.1:PORT``): the page links to the attacker, whose form
    posts to the site. ``app`` is the demo site, ``attacker_app`` the
    attacker page. ``clock`` is the flow's clock (tests pass a fake one).
    Call :meth:`aclose` when done.
    """

    def __init__(
        self,
        db_path: str,
        *,
        site: str,
        attacker: str,
        config: FlowConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = demo_config() if config is None else config
        self.origins = _Origins(site, attacker)
        self.journal = Journal(self.config.cookies.refresh_name)
        self.store = AsyncSQLiteStore(db_path)
        # "Sign in with" a local OpenID provider (the oidc extra): its first
        # sign-in creates the user, as a sign-up would.
        provider = _demo_provider(site)
        self._provider_server = None if provider is None else provider[0]
        users = AsyncFakeUserDirectory(FakeUserDirectory(allow_signup=provider is not None))
        passwords = AsyncFakePasswordVerifier()
        for username, user_id, password in DEMO_USERS:
            users.sync.add_user(user_id, {"name": user_id.capitalize()})
            passwords.sync.set_password(username, password, user_id=user_id)
        keyring = KeyRing.generate()
        # -- passkeys (issue 21): on http://localhost only (WebAuthn refuses IP addresses) --
        self.passkey_origin = _localhost(site)
        passkeys = _demo_passkeys(keyring, self.passkey_origin)
        # -- end passkeys --
        # -- second factors (issue 22): TOTP and recovery codes, with the mfa extra --
        second_factors = _demo_second_factors(keyring)
        # -- end second factors --
        self.flow = AsyncFlow(
            keyring,
            self.store,
            users,
            passwords=passwords,
            config=self.config,
            clock=clock,
            observer=_Recorder(self.journal),
            passkeys=passkeys,
            external=None if provider is None else {PROVIDER: provider[1]},
            second_factors=second_factors,
            # Second factors need a throttle: six digits fall to an unthrottled guesser.
            throttle=None if second_factors is None else AsyncMemoryThrottle(),
        )
        self._middleware = TokenflowMiddleware(
            self._site,
            self.flow,
            required=["/api", "/demo/replay"],
            endpoints=Endpoints(
                login_page="/",
                second_factor_page="/?second-factor=1",
                step_up_page="/?step-up=1",
            ),
            requirements=None if second_factors is None else {"/api/admin": ADMIN_REQUIREMENT},
        )

    async def aclose(self) -> None:
        """Close the session store, and stop the local OpenID provider."""
        if self._provider_server is not None:
            self._provider_server.close()
        await self.store.aclose()

    # -- the outer layer: journal, lifespan, and the Set-Cookie log ----------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The demo site (ASGI 3)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.aclose)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if path == "/demo/log" and method == "GET":
            after = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
            try:
                seq = int(after[0])
            except ValueError:
                seq = 0
            await _json(send, 200, {"entries": self.journal.since(seq)})
            return
        if method == "GET" and path in _ASSETS:
            # Scripts and styles need no user: served outside the middleware,
            # they leave the journal to the requests that matter.
            await _respond(send, 200, _static(path[1:]), _ASSETS[path])
            return
        if method == "GET" and path == "/tokenflow-passkeys.js" and self.flow.passkeys is not None:
            await _respond(send, 200, _passkeys_script(), "text/javascript; charset=utf-8")
            return
        if method == "GET" and path == "/favicon.ico":
            await _respond(send, 204, b"", "image/x-icon")
            return
        if path == "/demo/config" and method == "GET":
            await _json(send, 200, self._public_config())
            return
        if path == "/demo/drop-access" and method == "POST":
            # The page cannot delete an HttpOnly cookie: the server does it.
            policy = self.config.cookies
            header = render_clear_cookie(policy.access_name, policy)
            self.journal.note("access cookie dropped on request: the next call must refresh")
            self.journal.set_cookie(path, 204, header)
            await _respond(send, 204, b"", "text/plain", [("set-cookie", header)])
            return
        held: list[tuple[str, Decision]] = []
        token = _operation.set(f"{method} {path}")
        holding = _held.set(held)
        try:
            await self._middleware(scope, receive, self._recording_send(send, path, held))
        finally:
            _held.reset(holding)
            _operation.reset(token)
            for op, decision in held:  # no response started (the app failed)
                self.journal.decision(op, decision)

    def _recording_send(self, send: Send, path: str, held: list[tuple[str, Decision]]) -> Send:
        journal = self.journal

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (bytes(name).lower(), bytes(value).decode("latin-1"))
                    for name, value in message.get("headers", ())
                ]
                location = next((v for n, v in headers if n == b"location"), None)
                for op, decision in held:
                    journal.decision(op, decision, status, location)
                held.clear()
                for name, value in headers:
                    if name == b"set-cookie":
                        journal.set_cookie(path, status, value)
            await send(message)

        return recording

    def _public_config(self) -> dict[str, Any]:
        config = self.config
        return {
            "access_ttl": config.access_ttl,
            "refresh_idle_ttl": config.refresh_idle_ttl,
            "refresh_absolute_ttl": config.refresh_absolute_ttl,
            "grace_seconds": config.grace_seconds,
            "access_cookie": config.cookies.access_name,
            "refresh_cookie": config.cookies.refresh_name,
            "users": [{"username": u, "password": p} for u, _, p in DEMO_USERS],
            "attacker": self.origins.attacker,
            "docs": DOCS,
            "providers": [] if self._provider_server is None else [PROVIDER],
            "passkeys": None if self.flow.passkeys is None else self.passkey_origin,
            "mfa": self.flow.second_factors is not None,
            "admin_max_age": ADMIN_REQUIREMENT.max_age,
        }

    # -- the application behind the middleware --------------------------------

    async def _site(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/":
            await _respond(
                send,
                200,
                _static("index.html"),
                "text/html; charset=utf-8",
                [("content-security-policy", _CSP)],
            )
        elif method == "GET" and path == "/api/me":
            await self._me(scope, send)
        elif method == "GET" and path == "/api/admin":
            # Only a session at aal 2, authenticated within ADMIN_REQUIREMENT.max_age,
            # gets here: the middleware answers any other with the step-up challenge.
            auth = auth_of(scope)
            decision = auth.decision
            await _json(
                send,
                200,
                {
                    "admin": True,
                    "user_id": auth.user_id,
                    "aal": getattr(decision, "aal", None),
                    "amr": list(getattr(decision, "amr", ())),
                    "auth_time": getattr(decision, "auth_time", None),
                },
            )
        elif method == "POST" and path == "/api/transfer":
            await _drain(receive)
            auth = auth_of(scope)
            await _json(send, 200, {"transferred": True, "user_id": auth.user_id})
        elif method == "POST" and path == "/demo/replay":
            await _drain(receive)
            await self._replay(scope, send)
        else:
            await _json(send, 404, {"error": "not_found"})

    async def _me(self, scope: Scope, send: Send) -> None:
        auth = auth_of(scope)
        sent = Request.from_asgi(scope).cookie_header or ""
        names = [p.partition("=")[0].strip() for p in sent.split(";") if p.strip()]
        decision = auth.decision
        await _json(
            send,
            200,
            {
                "user_id": auth.user_id,
                "session_id": auth.session_id,
                "name": auth.claims.get("name"),
                "amr": auth.claims.get("amr"),
                "aal": auth.claims.get("aal"),
                "decision": type(decision).__name__,
                "refreshed": isinstance(decision, Reissue),
                "cookies_sent": names,
            },
        )

    async def _replay(self, scope: Scope, send: Send) -> None:
        auth = auth_of(scope)
        session_id = auth.session_id
        assert session_id is not None  # the middleware requires a user here
        stolen = self.journal.stolen_token(session_id)
        if stolen is None:
            await _json(
                send,
                409,
                {
                    "error": "no_old_token_yet",
                    "message": "This session's refresh token has not rotated yet: let the "
                    "access token expire and call the API once, then replay.",
                },
            )
            return
        thief = Request(
            method="GET",
            cookie_header=f"{self.config.cookies.refresh_name}={stolen}",
            metadata={"user_agent": "thief"},
        )
        token = _operation.set("thief replays an old refresh token")
        # No browser gets this decision: journalled at once, with no HTTP status.
        holding = _held.set(None)
        try:
            decision = await self.flow.decide(thief)
        finally:
            _held.reset(holding)
            _operation.reset(token)
        await _json(
            send,
            200,
            {
                "decision": type(decision).__name__,
                "status": decision.status,
                "detail": _describe(decision),
                "summary": meaning(decision),
                "events": [type(event).__name__ for event in decision.events],
            },
        )

    # -- the attacker --------------------------------------------------------

    async def attacker_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The attacker page on another origin (ASGI 3)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, None)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/" or scope["method"] != "GET":
            await _json(send, 404, {"error": "not_found"})
            return
        page = _static("attacker.html").replace(b"{{SITE}}", self.origins.site.encode())
        await _respond(
            send,
            200,
            page,
            "text/html; charset=utf-8",
            [("content-security-policy", f"{_ATTACKER_CSP}; form-action {self.origins.site}")],
        )


async def _lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], Any] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def bind(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _localhost(site: str) -> str | None:
    """The site's origin with ``localhost`` for its loopback address, or None."""
    prefix = "http://127.0.0.1:"
    return "http://localhost:" + site[len(prefix) :] if site.startswith(prefix) else None


PROVIDER: Final = "demo-provider"
"""The name "Sign in with" registers the demo's local OpenID provider under."""
_PROVIDER_CLIENT: Final = "tokenflow-web-demo"


def _demo_provider(site: str) -> tuple[Any, Any] | None:
    """A local OpenID provider on 127.0.0.1 and the code-flow client that signs in
    with it (PKCE, state, nonce), when the oidc extra is installed; else None.

    The provider consents at once for one made-up account; its first sign-in
    creates that user in the demo's directory.
    """
    try:
        from . import oidc
        from .testing.oidc import FakeAuthorizationServer, FakeClient
    except ImportError:
        return None
    server = FakeAuthorizationServer()
    redirect = f"{site}/auth/oidc/{PROVIDER}/callback"
    secret = os.urandom(16).hex()
    server.register(FakeClient(_PROVIDER_CLIENT, (redirect,), "client_secret_basic", secret))
    source = oidc.AsyncHttpKeySetSource(timeout=2.0, allow_loopback_http=True)
    client = oidc.code_flow(
        oidc.async_oidc(server.issuer, client_ids=[_PROVIDER_CLIENT], source=source),
        client_id=_PROVIDER_CLIENT,
        client_secret=secret,
        redirect_uri=redirect,
        source=source,
        allow_loopback_http=True,
    )
    return server, client


def _demo_passkeys(keyring: KeyRing, origin: str | None) -> Any:
    """Passkeys for the demo's users, kept in memory, when the passkeys extra is installed."""
    if origin is None:
        return None
    try:
        from .passkeys import (
            AsyncPasskeys,
            MemoryChallengeLedger,
            MemoryPasskeyRepository,
            PasskeyConfig,
            Passkeys,
        )
    except ImportError:
        return None
    config = PasskeyConfig(rp_id="localhost", rp_name="tokenflow web demo", origins=(origin,))
    return AsyncPasskeys(
        Passkeys(
            config,
            keyring,
            MemoryPasskeyRepository(),
            MemoryChallengeLedger(),
            # Every demo user has a password: a last passkey may go.
            other_sign_in=lambda user_id: True,
        )
    )


ADMIN_REQUIREMENT: Final = Requirement(aal=2, max_age=60)
"""What the demo's admin route (``GET /api/admin``) requires: a second factor,
used within the last minute (so that the step-up prompt shows after a while)."""


def _demo_second_factors(keyring: KeyRing) -> Any:
    """TOTP and recovery codes for the demo's users, kept in memory, when the mfa
    extra is installed; else None (the demo then has no second factors)."""
    try:
        from .mfa import AsyncSecondFactors, MemorySecondFactorStore, SecondFactors
    except ImportError:
        return None
    factors = SecondFactors(keyring, MemorySecondFactorStore(), issuer="tokenflow web demo")
    return AsyncSecondFactors(factors)


def _passkeys_script() -> bytes:
    from .passkeys import browser_helper

    return browser_helper()


def origin_of(sock: socket.socket) -> str:
    """``http://127.0.0.1:PORT`` for a bound socket."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def serve(
    demo: WebDemo,
    site: socket.socket,
    attacker: socket.socket,
    *,
    stop: asyncio.Event | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Serve the demo's two applications with uvicorn until one stops or ``stop`` is set."""
    import uvicorn

    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app,
                interface="asgi3",
                lifespan="on",
                # No proxy in front: uvicorn would otherwise believe
                # X-Forwarded-* from loopback clients.
                proxy_headers=False,
                server_header=False,
                log_level="warning",
                access_log=False,
            )
        )
        for app in (demo.app, demo.attacker_app)
    ]
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, (site, attacker), strict=True)
    ]
    waiters: list[asyncio.Future[Any]] = list(tasks)
    if stop is not None:
        waiters.append(asyncio.ensure_future(stop.wait()))
    if started is not None:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        started()
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiter in waiters[len(tasks) :]:
            waiter.cancel()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


INSTALL_HINT: Final = "pip install 'tokenflow[demo]'  (the demo runs on uvicorn)"


def run_web_demo(
    port: int = DEFAULT_PORT,
    attacker_port: int = 0,
    db: str | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Serve the web demo until interrupted; returns the exit status."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        out(f"tokenflow web-demo: uvicorn is not installed: {INSTALL_HINT}")
        return 2
    sockets: list[socket.socket] = []
    for wanted in (port, attacker_port):
        if not 0 <= wanted <= 65535:
            out(f"tokenflow web-demo: {wanted} is not a port number (0-65535; 0 picks a free one)")
            return 2
        try:
            sockets.append(bind(wanted))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            out(f"tokenflow web-demo: cannot listen on 127.0.0.1:{wanted}: {exc.strerror}")
            return 2
    site, attacker_sock = sockets
    directory = None
    if db is None:
        directory = tempfile.TemporaryDirectory(prefix="tokenflow-web-demo-")
        db = os.path.join(directory.name, "sessions.sqlite3")
    try:
        demo = WebDemo(db, site=origin_of(site), attacker=origin_of(attacker_sock))
    except (ConfigError, OSError, sqlite3.Error) as exc:
        site.close()
        attacker_sock.close()
        out(f"tokenflow web-demo: cannot open the session store {db}: {exc}")
        return 2
    config = demo.config
    out(f"tokenflow web demo on {demo.origins.site}/  (Ctrl-C to stop)")
    out(f"  attacker page (another origin): {demo.origins.attacker}/")
    out(f"  session store: {db}")
    out(
        f"  access tokens live {config.access_ttl} s, sessions {config.refresh_idle_ttl} s idle, "
        f"grace {config.grace_seconds:g} s"
    )
    for username, _, password in DEMO_USERS:
        out(f"  demo user: {username} / {password}")
    out(f"  what to try first: on the page; what it shows: {DOCS['page']} ({DOCS['served']})")
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again once
    # it has shut down; SIGTERM's default action would end the process before
    # the temporary database is removed, so it interrupts like Ctrl-C here.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(serve(demo, site, attacker_sock))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        site.close()
        attacker_sock.close()
        if directory is not None:
            directory.cleanup()
    return 0
