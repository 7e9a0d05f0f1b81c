"""The web demo in a real browser: headless Chromium from the system's packages.

Selenium drives ``/usr/bin/chromium`` through the ``/usr/bin/chromedriver`` of
the same Debian source package (so the two versions always match); the driver
path is given explicitly, so Selenium Manager never runs and nothing is
downloaded. The demo site and its attacker page are served by uvicorn on
127.0.0.1, with short lifetimes (access 2 s, idle 6 s) so that expiry happens
within the test.

Skips when chromium, chromedriver, selenium or uvicorn is missing, unless
``TOKENFLOW_REQUIRE_BROWSER=1`` (CI), which turns a skip into a failure. On a
failure, screenshots of every open tab and the server's journal are saved to
``$TOKENFLOW_ARTIFACTS`` (default: a temporary directory), and the failure
message names the files.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ACCESS_TTL = 2
IDLE_TTL = 6
ALICE = ("alice@example.com", "correct horse battery staple")


from _chromium import chromium as start_chromium  # noqa: E402
from _chromium import require  # noqa: E402

require({"uvicorn": "demo"})

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from _demo_server import DemoServer  # noqa: E402
from tokenflow._webdemo import WebDemo, demo_config  # noqa: E402


def artifacts_dir() -> Path:
    """Where failures leave their screenshots: $TOKENFLOW_ARTIFACTS, else a new temp dir."""
    chosen = os.environ.get("TOKENFLOW_ARTIFACTS")
    if not chosen:
        return Path(tempfile.mkdtemp(prefix="tokenflow-browser-"))
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    db_path = str(tmp_path_factory.mktemp("webdemo") / "sessions.sqlite3")
    config = demo_config(access_ttl=ACCESS_TTL, refresh_idle_ttl=IDLE_TTL, refresh_absolute_ttl=600)
    running = DemoServer(
        lambda site, attacker: WebDemo(db_path, site=site, attacker=attacker, config=config)
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- the browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    flags = (
        "--disable-quic",
        # Background tabs must fire their timers on time for the two-tab race.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--window-size=1200,1000",
    )
    with start_chromium("tokenflow-chromium-", flags=flags) as driver:
        yield driver


@pytest.fixture
def browser(chromium: WebDriver, server: DemoServer) -> Iterator[WebDriver]:
    """The module's browser, reset: one tab, no cookies."""
    yield chromium
    handles = chromium.window_handles
    for handle in handles[1:]:
        chromium.switch_to.window(handle)
        chromium.close()
    chromium.switch_to.window(handles[0])
    chromium.get(server.site + "/demo/config")
    chromium.delete_all_cookies()


_F = TypeVar("_F", bound=Callable[..., None])


def screenshots_on_failure(test: _F) -> _F:
    """Save every tab's screenshot and the server's journal when ``test`` fails."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except Exception as exc:
            driver: WebDriver = kwargs["browser"]
            demo: DemoServer = kwargs["server"]
            saved: list[str] = []
            try:
                artifacts = artifacts_dir()
                for index, handle in enumerate(driver.window_handles):
                    driver.switch_to.window(handle)
                    path = artifacts / f"{test.__name__}-tab{index}.png"
                    if driver.save_screenshot(str(path)):
                        saved.append(str(path))
                journal = artifacts / f"{test.__name__}-journal.json"
                journal.write_text(json.dumps(demo.journal(), indent=1))
                saved.append(str(journal))
            except Exception as capture:
                saved.append(f"(capture failed: {capture!r})")
            raise AssertionError(f"{exc}\nartifacts: {', '.join(saved)}") from exc

    return wrapper  # type: ignore[return-value]


# -- helpers -------------------------------------------------------------------------


def fetch(driver: WebDriver, method: str, path: str) -> dict[str, Any]:
    """``fetch(path)`` from the current tab: the page's own cookies, its own origin."""
    result: dict[str, Any] = driver.execute_async_script(
        """
        const [method, path, done] = arguments;
        fetch(path, {method: method, headers: {"Accept": "application/json",
                                               "Content-Type": "application/json"},
                     body: method === "GET" ? undefined : "{}"})
          .then(async (r) => done({status: r.status, body: await r.json().catch(() => null)}))
          .catch((e) => done({status: 0, body: String(e)}));
        """,
        method,
        path,
    )
    return result


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(
        driver,
        5,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, message=what)


def open_page(driver: WebDriver, server: DemoServer) -> None:
    driver.get(server.site + "/")
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"), "page")


def login(driver: WebDriver, server: DemoServer, user: tuple[str, str] = ALICE) -> None:
    open_page(driver, server)
    driver.find_element(By.ID, "username").send_keys(user[0])
    driver.find_element(By.ID, "password").send_keys(user[1])
    driver.find_element(By.ID, "login").click()
    wait_for(
        driver,
        lambda d: "Signed in as" in d.find_element(By.ID, "status").text,
        "the page to show the signed-in user",
    )


def auth_cookies(driver: WebDriver) -> dict[str, dict[str, Any]]:
    """The auth cookies as the browser holds them (WebDriver sees HttpOnly ones)."""
    return {c["name"]: c for c in driver.get_cookies() if c["name"] in ("tf_access", "tf_refresh")}


def wait_until_access_expired(driver: WebDriver) -> None:
    time.sleep(ACCESS_TTL + 0.3)
    assert "tf_access" not in auth_cookies(driver), "the browser still holds the access cookie"


def events(entries: list[dict[str, Any]]) -> list[str]:
    return [event for entry in entries if entry["kind"] == "decision" for event in entry["events"]]


# -- scenarios -----------------------------------------------------------------------


@screenshots_on_failure
def test_login_with_the_form(browser: WebDriver, server: DemoServer) -> None:
    open_page(browser, server)
    assert "Not signed in" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "username").send_keys(ALICE[0])
    browser.find_element(By.ID, "password").send_keys("wrong password")
    browser.find_element(By.ID, "login").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "login error")
    assert "error=login_failed" in browser.current_url
    assert auth_cookies(browser) == {}

    login(browser, server)
    assert browser.current_url == server.site + "/"
    me = fetch(browser, "GET", "/api/me")
    assert me["status"] == 200
    assert me["body"]["user_id"] == "alice"
    assert set(auth_cookies(browser)) == {"tf_access", "tf_refresh"}


@screenshots_on_failure
def test_the_form_hides_while_signed_in_and_the_log_names_the_login(
    browser: WebDriver, server: DemoServer
) -> None:
    open_page(browser, server)
    assert browser.find_element(By.ID, "login-section").is_displayed()
    assert browser.find_element(By.ID, "try-first").is_displayed()
    docs = browser.find_element(By.ID, "docs-link").get_attribute("href")
    assert docs == "http://127.0.0.1:8000/web-demo/"
    login(browser, server)
    assert not browser.find_element(By.ID, "login-section").is_displayed()
    assert browser.find_element(By.ID, "signed-in-note").is_displayed()
    wait_for(
        browser,
        lambda d: "303 See Other to /: logged in (password)" in d.find_element(By.ID, "log").text,
        "the log to name the login",
    )
    assert "a public page served to an anonymous visitor" in browser.find_element(By.ID, "log").text
    browser.find_element(By.ID, "logout").click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "login-section").is_displayed(),
        "the form to come back after logout",
    )
    assert not browser.find_element(By.ID, "signed-in-note").is_displayed()


@screenshots_on_failure
def test_auth_cookies_are_invisible_to_scripts(browser: WebDriver, server: DemoServer) -> None:
    login(browser, server)
    held = auth_cookies(browser)
    assert set(held) == {"tf_access", "tf_refresh"}
    assert all(cookie["httpOnly"] for cookie in held.values())
    assert all(cookie["sameSite"] == "Lax" for cookie in held.values())
    assert browser.execute_script("return document.cookie") == ""
    # The page shows them from the server's Set-Cookie log instead.
    wait_for(
        browser,
        lambda d: "tf_refresh" in d.find_element(By.ID, "cookies").text,
        "the cookie table to list tf_refresh",
    )
    assert "HttpOnly" in browser.find_element(By.ID, "cookies").text


@screenshots_on_failure
def test_silent_refresh_after_the_access_cookie_expires(
    browser: WebDriver, server: DemoServer
) -> None:
    login(browser, server)
    first = fetch(browser, "GET", "/api/me")
    assert first["body"]["decision"] == "Process"
    old_refresh = auth_cookies(browser)["tf_refresh"]["value"]

    wait_until_access_expired(browser)
    seq = server.last_seq()
    again = fetch(browser, "GET", "/api/me")
    assert again["status"] == 200
    assert again["body"]["decision"] == "Reissue"
    assert again["body"]["cookies_sent"] == ["tf_refresh"]
    assert again["body"]["session_id"] == first["body"]["session_id"]
    held = auth_cookies(browser)
    assert "tf_access" in held
    assert held["tf_refresh"]["value"] != old_refresh, "the refresh token did not rotate"
    assert any(event.startswith("Refreshed ") for event in events(server.journal(seq)))


@screenshots_on_failure
def test_two_tabs_refreshing_at_once_both_stay_logged_in(
    browser: WebDriver, server: DemoServer
) -> None:
    login(browser, server)
    session = fetch(browser, "GET", "/api/me")["body"]["session_id"]
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    open_page(browser, server)
    second_tab = browser.current_window_handle

    # Both tabs call the API at the same instant, with the same refresh cookie.
    # On a loaded machine one tab's request may leave only after the other's
    # answer came back (then it simply carries the new cookie): every attempt
    # must keep both tabs signed in, and the race itself is tried again until
    # both requests left with the same refresh token (at most three times).
    for _attempt in range(3):
        wait_until_access_expired(browser)
        seq = server.last_seq()
        fire_at = browser.execute_script("return Date.now()") + 1500
        for tab in (first_tab, second_tab):
            browser.switch_to.window(tab)
            browser.execute_script(
                """
                window.raceResult = null;
                setTimeout(() => fetch("/api/me", {headers: {"Accept": "application/json"}})
                  .then(async (r) => {
                    window.raceResult = {status: r.status, body: await r.json()};
                  }),
                  arguments[0] - Date.now());
                """,
                fire_at,
            )
        results = []
        for tab in (first_tab, second_tab):
            browser.switch_to.window(tab)
            results.append(
                wait_for(browser, lambda d: d.execute_script("return window.raceResult"), "race")
            )
        assert [r["status"] for r in results] == [200, 200]
        assert {r["body"]["session_id"] for r in results} == {session}
        happened = events(server.journal(seq))
        assert not [e for e in happened if e.startswith(("ReuseDetected ", "SessionRevoked "))]
        if [r["body"]["refreshed"] for r in results] == [True, True]:
            break
    # Both requests left before either answer came back: both carried the
    # same refresh token, one rotated it, the other got the same successor.
    assert [r["body"]["refreshed"] for r in results] == [True, True]
    assert sorted(e.endswith("grace=True") for e in happened if e.startswith("Refreshed ")) == [
        False,
        True,
    ]

    for tab in (first_tab, second_tab):
        browser.switch_to.window(tab)
        after = fetch(browser, "GET", "/api/me")
        assert after["status"] == 200
        assert after["body"]["session_id"] == session


@screenshots_on_failure
def test_cross_origin_form_post_is_refused_and_the_session_survives(
    browser: WebDriver, server: DemoServer
) -> None:
    login(browser, server)
    session = fetch(browser, "GET", "/api/me")["body"]["session_id"]
    seq = server.last_seq()

    browser.get(server.attacker + "/")
    browser.find_element(By.ID, "claim").click()
    wait_for(
        browser,
        lambda d: "cross_origin_request_refused" in d.find_element(By.TAG_NAME, "body").text,
        "the 403 answer to the attacker's form",
    )
    refused = [
        entry
        for entry in server.journal(seq)
        if entry["kind"] == "decision" and entry["op"] == "POST /api/transfer"
    ]
    assert [(entry["decision"], entry["status"]) for entry in refused] == [("Forbidden", 403)]
    assert refused[0]["events"][0].startswith("CrossOriginRejected ")
    assert f"origin={server.attacker} " in refused[0]["events"][0]
    # Another port of the same host is the same site, so SameSite=Lax cookies
    # came along: the cross-origin check, not the cookie attribute, refused it.
    assert refused[0]["events"][0].endswith("sec_fetch_site=same-site")

    open_page(browser, server)
    me = fetch(browser, "GET", "/api/me")
    assert me["status"] == 200
    assert me["body"]["session_id"] == session
    # The same form posted from the site's own origin goes through.
    assert fetch(browser, "POST", "/api/transfer")["status"] == 200


@screenshots_on_failure
def test_logout(browser: WebDriver, server: DemoServer) -> None:
    login(browser, server)
    stolen = auth_cookies(browser)["tf_refresh"]
    browser.find_element(By.ID, "logout").click()
    wait_for(
        browser,
        lambda d: "Not signed in" in d.find_element(By.ID, "status").text,
        "the page to show nobody signed in",
    )
    assert auth_cookies(browser) == {}
    assert fetch(browser, "GET", "/api/me")["status"] == 401
    # The refresh token is revoked on the server, not only cleared in the browser.
    browser.add_cookie({"name": "tf_refresh", "value": stolen["value"], "path": "/"})
    assert fetch(browser, "GET", "/api/me")["status"] == 401


@screenshots_on_failure
def test_idle_expiry(browser: WebDriver, server: DemoServer) -> None:
    login(browser, server)
    refresh = auth_cookies(browser)["tf_refresh"]
    # The page keeps polling the journal, which is outside the middleware:
    # it does not keep the session alive.
    time.sleep(IDLE_TTL + 0.5)
    assert auth_cookies(browser) == {}, "the browser kept the cookies past their Max-Age"
    assert fetch(browser, "GET", "/api/me")["status"] == 401
    # A refresh cookie kept past its Max-Age is refused by the server too.
    browser.add_cookie({"name": "tf_refresh", "value": refresh["value"], "path": "/"})
    seq = server.last_seq()
    assert fetch(browser, "GET", "/api/me")["status"] == 401
    refused = [e for e in server.journal(seq) if e["kind"] == "decision"]
    assert refused
    assert refused[-1]["decision"] == "Unauthorized"


@screenshots_on_failure
def test_sign_in_with_the_demo_provider(browser: WebDriver, server: DemoServer) -> None:
    open_page(browser, server)
    link = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "provider-login")
            if d.find_element(By.ID, "provider-signin").is_displayed()
            else None
        ),
        "the Sign in with link",
    )
    link.click()
    # To the local provider and back (302, consent, 302 to the callback, 303 home).
    wait_for(
        browser,
        lambda d: "Signed in as" in d.find_element(By.ID, "status").text,
        "the page to show the signed-in user",
    )
    assert not browser.find_element(By.ID, "login-section").is_displayed()
    me = fetch(browser, "GET", "/api/me")
    assert me["status"] == 200
    assert "demo-provider" in json.dumps(me["body"])
    assert set(auth_cookies(browser)) == {"tf_access", "tf_refresh"}
