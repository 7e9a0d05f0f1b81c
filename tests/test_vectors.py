"""Known-answer vectors for token format v1, and the spec-versus-code interop check.

``tests/vectors/*.json`` are produced by ``tests/vectors/generate.py``.
``tests/vectors/spec_v1.py`` is an independent implementation of
docs/token-format.md built from cryptography's primitives only; every vector is
run through both it and :class:`tokenflow.tokens.TokenCodec`.
"""

from __future__ import annotations

import base64
import importlib
import json
import pathlib
import sys
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenflow import Key, KeyRing
from tokenflow._token import _codec_with_fixed_randomness, derive_subkey
from tokenflow.events import InvalidTokenReason
from tokenflow.tokens import InvalidToken, Purpose, TokenCodec

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
if str(VECTORS) not in sys.path:
    sys.path.insert(0, str(VECTORS))
spec_v1: Any = importlib.import_module("spec_v1")
generate: Any = importlib.import_module("generate")

PURPOSES = {"access": Purpose.ACCESS, "refresh": Purpose.REFRESH}


def _load(name: str) -> list[dict[str, Any]]:
    data = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["version"] == 1
    vectors: list[dict[str, Any]] = data["vectors"]
    assert vectors, f"{name} holds no vectors"
    return vectors


SEAL = _load("seal.json")
OPEN = _load("open.json")
INVALID = _load("invalid.json")


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [f"{i}-{v['comment'][:60]}" for i, v in enumerate(vectors)]


def _codec(ring: str, leeway: int = 5) -> TokenCodec:
    return TokenCodec(KeyRing.parse(ring), leeway=leeway)


# -- the files ---------------------------------------------------------------


def test_vector_files_are_what_generate_py_produces() -> None:
    for name, data in generate.build().items():
        committed = (VECTORS / name).read_text(encoding="utf-8")
        assert committed == generate.dump(data), f"{name} is stale: run tests/vectors/generate.py"


def test_invalid_vectors_cover_every_failure_reason() -> None:
    assert {v["reason"] for v in INVALID} == {reason.value for reason in InvalidTokenReason}


def test_invalid_vectors_cover_every_kind_of_malformed_text() -> None:
    malformed = [v["token"] for v in INVALID if v["reason"] == "malformed"]
    assert any("=" in t and len(t) % 4 == 0 for t in malformed), "padding"
    assert any(any(c.isspace() for c in t) for t in malformed), "whitespace"
    assert any("+" in t for t in malformed), "'+'"
    assert any("/" in t for t in malformed), "'/'"
    assert any(not t.isascii() for t in malformed), "non-ASCII"
    assert any(len(t) % 4 for t in malformed), "length not a multiple of 4"
    assert any("truncated" in v["comment"] for v in INVALID if v["reason"] == "malformed")


def test_seal_vectors_cover_each_fill_length() -> None:
    fills = set()
    for v in SEAL:
        plaintext = bytes.fromhex(v["intermediate"]["plaintext"])
        fills.add(len(plaintext) - len(plaintext.rstrip(b" ")))
    assert fills == {0, 1, 2}


# -- seal ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", SEAL, ids=_ids(SEAL))
def test_seal_vector_tokenflow(vector: dict[str, Any]) -> None:
    salt, nonce = bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce"])
    codec = _codec_with_fixed_randomness(_codec(vector["keyring"]), salt + nonce)
    assert codec.seal(PURPOSES[vector["purpose"]], vector["claims"]) == vector["token"]


@pytest.mark.parametrize("vector", SEAL, ids=_ids(SEAL))
def test_seal_vector_independent_implementation(vector: dict[str, Any]) -> None:
    salt, nonce = bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce"])
    token = spec_v1.seal(vector["keyring"], vector["purpose"], vector["claims"], salt, nonce)
    assert token == vector["token"]
    kid, keys = spec_v1.parse_keyring(vector["keyring"])
    middle = vector["intermediate"]
    assert spec_v1.subkey(keys[kid], salt).hex() == middle["subkey"]
    assert derive_subkey(keys[kid], salt).hex() == middle["subkey"]
    assert spec_v1.associated_data(kid, salt, vector["purpose"]).hex() == middle["associated_data"]
    # The token's own bytes: header, nonce, then AES-GCM over the filled plaintext.
    raw = base64.urlsafe_b64decode(token)
    head = spec_v1.header(kid, salt)
    assert raw.startswith(head + nonce)
    assert len(raw) == len(head) + 12 + len(bytes.fromhex(middle["plaintext"])) + 16
    # The plaintext is orjson's compact serialisation of the claims, then the fill.
    plaintext = bytes.fromhex(middle["plaintext"])
    assert plaintext.rstrip(b" ") == orjson.dumps(vector["claims"])


# -- open ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", OPEN, ids=_ids(OPEN))
def test_open_vector(vector: dict[str, Any]) -> None:
    purpose, token, now = vector["purpose"], vector["token"], vector["now"]
    codec = _codec(vector["keyring"], vector["leeway"])
    assert codec.open(PURPOSES[purpose], token, now=now) == vector["claims"]
    theirs = spec_v1.open_token(vector["keyring"], purpose, token, now, vector["leeway"])
    assert theirs == vector["claims"]


# -- invalid -------------------------------------------------------------------


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector(vector: dict[str, Any]) -> None:
    purpose, token, now = vector["purpose"], vector["token"], vector["now"]
    codec = _codec(vector["keyring"], vector["leeway"])
    with pytest.raises(InvalidToken) as caught:
        codec.open(PURPOSES[purpose], token, now=now)
    assert caught.value.reason.value == vector["reason"]
    assert str(caught.value) == "invalid token"
    with pytest.raises(spec_v1.Rejected) as rejected:
        spec_v1.open_token(vector["keyring"], purpose, token, now, vector["leeway"])
    assert rejected.value.reason == vector["reason"]


def test_invalid_vectors_do_not_depend_on_the_subkey_cache() -> None:
    # A codec that has already opened good tokens under the same salts (so their
    # subkeys are cached) must give exactly the same reasons as a fresh one.
    codecs: dict[tuple[str, int], TokenCodec] = {}
    for vector in OPEN + INVALID:
        key = (vector["keyring"], vector["leeway"])
        if key not in codecs:
            codecs[key] = _codec(*key)
    for vector in OPEN:
        codec = codecs[vector["keyring"], vector["leeway"]]
        codec.open(PURPOSES[vector["purpose"]], vector["token"], now=vector["now"])
    for _ in range(2):
        for vector in INVALID:
            codec = codecs[vector["keyring"], vector["leeway"]]
            with pytest.raises(InvalidToken) as caught:
                codec.open(PURPOSES[vector["purpose"]], vector["token"], now=vector["now"])
            assert caught.value.reason.value == vector["reason"], vector["comment"]


# -- interop: the spec, implemented independently, agrees with the code ----------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
# No floats: serialisers legitimately differ in how they spell them (see spec_v1).
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_kid = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=16
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.binary(min_size=32, max_size=32),
    kid=_kid,
    salt=st.binary(min_size=8, max_size=8),
    nonce=st.binary(min_size=12, max_size=12),
    purpose=st.sampled_from(["access", "refresh"]),
    sub=_text,
    iat=st.integers(0, 2**40),
    lifetime=st.integers(1, 10**6),
    extra=st.dictionaries(
        _text.filter(lambda k: k not in {"sub", "iat", "exp"}), _json, max_size=5
    ),
)
def test_independent_implementation_seals_byte_for_byte(
    secret: bytes,
    kid: str,
    salt: bytes,
    nonce: bytes,
    purpose: str,
    sub: str,
    iat: int,
    lifetime: int,
    extra: dict[str, Any],
) -> None:
    ring = KeyRing(Key(kid, secret))
    claims = {"sub": sub, "iat": iat, "exp": iat + lifetime, **extra}
    codec = _codec_with_fixed_randomness(TokenCodec(ring), salt + nonce)
    ours = codec.seal(PURPOSES[purpose], claims)
    theirs = spec_v1.seal(ring.serialize(), purpose, claims, salt, nonce)
    assert ours == theirs
    # Each opens the other's token.
    assert TokenCodec(ring).open(PURPOSES[purpose], theirs, now=iat) == claims
    assert spec_v1.open_token(ring.serialize(), purpose, ours, iat, 5) == claims


@settings(deadline=None)
@given(
    raw=st.binary(max_size=80),
    kid_len=st.sampled_from([0, 1, 6, 16, 17, 255]),
    version=st.sampled_from([0, 1, 1, 1, 2]),
)
def test_independent_implementation_rejects_garbage_for_the_same_reason(
    raw: bytes, kid_len: int, version: int
) -> None:
    # Structured garbage: plausible headers, so that every check up to the tag is reached.
    ring = "*k7qm2x:" + base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    body = bytes([version, kid_len]) + b"k7qm2x"[: min(kid_len, 6)] + raw
    body += b"\0" * (-len(body) % 3)
    token = base64.urlsafe_b64encode(body).decode()
    with pytest.raises(InvalidToken) as caught:
        _codec(ring).open(Purpose.ACCESS, token, now=1_700_000_000)
    with pytest.raises(spec_v1.Rejected) as rejected:
        spec_v1.open_token(ring, "access", token, 1_700_000_000, 5)
    assert caught.value.reason.value == rejected.value.reason
