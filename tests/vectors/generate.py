"""Regenerate the token format v1 known-answer vectors.

Run from the repository root::

    .venv/bin/python tests/vectors/generate.py

Seal and open vectors come from tokenflow itself, through the private seam
``tokenflow._token._codec_with_fixed_randomness`` (the codec draws its 8-byte
salt and then each 12-byte nonce from fixed bytes), with fixed keys and a fixed
``now``. Every sealed token is cross-checked against ``spec_v1.py``, an
independent implementation of docs/token-format.md, and every expected result
is checked against both implementations before anything is written.

Tokens whose plaintext tokenflow refuses to seal (non-object JSON, a missing
claim, ...) are sealed by ``spec_v1.seal_plaintext``, following the
specification with cryptography's primitives only.

``tests/test_vectors.py`` asserts that the committed files equal what
:func:`build` returns, so a change to the format cannot go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import sys
from typing import Any

import spec_v1

from tokenflow import KeyRing
from tokenflow._token import _codec_with_fixed_randomness
from tokenflow.tokens import Purpose, TokenCodec

HERE = pathlib.Path(__file__).resolve().parent
NOW = 1_700_000_000
LEEWAY = 5


def _key(label: str) -> bytes:
    # Fixed, obviously non-secret keys: SHA-256 of a label.
    return hashlib.sha256(f"tokenflow test vector key {label}".encode()).digest()


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def _bytes(label: str, n: int) -> bytes:
    return hashlib.sha256(f"tokenflow test vector {label}".encode()).digest()[:n]


KEY_A = _key("A")
KEY_B = _key("B")
KEY_A_IMPOSTOR = _key("A impostor")
KEY_LONG = _key("long kid")
KEY_SHORT = _key("short kid")

RING_A = f"*k7qm2x:{_b64(KEY_A)}"
RING_ROTATED = f"*k3ab9z:{_b64(KEY_B)},k7qm2x:{_b64(KEY_A)}"
RING_B = f"*k3ab9z:{_b64(KEY_B)}"
RING_IMPOSTOR = f"*k7qm2x:{_b64(KEY_A_IMPOSTOR)}"
RING_LONG_KID = f"*tf-2025-11-prod_:{_b64(KEY_LONG)}"
RING_SHORT_KID = f"*a:{_b64(KEY_SHORT)}"

PURPOSES = {"access": Purpose.ACCESS, "refresh": Purpose.REFRESH}

REFERENCE_CLAIMS: dict[str, Any] = {
    "sub": "user-12345",
    "sid": "3f2a9c0d1e",
    "iat": NOW,
    "exp": NOW + 120,
    "roles": ["admin", "editor"],
}


def _codec(ring: str, leeway: int = LEEWAY) -> TokenCodec:
    return TokenCodec(KeyRing.parse(ring), leeway=leeway)


def _codec_seal(
    ring: str, purpose: str, claims: dict[str, Any], salt: bytes, nonces: list[bytes]
) -> list[str]:
    codec = _codec_with_fixed_randomness(_codec(ring), salt + b"".join(nonces))
    return [codec.seal(PURPOSES[purpose], claims) for _ in nonces]


def _open_result(ring: str, purpose: str, token: object, now: float, leeway: int) -> Any:
    """What both implementations say: claims, or the reason string. They must agree."""
    try:
        ours: Any = _codec(ring, leeway).open(PURPOSES[purpose], token, now=now)
    except Exception as exc:
        reason = getattr(exc, "reason", None)
        if reason is None:
            raise
        ours = reason.value
    try:
        theirs: Any = spec_v1.open_token(ring, purpose, token, now, leeway)
    except spec_v1.Rejected as exc:
        theirs = exc.reason
    if ours != theirs or type(ours) is not type(theirs):
        raise AssertionError(f"tokenflow says {ours!r}, spec_v1 says {theirs!r} for {token!r}")
    return ours


# -- seal vectors ------------------------------------------------------------


def _seal_cases() -> list[dict[str, Any]]:
    claims_min = {"sub": "user-12345", "iat": NOW, "exp": NOW + 120}
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("the reference access claims", RING_A, "access", REFERENCE_CLAIMS),
        (
            "a refresh token",
            RING_A,
            "refresh",
            {"sub": "user-12345", "sid": "3f2a9c0d1e", "iat": NOW, "exp": NOW + 1800},
        ),
        ("minimal claims, 0 fill bytes", RING_A, "access", {**claims_min, "sub": "ab"}),
        ("minimal claims, 1 fill byte", RING_A, "access", {**claims_min, "sub": "a"}),
        ("minimal claims, 2 fill bytes", RING_A, "access", {**claims_min, "sub": "abc"}),
        (
            "members keep their order; exp before sub",
            RING_A,
            "access",
            {"exp": NOW + 120, "iat": NOW, "sub": "user-12345"},
        ),
        (
            "non-ASCII text is raw UTF-8; only quote, backslash and controls are escaped",
            RING_A,
            "access",
            {
                "sub": 'j\u00fcrgen "\u00f6" \\ / \u2028 \n\t\x00\x7f',
                "iat": NOW,
                "exp": NOW + 120,
                "name": "\u65e5\u672c\u8a9e \U0001f511",
                "none": None,
                "ok": True,
                "nested": {"a": [1, -2, {"b": []}], "c": {}},
            },
        ),
        (
            "64-bit edge integers",
            RING_A,
            "access",
            {"sub": "x", "iat": -(2**63), "exp": 2**64 - 1, "n": 2**63},
        ),
        ("a 16-character key id", RING_LONG_KID, "access", claims_min),
        ("a 1-character key id", RING_SHORT_KID, "refresh", claims_min),
        ("after rotation the new active key seals", RING_ROTATED, "access", claims_min),
    ]
    vectors = []
    for number, (comment, ring, purpose, claims) in enumerate(cases, start=1):
        salt = _bytes(f"salt {number}", spec_v1.SALT_BYTES)
        nonce = _bytes(f"nonce {number}", spec_v1.NONCE_BYTES)
        vectors.append(_seal_vector(comment, ring, purpose, claims, salt, nonce))
    # Two tokens from one codec: same salt (so the same subkey), fresh nonces.
    salt = _bytes("salt shared", spec_v1.SALT_BYTES)
    nonces = [_bytes(f"nonce shared {i}", spec_v1.NONCE_BYTES) for i in (1, 2)]
    tokens = _codec_seal(RING_A, "access", claims_min, salt, nonces)
    for i, (nonce, token) in enumerate(zip(nonces, tokens, strict=True), start=1):
        vector = _seal_vector(
            f"one codec, one subkey, token {i} of 2 (same salt, fresh nonce)",
            RING_A,
            "access",
            claims_min,
            salt,
            nonce,
        )
        assert vector["token"] == token
        vectors.append(vector)
    # Vectors 3 to 5 exercise the three fill lengths, in order: 0, 1 and 2 spaces.
    for expected, v in enumerate(vectors[2:5]):
        plaintext = bytes.fromhex(v["intermediate"]["plaintext"])
        assert len(plaintext) - len(spec_v1.claims_json(v["claims"])) == expected
    return vectors


def _seal_vector(
    comment: str, ring: str, purpose: str, claims: dict[str, Any], salt: bytes, nonce: bytes
) -> dict[str, Any]:
    (token,) = _codec_seal(ring, purpose, claims, salt, [nonce])
    if token != spec_v1.seal(ring, purpose, claims, salt, nonce):
        raise AssertionError(f"tokenflow and spec_v1 disagree on {comment!r}")
    kid, keys = spec_v1.parse_keyring(ring)
    return {
        "comment": comment,
        "keyring": ring,
        "purpose": purpose,
        "claims": claims,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "token": token,
        "intermediate": {
            "subkey": spec_v1.subkey(keys[kid], salt).hex(),
            "associated_data": spec_v1.associated_data(kid, salt, purpose).hex(),
            "plaintext": spec_v1.fill(spec_v1.claims_json(claims), kid).hex(),
        },
    }


# -- open vectors ------------------------------------------------------------


def _raw_seal(ring: str, purpose: str, plaintext: bytes, label: str, kid: str = "") -> str:
    """Seal raw plaintext bytes (filled per the spec) under ``kid`` or the active key."""
    active, keys = spec_v1.parse_keyring(ring)
    kid = kid or active
    return spec_v1.seal_plaintext(
        keys[kid],
        kid,
        purpose,
        spec_v1.fill(plaintext, kid),
        _bytes(f"raw salt {label}", spec_v1.SALT_BYTES),
        _bytes(f"raw nonce {label}", spec_v1.NONCE_BYTES),
    )


def _open_cases(seal_vectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cases: list[tuple[str, str, str, str, float, int]] = []
    for v in seal_vectors:
        cases.append(
            (f"seal vector: {v['comment']}", v["token"], v["keyring"], v["purpose"], NOW, 5)
        )

    def token(
        claims: dict[str, Any], label: str, purpose: str = "access", ring: str = RING_A
    ) -> str:
        salt = _bytes(f"open salt {label}", spec_v1.SALT_BYTES)
        nonce = _bytes(f"open nonce {label}", spec_v1.NONCE_BYTES)
        return _codec_seal(ring, purpose, claims, salt, [nonce])[0]

    base = {"sub": "user-12345", "iat": NOW, "exp": NOW + 120}
    t = token(base, "boundaries")
    cases += [
        ("a token sealed by a retired key opens after rotation", t, RING_ROTATED, "access", NOW, 5),
        ("last whole second before exp + leeway", t, RING_A, "access", NOW + 124, 5),
        (
            "half a second before exp + leeway (now may be fractional)",
            t,
            RING_A,
            "access",
            NOW + 124.5,
            5,
        ),
        ("leeway 0: one second before exp", t, RING_A, "access", NOW + 119, 0),
        ("iat = now + leeway is not yet too early", t, RING_A, "access", NOW - 5, 5),
        ("leeway 0: iat = now", t, RING_A, "access", NOW, 0),
        ("leeway 300", t, RING_A, "access", NOW + 419, 300),
    ]
    t = _raw_seal(
        RING_A,
        "access",
        b'{"sub":"u","iat":1700000000,"exp":1700000120,"n":' + b"[" * 31 + b"]" * 31 + b"}",
        "depth 32",
    )
    cases.append(("objects and arrays nested 32 levels deep open", t, RING_A, "access", NOW, 5))
    t = token({**base, "score": 0.5, "ratio": -1.25e-7}, "floats")
    cases.append(("floats are fine in application claims", t, RING_A, "access", NOW, 5))
    t = _raw_seal(
        RING_A,
        "access",
        b'\n { "sub" : "u", "iat" : 1700000000,\t"exp" : 1700000120 }',
        "whitespace",
    )
    cases.append(("JSON whitespace a sealer never emits still opens", t, RING_A, "access", NOW, 5))
    t = token(base, "rotated", ring=RING_ROTATED, purpose="refresh")
    cases.append(
        ("the new key's token opens with the rotated ring", t, RING_ROTATED, "refresh", NOW, 5)
    )
    cases.append(("... and with the old key removed", t, RING_B, "refresh", NOW, 5))

    vectors = []
    for comment, tok, ring, purpose, now, leeway in cases:
        claims = _open_result(ring, purpose, tok, now, leeway)
        assert isinstance(claims, dict), (comment, claims)
        vectors.append(
            {
                "comment": comment,
                "token": tok,
                "keyring": ring,
                "purpose": purpose,
                "now": now,
                "leeway": leeway,
                "claims": claims,
            }
        )
    return vectors


# -- invalid vectors ---------------------------------------------------------


def _recode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token)


def _flip(token: str, byte: int, bit: int = 0) -> str:
    raw = bytearray(_raw(token))
    raw[byte] ^= 1 << bit
    return _recode(bytes(raw))


def _with_char(token: str, index: int, char: str) -> str:
    return token[:index] + char + token[index + 1 :]


def _invalid_cases() -> list[dict[str, Any]]:
    base = {"sub": "user-12345", "iat": NOW, "exp": NOW + 120}
    codec = _codec_with_fixed_randomness(
        _codec(RING_A),
        _bytes("invalid salt", 8) + b"".join(_bytes(f"invalid nonce {i}", 12) for i in range(4)),
    )
    good = codec.seal(Purpose.ACCESS, REFERENCE_CLAIMS)
    good_refresh = codec.seal(Purpose.REFRESH, base)
    assert "-" in good or "_" in good, "pick salts so that the token uses '-' or '_'"
    kid_end = 2 + len("k7qm2x")  # offset of the salt in RING_A tokens
    raw = _raw(good)
    url_char = next(i for i, c in enumerate(good) if c in "-_")

    malformed = [
        ("the empty string", ""),
        ("length not a multiple of 4 (one character cut)", good[:-1]),
        ("length not a multiple of 4 (one character added)", good + "A"),
        ("'=' padding: one byte dropped, re-encoded with padding", _recode(raw[:-1])),
        ("'==' padding: two bytes dropped, re-encoded with padding", _recode(raw[:-2])),
        ("'=' replacing the last character", _with_char(good, len(good) - 1, "=")),
        ("a space inside", _with_char(good, 10, " ")),
        ("CR LF at the end", good[:-2] + "\r\n"),
        ("a tab at the start", "\t" + good[1:]),
        (
            "the standard alphabet ('+' and '/') instead of '-' and '_'",
            good.translate(str.maketrans("-_", "+/")),
        ),
        ("one '+'", _with_char(good, url_char, "+")),
        ("one '/'", _with_char(good, 12, "/")),
        ("a non-ASCII letter", _with_char(good, 12, "\u00e9")),
        ("a fullwidth digit '1' (a Unicode digit, not ASCII)", _with_char(good, 12, "\uff11")),
        ("a character outside base64 ('.')", _with_char(good, 12, ".")),
        ("longer than 4096 characters", "A" * 4100),
        ("truncated to its first 4 characters", good[:4]),
        ("truncated after the header", _recode(raw[: kid_end + 8 - (kid_end + 8) % 3])),
        ("truncated in the nonce", _recode(raw[:24])),
        (
            "truncated to header, nonce and tag, with less than 2 bytes of ciphertext",
            _recode(raw[: kid_end + 8 + 12 + 16 + 1 - (kid_end + 8 + 12 + 16 + 1) % 3]),
        ),
        ("kid_len 0", _recode(raw[:1] + b"\x00" + raw[2:])),
        ("kid_len 17", _recode(raw[:1] + b"\x11" + raw[2:])),
        ("kid_len 255", _recode(raw[:1] + b"\xff" + raw[2:])),
    ]
    version = [
        ("version byte 0x02", _flip(good, 0, 1)),
        ("version byte 0x00", _flip(good, 0, 0)),
        ("version byte 0x81", _flip(good, 0, 7)),
        ("version is checked before the length: 0x02 on a 3-byte token", _recode(b"\x02\x06k")),
    ]
    unknown_key = [
        ("sealed by a key that was removed from the ring", good, RING_B),
        ("a key id one bit away from a known one", _flip(good, 2, 0), RING_A),
        ("a key id with a non-ASCII byte", _recode(raw[:2] + b"\xff" + raw[3:]), RING_A),
    ]
    tag = [
        ("one bit flipped in the salt", _flip(good, kid_end, 0)),
        ("one bit flipped in the nonce", _flip(good, kid_end + 8, 3)),
        ("one bit flipped in the ciphertext", _flip(good, kid_end + 20, 5)),
        ("one bit flipped in the tag", _flip(good, len(raw) - 1, 7)),
        ("a truncation that still looks long enough", _recode(raw[:-3])),
        ("three bytes appended", _recode(raw + b"\0\0\0")),
        (
            "another token's nonce",
            _recode(_raw(good_refresh)[: kid_end + 20] + raw[kid_end + 20 :]),
        ),
    ]
    cases: list[tuple[str, str, str, str, float, int, str]] = []
    cases += [(c, t, RING_A, "access", NOW, 5, "malformed") for c, t in malformed]
    cases += [(c, t, RING_A, "access", NOW, 5, "unsupported_version") for c, t in version]
    cases += [(c, t, ring, "access", NOW, 5, "unknown_key") for c, t, ring in unknown_key]
    cases += [(c, t, RING_A, "access", NOW, 5, "tag_mismatch") for c, t in tag]
    cases += [
        (
            "an access token presented as a refresh token",
            good,
            RING_A,
            "refresh",
            NOW,
            5,
            "tag_mismatch",
        ),
        (
            "a refresh token presented as an access token",
            good_refresh,
            RING_A,
            "access",
            NOW,
            5,
            "tag_mismatch",
        ),
        ("same key id, different secret", good, RING_IMPOSTOR, "access", NOW, 5, "tag_mismatch"),
        (
            "wrong purpose and expired: the tag is checked first",
            good,
            RING_A,
            "refresh",
            NOW + 10_000,
            5,
            "tag_mismatch",
        ),
    ]

    bad_claims = [
        ("a JSON array", b"[1,2,3]"),
        ("a JSON string", b'"user-12345"'),
        ("JSON null", b"null"),
        ("a JSON number", b"1700000120"),
        ("only spaces", b"  "),
        ("not JSON", b"{sub:user-12345}"),
        ("truncated JSON", b'{"sub":"u","iat":1700000000,"exp":17'),
        ("JSON followed by garbage", b'{"sub":"u","iat":1700000000,"exp":1700000120}x'),
        ("invalid UTF-8 in a string", b'{"sub":"\xff","iat":1700000000,"exp":1700000120}'),
        ("an escaped lone surrogate", b'{"sub":"\\ud800","iat":1700000000,"exp":1700000120}'),
        ("NaN", b'{"sub":"u","iat":1700000000,"exp":NaN}'),
        ("missing exp", b'{"sub":"u","iat":1700000000}'),
        ("missing iat", b'{"sub":"u","exp":1700000120}'),
        ("missing sub", b'{"iat":1700000000,"exp":1700000120}'),
        ("exp written as a float", b'{"sub":"u","iat":1700000000,"exp":1700000120.0}'),
        ("exp with an exponent", b'{"sub":"u","iat":1700000000,"exp":17e8}'),
        ("exp beyond the 64-bit range", b'{"sub":"u","iat":1700000000,"exp":18446744073709551616}'),
        ("exp as a string", b'{"sub":"u","iat":1700000000,"exp":"1700000120"}'),
        ("exp true", b'{"sub":"u","iat":1700000000,"exp":true}'),
        ("iat null", b'{"sub":"u","iat":null,"exp":1700000120}'),
        ("sub a number", b'{"sub":12345,"iat":1700000000,"exp":1700000120}'),
        (
            "a number that overflows a double",
            b'{"sub":"u","iat":1700000000,"exp":1700000120,"x":1e400}',
        ),
        (
            "objects and arrays nested 33 levels deep (the claim set is level 1)",
            b'{"sub":"u","iat":1700000000,"exp":1700000120,"n":' + b"[" * 32 + b"]" * 32 + b"}",
        ),
    ]
    cases += [
        (
            f"bad claims: {c}",
            _raw_seal(RING_A, "access", p, c),
            RING_A,
            "access",
            NOW,
            5,
            "bad_claims",
        )
        for c, p in bad_claims
    ]
    cases += [
        ("now = exp + leeway", good, RING_A, "access", NOW + 125, 5, "expired"),
        ("now = exp + leeway + 0.5", good, RING_A, "access", NOW + 125.5, 5, "expired"),
        ("leeway 0: now = exp", good, RING_A, "access", NOW + 120, 0, "expired"),
        ("long expired", good, RING_A, "access", NOW + 86_400, 5, "expired"),
        ("iat = now + leeway + 1", good, RING_A, "access", NOW - 6, 5, "not_yet_valid"),
        ("leeway 0: iat = now + 1", good, RING_A, "access", NOW - 1, 0, "not_yet_valid"),
        ("iat = now + leeway + 0.5", good, RING_A, "access", NOW - 5.5, 5, "not_yet_valid"),
        (
            "both expired and not yet valid: expiry is checked first",
            _raw_seal(RING_A, "access", b'{"sub":"u","iat":1800000000,"exp":1600000000}', "both"),
            RING_A,
            "access",
            NOW,
            5,
            "expired",
        ),
    ]
    vectors = []
    for comment, tok, ring, purpose, now, leeway, reason in cases:
        got = _open_result(ring, purpose, tok, now, leeway)
        if got != reason:
            raise AssertionError(f"{comment}: expected {reason}, got {got!r}")
        vectors.append(
            {
                "comment": comment,
                "token": tok,
                "keyring": ring,
                "purpose": purpose,
                "now": now,
                "leeway": leeway,
                "reason": reason,
            }
        )
    return vectors


# -- output --------------------------------------------------------------------

_HEADER = {
    "seal.json": (
        "tokenflow token format v1 seal vectors (docs/token-format.md). Seal 'claims' for "
        "'purpose' under the active key of 'keyring', with the given 8-byte salt and 12-byte "
        "nonce (hex); the result must equal 'token'. 'intermediate' gives the derived subkey, "
        "the associated data and the filled plaintext (hex) for debugging."
    ),
    "open.json": (
        "tokenflow token format v1 open vectors. Opening 'token' for 'purpose' with 'keyring', "
        "at time 'now' (seconds since the epoch) with 'leeway' seconds must return 'claims'."
    ),
    "invalid.json": (
        "tokenflow token format v1 invalid vectors. Opening 'token' for 'purpose' with "
        "'keyring' at 'now' with 'leeway' must fail; 'reason' names the first failed check "
        "(internal only: the error shown to clients is always the same)."
    ),
}


def build() -> dict[str, dict[str, Any]]:
    """The three vector files, as JSON-ready data."""
    seal_vectors = _seal_cases()
    vectors = {
        "seal.json": seal_vectors,
        "open.json": _open_cases(seal_vectors),
        "invalid.json": _invalid_cases(),
    }
    return {
        name: {"description": _HEADER[name], "version": 1, "vectors": data}
        for name, data in vectors.items()
    }


def dump(data: dict[str, Any]) -> str:
    """The exact text written to a vector file."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    for name, data in build().items():
        (HERE / name).write_text(dump(data), encoding="utf-8")
        print(f"wrote {HERE / name} ({len(data['vectors'])} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
