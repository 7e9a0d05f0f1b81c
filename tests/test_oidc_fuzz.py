"""Hypothesis over the verifiers: tampering always fails, garbage never raises, and the
sync and async faces give the same verdict on every generated input."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oidc import CLIENT, NOW, World, b64, google_world
from tokenflow.oidc import ProviderUnavailable, Rejected
from tokenflow.ports import ExternalIdentity

EXAMPLES = int(os.environ.get("TOKENFLOW_OIDC_EXAMPLES", "150"))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Generating nested JSON and free text costs more than verifying: fewer examples.
light = settings(fuzz, max_examples=max(10, EXAMPLES // 3))


@pytest.fixture(scope="module")
def world() -> World:
    return google_world()


@pytest.fixture(scope="module")
def genuine(world: World) -> str:
    return world.token()


@fuzz
@given(data=st.data())
def test_any_single_character_change_is_refused(
    world: World, genuine: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(genuine) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != genuine[position]))
    tampered = genuine[:position] + replacement + genuine[position + 1 :]
    verdict = world.verifier.check(tampered, now=NOW)
    assert isinstance(verdict, Rejected)


@fuzz
@given(data=st.data())
def test_any_deletion_or_insertion_is_refused(
    world: World, genuine: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(genuine)))
    if data.draw(st.booleans()) and position < len(genuine):
        tampered = genuine[:position] + genuine[position + 1 :]
    else:
        tampered = genuine[:position] + data.draw(st.sampled_from(ALPHABET)) + genuine[position:]
    assert isinstance(world.verifier.check(tampered, now=NOW), Rejected)


segments = st.lists(st.text(alphabet=ALPHABET[:-1], max_size=40), min_size=1, max_size=6)


@light
@given(text=st.text(max_size=200) | segments.map(".".join))
def test_garbage_is_refused_never_raised(world: World, text: str) -> None:
    assert isinstance(world.verifier.check(text, now=NOW), Rejected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@light
@given(
    header=st.dictionaries(
        st.sampled_from(["typ", "cty", "x5t", "zip", "kid", "alg"]), json_values
    ),
    body=st.dictionaries(
        st.sampled_from(
            ["iss", "aud", "exp", "iat", "nbf", "sub", "azp", "email", "email_verified"]
        ),
        json_values,
    ),
)
def test_signed_but_arbitrary_headers_and_claims_never_raise(
    world: World, header: dict[str, Any], body: dict[str, Any]
) -> None:
    """Signed with the genuine key, so only the header and claim rules stand in the way."""
    key = world.provider.signing[-1]
    protected = {"alg": "RS256", "kid": world.provider.kid, **header}
    token = f"{b64(json.dumps(protected).encode())}.{b64(json.dumps(body).encode())}"
    from joserfc.jws import JWSRegistry

    registry = JWSRegistry(algorithms=["RS256"])
    alg = registry.algorithms["RS256"]
    signature = alg.sign(token.encode(), key)
    verdict = world.verifier.check(f"{token}.{b64(signature)}", now=NOW)
    assert isinstance(verdict, (Rejected, ExternalIdentity))
    if isinstance(verdict, ExternalIdentity):
        assert verdict.claims["iss"] in ("https://accounts.google.com", "accounts.google.com")
        assert body.get("aud") == CLIENT or CLIENT in body.get("aud", [])


# -- sync and async: one logic ----------------------------------------------------------------

variation = st.fixed_dictionaries(
    {
        "iss": st.sampled_from(
            ["https://accounts.google.com", "accounts.google.com", "https://accounts.google.com/"]
        ),
        "aud": st.sampled_from([CLIENT, [CLIENT], [CLIENT, "x"], "other"]),
        "azp": st.sampled_from([CLIENT, "x", None]),
        "lifetime": st.integers(-600, 7200),
        "iat_shift": st.integers(-120, 120),
        "email_verified": st.sampled_from([True, False, "true", "false", None]),
        "kid": st.sampled_from(["genuine", "unknown", None]),
        "tamper": st.integers(-1, 400),
        "now_shift": st.integers(-100, 100_000),
    }
)


def _make(world: World, v: dict[str, Any]) -> tuple[str, float]:
    claims = world.provider.claims(NOW, audience=v["aud"], lifetime=v["lifetime"])
    claims.update(iss=v["iss"], azp=v["azp"], email_verified=v["email_verified"])
    claims["iat"] = int(NOW) + v["iat_shift"]
    header: dict[str, Any] = {}
    if v["kid"] == "unknown":
        header["kid"] = "unknown-kid"
    token = world.provider.sign({k: x for k, x in claims.items() if x is not None}, header=header)
    if v["tamper"] >= 0:
        i = v["tamper"] % len(token)
        token = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    return token, NOW + v["now_shift"]


@pytest.fixture(scope="module")
def pair() -> World:
    world = google_world()
    world.endpoints.cache_control["https://www.googleapis.com/oauth2/v3/certs"] = "max-age=3000"
    return world


@pytest.fixture(scope="module")
def loop() -> Any:
    running = asyncio.new_event_loop()
    yield running
    running.close()


def _outcome(run: Any) -> object:
    try:
        return run()
    except ProviderUnavailable as exc:
        return ("raised", str(exc))


@fuzz
@given(v=variation, outage=st.booleans())
def test_sync_and_async_verifiers_agree(
    pair: World, loop: Any, v: dict[str, Any], outage: bool
) -> None:
    token, now = _make(pair, v)
    url = "https://www.googleapis.com/oauth2/v3/certs"
    if outage:
        pair.endpoints.fail(url, 500)
    try:
        sync = _outcome(lambda: pair.verifier.check(token, now=now))
        async_ = _outcome(lambda: loop.run_until_complete(pair.averifier.check(token, now=now)))
    finally:
        pair.endpoints.heal()
    assert sync == async_
    assert pair.verifier.key_set_fetches == pair.averifier.key_set_fetches
