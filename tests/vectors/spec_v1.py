"""An independent implementation of token format v1, written from docs/token-format.md.

It imports nothing from tokenflow: only the standard library and the primitives
of ``cryptography`` (HKDFExpand, AESGCM). The vector tests run it side by side
with ``tokenflow.tokens.TokenCodec`` so that the specification and the code are
checked against each other, and ``generate.py`` uses it to seal the plaintexts
that tokenflow itself refuses to seal (non-object JSON, missing claims...).

Deliberately written for clarity, not speed: every step is a separate function
named after the section of the specification it implements.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

VERSION = 1
SALT_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_CIPHERTEXT = 2  # a JSON object is at least "{}"
MAX_TOKEN_CHARS = 4096
SUBKEY_INFO = b"tokenflow/v1 subkey"
PURPOSE_BYTE = {"access": b"A", "refresh": b"R"}

_KID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_KEY = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]*")


class Rejected(Exception):
    """The token was rejected; ``reason`` is the spec's reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- key ring string --------------------------------------------------------


def parse_keyring(text: str) -> tuple[str, dict[str, bytes]]:
    """Return (active key id, {key id: 32-byte key}); ValueError on any fault."""
    active: list[str] = []
    keys: dict[str, bytes] = {}
    for raw_entry in text.split(","):
        entry = raw_entry.strip()
        is_active = entry.startswith("*")
        kid, sep, encoded = entry.removeprefix("*").partition(":")
        if not sep or not _KID.fullmatch(kid) or not _KEY.fullmatch(encoded):
            raise ValueError("bad key ring entry")
        key = base64.urlsafe_b64decode(encoded + "=")
        if base64.urlsafe_b64encode(key).rstrip(b"=").decode() != encoded:
            raise ValueError("non-canonical key")
        if kid in keys:
            raise ValueError("duplicate key id")
        keys[kid] = key
        if is_active:
            active.append(kid)
    if len(active) != 1:
        raise ValueError("exactly one key must be active")
    return active[0], keys


# -- building blocks ---------------------------------------------------------


def subkey(key: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256-Expand(PRK = key, info = SUBKEY_INFO || salt, L = 32)."""
    return HKDFExpand(hashes.SHA256(), 32, SUBKEY_INFO + salt).derive(key)


def header(kid: str, salt: bytes) -> bytes:
    """version || kid_len || kid || salt."""
    kid_bytes = kid.encode("ascii")
    return bytes([VERSION, len(kid_bytes)]) + kid_bytes + salt


def associated_data(kid: str, salt: bytes, purpose: str) -> bytes:
    """header || purpose byte ('A' for access, 'R' for refresh)."""
    return header(kid, salt) + PURPOSE_BYTE[purpose]


def claims_json(claims: dict[str, Any]) -> bytes:
    """Compact JSON, members in the given order, UTF-8, no ASCII escaping.

    Byte-identical to orjson's default output for every value except floats
    (whose shortest spelling differs between serialisers), which is why the
    vectors carry no floats in sealed claims.
    """
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def fill(json_bytes: bytes, kid: str) -> bytes:
    """Append 0, 1 or 2 spaces so that the sealed byte string is a multiple of 3 long."""
    overhead = len(header(kid, b"\0" * SALT_BYTES)) + NONCE_BYTES + TAG_BYTES
    return json_bytes + b" " * (-(overhead + len(json_bytes)) % 3)


def b64url_encode(raw: bytes) -> str:
    """base64url without padding; raw is a multiple of 3 long, so nothing is dropped."""
    if len(raw) % 3:
        raise ValueError("the sealed bytes must be a multiple of 3 long")
    return base64.urlsafe_b64encode(raw).decode("ascii")


# -- sealing ---------------------------------------------------------------


def seal_plaintext(
    key: bytes, kid: str, purpose: str, plaintext: bytes, salt: bytes, nonce: bytes
) -> str:
    """Seal an already filled plaintext (any bytes: vectors use it for bad claims)."""
    if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("salt is 8 bytes, nonce 12")
    ciphertext = AESGCM(subkey(key, salt)).encrypt(
        nonce, plaintext, associated_data(kid, salt, purpose)
    )
    return b64url_encode(header(kid, salt) + nonce + ciphertext)


def seal(ring: str, purpose: str, claims: dict[str, Any], salt: bytes, nonce: bytes) -> str:
    """Seal ``claims`` under the ring's active key, as the specification says."""
    kid, keys = parse_keyring(ring)
    if (
        type(claims.get("sub")) is not str
        or type(claims.get("iat")) is not int
        or type(claims.get("exp")) is not int
    ):
        raise ValueError("claims need sub (str), iat (int) and exp (int)")
    return seal_plaintext(keys[kid], kid, purpose, fill(claims_json(claims), kid), salt, nonce)


# -- opening ---------------------------------------------------------------


def _int_in_range(text: str) -> int | float:
    # Integers outside the 64-bit range read as floats (and so fail the
    # integer checks on iat and exp), as in the reference implementation.
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


def _finite_float(text: str) -> float:
    """A JSON number that overflows a double (1e400) is not a value a claim can hold."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows a double")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_claims(plaintext: bytes) -> Any:
    """Strict RFC 8259 / I-JSON decoding; ValueError on anything else."""
    text = plaintext.decode("utf-8")  # strict: invalid UTF-8 raises
    value = json.loads(
        text, parse_int=_int_in_range, parse_float=_finite_float, parse_constant=_no_constants
    )
    # Escaped lone surrogates ("\\ud800") are not Unicode text: re-encoding finds them.
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


MAX_DEPTH = 32


def depth(value: Any) -> int:
    """Nesting depth of objects and arrays: the claim set itself is depth 1."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def open_token(ring: str, purpose: str, token: object, now: float, leeway: int) -> dict[str, Any]:
    """Open ``token`` following the specification's validation order, step by step."""
    _, keys = parse_keyring(ring)
    # 1. shape
    if not isinstance(token, str) or len(token) % 4 or len(token) > MAX_TOKEN_CHARS:
        raise Rejected("malformed")
    # 2. encoding: only the 64 url-safe characters, no padding
    if not token.isascii() or not _TOKEN.fullmatch(token):
        raise Rejected("malformed")
    raw = base64.urlsafe_b64decode(token)
    # 3. version
    if not raw:
        raise Rejected("malformed")
    if raw[0] != VERSION:
        raise Rejected("unsupported_version")
    # 4. layout
    kid_len = raw[1]
    end = 2 + kid_len + SALT_BYTES
    if len(raw) < end + NONCE_BYTES + TAG_BYTES + MIN_CIPHERTEXT:
        raise Rejected("malformed")
    if not 1 <= kid_len <= 16:
        raise Rejected("malformed")
    # 5. key id
    kid_bytes = raw[2 : 2 + kid_len]
    kid = kid_bytes.decode("ascii") if kid_bytes.isascii() else None
    if kid is None or kid not in keys:
        raise Rejected("unknown_key")
    # 6. tag
    salt = raw[end - SALT_BYTES : end]
    nonce = raw[end : end + NONCE_BYTES]
    try:
        plaintext = AESGCM(subkey(keys[kid], salt)).decrypt(
            nonce, raw[end + NONCE_BYTES :], raw[:end] + PURPOSE_BYTE[purpose]
        )
    except InvalidTag:
        raise Rejected("tag_mismatch") from None
    # 7. claims
    try:
        claims = decode_claims(plaintext)
    except ValueError:
        raise Rejected("bad_claims") from None
    if (
        type(claims) is not dict
        or type(claims.get("exp")) is not int
        or type(claims.get("iat")) is not int
        or type(claims.get("sub")) is not str
        or depth(claims) > MAX_DEPTH
    ):
        raise Rejected("bad_claims")
    # 8. time
    if not now < claims["exp"] + leeway:
        raise Rejected("expired")
    if claims["iat"] > now + leeway:
        raise Rejected("not_yet_valid")
    return claims
