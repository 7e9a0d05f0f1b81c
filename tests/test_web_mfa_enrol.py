"""The second-factor enrolment endpoints (issue 22), through both middlewares.

A signed-in user sets up TOTP (begin, confirm with a first code), reads how
many recovery codes are left, regenerates them and removes the factor. The
gates: an account with a factor needs the session at aal 2 for every change;
one without needs a login within ``enrolment_max_age``; confirm guesses are
throttled per account by the flow; a cross-site POST is refused before its
body is read; secrets and recovery codes are answered once.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from _web_client import ALICE, CROSS_SITE, JSON, SAME_ORIGIN, Jar, Reply, asgi_call, wsgi_call
from tokenflow import AsyncFlow, ConfigError, Flow, KeyRing
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.mfa import AsyncSecondFactors, MemorySecondFactorStore, SecondFactors
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    FakeClock,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.testing.mfa import totp_code
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle
from tokenflow.web import Endpoints
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware

BASE = "/auth/mfa"
POSTS = [f"{BASE}/totp/begin", f"{BASE}/totp/confirm", f"{BASE}/recovery-codes", f"{BASE}/remove"]
STEP = 30


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app", "more_body": False})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"app"]


@dataclass
class Site:
    kind: str
    endpoints: Endpoints = field(default_factory=Endpoints)
    clock: FakeClock = field(default_factory=FakeClock)
    store: MemorySecondFactorStore = field(default_factory=MemorySecondFactorStore)
    app: Any = field(init=False)
    factors: SecondFactors = field(init=False)
    seen: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        keyring = KeyRing.generate()
        users = FakeUserDirectory()
        users.add_user("alice", {"email": "alice@example.com"})
        passwords = FakePasswordVerifier()
        passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
        self.factors = SecondFactors(keyring, self.store, issuer="Example")
        flow: Flow | AsyncFlow
        if self.kind == "asgi-async":
            flow = AsyncFlow(
                keyring,
                AsyncMemoryStore(),
                AsyncFakeUserDirectory(users),
                passwords=AsyncFakePasswordVerifier(passwords),
                throttle=AsyncMemoryThrottle(),
                second_factors=AsyncSecondFactors(self.factors),
                clock=self.clock,
            )
        else:
            flow = Flow(
                keyring,
                MemoryStore(),
                users,
                passwords=passwords,
                throttle=MemoryThrottle(),
                second_factors=self.factors,
                clock=self.clock,
            )
        if self.kind == "wsgi":
            assert isinstance(flow, Flow)
            self.app = WsgiMiddleware(
                wsgi_app, flow, endpoints=self.endpoints, on_decision=self.seen.append
            )
        else:
            self.app = AsgiMiddleware(
                asgi_app, flow, endpoints=self.endpoints, on_decision=self.seen.append
            )

    def call(
        self, method: str, path: str, headers: Any = (), body: bytes = b"", jar: Jar | None = None
    ) -> Reply:
        if self.kind == "wsgi":
            return wsgi_call(self.app, method, path, headers, body, jar=jar)
        return asgi_call(self.app, method, path, headers, body, jar=jar)

    def post(self, path: str, jar: Jar, **fields: str) -> Reply:
        return self.call("POST", path, [*SAME_ORIGIN, JSON], json.dumps(fields).encode(), jar)

    def status(self, jar: Jar) -> Reply:
        return self.call("GET", BASE, [("accept", "application/json")], jar=jar)

    def login(self, jar: Jar) -> Reply:
        return self.post("/auth/login", jar, username=ALICE.username, password=ALICE.password)

    def code(self, secret: str) -> str:
        """The code of the next time step: each step is accepted once."""
        self.clock.advance(STEP)
        return totp_code(secret, now=self.clock())

    def enrol(self, jar: Jar) -> tuple[str, list[str]]:
        begun = self.post(f"{BASE}/totp/begin", jar)
        assert begun.status == 200, begun.body
        secret = begun.json()["secret"]
        confirmed = self.post(f"{BASE}/totp/confirm", jar, code=totp_code(secret, now=self.clock()))
        assert confirmed.status == 200, confirmed.body
        return secret, confirmed.json()["recovery_codes"]


KINDS = ["asgi-sync", "asgi-async", "wsgi"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _challenge(reply: Reply) -> str:
    assert reply.status == 401, reply.body
    assert reply.json()["error"] == "insufficient_user_authentication"
    challenge = reply.header("www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    return challenge


def test_enrol_confirm_and_log_in_with_two_steps(kind: str) -> None:
    site, jar = Site(kind), Jar()
    assert site.login(jar).status == 200
    assert site.status(jar).json() == {"factors": [], "recovery_codes_left": 0}
    begun = site.post(f"{BASE}/totp/begin", jar)
    assert begun.status == 200
    assert begun.header("cache-control") == "no-store"
    enrolment = begun.json()
    secret = enrolment["secret"]
    assert enrolment["uri"].startswith("otpauth://totp/Example:alice%40example.com?")
    assert f"secret={secret}" in enrolment["uri"]
    assert enrolment["qr_svg"].lstrip().startswith(("<svg", "<?xml"))
    assert enrolment["expires_at"] > site.clock()
    # Nothing is in force before the first code.
    assert site.status(jar).json()["factors"] == []
    confirmed = site.post(f"{BASE}/totp/confirm", jar, code=totp_code(secret, now=site.clock()))
    assert confirmed.status == 200, confirmed.body
    assert confirmed.header("cache-control") == "no-store"
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert confirmed.json()["factors"] == ["totp"]
    status = site.status(jar)
    assert status.json() == {"factors": ["totp"], "recovery_codes_left": 10}
    for later in (confirmed, status):
        assert secret not in later.body.decode()
    assert not any(code in status.body.decode() for code in codes)
    # The next login asks for the code; the confirming code's step is spent.
    site.post("/auth/logout", jar)
    fresh = Jar()
    first = site.login(fresh)
    assert first.status == 401
    assert first.json()["error"] == "second_factor_required"
    replayed = site.post("/auth/mfa/verify", fresh, code=totp_code(secret, now=site.clock()))
    assert replayed.status == 401
    second = site.post("/auth/mfa/verify", fresh, code=site.code(secret))
    assert second.status == 200, second.body
    assert second.json()["aal"] == 2


def test_a_wrong_or_malformed_first_code_leaves_the_enrolment_pending(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret = site.post(f"{BASE}/totp/begin", jar).json()["secret"]
    right = totp_code(secret, now=site.clock())
    wrong = "000000" if right != "000000" else "111111"
    for bad in (wrong, "12345", "abcdef", ""):
        reply = site.post(f"{BASE}/totp/confirm", jar, code=bad)
        assert reply.status == 400
        assert reply.json() == {"error": "wrong_code"}
    missing = site.post(f"{BASE}/totp/confirm", jar)
    assert missing.status == 400
    assert missing.json() == {"error": "missing_code"}
    assert site.post(f"{BASE}/totp/confirm", jar, code=right).status == 200
    # Confirmed: confirming again would replace the factor, which takes aal 2.
    again = site.post(f"{BASE}/totp/confirm", jar, code=right)
    assert 'acr_values="aal2"' in _challenge(again)


def test_confirming_without_a_pending_enrolment_is_409(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    reply = site.post(f"{BASE}/totp/confirm", jar, code="123456")
    assert reply.status == 409
    assert reply.json() == {"error": "no_enrolment_pending"}


def test_confirm_guesses_are_throttled_per_account(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret = site.post(f"{BASE}/totp/begin", jar).json()["secret"]
    right = totp_code(secret, now=site.clock())
    wrong = "000000" if right != "000000" else "111111"
    statuses = [site.post(f"{BASE}/totp/confirm", jar, code=wrong).status for _ in range(8)]
    assert statuses[:5] == [400] * 5  # ThrottlePolicy's default: 5 free failures
    assert statuses[5:] == [429] * 3
    # Over the limit, even the right code is not checked.
    refused = site.post(f"{BASE}/totp/confirm", jar, code=right)
    assert refused.status == 429
    assert int(refused.header("retry-after") or "0") >= 1
    assert site.status(jar).json()["factors"] == []
    # Once the wait is over, the right code confirms.
    site.clock.advance(int(refused.header("retry-after") or "0"))
    assert site.post(f"{BASE}/totp/confirm", jar, code=right).status == 200


def test_a_first_enrolment_needs_a_recent_login(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    site.clock.advance(301)  # the access token expired too: this request rotates
    for path in (f"{BASE}/totp/begin", f"{BASE}/totp/confirm", f"{BASE}/remove"):
        reply = site.post(path, jar, code="123456")
        assert "max_age=300" in _challenge(reply)
        assert "acr_values" not in _challenge(reply)
    # The rotation's cookies went out with the refusal (the jar kept them).
    assert site.status(jar).status == 200
    stepped = site.post("/auth/step-up", jar, username=ALICE.username, password=ALICE.password)
    assert stepped.status == 200, stepped.body
    assert site.post(f"{BASE}/totp/begin", jar).status == 200


def test_the_refusal_keeps_a_rotated_session_cookies(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    site.clock.advance(301)
    reply = site.post(f"{BASE}/totp/begin", jar)
    assert reply.status == 401
    assert len(reply.set_cookies) == 2


def test_enrolment_max_age_is_configurable(kind: str) -> None:
    site, jar = Site(kind, Endpoints(enrolment_max_age=60)), Jar()
    site.login(jar)
    site.clock.advance(61)
    assert "max_age=60" in _challenge(site.post(f"{BASE}/totp/begin", jar))


def test_changing_an_existing_factor_needs_aal2(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret, _ = site.enrol(jar)
    # This session logged in with the password alone (aal 1), moments ago.
    for path in POSTS:
        assert 'acr_values="aal2"' in _challenge(site.post(path, jar, code="123456"))
    assert site.status(jar).json() == {"factors": ["totp"], "recovery_codes_left": 10}
    stepped = site.post("/auth/step-up", jar, code=site.code(secret))
    assert stepped.status == 200, stepped.body
    assert stepped.json()["aal"] == 2
    regenerated = site.post(f"{BASE}/recovery-codes", jar)
    assert regenerated.status == 200
    assert len(regenerated.json()["recovery_codes"]) == 10
    # Replacing the factor: a new secret, confirmed by its own first code.
    begun = site.post(f"{BASE}/totp/begin", jar).json()
    assert begun["secret"] != secret
    new_code = totp_code(begun["secret"], now=site.clock() + STEP)
    site.clock.advance(STEP)
    assert site.post(f"{BASE}/totp/confirm", jar, code=new_code).status == 200
    removed = site.post(f"{BASE}/remove", jar)
    assert removed.status == 200
    assert removed.json() == {"removed": True}
    assert site.status(jar).json() == {"factors": [], "recovery_codes_left": 0}


def test_recovery_codes_are_shown_once_and_each_works_once(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret, codes = site.enrol(jar)
    site.post("/auth/step-up", jar, code=site.code(secret))
    # Regenerated: the old ones stop working, the new ones are shown this once.
    fresh_codes = site.post(f"{BASE}/recovery-codes", jar).json()["recovery_codes"]
    assert not set(fresh_codes) & set(codes)
    status = site.status(jar)
    assert "recovery_codes" not in status.json()
    assert not any(code in status.body.decode() for code in fresh_codes)
    site.post("/auth/logout", jar)
    other = Jar()
    site.login(other)
    assert site.post("/auth/mfa/verify", other, code=codes[0]).status == 401
    assert site.post("/auth/mfa/verify", other, code=fresh_codes[0]).status == 200
    assert site.status(other).json()["recovery_codes_left"] == 9
    site.post("/auth/logout", other)
    third = Jar()
    site.login(third)
    assert site.post("/auth/mfa/verify", third, code=fresh_codes[0]).status == 401


def test_regenerating_without_a_factor_is_404(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    reply = site.post(f"{BASE}/recovery-codes", jar)
    assert reply.status == 404
    assert reply.json() == {"error": "not_enrolled"}


def test_removing_cancels_a_pending_enrolment(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret = site.post(f"{BASE}/totp/begin", jar).json()["secret"]
    assert site.post(f"{BASE}/remove", jar).json() == {"removed": True}
    code = totp_code(secret, now=site.clock())
    assert site.post(f"{BASE}/totp/confirm", jar, code=code).status == 409


@pytest.mark.parametrize("path", [BASE, *POSTS])
def test_anonymous_requests_are_401(kind: str, path: str) -> None:
    site = Site(kind)
    method = "GET" if path == BASE else "POST"
    reply = site.call(method, path, [*SAME_ORIGIN, JSON], b"{}")
    assert reply.status == 401
    assert b"secret" not in reply.body


def test_wrong_methods_are_405(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    assert site.call("POST", BASE, [*SAME_ORIGIN, JSON], b"{}", jar).status == 405
    assert site.call("GET", f"{BASE}/totp/begin", jar=jar).status == 405


class _Recording(io.BytesIO):
    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        type(self).reads += 1
        return super().read(size)


@pytest.mark.parametrize("path", POSTS)
def test_a_cross_site_post_is_refused_before_its_body_is_read(path: str) -> None:
    site, jar = Site("wsgi"), Jar()
    site.login(jar)
    stream = _Recording(b'{"code": "123456"}')
    _Recording.reads = 0
    reply = wsgi_call(site.app, "POST", path, [*CROSS_SITE, JSON], b"", jar=jar, stream=stream)
    assert reply.status == 403
    assert _Recording.reads == 0
    # The same through ASGI: receive() is never called.
    asgi_site, asgi_jar = Site("asgi-async"), Jar()
    asgi_site.login(asgi_jar)
    received: list[object] = []
    replies: list[dict[str, Any]] = []
    headers = [*CROSS_SITE, JSON, *asgi_jar.header()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "root_path": "",
        "scheme": "https",
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("192.0.2.10", 4000),
        "server": ("app.example", 443),
    }

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b'{"code":"123456"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    asyncio.run(asgi_site.app(scope, receive, send))
    assert replies[0]["status"] == 403
    assert received == []


def test_the_endpoints_need_the_enrolment_api_and_can_be_turned_off() -> None:
    users = FakeUserDirectory()
    users.add_user("alice")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier(),
        throttle=MemoryThrottle(),
        second_factors=FakeSecondFactors(),
    )
    # A verifier without the enrolment API: the path is the application's own.
    app = WsgiMiddleware(wsgi_app, flow)
    assert wsgi_call(app, "GET", BASE).status == 200
    site = Site("wsgi", Endpoints(second_factor_setup=None))
    assert site.call("GET", BASE).status == 200
    moved = Site("wsgi", Endpoints(second_factor_setup="/account/2fa"))
    jar = Jar()
    moved.login(jar)
    assert moved.call("GET", "/account/2fa", jar=jar).json()["factors"] == []
    with pytest.raises(ConfigError, match="used twice"):
        Site("wsgi", Endpoints(second_factor_setup="/auth", login="/auth/remove"))
    for age in (0, 29, 3601, True, 1.5):
        with pytest.raises(ConfigError, match="enrolment_max_age"):
            Endpoints(enrolment_max_age=age)  # type: ignore[arg-type]


def test_the_edge_reports_its_refusals_and_never_a_secret(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.login(jar)
    secret = site.post(f"{BASE}/totp/begin", jar).json()["secret"]
    site.clock.advance(301)
    site.post(f"{BASE}/totp/begin", jar)
    assert any(type(d).__name__ == "StepUpRequired" for d in site.seen)
    assert all(secret not in repr(decision) for decision in site.seen)


class _Down(MemorySecondFactorStore):
    """A store that fails once ``down`` is set."""

    down = False

    def pending_of(self, user_id: str, *, now: float) -> bytes | None:
        if self.down:
            raise ConnectionError("store down")
        return super().pending_of(user_id, now=now)

    def begin(self, user_id: str, sealed: bytes, expires_at: float) -> None:
        if self.down:
            raise ConnectionError("store down")
        super().begin(user_id, sealed, expires_at)


def test_a_failing_store_is_503_and_keeps_the_session(kind: str) -> None:
    store = _Down()
    site, jar = Site(kind, store=store), Jar()
    site.login(jar)
    secret = site.post(f"{BASE}/totp/begin", jar).json()["secret"]
    store.down = True
    assert site.post(f"{BASE}/totp/begin", jar).status == 503
    failed = site.post(f"{BASE}/totp/confirm", jar, code=totp_code(secret, now=site.clock()))
    assert failed.status == 503
    assert failed.json() == {"error": "unavailable"}
    assert failed.set_cookies == []  # nothing cleared
    store.down = False
    assert (
        site.post(f"{BASE}/totp/confirm", jar, code=totp_code(secret, now=site.clock())).status
        == 200
    )
