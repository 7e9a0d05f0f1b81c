"""The framework examples run, through each framework's own test client.

Each test skips when its framework is not installed, and fails instead when
``TOKENFLOW_REQUIRE_EXAMPLES=1`` (CI installs the ``examples`` extra).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOGIN = {"username": "alice", "password": "wonderland-passphrase"}
SAME_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def need(module: str) -> ModuleType:
    """Import a framework, or skip (fail under TOKENFLOW_REQUIRE_EXAMPLES=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("TOKENFLOW_REQUIRE_EXAMPLES") == "1":
            raise
        pytest.skip(f"{module} is not installed (pip install 'tokenflow[examples]')")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Imports an example module with its sessions in a temporary database."""
    monkeypatch.setenv("TOKENFLOW_DB", str(tmp_path / "import.db"))
    monkeypatch.setenv("TOKENFLOW_DEV", "1")
    monkeypatch.syspath_prepend(str(ROOT))

    def load(name: str) -> Any:
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_fastapi(example: Any, tmp_path: Path) -> None:
    need("fastapi")
    need("httpx")
    from fastapi.testclient import TestClient

    module = example("examples.fastapi_app")
    client = TestClient(module.create_app(module.make_flow(str(tmp_path / "s.db"))))
    assert client.get("/").json() == {"signed_in": False, "user": None}
    assert client.get("/me").status_code == 401
    reply = client.post("/auth/login", json=LOGIN, headers=SAME_ORIGIN)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    assert client.get("/me").json() == {"user": "alice"}
    assert client.post("/notes", headers=SAME_ORIGIN).json() == {"saved_for": "alice"}
    assert client.post("/notes", headers=CROSS_SITE).status_code == 403
    out = client.post("/auth/logout", headers={**SAME_ORIGIN, "Accept": "application/json"})
    assert out.json() == {"logged_out": True}
    assert client.get("/me").status_code == 401


def test_starlette(example: Any, tmp_path: Path) -> None:
    need("starlette")
    need("httpx")
    from starlette.testclient import TestClient

    module = example("examples.starlette_app")
    client = TestClient(
        module.create_app(module.make_flow(str(tmp_path / "s.db"))), follow_redirects=False
    )
    assert client.get("/").text == "hello, stranger"
    assert client.get("/account").status_code == 401
    bad = client.post("/auth/login", data={**LOGIN, "password": "no"}, headers=SAME_ORIGIN)
    assert (bad.status_code, bad.headers["location"]) == (303, "/login?error=login_failed")
    reply = client.post(
        "/auth/login", data={**LOGIN, "next": "https://evil.example/"}, headers=SAME_ORIGIN
    )
    assert (reply.status_code, reply.headers["location"]) == (303, "/account")
    assert client.get("/account").json()["user"] == "alice"
    assert client.get("/").text == "hello, alice"
    sessions = client.get("/auth/sessions").json()["sessions"]
    assert [s["current"] for s in sessions] == [True]


def test_flask(example: Any, tmp_path: Path) -> None:
    need("flask")
    module = example("examples.flask_app")
    client = module.create_app(module.make_flow(str(tmp_path / "s.db"))).test_client()
    assert client.get("/").text == "hello, stranger"
    assert client.get("/me").status_code == 401
    reply = client.post("/auth/login", data=LOGIN, headers=SAME_ORIGIN)
    assert (reply.status_code, reply.headers["Location"]) == (303, "/")
    assert client.get("/me").json == {"user": "alice"}
    assert client.post("/notes", headers=CROSS_SITE).status_code == 403
    assert client.post("/notes", headers=SAME_ORIGIN).json == {"saved_for": "alice"}
    client.post("/auth/logout", headers=SAME_ORIGIN)
    assert client.get("/me").status_code == 401


def test_django(example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("django")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    monkeypatch.setenv("TOKENFLOW_DB", str(tmp_path / "s.db"))
    import django
    from django.conf import settings
    from django.test import Client

    if not settings.configured:
        django.setup()
    auth = example("examples.django_app.auth")
    monkeypatch.setattr(settings, "TOKENFLOW_DB", str(tmp_path / "s.db"))
    monkeypatch.setattr(settings, "TOKENFLOW_DEV", True)
    auth.flow.cache_clear()
    client = Client(headers=SAME_ORIGIN)
    assert client.get("/").content == b"hello, stranger"
    assert client.get("/me").status_code == 401
    reply = client.post("/auth/login", LOGIN)
    assert (reply.status_code, reply["Location"]) == (303, "/me")
    assert reply["Cache-Control"] == "no-store"
    assert client.get("/me").json() == {"user": "alice"}
    attacker = Client(headers=CROSS_SITE)
    # The origin first: a cross-site login is 403 whatever its body lacks.
    assert attacker.post("/auth/login", {"username": "alice"}).status_code == 403
    assert attacker.post("/auth/login", {}).status_code == 403
    attacker.cookies = client.cookies
    assert attacker.post("/notes").status_code == 403
    assert client.post("/notes").json() == {"saved_for": "alice"}
    assert client.post("/auth/logout").status_code == 303
    assert client.get("/me").status_code == 401
