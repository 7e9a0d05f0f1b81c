"""The passkeys example (examples/passkeys_starlette.py) through Starlette's test client."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_add_a_passkey_then_sign_in_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from tokenflow.testing.passkeys import SoftAuthenticator

    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "example.db"))
    monkeypatch.setenv("TOKENFLOW_ACCESS_TTL", "30")
    monkeypatch.setenv("TOKENFLOW_DEV", "1")
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.passkeys_starlette", None)
    module = importlib.import_module("examples.passkeys_starlette")
    origin = module.ORIGIN
    headers = {"origin": origin, "sec-fetch-site": "same-origin", "accept": "application/json"}
    authenticator = SoftAuthenticator()
    with TestClient(module.app, base_url=origin) as client:
        assert b"tokenflowPasskeys" in client.get("/tokenflow-passkeys.js").content
        signed_in = client.post(
            "/auth/login",
            json={"username": "alice", "password": "wonderland-passphrase"},
            headers=headers,
        )
        assert signed_in.status_code == 200
        options = client.post("/auth/passkeys/register/options", json={}, headers=headers)
        created = authenticator.create(options.json(), origin)
        added = client.post("/auth/passkeys/register", json={"response": created}, headers=headers)
        assert added.status_code == 201
        assert client.post("/auth/logout", json={}, headers=headers).status_code == 200
        assert "not signed in" in client.get("/").text
        options = client.post("/auth/passkeys/login/options", json={}, headers=headers)
        assertion = authenticator.get(options.json(), origin)
        again = client.post("/auth/login", json={"passkey": assertion}, headers=headers)
        assert again.status_code == 200
        assert "signed in as alice" in client.get("/").text
        assert json.loads(json.dumps(again.json()))["user_id"] == "alice"
