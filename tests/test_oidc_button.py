"""Google Identity Services' button: the ``credential`` POST with its ``g_csrf_token``
double-submit cookie, through the flow and the ASGI/WSGI endpoint."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from _oidc import CLIENT, NOW, google_world
from _web_client import HOST, Jar, asgi_call, wsgi_call
from tokenflow import ButtonCredentials, Flow, KeyRing, Reissue, Request, Unauthorized, oidc
from tokenflow.asgi import Endpoints
from tokenflow.asgi import TokenflowMiddleware as AsgiMiddleware
from tokenflow.events import LoginFailed, LoginFailedReason
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock, FakeUserDirectory
from tokenflow.testing.oidc import FakeKeySetSource
from tokenflow.wsgi import TokenflowMiddleware as WsgiMiddleware

CSRF = "b4e8c2f0a1d94e37"
GOOGLE_SITE = [("sec-fetch-site", "cross-site"), ("origin", "https://accounts.google.com")]


def make_flow() -> tuple[Flow, str, MemoryStore]:
    world = google_world()
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        FakeUserDirectory(allow_signup=True),
        external={"google": oidc.google([CLIENT], source=FakeKeySetSource(world.endpoints))},
        clock=FakeClock(NOW),
    )
    return flow, world.token(subject="g-7"), store


def posted(token: str, body_csrf: str | None, cookie: str | None) -> Request:
    return Request(
        "POST",
        cookie_header=None if cookie is None else f"g_csrf_token={cookie}",
        credentials=ButtonCredentials("google", token, body_csrf),
        sec_fetch_site="cross-site",
        origin="https://accounts.google.com",
        host=HOST,
    )


def test_a_matching_double_submit_signs_in_from_googles_page() -> None:
    flow, token, _store = make_flow()
    decision = flow.login(posted(token, CSRF, CSRF))
    assert isinstance(decision, Reissue), decision
    assert decision.user_id == "google:g-7"


@pytest.mark.parametrize(
    ("body", "cookie"), [(CSRF, None), (None, CSRF), (CSRF, "other"), ("", ""), (CSRF, CSRF + "x")]
)
def test_a_cross_site_post_without_a_matching_double_submit_is_forbidden(
    body: str | None, cookie: str | None
) -> None:
    flow, token, store = make_flow()
    decision = flow.login(posted(token, body, cookie))
    assert decision.status == 403
    assert store.sessions_of("google:g-7", now=NOW) == []


def test_a_same_site_post_still_needs_the_double_submit() -> None:
    flow, token, _store = make_flow()
    request = Request(
        "POST",
        cookie_header="g_csrf_token=other",
        credentials=ButtonCredentials("google", token, CSRF),
        sec_fetch_site="same-origin",
        host=HOST,
    )
    decision = flow.login(request)
    assert isinstance(decision, Unauthorized)
    assert LoginFailed(LoginFailedReason.BAD_CSRF_TOKEN, "google") in decision.events


def test_a_planted_second_csrf_cookie_fails_closed() -> None:
    flow, token, _store = make_flow()
    request = posted(token, CSRF, CSRF)
    doubled = Request(
        "POST",
        cookie_header=f"g_csrf_token={CSRF}; g_csrf_token=planted",
        credentials=request.credentials,
        sec_fetch_site="cross-site",
        origin="https://accounts.google.com",
        host=HOST,
    )
    assert flow.login(doubled).status == 403


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_the_button_endpoint(kind: str) -> None:
    flow, token, _store = make_flow()

    def app(*_: object) -> object:
        raise AssertionError("the endpoint answers itself")

    endpoints = Endpoints(after_login="/account")
    middleware = (AsgiMiddleware if kind == "asgi" else WsgiMiddleware)(
        app, flow, endpoints=endpoints
    )
    call = asgi_call if kind == "asgi" else wsgi_call
    form = [("content-type", "application/x-www-form-urlencoded"), ("host", HOST)]
    body = urlencode({"credential": token, "g_csrf_token": CSRF}).encode()
    jar = Jar({"g_csrf_token": CSRF})
    path = "/auth/oidc/google/button"
    reply = call(middleware, "POST", path, [*form, *GOOGLE_SITE], body, jar=jar)
    assert reply.status == 303
    assert reply.header("location") == "/account"
    assert "__Host-tf_access" in jar.cookies
    refused = call(middleware, "POST", path, [*form, *GOOGLE_SITE], body)
    assert refused.status == 403
