"""README.md stays true to the suites: it names every environment variable they read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"\b(TOKENFLOW_[A-Z0-9_]*[A-Z0-9]|HYPOTHESIS_PROFILE)\b")
# Named in the tests but not read by them: the application's key ring (which tests
# set for the CLI), the examples' settings (listed apart), and made-up names.
_NOT_SUITE_SETTINGS = {
    "TOKENFLOW_KEYS",
    "TOKENFLOW_STORE",
    "TOKENFLOW_DEV",
    "TOKENFLOW_ACCESS_TTL",
    "TOKENFLOW_IDLE_TTL",
    "TOKENFLOW_ABSOLUTE_TTL",
    "TOKENFLOW_OIDC_ISSUER",
    "TOKENFLOW_OIDC_CLIENT_ID",
    "TOKENFLOW_OIDC_CLIENT_SECRET",
    "TOKENFLOW_OIDC_REDIRECT_URI",
}


def _read_by_suites() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").glob("*.py"):
        if path.name == Path(__file__).name:
            continue
        names |= set(_NAME.findall(path.read_text("utf-8")))
    return {n for n in names - _NOT_SUITE_SETTINGS if not n.startswith("TOKENFLOW_TEST_")}


def test_readme_names_every_environment_variable_the_suites_read() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    read = _read_by_suites()
    assert {"TOKENFLOW_REDIS_URL", "TOKENFLOW_POSTGRES_DSN", "TOKENFLOW_CHROMIUM_TESTS"} <= read
    missing = sorted(name for name in read if f"`{name}" not in readme)
    assert missing == [], f"README.md does not name {missing}; add them to its table"
