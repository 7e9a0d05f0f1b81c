"""Every verification rule of tokenflow.oidc, one test (at least) each.

Tokens are minted by a fake Google and then bent one way; each test names the
rule it guards and fails if that rule is taken out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.jws import serialize_compact

from _oidc import CLIENT, NOW, World, b64, google_world, hmac_token, segment, unsigned_token
from tokenflow import ConfigError, oidc
from tokenflow.oidc import Rejected, RejectedReason
from tokenflow.ports import ExternalIdentity
from tokenflow.testing.oidc import (
    FakeEndpoints,
    FakeKeySetSource,
    FakeProvider,
    fake_key,
    sign_raw,
)


@pytest.fixture(scope="module")
def world() -> World:
    return google_world()


def reason(world: World, token: str, now: float = NOW, **kwargs: Any) -> RejectedReason | None:
    verdict = world.verifier.check(token, now=now, **kwargs)
    return verdict.reason if isinstance(verdict, Rejected) else None


def claims(world: World, **extra: Any) -> dict[str, Any]:
    return world.provider.claims(NOW, audience=CLIENT, **extra)


def test_a_genuine_token_verifies(world: World) -> None:
    identity = world.verifier.verify_token(world.token(), now=NOW)
    assert isinstance(identity, ExternalIdentity)
    assert identity.provider == "google"
    assert identity.issuer == "https://accounts.google.com"
    assert identity.subject == "10769150350006150715113082367"
    assert identity.email == "user@example.com"


# -- algorithms -------------------------------------------------------------------------


def test_alg_none_is_refused(world: World) -> None:
    token = unsigned_token({"alg": "none", "kid": world.provider.kid}, claims(world))
    assert reason(world, token) is RejectedReason.ALGORITHM
    assert world.verifier.verify_token(token, now=NOW) is None


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("form", ["pem", "jwk-json", "n-bytes"])
def test_hmac_keyed_with_the_public_key_is_refused(world: World, alg: str, form: str) -> None:
    """Algorithm confusion: HS* with the provider's public key as the secret."""
    public = world.provider.signing[-1]
    assert isinstance(public, RSAKey)
    if form == "pem":
        secret = public.as_pem(private=False)
    elif form == "jwk-json":
        secret = json.dumps(public.as_dict(private=False)).encode()
    else:
        secret = str(public.as_dict(private=False)["n"]).encode()
    token = hmac_token({"alg": alg, "kid": world.provider.kid}, claims(world), secret)
    assert reason(world, token) is RejectedReason.ALGORITHM


def test_alg_not_matching_the_key_type_is_refused(world: World) -> None:
    """ES256 is a public-key algorithm, but the key under this kid is RSA."""
    other = fake_key("rules-ec", "EC")
    header = {"alg": "ES256", "kid": world.provider.kid}
    token = sign_raw(header, json.dumps(claims(world)).encode(), other, "ES256")
    google = oidc.google(
        [CLIENT], source=FakeKeySetSource(world.endpoints)
    )  # RS256 pinned: refused before the key
    assert reason(World(world.provider, world.endpoints, google, world.averifier), token) is (
        RejectedReason.ALGORITHM
    )
    generic = oidc.oidc(
        "https://accounts.google.com",
        [CLIENT],
        algorithms=["RS256", "ES256"],
        jwks_url=world.provider.keys_url,
        source=FakeKeySetSource(world.endpoints),
    )
    verdict = generic.check(token, now=NOW)
    assert verdict == Rejected(RejectedReason.ALGORITHM)  # joserfc: ES256 needs an EC key


def test_alg_not_matching_the_keys_declared_alg_is_refused() -> None:
    provider = FakeProvider.generic("https://declared.example.com")
    endpoints = FakeEndpoints()
    jwks = provider.jwks()
    jwks["keys"][0]["alg"] = "RS512"  # the key is published for RS512 only
    endpoints.serve_json(provider.keys_url, jwks)
    endpoints.serve_json(provider.discovery_url or "", provider.discovery())
    verifier = oidc.oidc(
        provider.issuer,
        ["app"],
        algorithms=["RS256", "RS512"],
        source=FakeKeySetSource(endpoints),
    )
    token = provider.id_token(NOW, audience="app")  # signed RS256
    assert verifier.check(token, now=NOW) == Rejected(RejectedReason.ALGORITHM)


def test_only_public_key_algorithms_can_be_pinned() -> None:
    for refused in (["HS256"], ["none"], ["RS256", "HS512"], []):
        with pytest.raises(ConfigError):
            oidc.oidc("https://idp.example.com", ["app"], algorithms=refused)


def test_unknown_crit_header_is_refused(world: World) -> None:
    header = {"alg": "RS256", "kid": world.provider.kid, "crit": ["exp"], "exp": 1}
    assert reason(world, world.provider.sign(claims(world), header=header)) is (
        RejectedReason.CRITICAL_HEADER
    )


def test_unencoded_payload_option_is_refused(world: World) -> None:
    key = world.provider.signing[-1]
    header = {"alg": "RS256", "kid": world.provider.kid, "b64": True}
    token = sign_raw(header, json.dumps(claims(world)).encode(), key, "RS256")
    assert reason(world, token) is RejectedReason.CRITICAL_HEADER


def test_encrypted_tokens_are_refused(world: World) -> None:
    five = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d"
    assert reason(world, five) is RejectedReason.ENCRYPTED


def test_tokens_over_8_kib_are_refused(world: World) -> None:
    big = world.token(padding="x" * 8000)
    assert len(big) > 8192
    assert reason(world, big) is RejectedReason.TOO_LARGE
    small = world.token(padding="x" * 4000)
    assert reason(world, small) is None


@pytest.mark.parametrize("parameter", ["jku", "x5u", "jwk"])
def test_key_pointers_in_the_header_are_never_followed(world: World, parameter: str) -> None:
    attacker = fake_key("rules-attacker")
    assert isinstance(attacker, RSAKey)
    public = attacker.as_dict(private=False)
    attacker_url = "https://attacker.example/jwks.json"
    world.endpoints.serve_json(attacker_url, {"keys": [public]})
    pointer: Any = public if parameter == "jwk" else attacker_url
    header = {"alg": "RS256", "kid": attacker.kid, parameter: pointer}
    # An embedded RSA JWK makes the header longer than an ID token's bound (512 bytes).
    refused = RejectedReason.MALFORMED if parameter == "jwk" else None
    token = world.provider.sign(claims(world), key=attacker, header=header)
    assert reason(world, token) is (refused or RejectedReason.UNKNOWN_KEY)
    # Even under a kid the provider does publish, the attacker's key is not used.
    header["kid"] = world.provider.kid
    token = world.provider.sign(claims(world), key=attacker, header=header)
    assert reason(world, token) is (refused or RejectedReason.SIGNATURE)
    assert world.endpoints.hits(attacker_url) == 0


def test_header_that_is_not_an_object_is_malformed(world: World) -> None:
    body = segment(claims(world))
    for header in (b'["alg"]', b'"RS256"', b"{", b"null"):
        assert reason(world, f"{b64(header)}.{body}.AAAA") is RejectedReason.MALFORMED


def test_a_token_that_is_not_ascii_text_is_malformed(world: World) -> None:
    token = world.token()
    assert reason(world, token + "é") is RejectedReason.MALFORMED
    assert reason(world, token.encode()) is RejectedReason.MALFORMED  # type: ignore[arg-type]


# -- issuer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "issuer",
    [
        "https://accounts.google.com.evil",
        "https://accounts.google.com/",
        "https://accounts.google.com.",
        "https://accounts.google",
        "http://accounts.google.com",
        "https://ACCOUNTS.GOOGLE.COM",
        "evil.accounts.google.com",
        " https://accounts.google.com",
        "https://accounts.google.com\x00",
    ],
)
def test_look_alike_issuers_are_refused(world: World, issuer: str) -> None:
    assert reason(world, world.token(iss=issuer)) is RejectedReason.ISSUER


def test_list_valued_issuer_is_refused(world: World) -> None:
    token = world.token(iss=["https://accounts.google.com"])
    assert reason(world, token) is RejectedReason.ISSUER


def test_both_google_issuer_forms_verify(world: World) -> None:
    for issuer in ("https://accounts.google.com", "accounts.google.com"):
        identity = world.verifier.verify_token(world.token(iss=issuer), now=NOW)
        assert identity is not None
        assert identity.issuer == issuer


def test_missing_issuer_is_refused(world: World) -> None:
    assert reason(world, world.token(iss=None)) is RejectedReason.CLAIMS


# -- audience and authorized party -------------------------------------------------------------


def test_audience_must_hold_one_of_our_client_ids(world: World) -> None:
    assert reason(world, world.token(audience="someone-else")) is RejectedReason.AUDIENCE
    assert reason(world, world.token(aud=None)) is RejectedReason.CLAIMS
    assert reason(world, world.token(audience=[CLIENT], azp=None)) is None


def test_several_audiences_need_our_azp(world: World) -> None:
    both = [CLIENT, "other-client"]
    assert reason(world, world.token(audience=both, azp=CLIENT)) is None
    assert reason(world, world.token(audience=both, azp="other-client")) is (
        RejectedReason.AUTHORIZED_PARTY
    )
    assert reason(world, world.token(audience=both, azp=None)) is RejectedReason.AUTHORIZED_PARTY


def test_azp_is_not_required_with_one_audience(world: World) -> None:
    """Google tokens from Android apps name the Android client as azp."""
    assert reason(world, world.token(azp="android-client")) is None


# -- time --------------------------------------------------------------------------------------


def test_exp_and_iat_are_required(world: World) -> None:
    assert reason(world, world.token(exp=None)) is RejectedReason.CLAIMS
    assert reason(world, world.token(iat=None)) is RejectedReason.CLAIMS


def test_expiry_with_the_default_leeway_of_60_s(world: World) -> None:
    token = world.token(lifetime=3600)
    exp = NOW + 3600
    assert reason(world, token, now=exp + 59) is None
    assert reason(world, token, now=exp + 60) is RejectedReason.EXPIRED
    assert reason(world, token, now=exp + 600) is RejectedReason.EXPIRED


def test_nbf_is_honoured(world: World) -> None:
    token = world.token(nbf=int(NOW) + 600)
    assert reason(world, token) is RejectedReason.NOT_YET_VALID
    assert reason(world, token, now=NOW + 541) is None
    assert reason(world, world.token(nbf=int(NOW) + 60)) is None


def test_iat_in_the_future_past_the_leeway_is_refused(world: World) -> None:
    assert reason(world, world.token(iat=int(NOW) + 61)) is RejectedReason.ISSUED_IN_FUTURE
    assert reason(world, world.token(iat=int(NOW) + 60)) is None


@pytest.mark.parametrize("value", ["1700003600", True, None, float("nan"), [1]])
def test_non_numeric_times_are_refused(world: World, value: object) -> None:
    claims_ = claims(world)
    claims_["exp"] = value
    token = world.provider.sign({k: v for k, v in claims_.items() if v is not None})
    assert reason(world, token) in (RejectedReason.CLAIMS, RejectedReason.MALFORMED)


def test_leeway_is_configurable_up_to_300_s() -> None:
    strict = google_world(leeway=0)
    token = strict.token(lifetime=10)
    assert reason(strict, token, now=NOW + 10) is RejectedReason.EXPIRED
    lenient = google_world(leeway=300)
    assert reason(lenient, lenient.token(lifetime=10), now=NOW + 309) is None
    for bad in (301, -1, 1.5, "60"):
        with pytest.raises(ConfigError):
            oidc.google([CLIENT], leeway=bad)  # type: ignore[arg-type]


def test_a_bad_clock_is_the_hosts_bug(world: World) -> None:
    for now in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="now"):
            world.verifier.check(world.token(), now=now)


# -- nonce ------------------------------------------------------------------------------------


def test_nonce_raw_or_sha256(world: World) -> None:
    raw = "n-0S6_WzA2Mj"
    hashed = hashlib.sha256(raw.encode()).hexdigest()
    assert oidc.hashed_nonce(raw) == hashed
    assert reason(world, world.token(nonce=raw), nonce=raw) is None
    assert reason(world, world.token(nonce=hashed), nonce=raw) is None
    assert reason(world, world.token(nonce="other"), nonce=raw) is RejectedReason.NONCE
    assert reason(world, world.token(), nonce=raw) is RejectedReason.NONCE
    assert reason(world, world.token(nonce=hashed.upper()), nonce=raw) is RejectedReason.NONCE
    assert reason(world, world.token(nonce=raw)) is None  # no nonce asked for: not checked


def test_nonce_check_of_the_application() -> None:
    issued = {"abc"}

    def consume(nonce: str) -> bool:
        if nonce in issued:
            issued.discard(nonce)
            return True
        return False

    checked = google_world(nonce=consume)
    token = checked.token(nonce="abc")
    assert reason(checked, token) is None
    assert reason(checked, token) is RejectedReason.NONCE  # replayed: consumed
    assert reason(checked, checked.token()) is RejectedReason.NONCE  # no nonce at all


# -- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verified", "passed"),
    [
        (True, True),
        ("true", True),
        (False, False),
        ("false", False),
        ("True", False),
        (1, False),
        (None, False),
    ],
)
def test_email_only_when_verified(world: World, verified: object, passed: bool) -> None:
    identity = world.verifier.verify_token(world.token(email_verified=verified), now=NOW)
    assert identity is not None
    assert identity.email == ("user@example.com" if passed else None)
    assert identity.claims["email"] == "user@example.com"  # the claims are all there


def test_identity_is_issuer_and_subject(world: World) -> None:
    identity = world.verifier.verify_token(world.token(subject="abc"), now=NOW)
    assert identity is not None
    assert (identity.issuer, identity.subject) == ("https://accounts.google.com", "abc")
    for bad in ("", 42, None):
        assert reason(world, world.token(sub=bad)) is RejectedReason.CLAIMS


def test_payload_must_be_a_json_object(world: World) -> None:
    key = world.provider.signing[-1]
    header = {"alg": "RS256", "kid": world.provider.kid}
    for payload in (b"[1,2]", b"not json", b'"text"', b"\xff"):
        token = serialize_compact(header, payload, key, algorithms=["RS256"])
        assert reason(world, token) is RejectedReason.CLAIMS


def test_a_symmetric_key_in_the_key_set_is_never_used() -> None:
    provider = FakeProvider.generic("https://oct.example.com")
    endpoints = FakeEndpoints()
    secret = OctKey.generate_key(256, parameters={"kid": "shared"})
    jwks = provider.jwks()
    jwks["keys"].append(secret.as_dict(private=True))
    endpoints.serve_json(provider.keys_url, jwks)
    verifier = oidc.oidc(
        provider.issuer, ["app"], jwks_url=provider.keys_url, source=FakeKeySetSource(endpoints)
    )
    forged = hmac_token(
        {"alg": "HS256", "kid": "shared"},
        provider.claims(NOW, audience="app"),
        secret.get_op_key("sign"),
    )
    assert verifier.check(forged, now=NOW) == Rejected(RejectedReason.ALGORITHM)
    assert verifier.verify_token(provider.id_token(NOW, audience="app"), now=NOW) is not None
    snapshot = verifier._keys._state.snapshot
    assert snapshot is not None
    assert "shared" not in snapshot.by_kid  # never even imported
    # And should one reach the verifier, it is refused as a verification key.
    from tokenflow._jose import JWSRejected, JWSRejectedReason, parse_compact, verify_parsed

    parsed = parse_compact(forged, frozenset({"HS256"}))
    with pytest.raises(JWSRejected) as refused:
        verify_parsed(parsed, secret, frozenset({"HS256"}))
    assert refused.value.reason is JWSRejectedReason.ALGORITHM


def test_ec_provider_with_es256_pinned() -> None:
    provider = FakeProvider.generic("https://ec.example.com")
    provider.rotate("EC")
    endpoints = FakeEndpoints()
    endpoints.serve_provider(provider)
    verifier = oidc.oidc(
        provider.issuer, ["app"], algorithms=["ES256"], source=FakeKeySetSource(endpoints)
    )
    assert isinstance(provider.signing[-1], ECKey)
    assert verifier.verify_token(provider.id_token(NOW, audience="app"), now=NOW) is not None
    rs = oidc.oidc(provider.issuer, ["app"], source=FakeKeySetSource(endpoints))
    assert rs.check(provider.id_token(NOW, audience="app"), now=NOW) == Rejected(
        RejectedReason.ALGORITHM
    )


def test_an_embedded_jwk_small_enough_to_read_is_not_used_either() -> None:
    provider = FakeProvider.generic("https://embedded.example.com")
    endpoints = FakeEndpoints()
    endpoints.serve_provider(provider)
    verifier = oidc.oidc(
        provider.issuer, ["app"], algorithms=["RS256", "ES256"], source=FakeKeySetSource(endpoints)
    )
    attacker = fake_key("rules-embedded", "EC")
    body = json.dumps(provider.claims(NOW, audience="app")).encode()
    for kid, refused in ((attacker.kid, RejectedReason.UNKNOWN_KEY), (provider.kid, None)):
        header = {"alg": "ES256", "kid": kid, "jwk": attacker.as_dict(private=False)}
        verdict = verifier.check(sign_raw(header, body, attacker, "ES256"), now=NOW)
        # Under the provider's own kid the key there is RSA: joserfc refuses ES256 for it.
        assert verdict == Rejected(refused or RejectedReason.ALGORITHM)


def test_rules_without_any_issuer_refuse_everything(world: World) -> None:
    """joserfc skips a value check whose list is empty: tokenflow must not hand it one."""
    rules = oidc.TokenRules(
        provider="google", audiences=frozenset({CLIENT}), algorithms=frozenset({"RS256"})
    )
    parsed = rules.parse(world.token())
    assert not isinstance(parsed, Rejected)
    found = world.verifier._keys.find(parsed.kid, NOW)
    assert rules.finish(parsed, found, NOW) == Rejected(RejectedReason.ISSUER)
    with pytest.raises(ConfigError):
        oidc.TokenRules(provider="x", audiences=frozenset(), algorithms=frozenset({"RS256"}))
