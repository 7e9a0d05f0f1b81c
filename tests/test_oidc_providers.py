"""Each provider preset against tokens in that provider's shape, with its quirks."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from _oidc import NOW
from tokenflow import ConfigError, oidc
from tokenflow.oidc import ProviderUnavailable, Rejected, RejectedReason
from tokenflow.testing.oidc import (
    AsyncFakeKeySetSource,
    FakeEndpoints,
    FakeGraphAPI,
    FakeKeySetSource,
    FakeProvider,
    LoopbackServer,
)

TENANT_A = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_B = "9188040d-6c67-4c5b-b112-36a304b66dad"
OID = "00000000-0000-0000-66f3-3332eca7ea81"


def served(provider: FakeProvider) -> tuple[FakeEndpoints, FakeKeySetSource]:
    endpoints = FakeEndpoints()
    endpoints.serve_provider(provider)
    return endpoints, FakeKeySetSource(endpoints)


def why(verifier: Any, token: str, now: float = NOW) -> RejectedReason | None:
    verdict = verifier.check(token, now=now)
    return verdict.reason if isinstance(verdict, Rejected) else None


# -- Google --------------------------------------------------------------------------------------


def test_google_hosted_domain() -> None:
    provider = FakeProvider.google()
    endpoints, source = served(provider)
    verifier = oidc.google(["web"], hosted_domains=["example.com"], source=source)
    assert why(verifier, provider.id_token(NOW, audience="web", hd="example.com")) is None
    assert why(verifier, provider.id_token(NOW, audience="web", hd="evil.com")) is (
        RejectedReason.HOSTED_DOMAIN
    )
    assert why(verifier, provider.id_token(NOW, audience="web")) is RejectedReason.HOSTED_DOMAIN
    anyone = oidc.google(["web"], source=source)
    assert why(anyone, provider.id_token(NOW, audience="web")) is None
    assert endpoints.hits("https://www.googleapis.com/oauth2/v3/certs") == 2


# -- Apple ---------------------------------------------------------------------------------------


def test_apple_string_booleans_and_pinned_keys() -> None:
    provider = FakeProvider.apple()
    endpoints, source = served(provider)
    verifier = oidc.apple(["com.example.app"], source=source)
    identity = verifier.verify_token(provider.id_token(NOW, audience="com.example.app"), now=NOW)
    assert identity is not None
    assert identity.provider == "apple"
    assert identity.issuer == "https://appleid.apple.com"
    assert identity.email == "user@privaterelay.appleid.com"  # email_verified == "true"
    token = provider.id_token(NOW, audience="com.example.app", email_verified="false")
    assert verifier.verify_token(token, now=NOW).email is None  # type: ignore[union-attr]
    assert endpoints.hits("https://appleid.apple.com/auth/keys") == 1
    assert endpoints.total_hits() == 1  # no discovery document was asked for


# -- Facebook ------------------------------------------------------------------------------------


def test_facebook_limited_login_with_nonce() -> None:
    provider = FakeProvider.facebook()
    _, source = served(provider)
    verifier = oidc.facebook_limited_login(
        ["1234567890"], nonce=lambda n: n == "expected", source=source
    )
    token = provider.id_token(NOW, audience="1234567890", nonce="expected")
    identity = verifier.verify_token(token, now=NOW)
    assert identity is not None
    assert (identity.provider, identity.issuer) == ("facebook", "https://www.facebook.com")
    assert identity.email is None  # Facebook sends no email_verified
    assert why(verifier, provider.id_token(NOW, audience="1234567890", nonce="x")) is (
        RejectedReason.NONCE
    )
    assert why(verifier, provider.id_token(NOW, audience="999", nonce="expected")) is (
        RejectedReason.AUDIENCE
    )


def test_facebook_limited_login_asks_for_a_nonce_decision() -> None:
    with pytest.raises(TypeError):
        oidc.facebook_limited_login(["1234567890"])  # type: ignore[call-overload]


@pytest.fixture
def graph() -> tuple[FakeGraphAPI, FakeEndpoints]:
    api = FakeGraphAPI()
    endpoints = FakeEndpoints()
    endpoints.serve_graph(api)
    return api, endpoints


def test_facebook_classic_tokens_through_debug_token(
    graph: tuple[FakeGraphAPI, FakeEndpoints],
) -> None:
    api, endpoints = graph
    verifier = oidc.facebook(api.app_id, api.app_secret, source=FakeKeySetSource(endpoints))
    token = api.issue("10158", expires_at=int(NOW) + 3600)
    identity = verifier.verify_token(token, now=NOW)
    assert identity is not None
    assert (identity.provider, identity.subject) == ("facebook", "10158")
    assert identity.issuer == "https://www.facebook.com"  # the same as Limited Login's
    assert endpoints.hits("https://graph.facebook.com/v19.0/debug_token") == 1
    assert why(verifier, token, NOW + 3600) is RejectedReason.EXPIRED
    other_app = api.issue("10158", expires_at=int(NOW) + 3600, app_id="555")
    assert why(verifier, other_app) is RejectedReason.AUDIENCE
    page = api.issue("10158", expires_at=int(NOW) + 3600, kind="PAGE")
    assert why(verifier, page) is RejectedReason.TOKEN_USE
    api.revoke(token)
    assert why(verifier, token) is RejectedReason.INVALID
    assert why(verifier, "EAA" + "0" * 40) is RejectedReason.INVALID  # unknown to Graph
    assert why(verifier, "EAA" + "1" * 40) is RejectedReason.INVALID
    before = endpoints.total_hits()
    assert why(verifier, "short") is RejectedReason.MALFORMED
    assert why(verifier, "a b&c=d" * 5) is RejectedReason.MALFORMED
    assert endpoints.total_hits() == before  # refused without a network call


def test_facebook_classic_outages_raise(graph: tuple[FakeGraphAPI, FakeEndpoints]) -> None:
    api, endpoints = graph
    url = "https://graph.facebook.com/v19.0/debug_token"
    verifier = oidc.facebook(api.app_id, api.app_secret, source=FakeKeySetSource(endpoints))
    token = api.issue("10158", expires_at=int(NOW) + 3600)
    for trouble in (
        lambda: endpoints.fail(url, 500),
        lambda: endpoints.fail(url, 429),
        lambda: endpoints.fail(url, 200, b"<html>"),
        lambda: endpoints.unreachable(url),
    ):
        trouble()
        with pytest.raises(ProviderUnavailable):
            verifier.verify_token(token, now=NOW)
        endpoints.heal()
    # Graph's own faults and rate limits, answered as a 400 with their code.
    for code in (1, 2, 4, 17, 32, 341, 613):
        endpoints.fail(url, 400, b'{"error": {"code": %d, "type": "OAuthException"}}' % code)
        with pytest.raises(ProviderUnavailable, match=f"error {code}"):
            verifier.verify_token(token, now=NOW)
        endpoints.heal()
    for status in (401, 403):
        endpoints.fail(url, status, b"{}")
        with pytest.raises(ProviderUnavailable, match="app_secret"):
            verifier.verify_token(token, now=NOW)
        endpoints.heal()


def test_facebook_classic_invalid_token_answers_are_failed_logins(
    graph: tuple[FakeGraphAPI, FakeEndpoints],
) -> None:
    """Graph's 190 ("invalid OAuth access token") is the client's token refused,
    never a 503 that any client could cause at will."""
    api, endpoints = graph
    url = "https://graph.facebook.com/v19.0/debug_token"
    verifier = oidc.facebook(api.app_id, api.app_secret, source=FakeKeySetSource(endpoints))
    token = api.issue("10158", expires_at=int(NOW) + 3600)
    for body in (
        b'{"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", '
        b'"code": 190}}',
        b'{"error": {"code": 190, "error_subcode": 463}}',
        b'{"error": {"code": 100}}',
        b"not json",
    ):
        endpoints.fail(url, 400, body)
        assert why(verifier, token) is RejectedReason.INVALID
        endpoints.heal()
    # 190 cannot say whose token it refused: a wrong app secret reads as refusals too.
    wrong_secret = oidc.facebook(api.app_id, "f" * 32, source=FakeKeySetSource(endpoints))
    assert wrong_secret.verify_token(token, now=NOW) is None


def test_facebook_classic_over_real_http(graph: tuple[FakeGraphAPI, FakeEndpoints]) -> None:
    api, endpoints = graph
    token = api.issue("42", expires_at=int(NOW) + 60)
    with LoopbackServer(endpoints) as server:
        source = server.source(timeout=1.0)
        verifier = oidc.facebook(api.app_id, api.app_secret, source=source)
        assert verifier.verify_token(token, now=NOW) is not None
        assert verifier.verify_token("EAA" + "2" * 40, now=NOW) is None
        endpoints.hang("https://graph.facebook.com/v19.0/debug_token")
        with pytest.raises(ProviderUnavailable) as raised:
            verifier.verify_token(token, now=NOW)
        assert api.app_secret not in str(raised.value)
        assert token not in str(raised.value)
        source.close()


def test_facebook_classic_secret_stays_out_of_reprs() -> None:
    secret = "0123456789abcdef0123456789abcdef"
    verifier = oidc.facebook("1234567890", secret)
    assert secret not in repr(verifier)
    assert secret not in repr(verifier.rules)
    with pytest.raises(ConfigError):
        oidc.facebook("my-app", secret)
    with pytest.raises(ConfigError):
        oidc.facebook("1234567890", "not a secret")


# -- AWS Cognito ---------------------------------------------------------------------------------


def test_cognito_id_and_access_tokens() -> None:
    ids = FakeProvider.cognito()
    access = FakeProvider.cognito(access=True)
    access.signing, access.published = ids.signing, ids.published  # one pool, one key set
    _, source = served(ids)
    id_verifier = oidc.cognito("eu-west-1", "eu-west-1_Example1", ["client"], source=source)
    at_verifier = oidc.cognito(
        "eu-west-1", "eu-west-1_Example1", ["client"], token_use="access", source=source
    )
    id_token = ids.id_token(NOW, audience="client")
    access_token = access.id_token(NOW, audience="client")
    assert id_verifier.verify_token(id_token, now=NOW) is not None
    assert at_verifier.verify_token(access_token, now=NOW) is not None
    assert why(id_verifier, access_token) is RejectedReason.CLAIMS  # no aud
    assert why(id_verifier, ids.id_token(NOW, audience="client", token_use="access")) is (
        RejectedReason.TOKEN_USE
    )
    assert why(at_verifier, id_token) is RejectedReason.AUDIENCE  # no client_id
    assert why(at_verifier, access.id_token(NOW, audience="other")) is RejectedReason.AUDIENCE
    assert why(at_verifier, access.id_token(NOW, audience=["client"])) is RejectedReason.AUDIENCE
    other_pool = ids.id_token(
        NOW, audience="client", iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"
    )
    assert why(id_verifier, other_pool) is RejectedReason.ISSUER


@pytest.mark.parametrize(
    ("region", "pool"),
    [("eu-west-1", "us-east-1_Abc"), ("Europe", "Europe_Abc"), ("eu-west-1", "eu-west-1_")],
)
def test_cognito_configuration_is_checked(region: str, pool: str) -> None:
    with pytest.raises(ConfigError):
        oidc.cognito(region, pool, ["client"])


# -- Okta ----------------------------------------------------------------------------------------


def test_okta_org_and_custom_servers() -> None:
    org = FakeProvider.okta()
    custom = FakeProvider.okta(server="default")
    endpoints = FakeEndpoints()
    endpoints.serve_provider(org)
    endpoints.serve_provider(custom)
    source = FakeKeySetSource(endpoints)
    org_verifier = oidc.okta("example.okta.com", ["client"], source=source)
    custom_verifier = oidc.okta(
        "example.okta.com", ["client"], authorization_server="default", source=source
    )
    assert org_verifier.verify_token(org.id_token(NOW, audience="client"), now=NOW) is not None
    assert (
        custom_verifier.verify_token(custom.id_token(NOW, audience="client"), now=NOW) is not None
    )
    # Each server signs with its own keys under its own issuer.
    assert why(org_verifier, custom.id_token(NOW, audience="client")) is RejectedReason.UNKNOWN_KEY
    forged = org.id_token(NOW, audience="client", iss=custom.issuer)
    assert why(org_verifier, forged) is RejectedReason.ISSUER
    assert endpoints.hits("https://example.okta.com/oauth2/v1/keys") == 1
    assert endpoints.hits("https://example.okta.com/oauth2/default/v1/keys") == 1


def test_okta_access_tokens_only_from_custom_servers() -> None:
    with pytest.raises(ConfigError, match="custom authorization server"):
        oidc.okta("example.okta.com", ["client"], token_use="access", audiences=["api://x"])
    access = FakeProvider.okta(server="default", access=True)
    _, source = served(access)
    verifier = oidc.okta(
        "example.okta.com",
        ["client"],
        authorization_server="default",
        token_use="access",
        audiences=["api://default"],
        source=source,
    )
    assert (
        verifier.verify_token(access.id_token(NOW, audience="api://default"), now=NOW) is not None
    )
    assert why(verifier, access.id_token(NOW, audience="api://other")) is RejectedReason.AUDIENCE
    assert why(verifier, access.id_token(NOW, audience="api://default", cid="x")) is (
        RejectedReason.AUDIENCE
    )
    with pytest.raises(ConfigError):
        oidc.okta("https://example.okta.com", ["client"])


# -- JumpCloud -----------------------------------------------------------------------------------


def test_jumpcloud_issuer_comes_verbatim_from_discovery() -> None:
    provider = FakeProvider.jumpcloud()
    endpoints, source = served(provider)
    verifier = oidc.jumpcloud(["client"], source=source)
    identity = verifier.verify_token(provider.id_token(NOW, audience="client"), now=NOW)
    assert identity is not None
    assert identity.issuer == "https://oauth.id.jumpcloud.com/"  # trailing slash kept
    no_slash = provider.id_token(NOW, audience="client", iss="https://oauth.id.jumpcloud.com")
    assert why(verifier, no_slash) is RejectedReason.ISSUER
    assert endpoints.hits(provider.discovery_url or "") == 1


def test_jumpcloud_discovery_naming_another_origin_is_an_outage() -> None:
    provider = FakeProvider.jumpcloud()
    endpoints, source = served(provider)
    document = provider.discovery()
    document["issuer"] = "https://evil.example/"
    endpoints.serve_json(provider.discovery_url or "", document)
    verifier = oidc.jumpcloud(["client"], source=source)
    with pytest.raises(ProviderUnavailable, match="another origin"):
        verifier.verify_token(provider.id_token(NOW, audience="client"), now=NOW)


# -- Microsoft Entra ID --------------------------------------------------------------------------


def test_entra_id_tenant_allow_list() -> None:
    provider = FakeProvider.entra_id()
    _, source = served(provider)
    verifier = oidc.entra_id(["app-id"], tenants=[TENANT_A], source=source)
    token = provider.id_token(NOW, audience="app-id", tid=TENANT_A, oid=OID)
    identity = verifier.verify_token(token, now=NOW)
    assert identity is not None
    assert identity.subject == OID
    assert identity.issuer == f"https://login.microsoftonline.com/{TENANT_A}/v2.0"
    assert identity.email is None  # Entra ID sends no email_verified
    foreign = provider.id_token(NOW, audience="app-id", tid=TENANT_B)
    assert why(verifier, foreign) is RejectedReason.TENANT
    assert why(verifier, provider.id_token(NOW, audience="app-id", tid="common")) is (
        RejectedReason.TENANT
    )
    assert why(verifier, provider.id_token(NOW, audience="app-id", tid=TENANT_A.upper())) is (
        RejectedReason.TENANT
    )
    # tid on the list, but the token was issued by another tenant.
    mixed = provider.id_token(
        NOW,
        audience="app-id",
        tid=TENANT_A,
        iss=f"https://login.microsoftonline.com/{TENANT_B}/v2.0",
    )
    both = oidc.entra_id(["app-id"], tenants=[TENANT_A, TENANT_B.upper()], source=source)
    assert why(both, mixed) is RejectedReason.ISSUER
    assert why(both, foreign) is None
    assert why(verifier, provider.id_token(NOW, audience="app-id", oid="not-a-guid")) is (
        RejectedReason.CLAIMS
    )


@pytest.mark.parametrize("tenants", [[], (), TENANT_A, ["common"], ["organizations", TENANT_A]])
def test_entra_id_needs_a_list_of_tenant_guids(tenants: Any) -> None:
    with pytest.raises(ConfigError):
        oidc.entra_id(["app-id"], tenants=tenants)


# -- any OIDC issuer -----------------------------------------------------------------------------


def test_generic_oidc_discovery_issuer_must_match_exactly() -> None:
    provider = FakeProvider.generic("https://idp.example.com")
    _, source = served(provider)
    verifier = oidc.oidc("https://idp.example.com", ["app"], source=source)
    assert verifier.verify_token(provider.id_token(NOW, audience="app"), now=NOW) is not None
    slashed = oidc.oidc("https://idp.example.com/", ["app"], source=source)
    with pytest.raises(ProviderUnavailable, match="names issuer"):
        slashed.verify_token(provider.id_token(NOW, audience="app"), now=NOW)


def test_generic_oidc_refuses_plain_http_key_urls() -> None:
    provider = FakeProvider.generic("https://idp.example.com")
    endpoints, source = served(provider)
    document = provider.discovery()
    document["jwks_uri"] = "http://idp.example.com/keys"
    endpoints.serve_json(provider.discovery_url or "", document)
    verifier = oidc.oidc(provider.issuer, ["app"], source=source)
    with pytest.raises(ProviderUnavailable, match="https"):
        verifier.verify_token(provider.id_token(NOW, audience="app"), now=NOW)
    assert endpoints.hits("http://idp.example.com/keys") == 0
    for issuer in ("http://idp.example.com", "ftp://idp.example.com", "https://u:p@idp.example"):
        with pytest.raises(ConfigError):
            oidc.oidc(issuer, ["app"])


@pytest.mark.parametrize(
    "build",
    [
        lambda: oidc.google([]),
        lambda: oidc.google("one-client-id"),
        lambda: oidc.google([""]),
        lambda: oidc.apple([" padded "]),
        lambda: oidc.google(["x"], hosted_domains=[]),
        lambda: oidc.async_google(["x"], source=FakeKeySetSource(FakeEndpoints())),  # type: ignore[arg-type]
        lambda: oidc.google(["x"], source=AsyncFakeKeySetSource(FakeEndpoints())),  # type: ignore[arg-type]
        lambda: oidc.async_facebook("app", "secret", source=FakeKeySetSource(FakeEndpoints())),  # type: ignore[arg-type]
        lambda: oidc.facebook("app", "secret", source=AsyncFakeKeySetSource(FakeEndpoints())),  # type: ignore[arg-type]
        lambda: oidc.okta("example.okta.com", ["c"], audiences=["api://x"]),
        lambda: oidc.oidc("https://idp.example.com", ["app"], provider=""),
    ],
)
def test_misconfiguration_raises_at_construction(build: Any) -> None:
    with pytest.raises(ConfigError):
        build()


PRESETS = [
    "apple",
    "cognito",
    "entra_id",
    "facebook",
    "facebook_limited_login",
    "google",
    "jumpcloud",
    "oidc",
    "okta",
]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_has_an_async_twin_with_the_same_parameters(name: str) -> None:
    sync, asynchronous = getattr(oidc, name), getattr(oidc, f"async_{name}")
    assert list(inspect.signature(sync).parameters) == list(
        inspect.signature(asynchronous).parameters
    )
    assert "asynchronous" not in inspect.signature(sync).parameters
    assert f"async_{name}" in oidc.__all__


def test_verifier_reprs_name_the_provider_only() -> None:
    verifier = oidc.google(["web"])
    assert repr(verifier) == "IdTokenVerifier('google', audiences=['web'])"
    averifier = oidc.async_google(["web"])
    assert repr(averifier) == "AsyncIdTokenVerifier('google', audiences=['web'])"
