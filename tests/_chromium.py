"""What the real-browser suites share: finding Chromium, skipping without it, starting it.

Each suite calls :func:`require` at import time with the Python modules it
needs beside Selenium, then imports Selenium and starts the browser with
:func:`chromium`. The machine's ``/usr/bin/chromium`` is driven through the
``/usr/bin/chromedriver`` of the same Debian source package (so the two
versions always match); the driver path is given explicitly, so Selenium
Manager never runs and nothing is downloaded.

A missing browser, driver or module skips the suite, unless
``TOKENFLOW_REQUIRE_BROWSER=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = os.environ.get("TOKENFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOKENFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED = os.environ.get("TOKENFLOW_REQUIRE_BROWSER") == "1"

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def missing(modules: Mapping[str, str]) -> str | None:
    """Why the suite cannot run here, or None (``modules``: module name to the extra with it)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    for module, extra in {"selenium": "browser", **modules}.items():
        try:
            __import__(module)
        except ImportError:
            return f"{module} not installed (pip install -e '.[{extra}]')"
    return None


def require(modules: Mapping[str, str] | None = None) -> None:
    """Skip the calling module when the browser or a module is missing (fail under CI's flag)."""
    why = missing(modules or {})
    if why is None:
        return
    if REQUIRED:
        pytest.fail(f"TOKENFLOW_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


@contextmanager
def chromium(
    prefix: str,
    *,
    flags: Iterable[str] = (),
    page_load_timeout: float = 10,
    script_timeout: float = 10,
) -> Iterator[WebDriver]:
    """Headless Chromium with its profile and temporary files in a fresh directory.

    ``flags`` are added to :data:`BASE_FLAGS`. TMPDIR points into the same
    directory, which keeps Chromium's singleton socket out of the shared /tmp;
    everything is removed when the block ends.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = tempfile.mkdtemp(prefix=prefix)
    try:
        scratch = os.path.join(root, "tmp")
        os.makedirs(scratch)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*BASE_FLAGS, *flags, f"--user-data-dir={os.path.join(root, 'profile')}"):
            options.add_argument(flag)
        service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": scratch})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(page_load_timeout)
            driver.set_script_timeout(script_timeout)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(root, ignore_errors=True)
