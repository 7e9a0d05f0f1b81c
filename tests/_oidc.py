"""Test-only glue for the tokenflow.oidc suites: forged tokens and ready-made worlds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenflow import oidc
from tokenflow.testing.oidc import (
    AsyncFakeKeySetSource,
    FakeEndpoints,
    FakeKeySetSource,
    FakeProvider,
)

NOW = 1_700_000_000.0
CLIENT = "1234-app.apps.googleusercontent.com"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(document: Mapping[str, Any]) -> str:
    return b64(json.dumps(dict(document), separators=(",", ":")).encode())


def hmac_token(header: Mapping[str, Any], claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS256-style token forged by hand with ``secret`` (an attacker needs no library)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[
        header["alg"]
    ]
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    return f"{segment(header)}.{segment(claims)}."


@dataclass
class World:
    """A fake provider, the endpoints serving it, and a sync and an async verifier."""

    provider: FakeProvider
    endpoints: FakeEndpoints
    verifier: oidc.IdTokenVerifier
    averifier: oidc.AsyncIdTokenVerifier

    def token(self, now: float = NOW, **extra: Any) -> str:
        audience = extra.pop("audience", CLIENT)
        return self.provider.id_token(now, audience=audience, **extra)


def google_world(provider: FakeProvider | None = None, **options: Any) -> World:
    provider = provider or FakeProvider.google()
    endpoints = FakeEndpoints()
    endpoints.serve_provider(provider)
    verifier = oidc.google([CLIENT], source=FakeKeySetSource(endpoints), **options)
    averifier = oidc.async_google([CLIENT], source=AsyncFakeKeySetSource(endpoints), **options)
    return World(provider, endpoints, verifier, averifier)
