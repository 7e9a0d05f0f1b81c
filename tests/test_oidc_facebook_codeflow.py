"""Facebook Login's code flow: the dialog with state and PKCE, the code redeemed at
Graph's oauth/access_token with the app secret, the access token checked with
debug_token. Offline, with the fake Graph API."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import pytest

from tokenflow import (
    AuthorizationCodeCredentials,
    Flow,
    KeyRing,
    ProviderRedirect,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
    oidc,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.testing.oidc import (
    Answer,
    FakeEndpoints,
    FakeGraphAPI,
    FakeKeySetSource,
    json_answer,
)

TOKEN_URL = "https://graph.facebook.com/v19.0/oauth/access_token"
REDIRECT = "https://app.example/auth/oidc/facebook/callback"


class World:
    def __init__(self) -> None:
        self.graph = FakeGraphAPI()
        self.endpoints = FakeEndpoints()
        self.endpoints.serve_graph(self.graph)
        self.endpoints.serve(TOKEN_URL, self.token_endpoint)
        self.challenges: dict[str, str] = {}
        self.store = MemoryStore()
        verifier = oidc.facebook(
            self.graph.app_id, self.graph.app_secret, source=FakeKeySetSource(self.endpoints)
        )
        self.flow = Flow(
            KeyRing.generate(),
            self.store,
            FakeUserDirectory(allow_signup=True),
            external={"facebook": oidc.facebook_code_flow(verifier, redirect_uri=REDIRECT)},
        )

    def token_endpoint(self, params: Mapping[str, str]) -> Answer:
        challenge = self.challenges.pop(params.get("code", ""), None)
        verifier = params.get("code_verifier", "")
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            challenge is None
            or params.get("client_id") != self.graph.app_id
            or params.get("client_secret") != self.graph.app_secret
            or params.get("redirect_uri") != REDIRECT
            or computed.rstrip(b"=").decode() != challenge
        ):
            return json_answer({"error": {"code": 100, "type": "OAuthException"}}, status=400)
        token = self.graph.issue("fb-user-9", expires_at=int(time.time()) + 3600)
        return json_answer({"access_token": token, "token_type": "bearer", "expires_in": 3600})

    def consent(self, location: str, code: str = "fb-code-1") -> AuthorizationCodeCredentials:
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert location.startswith("https://www.facebook.com/v19.0/dialog/oauth?")
        assert query["redirect_uri"] == REDIRECT
        assert query["code_challenge_method"] == "S256"
        self.challenges[code] = query["code_challenge"]
        return AuthorizationCodeCredentials("facebook", code, query["state"])


def sign_in(world: World, code: str = "fb-code-1") -> object:
    redirect = world.flow.start_provider_login(Request("GET"), "facebook")
    assert isinstance(redirect, ProviderRedirect)
    credentials = world.consent(redirect.location, code)
    cookie = redirect.set_cookies[0].split(";", 1)[0]
    return world.flow.login(Request("GET", cookie_header=cookie, credentials=credentials))


def test_facebook_login_signs_in_with_the_graph_identity() -> None:
    world = World()
    decision = sign_in(world)
    assert isinstance(decision, Reissue), decision
    assert decision.user_id == "facebook:fb-user-9"


def test_a_refused_code_signs_nobody_in() -> None:
    world = World()
    world.endpoints.serve(TOKEN_URL, lambda params: json_answer({"error": {}}, status=400))
    assert isinstance(sign_in(world), Unauthorized)
    assert world.store.sessions_of("facebook:fb-user-9", now=time.time()) == []


@pytest.mark.parametrize("trouble", ["500", "hang", "redirect"])
def test_a_failing_token_endpoint_is_unavailable(trouble: str) -> None:
    world = World()
    if trouble == "500":
        world.endpoints.fail(TOKEN_URL, 500)
    elif trouble == "redirect":
        world.endpoints.redirect(TOKEN_URL, "https://elsewhere.example/")
    else:
        world.endpoints.unreachable(TOKEN_URL)
    assert isinstance(sign_in(world), Unavailable)
    assert world.store.sessions_of("facebook:fb-user-9", now=time.time()) == []
