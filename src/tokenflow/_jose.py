"""Compact JWS verification on joserfc, with the algorithms pinned by the caller.

Shared by :mod:`tokenflow.oidc` (ID tokens) and :mod:`tokenflow.dbsc`
(device-bound-session proofs); it needs the ``oidc`` or ``dbsc`` extra.

tokenflow writes no signature code: joserfc checks the signature, the key's
type against ``alg`` and a key's declared ``alg``. What this module adds are
the refusals that come *before* any key is chosen, in this order:

1. a token that is not a short ASCII string (over 8 KiB by default);
2. five segments: an encrypted token (JWE), which nothing here decrypts;
3. any other layout than three segments, an encoded header longer than the
   caller's bound (512 bytes by default, :data:`MAX_KEY_HEADER_BYTES` for a
   header that embeds a public key), or a header that is not a JSON object;
4. an ``alg`` outside the caller's pinned list (``none`` and every ``HS*``
   can never be on it: :func:`pin_algorithms` refuses them);
5. a ``crit`` header (no extension is understood, so none may be critical),
   and RFC 7797's ``b64`` (an unencoded payload changes what is signed).

The key is then chosen by the caller: this module never reads ``jku``,
``x5u``, ``x5c`` or ``jwk``. :mod:`tokenflow.oidc` picks a published key by
``kid``; :mod:`tokenflow.dbsc` takes a registration proof's own ``jwk`` (the
key being registered, checked by its rules) and verifies every later proof
with the stored key.
The payload is returned as bytes, and only once the signature verified.

:func:`verify_compact` is the whole thing in one call, for callers that hold
the key (a proof-of-possession JWT whose key the caller already trusts, say).

:func:`verify_held_key` is for a caller that holds the one key, and so the
one algorithm, a token may be signed with (a DBSC refresh proof and the key
stored with its session): the signature is checked over the token's first
two segments, as sent, *before* anything is decoded, and only then are the
header (``alg`` must be the key's, no ``crit``/``b64``) and the payload read.
The signature itself is checked by ``cryptography``, which joserfc uses too.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from joserfc import jws
from joserfc.errors import (
    InvalidKeyTypeError,
    JoseError,
    UnsupportedKeyAlgorithmError,
    UnsupportedKeyUseError,
)
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from ._base64url import b64url_decode
from ._errors import ConfigError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MAX_HEADER_BYTES",
    "MAX_KEY_HEADER_BYTES",
    "MAX_TOKEN_BYTES",
    "HeldKey",
    "JWSRejected",
    "JWSRejectedReason",
    "ParsedJWS",
    "VerifiedJWS",
    "parse_compact",
    "pin_algorithms",
    "verify_compact",
    "verify_held_key",
    "verify_parsed",
]

MAX_TOKEN_BYTES: Final = 8192
"""Longest token read at all. Real ID tokens are 1 to 2 KiB."""

MAX_HEADER_BYTES: Final = 512
"""Longest encoded protected header by default: an ID token's header is a few
dozen bytes (``alg``, ``kid``, ``typ``)."""

MAX_KEY_HEADER_BYTES: Final = 1152
"""Longest encoded protected header that carries its own public key (a DBSC
registration proof's ``jwk``). The largest key such a header may hold, RSA
4096 bits, makes a header of 990 encoded bytes; 2048 bits about 560; P-256
about 230."""

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Every algorithm a verifier may be pinned to: public-key signatures only."""

# Header parameters whose presence changes what is signed or how it must be
# read. tokenflow understands none of the extensions they announce.
_REFUSED_HEADERS: Final = ("crit", "b64")


class JWSRejectedReason(enum.Enum):
    """Why a compact JWS was refused (for events and tests; never tell the client)."""

    TOO_LARGE = "too_large"
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"
    ALGORITHM = "algorithm"
    """``alg`` not pinned, or not the key's type or declared algorithm."""
    CRITICAL_HEADER = "critical_header"
    NO_KEY = "no_key"
    SIGNATURE = "signature"


class JWSRejected(Exception):
    """A compact JWS failed verification; :attr:`reason` says at which step."""

    __slots__ = ("reason",)

    def __init__(self, reason: JWSRejectedReason) -> None:
        super().__init__(f"JWS rejected: {reason.value}")
        self.reason = reason


class ParsedJWS(NamedTuple):
    """A compact JWS whose header passed the pre-checks; nothing is verified yet.

    A named tuple rather than a frozen dataclass: it is built on every
    verification, and a tuple is built several times faster.
    """

    header: Mapping[str, Any]
    alg: str
    kid: str | None
    obj: jws.CompactSignature


@dataclass(frozen=True, slots=True)
class VerifiedJWS:
    """A compact JWS whose signature verified: its header and raw payload."""

    header: Mapping[str, Any]
    payload: bytes = field(repr=False)


def pin_algorithms(algorithms: Collection[str]) -> frozenset[str]:
    """Validate a configured algorithm list: non-empty, public-key algorithms only."""
    if isinstance(algorithms, str):
        raise ConfigError("algorithms must be a list of names, such as ['RS256'], not a string")
    pinned = frozenset(algorithms)
    if not pinned:
        raise ConfigError("algorithms must name at least one algorithm, such as 'RS256'")
    refused = sorted(a for a in pinned if a not in ASYMMETRIC_ALGORITHMS)
    if refused:
        raise ConfigError(
            f"algorithms {refused} are not allowed: only public-key signature algorithms "
            f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}) can verify third-party tokens"
        )
    return pinned


_REGISTRIES: dict[tuple[frozenset[str], int], jws.JWSRegistry] = {}


def _registry(algorithms: frozenset[str], max_header: int = MAX_HEADER_BYTES) -> jws.JWSRegistry:
    registry = _REGISTRIES.get((algorithms, max_header))
    if registry is None:
        # strict_check_header=False: RFC 7515 says to ignore header parameters one
        # does not understand, unless they are critical, and ``crit`` is refused.
        registry = jws.JWSRegistry(algorithms=sorted(algorithms), strict_check_header=False)
        registry.max_header_length = max_header
        # Pinned lists and bounds are configuration: the dictionary stays as small as the config.
        _REGISTRIES[(algorithms, max_header)] = registry
    return registry


def parse_compact(
    token: object,
    algorithms: frozenset[str],
    *,
    max_bytes: int = MAX_TOKEN_BYTES,
    max_header: int = MAX_HEADER_BYTES,
) -> ParsedJWS:
    """Pre-check a compact JWS and read its header; raises :class:`JWSRejected`.

    ``max_header`` bounds the encoded protected header (the first segment);
    joserfc refuses a longer one before decoding it (MALFORMED).
    """
    if type(token) is not str or not token.isascii():
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    if len(token) > max_bytes:
        raise JWSRejected(JWSRejectedReason.TOO_LARGE)
    dots = token.count(".")
    if dots == 4:
        raise JWSRejected(JWSRejectedReason.ENCRYPTED)
    if dots != 2:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    registry = _registry(algorithms, max_header)
    try:
        obj = jws.extract_compact(token.encode("ascii"), registry=registry)
    except (JoseError, ValueError, TypeError, RecursionError) as exc:
        raise JWSRejected(JWSRejectedReason.MALFORMED) from exc
    header = obj.protected
    if type(header) is not dict:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    alg = header.get("alg")
    if type(alg) is not str or alg not in algorithms:
        raise JWSRejected(JWSRejectedReason.ALGORITHM)
    for name in _REFUSED_HEADERS:
        if name in header:
            raise JWSRejected(JWSRejectedReason.CRITICAL_HEADER)
    kid = header.get("kid")
    if kid is not None and type(kid) is not str:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    return ParsedJWS(header, alg, kid, obj)


def verify_parsed(parsed: ParsedJWS, key: Key, algorithms: frozenset[str]) -> bytes:
    """Verify a parsed JWS's signature with ``key``; its payload, or :class:`JWSRejected`."""
    if not isinstance(key, (RSAKey, ECKey, OKPKey)):
        # A symmetric key can only mean confusion: a verifier never holds one.
        raise JWSRejected(JWSRejectedReason.ALGORITHM)
    try:
        valid = jws.validate_compact(parsed.obj, key, registry=_registry(algorithms))
    except (InvalidKeyTypeError, UnsupportedKeyAlgorithmError, UnsupportedKeyUseError) as exc:
        raise JWSRejected(JWSRejectedReason.ALGORITHM) from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise JWSRejected(JWSRejectedReason.SIGNATURE) from exc
    if not valid:
        raise JWSRejected(JWSRejectedReason.SIGNATURE)
    payload: bytes = parsed.obj.payload
    return payload


def verify_compact(
    token: object,
    key_for: Callable[[Mapping[str, Any]], Key | None],
    algorithms: Collection[str],
    *,
    max_bytes: int = MAX_TOKEN_BYTES,
) -> VerifiedJWS:
    """Verify a compact JWS in one call; raises :class:`JWSRejected`.

    ``key_for`` receives the pre-checked header and returns the key to verify
    with (``None``: no such key). ``algorithms`` is the pinned list.
    """
    pinned = pin_algorithms(algorithms)
    parsed = parse_compact(token, pinned, max_bytes=max_bytes)
    key = key_for(parsed.header)
    if key is None:
        raise JWSRejected(JWSRejectedReason.NO_KEY)
    return VerifiedJWS(parsed.header, verify_parsed(parsed, key, pinned))


HeldKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
"""A public key :func:`verify_held_key` accepts: P-256 (ES256) or RSA (RS256)."""


_ES256: Final = ec.ECDSA(hashes.SHA256())
_SHA256: Final = hashes.SHA256()
_PKCS1: Final = padding.PKCS1v15()


def _der_integer(value: bytes) -> bytes:
    """A big-endian unsigned integer as a DER INTEGER (X.690): minimal, and a
    leading zero byte where the top bit would otherwise read as a sign."""
    value = value.lstrip(b"\x00")
    if not value or value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + len(value).to_bytes(1, "big") + value


def _der_signature(raw: bytes) -> bytes:
    """A JWS ES256 signature (``r || s``, 32 bytes each) as the DER
    ``SEQUENCE { INTEGER r, INTEGER s }`` that ``cryptography`` verifies.

    What ``encode_dss_signature`` makes of the two integers, byte for byte,
    without converting them to Python ints and back: at most 70 bytes, so
    every length fits one byte.
    """
    body = _der_integer(raw[:32]) + _der_integer(raw[32:])
    return b"\x30" + len(body).to_bytes(1, "big") + body


def verify_held_key(
    token: object,
    key: HeldKey,
    *,
    max_bytes: int = MAX_TOKEN_BYTES,
    max_header: int = MAX_HEADER_BYTES,
) -> VerifiedJWS:
    """Verify a compact JWS signed with ``key``, the one key it may be signed with.

    The algorithm follows from the key (ES256 for a P-256 key, RS256 for an
    RSA key), the signature is checked before any segment is decoded, and
    the header must then name that algorithm and hold neither ``crit`` nor
    ``b64``. Raises :class:`JWSRejected` (never anything else for any token).
    """
    if type(token) is not str or not token.isascii():
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    if len(token) > max_bytes:
        raise JWSRejected(JWSRejectedReason.TOO_LARGE)
    segments = token.split(".")
    if len(segments) != 3:
        raise JWSRejected(
            JWSRejectedReason.ENCRYPTED if len(segments) == 5 else JWSRejectedReason.MALFORMED
        )
    header_text, payload_text, signature_text = segments
    if not header_text or len(header_text) > max_header:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    signature = b64url_decode(signature_text)
    if signature is None:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    signing_input = token[: len(header_text) + 1 + len(payload_text)].encode("ascii")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise JWSRejected(JWSRejectedReason.ALGORITHM)
            # JWS writes r || s, 32 bytes each (RFC 7518, section 3.4).
            if len(signature) != 64:
                raise JWSRejected(JWSRejectedReason.SIGNATURE)
            key.verify(_der_signature(signature), signing_input, _ES256)
            expected = "ES256"
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, _PKCS1, _SHA256)
            expected = "RS256"
        else:
            raise JWSRejected(JWSRejectedReason.ALGORITHM)
    except InvalidSignature as exc:
        raise JWSRejected(JWSRejectedReason.SIGNATURE) from exc
    # Authenticated from here on: the key's holder wrote these bytes.
    payload = b64url_decode(payload_text)
    if payload is None:
        raise JWSRejected(JWSRejectedReason.MALFORMED)
    header = _signed_header(header_text, expected)
    if isinstance(header, JWSRejectedReason):
        raise JWSRejected(header)
    return VerifiedJWS(header, payload)


@functools.lru_cache(maxsize=256)
def _signed_header(header_text: str, alg: str) -> Mapping[str, Any] | JWSRejectedReason:
    """The protected header of a JWS whose signature verified, read-only, or why it is refused:
    it must be a JSON object, name ``alg`` and hold neither ``crit`` nor ``b64``.

    Only called once the signature over ``header_text`` verified. Cached by
    the encoded text: a device signs the same header into every proof, and
    the answer is a function of the text alone.
    """
    raw = b64url_decode(header_text)
    if raw is None:
        return JWSRejectedReason.MALFORMED
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        return JWSRejectedReason.MALFORMED
    if type(header) is not dict:
        return JWSRejectedReason.MALFORMED
    if header.get("alg") != alg:
        return JWSRejectedReason.ALGORITHM
    for name in _REFUSED_HEADERS:
        if name in header:
            return JWSRejectedReason.CRITICAL_HEADER
    return MappingProxyType(header)
