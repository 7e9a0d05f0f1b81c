"""Sign in with a provider in a real browser: headless Chromium, the Starlette example
under uvicorn, and the loopback fake authorization server.

Chromium clicks "Sign in with", lands on the fake provider (which consents at
once), comes back signed in, refreshes silently once its access cookie is
gone, and signs out. A page on another site then tries to complete a sign-in
with the attacker's own code in the victim's browser (login CSRF): refused.
And the Apple-style variant: a provider on another site answers with a page
that POSTs the code back (``response_mode=form_post``).

Skips when chromium, chromedriver, selenium, uvicorn or starlette is missing,
unless ``TOKENFLOW_REQUIRE_BROWSER=1`` (CI), which turns a skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from _chromium import chromium as start_chromium
from _chromium import require

require({"uvicorn": "demo", "starlette": "examples"})

import uvicorn  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tokenflow import oidc  # noqa: E402
from tokenflow.testing.oidc import FakeAuthorizationServer, FakeClient  # noqa: E402

CLIENT_ID = "browser-example"
SECRET = "browser-example-secret"


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class Site:
    """The Starlette example under uvicorn, signing in with the fake provider."""

    def __init__(self, database: str, provider_server: FakeAuthorizationServer) -> None:
        from examples import starlette_app

        self.sock = _bind()
        self.origin = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        redirect = f"{self.origin}/auth/oidc/provider/callback"
        provider_server.register(FakeClient(CLIENT_ID, (redirect,), "client_secret_basic", SECRET))
        source = oidc.HttpKeySetSource(timeout=2.0, allow_loopback_http=True)
        client = oidc.code_flow(
            oidc.oidc(provider_server.issuer, client_ids=[CLIENT_ID], source=source),
            client_id=CLIENT_ID,
            client_secret=SECRET,
            redirect_uri=redirect,
            source=source,
            allow_loopback_http=True,
        )
        self.flow = starlette_app.make_flow(
            {**os.environ, "TOKENFLOW_STORE": database}, provider=client
        )
        app = starlette_app.create_app(self.flow)
        config = uvicorn.Config(app, lifespan="off", proxy_headers=False, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class AttackerPage:
    """A page on another site (``localhost``, not ``127.0.0.1``) with one link."""

    def __init__(self) -> None:
        self.link = ""
        page = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "<!doctype html><title>win a prize</title>"
                    f'<a id=prize href="{page.link}">claim your prize</a>'
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Any, AttackerPage]]:
    directory = tmp_path_factory.mktemp("oidc-browser")
    # Plain-HTTP cookies for 127.0.0.1; the example builds a module-level app
    # at import, whose database goes to the temporary directory too.
    settings = {"TOKENFLOW_DEV": "1", "TOKENFLOW_STORE": str(directory / "import.db")}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    provider = FakeAuthorizationServer()
    attacker = AttackerPage()
    try:
        site = Site(str(directory / "sessions.db"), provider)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    site.start()
    try:
        yield site, provider, attacker
    finally:
        site.stop()
        provider.close()
        attacker.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    with start_chromium("tokenflow-oidc-chromium-") as driver:
        yield driver


def page_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_sign_in_with_the_provider_refresh_and_sign_out(
    world: tuple[Site, Any, AttackerPage], chromium: WebDriver
) -> None:
    site, provider, _attacker = world
    chromium.delete_all_cookies()
    chromium.get(f"{site.origin}/sign-in")
    assert chromium.find_element(By.ID, "who").text == "nobody"
    chromium.find_element(By.ID, "sign-in-provider").click()
    # The fake provider consents at once and sends the browser back to the callback.
    try:
        WebDriverWait(chromium, 10).until(lambda d: d.current_url == f"{site.origin}/account")
    except Exception:
        raise AssertionError(f"at {chromium.current_url}: {page_text(chromium)}") from None
    assert f'"user":"provider:{provider.subject}"' in page_text(chromium).replace(" ", "")
    names = {cookie["name"] for cookie in chromium.get_cookies()}
    policy = site.flow.config.cookies
    assert names == {policy.access_name, policy.refresh_name}
    # Silent refresh: without its access cookie the browser still gets in.
    chromium.delete_cookie(policy.access_name)
    chromium.get(f"{site.origin}/account")
    assert f'"user":"provider:{provider.subject}"' in page_text(chromium).replace(" ", "")
    assert policy.access_name in {cookie["name"] for cookie in chromium.get_cookies()}
    # Sign out, then /account is refused.
    chromium.get(f"{site.origin}/sign-in")
    chromium.find_element(By.ID, "sign-out").click()
    WebDriverWait(chromium, 10).until(lambda d: d.current_url == f"{site.origin}/")
    chromium.get(f"{site.origin}/account")
    assert "unauthorized" in page_text(chromium)


def test_login_csrf_from_another_site_is_refused(
    world: tuple[Site, Any, AttackerPage], chromium: WebDriver
) -> None:
    site, provider, attacker = world
    chromium.delete_all_cookies()
    # The attacker starts a sign-in with their own browser and keeps the callback URL.
    with httpx.Client(follow_redirects=False, base_url=site.origin) as own:
        started = own.get("/auth/oidc/provider/start")
        at_provider = httpx.get(started.headers["location"], follow_redirects=False)
        attacker.link = at_provider.headers["location"]
    tokens_before = provider.hits.get("/token", 0)
    chromium.get(f"{attacker.origin}/")
    chromium.find_element(By.ID, "prize").click()
    WebDriverWait(chromium, 10).until(lambda d: d.current_url.startswith(site.origin))
    assert chromium.current_url == f"{site.origin}/login?error=login_failed"
    assert provider.hits.get("/token", 0) == tokens_before
    chromium.get(f"{site.origin}/account")
    assert "unauthorized" in page_text(chromium)
    assert chromium.get_cookies() == []


def test_form_post_sign_in_from_another_site(
    tmp_path: Any, chromium: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign in with Apple's shape: the provider (on ``localhost``, another site)
    answers with a page that POSTs the code to the callback on ``127.0.0.1``."""
    from examples import starlette_app

    # SameSite=None needs Secure: the default cookie policy, not the development one.
    monkeypatch.delenv("TOKENFLOW_DEV", raising=False)

    with FakeAuthorizationServer() as provider:
        sock = _bind()
        origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        redirect = f"{origin}/auth/oidc/provider/callback"
        provider.register(FakeClient(CLIENT_ID, (redirect,), "client_secret_post", SECRET))
        port = provider.issuer.rsplit(":", 1)[1]
        source = oidc.HttpKeySetSource(timeout=2.0, allow_loopback_http=True)
        client = oidc.code_flow(
            oidc.oidc(provider.issuer, client_ids=[CLIENT_ID], source=source),
            client_id=CLIENT_ID,
            client_secret=SECRET,
            client_auth=oidc.ClientAuth.CLIENT_SECRET_POST,
            redirect_uri=redirect,
            endpoints=oidc.ProviderEndpoints(
                provider.issuer,
                f"http://localhost:{port}/authorize",
                provider.token_endpoint,
                iss_parameter_supported=True,
            ),
            source=source,
            allow_loopback_http=True,
            response_mode="form_post",
        )
        # The default cookie policy: __Host- names, Secure (127.0.0.1 is a secure context).
        flow = starlette_app.make_flow(
            {**os.environ, "TOKENFLOW_STORE": str(tmp_path / "sessions.db")}, provider=client
        )
        app = starlette_app.create_app(flow)
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", proxy_headers=False, log_level="warning")
        )
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            chromium.delete_all_cookies()
            chromium.get(f"{origin}/sign-in")
            chromium.find_element(By.ID, "sign-in-provider").click()
            try:
                WebDriverWait(chromium, 10).until(lambda d: d.current_url == f"{origin}/account")
            except Exception:
                raise AssertionError(f"at {chromium.current_url}: {page_text(chromium)}") from None
            assert f'"user":"provider:{provider.subject}"' in page_text(chromium).replace(" ", "")
            assert provider.refusals == []
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
