"""Published JWS examples (RFC 7515 appendix A, RFC 7520 section 4) through tokenflow's
joserfc-backed verification: each verifies, and every single-byte change is refused.

The examples predate ID tokens (no ``aud``, no ``iat``, an ``exp`` in 2011), so
only here the claim rules are left out: :func:`verify_compact` checks the
header pre-checks and the signature. One test then shows the full rules
refusing the RFC 7515 claim set for what it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import JWKRegistry, Key

from tokenflow._jose import JWSRejected, parse_compact, verify_compact
from tokenflow.oidc import Rejected, RejectedReason, TokenRules
from tokenflow.oidc._keys import Found

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "oidc_jws.json").read_text(encoding="utf-8")
)["vectors"]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def key_of(vector: dict[str, Any]) -> Key:
    return JWKRegistry.import_key(vector["key"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_examples_verify(vector: dict[str, Any]) -> None:
    key = key_of(vector)
    verified = verify_compact(vector["token"], lambda _header: key, [vector["alg"]])
    assert verified.header["alg"] == vector["alg"]
    if "claims" in vector:
        assert json.loads(verified.payload) == vector["claims"]
    else:
        assert verified.payload.decode().startswith("It\u2019s a dangerous business, Frodo")


def mutations(token: str) -> list[str]:
    """Every position changed to two other characters, and each
    dot removed."""
    out = []
    for i, char in enumerate(token):
        if char == ".":
            out.append(token[:i] + token[i + 1 :])
            continue
        at = ALPHABET.index(char)
        for step in (1, 33):
            out.append(token[:i] + ALPHABET[(at + step) % 64] + token[i + 1 :])
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_single_byte_mutation_is_refused(vector: dict[str, Any]) -> None:
    key = key_of(vector)
    refused = 0
    for mutated in mutations(vector["token"]):
        with pytest.raises(JWSRejected):
            verify_compact(mutated, lambda _header: key, [vector["alg"]])
        refused += 1
    assert refused >= 2 * (len(vector["token"]) - 2)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_examples_fail_under_another_pinned_algorithm(vector: dict[str, Any]) -> None:
    key = key_of(vector)
    other = "ES256" if vector["alg"] != "ES256" else "RS256"
    with pytest.raises(JWSRejected):
        verify_compact(vector["token"], lambda _header: key, [other])


def test_full_rules_refuse_the_rfc_7515_claims_for_what_they_lack() -> None:
    vector = VECTORS[0]
    rules = TokenRules(
        provider="rfc",
        audiences=frozenset({"anyone"}),
        algorithms=frozenset({"RS256"}),
        issuers=frozenset({"joe"}),
    )
    parsed = parse_compact(vector["token"], rules.algorithms)
    verdict = rules.finish(parsed, Found((key_of(vector),), None), 1300819000.0)
    assert verdict == Rejected(RejectedReason.CLAIMS)  # no aud, no iat
