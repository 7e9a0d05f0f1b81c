"""DBSC header parsing, sealed challenges and the proof verifier, under Hypothesis."""

from __future__ import annotations

import base64
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("joserfc")

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc.jwk import ECKey

from tokenflow import KeyRing
from tokenflow._dbsc import (
    ChallengeVerdict,
    DeviceBinding,
    _mac,
    _subkey,
    challenge_header,
    open_challenge,
    parse_session_id_header,
    parse_session_response_header,
    registration_header,
    seal_challenge,
)
from tokenflow._jose import (
    MAX_KEY_HEADER_BYTES,
    JWSRejected,
    JWSRejectedReason,
    _der_signature,
    parse_compact,
    verify_held_key,
    verify_parsed,
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
TOK = bytes(range(32))
"""The verifier of the refresh token a challenge is for."""


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
    verdict = open_challenge(ring, sid, TOK, text, T0, window=WINDOW, leeway=5)
    assert verdict.verdict is ChallengeVerdict.INVALID


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=WINDOW))
def test_sealed_challenge_opens_for_its_session_inside_the_window(sid: str, age: int) -> None:
    challenge = seal_challenge(ring, sid, TOK, T0)
    assert open_challenge(ring, sid, TOK, challenge, T0 + age, window=WINDOW, leeway=5).verdict is (
        ChallengeVerdict.VALID
    )
    assert open_challenge(ring, sid + "x", TOK, challenge, T0, window=WINDOW, leeway=5).verdict is (
        ChallengeVerdict.INVALID
    )


def test_registration_and_refresh_challenges_never_pass_for_each_other() -> None:
    register = seal_challenge(ring, "s", TOK, T0, purpose="register")
    refresh = seal_challenge(ring, "s", TOK, T0)
    assert register != refresh
    for challenge, wrong in ((register, "refresh"), (refresh, "register")):
        verdict = open_challenge(
            ring, "s", TOK, challenge, T0, window=WINDOW, leeway=5, purpose=wrong
        )
        assert verdict.verdict is ChallengeVerdict.INVALID


@given(st.integers(min_value=WINDOW + 1, max_value=10**6))
def test_old_or_future_challenges_are_stale(age: int) -> None:
    challenge = seal_challenge(ring, "s", TOK, T0)
    assert open_challenge(ring, "s", TOK, challenge, T0 + age, window=WINDOW, leeway=5).verdict is (
        ChallengeVerdict.STALE
    )
    assert open_challenge(ring, "s", TOK, challenge, T0 - 6, window=WINDOW, leeway=5).verdict is (
        ChallengeVerdict.STALE
    )


@given(st.data())
def test_any_change_to_a_challenge_is_refused(data: st.DataObject) -> None:
    challenge = seal_challenge(ring, "s", TOK, T0)
    i = data.draw(st.integers(min_value=0, max_value=len(challenge) - 1))
    c = data.draw(st.sampled_from(TOKEN_CHARS).filter(lambda ch: ch != challenge[i]))
    changed = challenge[:i] + c + challenge[i + 1 :]
    verdict = open_challenge(ring, "s", TOK, changed, T0, window=10**9, leeway=5)
    assert verdict.verdict is ChallengeVerdict.INVALID


def test_challenges_survive_key_rotation_and_die_with_their_key() -> None:
    old = KeyRing.generate()
    challenge = seal_challenge(old, "s", TOK, T0)
    rotated = old.rotated(Key.generate())
    assert open_challenge(rotated, "s", TOK, challenge, T0, window=WINDOW, leeway=5).verdict is (
        ChallengeVerdict.VALID
    )
    assert seal_challenge(rotated, "s", TOK, T0) != challenge
    assert open_challenge(
        rotated.without(old.active.kid), "s", TOK, challenge, T0, window=WINDOW, leeway=5
    ).verdict is (ChallengeVerdict.INVALID)
    # The challenge MAC key is not the token key: another ring's challenge never opens.
    assert open_challenge(
        KeyRing.generate(), "s", TOK, challenge, T0, window=WINDOW, leeway=5
    ).verdict is (ChallengeVerdict.INVALID)


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


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_a_challenge_opens_only_with_the_refresh_token_it_names(mine: bytes, other: bytes) -> None:
    challenge = seal_challenge(ring, "s", mine, T0)
    opened = open_challenge(ring, "s", mine, challenge, T0, window=WINDOW, leeway=5)
    assert opened.verdict is ChallengeVerdict.VALID
    assert opened.issued == T0
    if other != mine:
        verdict = open_challenge(ring, "s", other, challenge, T0, window=WINDOW, leeway=5)
        assert verdict.verdict is ChallengeVerdict.INVALID


def test_challenges_carry_milliseconds() -> None:
    challenge = seal_challenge(ring, "s", TOK, T0 + 0.25)
    assert challenge.split(".")[0] == str(T0 * 1000 + 250)
    opened = open_challenge(ring, "s", TOK, challenge, T0 + 1, window=WINDOW, leeway=5)
    assert opened == (ChallengeVerdict.VALID, T0 + 0.25)


def test_refresh_window_outlasts_the_access_cookie() -> None:
    binding = DeviceBinding()
    assert binding.refresh_window(120) == 180
    assert binding.window == 120


# -- RS256 device keys --------------------------------------------------------

RS = frozenset({"RS256"})


def _rsa_jwk(n: int, e: int) -> dict[str, str]:
    def b64int(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"e": b64int(e), "kty": "RSA", "n": b64int(n)}


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rs256_registration_and_refresh_proofs_verify(bits: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    registration = sign_proof(key, {"jti": "c"}, with_jwk=True)
    header_bytes = registration.index(".")
    assert header_bytes > 512  # over joserfc's default bound: the reason for the larger one
    assert header_bytes <= MAX_KEY_HEADER_BYTES
    proof = verifier.verify(registration, key=None, algorithms=RS)
    assert not isinstance(proof, ProofFailure)
    assert proof.key == canonical_jwk(public_jwk(key), "RS256")
    refresh = verifier.verify(
        sign_proof(key, {"jti": "d"}, with_jwk=False), key=proof.key, algorithms=RS
    )
    assert not isinstance(refresh, ProofFailure)
    assert refresh.challenge == "d"
    # Another RSA key's signature does not verify with the stored key.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sign_proof(other, {"jti": "d"}, with_jwk=False)
    assert verifier.verify(forged, key=proof.key, algorithms=RS) is ProofFailure.SIGNATURE


_RSA_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# A weak key, made to be refused.
_RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
_N = _RSA_2048.public_key().public_numbers().n


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        (public_jwk(_RSA_1024), "1024-bit modulus"),
        (_rsa_jwk(_N >> 1 | 1, 65537), "2047-bit modulus"),
        (_rsa_jwk(_N, 1), "e = 1"),
        (_rsa_jwk(_N, 3), "e = 3"),
        (_rsa_jwk(_N, 65536), "even e"),
        (_rsa_jwk(_N, 2**64 + 1), "e over 64 bits"),
        (_rsa_jwk(_N - 1, 65537), "even modulus"),
        (_rsa_jwk(1 << 4096 | 1, 65537), "4097-bit modulus"),
        (dict(_rsa_jwk(_N, 65537), n="AA" + _rsa_jwk(_N, 65537)["n"]), "leading zero"),
        (dict(_rsa_jwk(_N, 65537), e="AAEAAQ"), "e with a leading zero"),
        (dict(_rsa_jwk(_N, 65537), kty="EC"), "wrong kty"),
        (dict(_rsa_jwk(_N, 65537), d="AQAB"), "private member"),
        ({"kty": "RSA", "e": "AQAB"}, "no modulus"),
    ],
)
def test_weak_or_malformed_rsa_keys_are_refused(jwk: dict[str, str], why: str) -> None:
    assert canonical_jwk(jwk, "RS256") is None, why


def test_hand_built_rs256_registration_from_the_spec() -> None:
    """A registration proof written out from the DBSC draft, field by field, with
    nothing of tokenflow's client: header ``{"alg":"RS256","typ":"dbsc+jwt","jwk":...}``,
    payload ``{"jti": challenge}``, RSASSA-PKCS1-v1_5 with SHA-256 over
    ``base64url(header) "." base64url(payload)``."""
    numbers = _RSA_2048.public_key().public_numbers()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {"kty": "RSA", "n": b64(numbers.n.to_bytes(256, "big")), "e": b64(b"\x01\x00\x01")}
    header = b64(json.dumps({"alg": "RS256", "typ": "dbsc+jwt", "jwk": jwk}).encode())
    payload = b64(json.dumps({"jti": "challenge-1"}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _RSA_2048.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    proof = verifier.verify(f"{header}.{payload}.{b64(signature)}", key=None, algorithms=RS)
    assert not isinstance(proof, ProofFailure)
    assert proof.challenge == "challenge-1"
    assert json.loads(proof.key) == {"e": "AQAB", "kty": "RSA", "n": jwk["n"]}


def test_header_bounds() -> None:
    # A registration header past the key bound, and a refresh proof carrying any
    # header past the default bound, are refused before anything is parsed.
    padded = sign_proof(_RSA_2048, {"jti": "c"}, with_jwk=True, header={"x": "a" * 700})
    assert padded.index(".") > MAX_KEY_HEADER_BYTES
    assert verifier.verify(padded, key=None, algorithms=RS) is ProofFailure.MALFORMED
    stored_rsa = canonical_jwk(public_jwk(_RSA_2048), "RS256")
    big = sign_proof(_RSA_2048, {"jti": "c"}, with_jwk=False, header={"x": "a" * 400})
    assert verifier.verify(big, key=stored_rsa, algorithms=RS) is ProofFailure.MALFORMED
    small = sign_proof(_RSA_2048, {"jti": "c"}, with_jwk=False, header={"x": "a" * 300})
    assert not isinstance(verifier.verify(small, key=stored_rsa, algorithms=RS), ProofFailure)


# -- refresh proofs: the stored key checks the signature before anything is decoded ----


@given(st.text(max_size=600))
def test_held_key_verification_refuses_garbage_with_a_typed_error(token: str) -> None:
    for public in (device.public_key(), _RSA_2048.public_key()):
        with pytest.raises(JWSRejected):
            verify_held_key(token, public)


@given(st.data())
def test_any_change_to_a_refresh_proof_is_refused(data: st.DataObject) -> None:
    good = sign_proof(device, {"jti": "c"}, with_jwk=False)
    assert verify_held_key(good, device.public_key()).payload == b'{"jti":"c"}'
    i = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    c = data.draw(st.sampled_from(TOKEN_CHARS).filter(lambda ch: ch != good[i]))
    with pytest.raises(JWSRejected):
        verify_held_key(good[:i] + c + good[i + 1 :], device.public_key())


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "RS256"}, JWSRejectedReason.ALGORITHM),
        ({"alg": "none"}, JWSRejectedReason.ALGORITHM),
        ({"alg": "HS256"}, JWSRejectedReason.ALGORITHM),
        ({"crit": ["exp"]}, JWSRejectedReason.CRITICAL_HEADER),
        ({"b64": False}, JWSRejectedReason.CRITICAL_HEADER),
    ],
)
def test_held_key_header_rules_apply_once_the_signature_holds(
    header: dict[str, object], reason: JWSRejectedReason
) -> None:
    token = sign_proof(device, {"jti": "c"}, with_jwk=False, header=header)
    with pytest.raises(JWSRejected) as caught:
        verify_held_key(token, device.public_key())
    assert caught.value.reason is reason


def test_held_key_layout_rules() -> None:
    good = sign_proof(device, {"jti": "c"}, with_jwk=False)
    head, body, signature = good.split(".")
    cases = {
        f"{head}.{body}.{signature}=": JWSRejectedReason.MALFORMED,  # padded
        f"{head}.{body}.{signature[:-2]}": JWSRejectedReason.SIGNATURE,  # 63 bytes
        f"{head}.{body}": JWSRejectedReason.MALFORMED,
        f"{head}.{body}.{signature}.a.b": JWSRejectedReason.ENCRYPTED,
        f".{body}.{signature}": JWSRejectedReason.MALFORMED,
        "a" * 9000: JWSRejectedReason.TOO_LARGE,
    }
    for token, reason in cases.items():
        with pytest.raises(JWSRejected) as caught:
            verify_held_key(token, device.public_key())
        assert caught.value.reason is reason, token
    # A P-384 key is not an ES256 key.
    with pytest.raises(JWSRejected) as caught:
        verify_held_key(good, ec.generate_private_key(ec.SECP384R1()).public_key())
    assert caught.value.reason is JWSRejectedReason.ALGORITHM
    # The key a refresh proof is checked with comes from the store, never the token.
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(JWSRejected) as caught:
        verify_held_key(sign_proof(other, {"jti": "c"}, with_jwk=True), device.public_key())
    assert caught.value.reason is JWSRejectedReason.SIGNATURE


def test_the_refresh_path_and_joserfc_agree_on_what_verifies() -> None:
    """The held-key path and joserfc's own verification of the same proofs."""
    assert stored is not None
    for payload in ({"jti": "c"}, {"jti": "c", "aud": "https://a.example/r"}, {}, {"jti": 5}):
        token = sign_proof(device, payload, with_jwk=False)
        fast = verifier.verify(token, key=stored, algorithms=ES)
        parsed = parse_compact(token, ES)
        slow = verify_parsed(parsed, ECKey.import_key(json.loads(stored)), ES)
        assert slow == json.dumps(payload, separators=(",", ":")).encode()
        if isinstance(fast, ProofFailure):
            assert fast is ProofFailure.MALFORMED
        else:
            assert (fast.challenge, fast.audience) == (payload["jti"], payload.get("aud"))


@given(
    st.binary(min_size=32, max_size=32),
    st.sampled_from(["register", "refresh"]),
    st.text(max_size=60),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=10**15),
)
def test_challenge_mac_is_hmac_sha256_of_the_documented_message(
    secret: bytes, purpose: str, sid: str, token: bytes, issued: int
) -> None:
    """The MAC's cached SHA-256 states give exactly the standard library's HMAC."""
    message = (
        b"tokenflow/v1 dbsc challenge\x00"
        + purpose.encode()
        + b"\x00"
        + sid.encode("utf-8", "surrogatepass")
        + b"\x00"
        + token
        + str(issued).encode()
    )
    expected = hmac.digest(_subkey(secret), message, "sha256")
    assert _mac(secret, purpose, sid, token, str(issued)) == expected
    # The cached states are copied, never consumed: the same answer twice.
    assert _mac(secret, purpose, sid, token, str(issued)) == expected


def test_a_held_key_header_verdict_is_per_algorithm_and_read_only() -> None:
    """The header check is cached by its text; the same text under another key type
    (an RSA key signing a header that says ES256) is still refused, and the header
    handed back cannot be altered by a caller."""
    proof = sign_proof(device, {"jti": "c"}, with_jwk=False)
    verified = verify_held_key(proof, device.public_key())
    with pytest.raises(TypeError):
        verified.header["alg"] = "none"  # type: ignore[index]
    rsa_device = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es256_header = proof.split(".")[0]
    signing_input = f"{es256_header}.{_b64({'jti': 'c'})}"
    signature = rsa_device.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(JWSRejected) as caught:
        verify_held_key(token, rsa_device.public_key())
    assert caught.value.reason is JWSRejectedReason.ALGORITHM


def test_a_proof_payload_must_be_utf8_json() -> None:
    assert stored is not None
    head = sign_proof(device, {"jti": "c"}, with_jwk=False).split(".")[0]
    body = base64.urlsafe_b64encode('{"jti":"c"}'.encode("utf-16")).rstrip(b"=").decode()
    der = device.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    token = f"{head}.{body}.{signature.rstrip(b'=').decode()}"
    verifier = DbscProofVerifier()
    assert verifier.verify(token, key=stored, algorithms=frozenset({"ES256"})) is (
        ProofFailure.MALFORMED
    )


_EDGES = st.sampled_from(
    [bytes(32), b"\xff" * 32, b"\x80" + bytes(31), b"\x7f" + b"\xff" * 31, bytes(31) + b"\x80"]
)


@given(
    st.one_of(_EDGES, st.binary(min_size=32, max_size=32)),
    st.one_of(_EDGES, st.binary(min_size=32, max_size=32)),
)
def test_es256_signatures_become_the_der_cryptography_makes(r: bytes, s: bytes) -> None:
    expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert _der_signature(r + s) == expected
