"""Second factors in a real browser: the web demo in headless Chromium (issue 22).

Alice logs in with her password, sets up an authenticator app (the test
reads the secret the page shows and computes the code, as the app would),
logs out, logs in again in two steps (password, then a code), opens the
admin route that requires aal 2 within the last minute (refused with the
step-up prompt once that minute is over, served after a code), and finally
logs in with a recovery code.

The demo's flow runs on a fake clock that the test moves: each code is for
a time step not used before (a step is accepted once), and the admin
route's minute passes at once, with no waiting.

Skips when chromium, chromedriver, selenium, uvicorn or pyotp is missing,
unless ``TOKENFLOW_REQUIRE_BROWSER=1`` (CI), which turns a skip into a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from _chromium import chromium as start_chromium
from _chromium import require

require({"uvicorn": "demo", "pyotp": "mfa"})

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from _demo_server import DemoServer  # noqa: E402
from tokenflow._webdemo import ADMIN_REQUIREMENT, WebDemo  # noqa: E402
from tokenflow.testing import FakeClock  # noqa: E402
from tokenflow.testing.mfa import totp_code  # noqa: E402

ALICE = ("alice@example.com", "correct horse battery staple")
STEP = 30


class MfaDemoServer(DemoServer):
    """The web demo on a fake clock, served by uvicorn in a thread of its own."""

    def __init__(self, db_path: str) -> None:
        self.clock = FakeClock()
        super().__init__(
            lambda site, attacker: WebDemo(db_path, site=site, attacker=attacker, clock=self.clock),
            name="mfa-web-demo",
        )

    def next_code(self, secret: str) -> str:
        """The code an app shows one time step later: a step never used before."""
        self.clock.advance(STEP)
        return totp_code(secret, now=self.clock())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MfaDemoServer]:
    running = MfaDemoServer(str(tmp_path_factory.mktemp("mfa-webdemo") / "sessions.sqlite3"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with start_chromium("tokenflow-mfa-chromium-", flags=("--window-size=1200,1400",)) as driver:
        yield driver


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(
        driver,
        10,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, message=what)


def shown(driver: WebDriver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def text_of(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def open_page(driver: WebDriver, server: MfaDemoServer) -> None:
    driver.get(server.site + "/")
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"), "page")


def type_into(driver: WebDriver, element_id: str, value: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def password_step(driver: WebDriver, server: MfaDemoServer) -> None:
    open_page(driver, server)
    type_into(driver, "username", ALICE[0])
    type_into(driver, "password", ALICE[1])
    driver.find_element(By.ID, "login").click()


def signed_in(driver: WebDriver) -> str:
    return str(
        wait_for(
            driver,
            lambda d: "Signed in as alice" in text_of(d, "status") and text_of(d, "status"),
            "the page to show alice signed in",
        )
    )


def second_step(driver: WebDriver, code: str) -> None:
    wait_for(driver, lambda d: "second-factor=1" in d.current_url, "the second-step page")
    wait_for(
        driver,
        lambda d: (
            d.execute_script("return document.body.dataset.ready")
            and shown(d, "second-factor-step")
        ),
        "the second-step form",
    )
    assert not shown(driver, "login-section")
    type_into(driver, "second-factor-code", code)
    driver.find_element(By.ID, "second-factor-submit").click()


def log_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    wait_for(driver, lambda d: "Not signed in" in text_of(d, "status"), "signed out")


def test_enrol_two_step_login_step_up_and_a_recovery_code(
    browser: WebDriver, server: MfaDemoServer
) -> None:
    # 1. Password only: aal 1. The page offers to set up an authenticator app.
    password_step(browser, server)
    assert "aal 1" in signed_in(browser)
    wait_for(browser, lambda d: shown(d, "mfa-section"), "the second-factor section")
    browser.find_element(By.ID, "mfa-begin").click()
    wait_for(browser, lambda d: shown(d, "mfa-enrol") and text_of(d, "mfa-secret"), "enrolment")
    secret = text_of(browser, "mfa-secret")
    assert browser.find_elements(By.CSS_SELECTOR, "#mfa-qr svg"), "no QR code on the page"
    assert secret not in text_of(browser, "result")
    type_into(browser, "mfa-code", totp_code(secret, now=server.clock()))
    browser.find_element(By.ID, "mfa-confirm").click()
    wait_for(browser, lambda d: shown(d, "mfa-codes-box"), "the recovery codes")
    codes = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#mfa-recovery-codes li")]
    assert len(codes) == len(set(codes)) == 10
    assert not shown(browser, "mfa-enrol")
    assert text_of(browser, "mfa-secret") == ""  # the secret is gone from the page

    # 2. Log out; the next login takes two steps.
    log_out(browser)
    password_step(browser, server)
    second_step(browser, server.next_code(secret))
    assert "aal 2" in signed_in(browser)

    # 3. The admin route: served while the code is fresh...
    browser.find_element(By.ID, "admin").click()
    wait_for(browser, lambda d: "Admin area open" in text_of(d, "admin-status"), "admin open")
    # ...and once its minute is over, refused with the step-up prompt.
    assert ADMIN_REQUIREMENT.max_age is not None
    server.clock.advance(ADMIN_REQUIREMENT.max_age + 1)
    browser.find_element(By.ID, "admin").click()
    wait_for(browser, lambda d: shown(d, "step-up"), "the step-up prompt")
    assert "second factor" in text_of(browser, "step-up-why")
    assert "insufficient_user_authentication" in text_of(browser, "result")
    assert "open" not in text_of(browser, "admin-status")
    type_into(browser, "step-up-code", server.next_code(secret))
    browser.find_element(By.ID, "step-up-submit").click()
    wait_for(
        browser,
        lambda d: "Admin area open" in text_of(d, "admin-status"),
        "the admin route served after the step-up",
    )
    assert "aal 2" in text_of(browser, "admin-status")
    assert not shown(browser, "step-up")

    # 4. A recovery code in place of a code, once.
    log_out(browser)
    password_step(browser, server)
    second_step(browser, codes[0])
    signed_in(browser)
    browser.find_element(By.ID, "mfa-status").click()
    wait_for(
        browser,
        lambda d: "recovery codes left: 9" in text_of(d, "mfa-message"),
        "nine recovery codes left",
    )
    log_out(browser)
    password_step(browser, server)
    second_step(browser, codes[0])
    wait_for(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "refused again")
    assert "error=second_factor_failed" in browser.current_url
    assert shown(browser, "second-factor-step")
