"""Passkeys in a real browser: Chromium's virtual authenticator (WebDriver WebAuthn API).

A signed-in user registers a passkey through ``tokenflow-passkeys.js``, signs
out, signs in with it and refreshes; a captured assertion replayed is
refused; a cloned authenticator (the same private key, its counter behind)
is refused. The site is served on ``http://localhost`` (a secure context, as
WebAuthn requires) by the WSGI middleware on a threaded wsgiref server.

Skips when chromium, chromedriver or selenium is missing, unless
``TOKENFLOW_REQUIRE_BROWSER=1`` (CI), which turns a skip into a failure.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from _chromium import chromium as start_chromium
from _chromium import require

require()

from selenium.webdriver.common.virtual_authenticator import (  # noqa: E402
    Credential,
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from tokenflow import CookiePolicy, Flow, FlowConfig, KeyRing  # noqa: E402
from tokenflow.passkeys import (  # noqa: E402
    MemoryChallengeLedger,
    MemoryPasskeyRepository,
    PasskeyConfig,
    Passkeys,
    browser_helper,
)
from tokenflow.stores import MemoryStore  # noqa: E402
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory  # noqa: E402
from tokenflow.wsgi import TokenflowMiddleware  # noqa: E402

PASSWORD = ("alice@example.com", "correct horse battery staple")
PAGE = b"""<!doctype html><meta charset="utf-8"><title>passkeys</title>
<script src="/tokenflow-passkeys.js"></script><p>passkeys</p>"""


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _site(origin: str) -> Any:
    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password(*PASSWORD, user_id="alice")
    keyring = KeyRing.generate()
    passkeys = Passkeys(
        PasskeyConfig(rp_id="localhost", rp_name="tokenflow test", origins=(origin,)),
        keyring,
        MemoryPasskeyRepository(),
        MemoryChallengeLedger(),
        other_sign_in=lambda user_id: True,
    )
    config = FlowConfig(access_ttl=2, leeway=0, cookies=CookiePolicy.local_development())
    flow = Flow(
        keyring, MemoryStore(), users, passwords=passwords, passkeys=passkeys, config=config
    )

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path == "/tokenflow-passkeys.js":
            start_response("200 OK", [("content-type", "text/javascript")])
            return [browser_helper()]
        if path == "/api/me":
            auth = environ["tokenflow"]
            start_response("200 OK", [("content-type", "text/plain")])
            return [str(auth.user_id).encode()]
        start_response("200 OK", [("content-type", "text/html; charset=utf-8")])
        return [PAGE]

    return TokenflowMiddleware(app, flow, required=["/api"])


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = make_server(
        "127.0.0.1", 0, lambda e, s: [], server_class=_Threaded, handler_class=_Quiet
    )
    origin = f"http://localhost:{server.server_port}"
    server.set_app(_site(origin))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    with start_chromium("tokenflow-passkeys-", script_timeout=20) as driver:
        yield driver


def _authenticator(driver: WebDriver) -> None:
    driver.add_virtual_authenticator(
        VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2,
            transport=Transport.INTERNAL,
            has_resident_key=True,
            has_user_verification=True,
            is_user_verified=True,
        )
    )


def _run(driver: WebDriver, script: str, *args: Any) -> Any:
    """Run an async snippet; it gets ``done`` as its last argument."""
    wrapped = (
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {script} }})().then(done, e => done({{error: String(e)}}));"
    )
    return driver.execute_async_script(wrapped, *args)


def _post(driver: WebDriver, path: str, body: dict[str, str]) -> Any:
    return _run(
        driver,
        "const r = await fetch(arguments[0], {method: 'POST', headers: "
        "{'content-type': 'application/json', accept: 'application/json'}, "
        "body: JSON.stringify(arguments[1])});"
        "return {status: r.status, body: await r.text()};",
        path,
        body,
    )


def _me(driver: WebDriver) -> Any:
    return _run(
        driver,
        "const r = await fetch('/api/me'); return {status: r.status, body: await r.text()};",
    )


@pytest.fixture
def browser(chromium: WebDriver, site: str) -> Iterator[WebDriver]:
    chromium.get(site + "/")
    _authenticator(chromium)
    yield chromium
    chromium.remove_virtual_authenticator()
    chromium.delete_all_cookies()


def _register(driver: WebDriver) -> None:
    signed_in = _post(driver, "/auth/login", {"username": PASSWORD[0], "password": PASSWORD[1]})
    assert signed_in["status"] == 200, signed_in
    added = _run(driver, "return await tokenflowPasskeys.register({name: 'Chromium'});")
    assert added.get("status") == 201, added
    assert _post(driver, "/auth/logout", {})["status"] == 200
    assert _me(driver)["status"] == 401


def test_register_sign_out_sign_in_and_refresh(browser: WebDriver) -> None:
    _register(browser)
    signed_in = _run(browser, "return await tokenflowPasskeys.signIn();")
    assert signed_in.get("status") == 200, signed_in
    assert signed_in["body"]["user_id"] == "alice"
    assert _me(browser) == {"status": 200, "body": "alice"}
    time.sleep(2.2)  # the access token expires: the refresh token takes over
    assert _me(browser) == {"status": 200, "body": "alice"}


def test_replayed_assertion_is_refused(browser: WebDriver) -> None:
    _register(browser)
    captured = _run(browser, "return await tokenflowPasskeys.assertion();")
    assert isinstance(captured, str), captured
    assert _post(browser, "/auth/login", {"passkey": captured})["status"] == 200
    browser.delete_all_cookies()
    assert _post(browser, "/auth/login", {"passkey": captured})["status"] == 401
    assert _me(browser)["status"] == 401


def test_cloned_authenticator_is_refused(browser: WebDriver) -> None:
    _register(browser)
    for _ in range(2):
        assert _run(browser, "return await tokenflowPasskeys.signIn();")["status"] == 200
    (original,) = browser.get_credentials()
    assert original.sign_count >= 2
    # A second device with the same private key, its counter behind.
    browser.remove_virtual_authenticator()
    _authenticator(browser)
    browser.add_credential(Credential.from_dict({**original.to_dict(), "signCount": 0}))
    browser.delete_all_cookies()
    refused = _run(browser, "return await tokenflowPasskeys.signIn();")
    assert refused.get("status") == 401, refused
    assert _me(browser)["status"] == 401
