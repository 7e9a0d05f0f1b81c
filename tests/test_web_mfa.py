"""The HTTP edge of second factors and step-up (issue 22), through both
middlewares: the two-step login, the second-factor and step-up endpoints,
and per-route requirements answered with the RFC 9470 challenge (API
clients) or a redirect to the step-up page (browser navigations).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from _web_client import ALICE, CROSS_SITE, FORM, JSON, SAME_ORIGIN, Jar, Reply, asgi_call, wsgi_call
from tokenflow import AsyncFlow, ConfigError, Flow, KeyRing, Requirement
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeSecondFactors,
    AsyncFakeUserDirectory,
    FakeClock,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from tokenflow.throttles import AsyncMemoryThrottle, MemoryThrottle
from tokenflow.web import Endpoints
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware
from tokenflow.wsgi import auth_of as wsgi_auth_of

PARTIAL = "__Host-tf-2fa"
REQUIREMENTS = {"/admin/*": Requirement(aal=2), "/settings": Requirement(max_age=300)}
NAVIGATE = [("sec-fetch-mode", "navigate"), ("accept", "text/html")]
API = [("accept", "application/json")]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    auth = scope["tokenflow"]
    body = json.dumps({"user": auth.user_id, "aal": getattr(auth.decision, "aal", None)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    auth = wsgi_auth_of(environ)
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"user": auth.user_id, "aal": getattr(auth.decision, "aal", None)}).encode()]


@dataclass
class Site:
    kind: str
    endpoints: Endpoints = field(default_factory=Endpoints)
    clock: FakeClock = field(default_factory=FakeClock)
    factors: FakeSecondFactors = field(default_factory=FakeSecondFactors)
    app: Any = field(init=False)

    def __post_init__(self) -> None:
        users = FakeUserDirectory()
        users.add_user("alice")
        passwords = FakePasswordVerifier()
        passwords.set_password(ALICE.username, ALICE.password, user_id="alice")
        flow: Flow | AsyncFlow
        if self.kind == "asgi-async":
            flow = AsyncFlow(
                KeyRing.generate(),
                AsyncMemoryStore(),
                AsyncFakeUserDirectory(users),
                passwords=AsyncFakePasswordVerifier(passwords),
                throttle=AsyncMemoryThrottle(),
                second_factors=AsyncFakeSecondFactors(self.factors),
                clock=self.clock,
            )
        else:
            flow = Flow(
                KeyRing.generate(),
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
                wsgi_app, flow, endpoints=self.endpoints, requirements=REQUIREMENTS
            )
        else:
            self.app = AsgiMiddleware(
                asgi_app, flow, endpoints=self.endpoints, requirements=REQUIREMENTS
            )

    def call(
        self, method: str, path: str, headers: Any = (), body: bytes = b"", jar: Jar | None = None
    ) -> Reply:
        if self.kind == "wsgi":
            path, _, query = path.partition("?")
            reply = wsgi_call(self.app, method, path, headers, body, jar=jar)
            assert not query
            return reply
        return asgi_call(self.app, method, path, headers, body, jar=jar)

    def code(self) -> str:
        return self.factors.code_at("alice", self.clock())

    def post_json(self, path: str, jar: Jar, **fields: str) -> Reply:
        return self.call("POST", path, [*SAME_ORIGIN, JSON], json.dumps(fields).encode(), jar)

    def two_step(self, jar: Jar) -> Reply:
        first = self.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
        assert first.status == 401
        assert first.json() == {"error": "second_factor_required", "methods": ["totp"]}
        assert PARTIAL in jar.cookies
        second = self.post_json("/auth/mfa/verify", jar, code=self.code())
        assert second.status == 200, second.body
        return second


KINDS = ["asgi-sync", "asgi-async", "wsgi"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_two_step_json_login_then_an_aal2_route(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.factors.enroll("alice")
    second = site.two_step(jar)
    assert second.json()["aal"] == 2
    assert PARTIAL not in jar.cookies
    reply = site.call("GET", "/admin/panel", API, jar=jar)
    assert reply.status == 200
    assert reply.json() == {"user": "alice", "aal": 2}


def test_two_step_form_login_goes_through_the_second_factor_page(kind: str) -> None:
    site = Site(kind, Endpoints(second_factor_page="/mfa"))
    site.factors.enroll("alice")
    jar = Jar()
    body = urlencode({"username": ALICE.username, "password": ALICE.password, "next": "/admin/x"})
    first = site.call("POST", "/auth/login", [*SAME_ORIGIN, FORM], body.encode(), jar)
    assert first.status == 303
    assert first.header("location") == "/mfa?next=/admin/x"
    wrong = "000000" if site.code() != "000000" else "111111"
    refused = site.call(
        "POST", "/auth/mfa/verify", [*SAME_ORIGIN, FORM], urlencode({"code": wrong}).encode(), jar
    )
    assert refused.status == 303
    assert refused.header("location") == "/mfa?error=second_factor_failed"
    assert PARTIAL in jar.cookies  # a mistyped code can be typed again
    verify = urlencode({"code": site.code(), "next": "/admin/x"}).encode()
    second = site.call("POST", "/auth/mfa/verify", [*SAME_ORIGIN, FORM], verify, jar)
    assert second.status == 303
    assert second.header("location") == "/admin/x"
    assert site.call("GET", "/admin/x", NAVIGATE, jar=jar).status == 200


def test_an_account_without_a_second_factor_logs_in_as_always(kind: str) -> None:
    site, jar = Site(kind), Jar()
    reply = site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    assert reply.status == 200
    assert PARTIAL not in jar.cookies
    assert site.call("GET", "/settings", API, jar=jar).status == 200


@pytest.mark.parametrize("path", ["/admin/panel", "/ADMIN/panel", "//admin/panel", "/%61dmin/x"])
def test_an_aal1_session_gets_the_rfc_9470_challenge_on_every_spelling(
    kind: str, path: str
) -> None:
    site, jar = Site(kind), Jar()
    site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    reply = site.call("GET", path, API, jar=jar)
    assert reply.status == 401
    challenge = reply.header("www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    assert 'acr_values="aal2"' in challenge
    assert reply.json()["error"] == "insufficient_user_authentication"


def test_a_browser_navigation_is_sent_to_the_step_up_page(kind: str) -> None:
    site, jar = Site(kind, Endpoints(step_up_page="/step-up")), Jar()
    site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    reply = site.call("GET", "/admin/panel", NAVIGATE, jar=jar)
    assert reply.status == 303
    assert reply.header("location") == "/step-up?next=/admin/panel"
    # An API call to the same route still gets the challenge.
    assert site.call("GET", "/admin/panel", API, jar=jar).status == 401


def test_anonymous_requests_to_routes_with_requirements_are_401(kind: str) -> None:
    site = Site(kind)
    assert site.call("GET", "/admin/panel", API).status == 401
    assert site.call("GET", "/settings", API).status == 401


def test_step_up_endpoint_raises_the_same_session(kind: str) -> None:
    site, jar = Site(kind), Jar()
    login = site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    session = login.json()["session_id"]
    site.factors.enroll("alice")
    refused = site.post_json("/auth/step-up", jar, code="12345")
    assert refused.status == 401
    assert refused.set_cookies == []
    stepped = site.post_json("/auth/step-up", jar, code=site.code())
    assert stepped.status == 200, stepped.body
    assert stepped.json()["session_id"] == session
    assert stepped.json()["aal"] == 2
    assert site.call("GET", "/admin/panel", API, jar=jar).json() == {"user": "alice", "aal": 2}


def test_a_stale_session_after_a_refresh_keeps_its_rotated_cookies(kind: str) -> None:
    site, jar = Site(kind), Jar()
    site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    site.clock.advance(301)  # access token expired, auth_time 301 s old
    reply = site.call("GET", "/settings", API, jar=jar)
    assert reply.status == 401
    assert "max_age=300" in (reply.header("www-authenticate") or "")
    assert len(reply.set_cookies) == 2  # the rotation's tokens, never dropped
    stepped = site.post_json("/auth/step-up", jar, username=ALICE.username, password=ALICE.password)
    assert stepped.status == 200, stepped.body
    assert site.call("GET", "/settings", API, jar=jar).status == 200


@pytest.mark.parametrize("path", ["/auth/mfa/verify", "/auth/step-up"])
def test_a_cross_site_post_is_refused_before_its_body(kind: str, path: str) -> None:
    site = Site(kind)
    reply = site.call("POST", path, [*CROSS_SITE, JSON], b"{not json")
    assert reply.status == 403


def test_the_step_up_page_gets_the_query_too_and_unsafe_targets_are_dropped() -> None:
    site, jar = Site("asgi-sync", Endpoints(step_up_page="/step-up?from=admin")), Jar()
    site.post_json("/auth/login", jar, username=ALICE.username, password=ALICE.password)
    reply = asgi_call(
        site.app,
        "GET",
        "/admin/panel",
        [*NAVIGATE, *jar.header()],
        scope={"query_string": b"tab=keys"},
    )
    assert reply.status == 303
    assert reply.header("location") == "/step-up?from=admin&next=/admin/panel%3Ftab%3Dkeys"
    odd = site.call("GET", "/admin/\x7fpanel", NAVIGATE, jar=jar)
    assert odd.status == 303
    assert odd.header("location") == "/step-up?from=admin"


def test_the_endpoints_can_be_turned_off_and_must_not_collide() -> None:
    site = Site("wsgi", Endpoints(second_factor=None, step_up=None))
    # Off: the paths are the application's own (anonymous here: it answers 200).
    assert site.call("POST", "/auth/mfa/verify", [*SAME_ORIGIN, JSON], b"{}").status == 200
    with pytest.raises(ConfigError, match="used twice"):
        Site("wsgi", Endpoints(step_up="/auth/login"))
