"""DBSC header parsing, sealed challenges and the proof verifier, under Hypothesis."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("joserfc")

from cryptography.hazmat.primitives.asymmetric import ec

from tokenflow import KeyRing
from tokenflow._dbsc import (
    ChallengeVerdict,
    DeviceBinding,
    challenge_header,
    open_challenge,
    parse_session_id_header,
    parse_session_response_header,
    registration_header,
    seal_challenge,
)
from tokenflow._keyring import Key
from tokenflow.dbsc import DbscProofVerifier, canonical_jwk
from tokenflow.events import ProofFailure
from tokenflow.testing.dbsc import public_jwk, sign_proof

TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=300)
params = st.lists(
    st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), tokens), max_size=3
).map(lambda ps: "".join(f';{k}="{v}"' for k, v in ps))
spaces = st.sampled_from(["", " ", "  ", "\t"])
T0 = 1_700_000_000
WINDOW = 120


@given(st.text(max_size=500))
def test_parsers_never_raise_and_return_only_token_characters(value: str) -> None:
    for parse in (parse_session_response_header, parse_session_id_header):
        parsed = parse(value)
        assert parsed is None or (parsed and set(parsed) <= set(TOKEN_CHARS + "~"))


@given(tokens, params, st.booleans(), spaces, spaces)
def test_quoted_and_bare_forms_give_the_same_token(
    token: str, tail: str, quoted: bool, before: str, after: str
) -> None:
    value = f"{before}{f'{chr(34)}{token}{chr(34)}' if quoted else token}{tail}{after}"
    assert parse_session_response_header(value) == token
    assert parse_session_id_header(value) == token


@pytest.mark.parametrize(
    "value",
    [None, "", '"', '""', '"abc', '"abc"x', "a b", "a,b", '"a b"', "a\x00", "é", b"abc"],
)
def test_malformed_header_values_are_refused(value: object) -> None:
    assert parse_session_response_header(value) is None
    assert parse_session_id_header(value) is None


def test_oversized_proof_header_is_refused() -> None:
    assert parse_session_response_header("a" * 8193) is None
    assert parse_session_response_header("a" * 8192) == "a" * 8192


def test_headers_render_as_structured_fields() -> None:
    binding = DeviceBinding(algorithms=("ES256",), registration_path="/r")
    assert registration_header(binding, "c.k.m") == '(ES256);path="/r";challenge="c.k.m"'
    assert challenge_header("c.k.m", "sid") == '"c.k.m";id="sid"'


ring = KeyRing.generate()


@given(st.text(max_size=200), st.text(max_size=40))
def test_open_challenge_never_raises_and_refuses_garbage(text: str, sid: str) -> None:
    verdict = open_challenge(ring, sid, text, T0, window=WINDOW, leeway=5)
    assert verdict is ChallengeVerdict.INVALID


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=WINDOW))
def test_sealed_challenge_opens_for_its_session_inside_the_window(sid: str, age: int) -> None:
    challenge = seal_challenge(ring, sid, T0)
    assert open_challenge(ring, sid, challenge, T0 + age, window=WINDOW, leeway=5) is (
        ChallengeVerdict.VALID
    )
    assert open_challenge(ring, sid + "x", challenge, T0, window=WINDOW, leeway=5) is (
        ChallengeVerdict.INVALID
    )


def test_registration_and_refresh_challenges_never_pass_for_each_other() -> None:
    register = seal_challenge(ring, "s", T0, purpose="register")
    refresh = seal_challenge(ring, "s", T0)
    assert register != refresh
    for challenge, wrong in ((register, "refresh"), (refresh, "register")):
        verdict = open_challenge(ring, "s", challenge, T0, window=WINDOW, leeway=5, purpose=wrong)
        assert verdict is ChallengeVerdict.INVALID


@given(st.integers(min_value=WINDOW + 1, max_value=10**6))
def test_old_or_future_challenges_are_stale(age: int) -> None:
    challenge = seal_challenge(ring, "s", T0)
    assert open_challenge(ring, "s", challenge, T0 + age, window=WINDOW, leeway=5) is (
        ChallengeVerdict.STALE
    )
    assert open_challenge(ring, "s", challenge, T0 - 6, window=WINDOW, leeway=5) is (
        ChallengeVerdict.STALE
    )


@given(st.data())
def test_any_change_to_a_challenge_is_refused(data: st.DataObject) -> None:
    challenge = seal_challenge(ring, "s", T0)
    i = data.draw(st.integers(min_value=0, max_value=len(challenge) - 1))
    c = data.draw(st.sampled_from(TOKEN_CHARS).filter(lambda ch: ch != challenge[i]))
    changed = challenge[:i] + c + challenge[i + 1 :]
    verdict = open_challenge(ring, "s", changed, T0, window=10**9, leeway=5)
    assert verdict is ChallengeVerdict.INVALID


def test_challenges_survive_key_rotation_and_die_with_their_key() -> None:
    old = KeyRing.generate()
    challenge = seal_challenge(old, "s", T0)
    rotated = old.rotated(Key.generate())
    assert open_challenge(rotated, "s", challenge, T0, window=WINDOW, leeway=5) is (
        ChallengeVerdict.VALID
    )
    assert seal_challenge(rotated, "s", T0) != challenge
    assert open_challenge(
        rotated.without(old.active.kid), "s", challenge, T0, window=WINDOW, leeway=5
    ) is (ChallengeVerdict.INVALID)
    # The challenge MAC key is not the token key: another ring's challenge never opens.
    assert open_challenge(KeyRing.generate(), "s", challenge, T0, window=WINDOW, leeway=5) is (
        ChallengeVerdict.INVALID
    )


verifier = DbscProofVerifier()
ES = frozenset({"ES256"})
device = ec.generate_private_key(ec.SECP256R1())
stored = canonical_jwk(public_jwk(device), "ES256")


@given(st.text(max_size=400))
def test_verifier_refuses_garbage_without_raising(token: str) -> None:
    assert isinstance(verifier.verify(token, key=None, algorithms=ES), ProofFailure)
    assert isinstance(verifier.verify(token, key=stored, algorithms=ES), ProofFailure)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_verifier_rules() -> None:
    assert stored is not None
    good = sign_proof(device, {"jti": "c"}, with_jwk=True)
    proof = verifier.verify(good, key=None, algorithms=ES)
    assert not isinstance(proof, ProofFailure)
    assert proof.key == stored
    assert proof.challenge == "c"
    assert proof.audience is None
    refresh = sign_proof(device, {"jti": "c2"}, with_jwk=False)
    again = verifier.verify(refresh, key=stored, algorithms=ES)
    assert not isinstance(again, ProofFailure)
    assert again.challenge == "c2"
    # alg none, unsigned: refused before any key is looked at.
    unsigned = _b64({"alg": "none", "typ": "dbsc+jwt", "jwk": public_jwk(device)}) + "."
    unsigned += _b64({"jti": "c"}) + "."
    assert verifier.verify(unsigned, key=None, algorithms=ES) is ProofFailure.ALGORITHM
    # RS256 not offered.
    assert verifier.verify(good, key=None, algorithms=frozenset({"RS256"})) is (
        ProofFailure.ALGORITHM
    )
    # A private key in the jwk header is no public key.
    private = dict(public_jwk(device), d="AAAA")
    assert (
        verifier.verify(
            sign_proof(device, {"jti": "c"}, with_jwk=True, header={"jwk": private}),
            key=None,
            algorithms=ES,
        )
        is ProofFailure.KEY
    )
    # A jwk header on a refresh proof is refused, even naming the stored key.
    assert verifier.verify(good, key=stored, algorithms=ES) is ProofFailure.KEY
    # Payload rules.
    for payload in ({}, {"jti": 1}, {"jti": "c", "aud": 3}):
        token = sign_proof(device, payload, with_jwk=True)
        assert verifier.verify(token, key=None, algorithms=ES) is ProofFailure.MALFORMED
    # A point off the curve is refused.
    off = dict(public_jwk(device), y=public_jwk(device)["x"])
    assert (
        verifier.verify(
            sign_proof(device, {"jti": "c"}, with_jwk=True, header={"jwk": off}),
            key=None,
            algorithms=ES,
        )
        is ProofFailure.KEY
    )
