"""Device-bound sessions (DBSC): the proof verifier, on joserfc.

Install with ``pip install 'tokenflow[dbsc]'`` and turn the feature on::

    from tokenflow import DeviceBinding, Flow, FlowConfig
    from tokenflow.dbsc import DbscProofVerifier

    config = FlowConfig(device_binding=DeviceBinding())
    flow = Flow(keyring, store, users, config=config, proofs=DbscProofVerifier())

:class:`DbscProofVerifier` checks one ``dbsc+jwt`` proof, with the
compact-JWS checks it shares with :mod:`tokenflow.oidc` (which refuse
``none``, ``HS*``, ``crit``, unencoded payloads and oversized headers before
any key is chosen), and then:

- ``typ`` must be ``dbsc+jwt``, ``alg`` one of the offered algorithms
  (ES256, RS256);
- at registration the key comes from the ``jwk`` header, and only from
  there: a public P-256 key for ES256, a public RSA key for RS256 whose
  modulus is odd and 2048 to 4096 bits long and whose public exponent is odd,
  at least 65537 and at most 64 bits (``e = 1``, ``e = 3`` and the like are
  refused), both written without leading zero bytes; a JWK holding private
  members is refused. A registration proof's header may be up to
  1152 encoded bytes (room for a 4096-bit key); a refresh proof's, which
  carries no key, up to 512;
- on a refresh the proof must carry no ``jwk``: it is verified with the key
  stored with the session, and nothing in the token can choose another;
- the payload must be a JSON object whose ``jti`` is a string (the
  challenge, which the flow checks) and whose ``aud``, if present, is a string.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from ._base64url import b64url_decode
from ._dbsc import SUPPORTED_ALGORITHMS, DeviceBinding, DeviceProof, ProofFailure
from ._jose import (
    MAX_HEADER_BYTES,
    MAX_KEY_HEADER_BYTES,
    HeldKey,
    JWSRejected,
    JWSRejectedReason,
    parse_compact,
    verify_held_key,
    verify_parsed,
)

__all__ = ["DbscProofVerifier", "DeviceBinding", "DeviceProof", "ProofFailure", "canonical_jwk"]

_TYP: Final = "dbsc+jwt"
_MAX_PROOF_BYTES: Final = 8192
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _b64_bytes(text: object) -> bytes | None:
    """The bytes of a canonical unpadded base64url string (at most 1 KiB of text), or None."""
    if type(text) is not str or not text or len(text) > 1024 or not text.isascii():
        return None
    return b64url_decode(text)


def _b64_length(text: object) -> int | None:
    """Decoded length of a canonical unpadded base64url string, or None."""
    raw = _b64_bytes(text)
    return None if raw is None else len(raw)


def _rsa_public_ok(n_text: object, e_text: object) -> bool:
    """Whether ``n`` and ``e`` make an RSA public key DBSC may bind to.

    The modulus: odd, 2048 to 4096 bits, no leading zero byte (RFC 7518
    writes integers minimally). The exponent: odd, from 65537 (NIST SP
    800-56B's floor; ``e = 1`` signs nothing, small ones invite forgery
    against sloppy padding checks) to 64 bits, no leading zero byte.
    """
    n_raw = _b64_bytes(n_text)
    e_raw = _b64_bytes(e_text)
    if n_raw is None or e_raw is None or n_raw[0] == 0 or e_raw[0] == 0 or len(e_raw) > 8:
        return False
    n = int.from_bytes(n_raw, "big")
    e = int.from_bytes(e_raw, "big")
    return 2048 <= n.bit_length() <= 4096 and n % 2 == 1 and e % 2 == 1 and e >= 65537


def canonical_jwk(jwk: object, alg: str) -> str | None:
    """The public key of ``jwk`` as canonical JSON (RFC 7638 members, sorted), or None.

    None for anything but a public P-256 key (``alg`` ES256) or a public RSA
    key of 2048 to 4096 bits with an exponent of at least 65537 (RS256).
    """
    if not isinstance(jwk, Mapping) or _PRIVATE_MEMBERS.intersection(jwk):
        return None
    members: dict[str, Any]
    if alg == "ES256":
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            return None
        if _b64_length(jwk.get("x")) != 32 or _b64_length(jwk.get("y")) != 32:
            return None
        members = {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    elif alg == "RS256":
        if jwk.get("kty") != "RSA" or not _rsa_public_ok(jwk.get("n"), jwk.get("e")):
            return None
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    else:
        return None
    return json.dumps(members, separators=(",", ":"), sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _held(canonical: str) -> tuple[HeldKey, str] | None:
    """The ``cryptography`` public key of a stored canonical JWK and its algorithm.

    Only ever called with keys :func:`canonical_jwk` produced (what stores
    keep); None if one does not load (a point off the curve, say).
    """
    try:
        data = json.loads(canonical)
        if data.get("kty") == "EC":
            x = b64url_decode(data["x"])
            y = b64url_decode(data["y"])
            if x is None or y is None:
                return None
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            return numbers.public_key(), "ES256"
        if data.get("kty") == "RSA":
            n = b64url_decode(data["n"])
            e = b64url_decode(data["e"])
            if n is None or e is None:
                return None
            public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
            return public.public_key(), "RS256"
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return None


@functools.lru_cache(maxsize=4096)
def _import(canonical: str) -> Key | None:
    """A joserfc key from canonical JWK JSON (public keys only, so caching is safe)."""
    try:
        data = json.loads(canonical)
        imported: Key
        if data.get("kty") == "EC":
            imported = ECKey.import_key(data)
        elif data.get("kty") == "RSA":
            imported = RSAKey.import_key(data)
        else:
            return None
    except (JoseError, ValueError, TypeError, AttributeError):
        return None
    return imported


class DbscProofVerifier:
    """Verifies ``dbsc+jwt`` proofs: a :class:`~tokenflow.ports.DeviceProofVerifier`.

    Stateless apart from a cache of imported public keys; thread-safe.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "DbscProofVerifier()"

    def verify(
        self, token: str, *, key: str | None, algorithms: frozenset[str]
    ) -> DeviceProof | ProofFailure:
        """Verify one proof; ``key`` is None at registration (the ``jwk`` header is used)."""
        pinned = SUPPORTED_ALGORITHMS.intersection(algorithms)
        if not pinned:
            return ProofFailure.ALGORITHM
        if key is not None:
            return self._verify_refresh(token, key, pinned)
        try:
            parsed = parse_compact(
                token, pinned, max_bytes=_MAX_PROOF_BYTES, max_header=MAX_KEY_HEADER_BYTES
            )
        except JWSRejected as exc:
            return _failure(exc)
        if parsed.header.get("typ") != _TYP:
            return ProofFailure.MALFORMED
        canonical = canonical_jwk(parsed.header.get("jwk"), parsed.alg)
        if canonical is None:
            return ProofFailure.KEY
        imported = _import(canonical)
        if imported is None:
            return ProofFailure.KEY
        try:
            payload = verify_parsed(parsed, imported, pinned)
        except JWSRejected as exc:
            return _failure(exc)
        return _proof(canonical, payload)

    @staticmethod
    def _verify_refresh(token: str, key: str, pinned: frozenset[str]) -> DeviceProof | ProofFailure:
        """A refresh proof: the stored key fixes the algorithm, and the signature
        is checked before the proof is decoded at all."""
        held = _held(key)
        if held is None:
            return ProofFailure.KEY
        public, alg = held
        if alg not in pinned:
            return ProofFailure.ALGORITHM
        try:
            verified = verify_held_key(
                token, public, max_bytes=_MAX_PROOF_BYTES, max_header=MAX_HEADER_BYTES
            )
        except JWSRejected as exc:
            return _failure(exc)
        header = verified.header
        if header.get("typ") != _TYP:
            return ProofFailure.MALFORMED
        if "jwk" in header:
            # A refresh proof names no key: only the stored one may verify it.
            return ProofFailure.KEY
        return _proof(key, verified.payload)


def _failure(exc: JWSRejected) -> ProofFailure:
    if exc.reason is JWSRejectedReason.ALGORITHM:
        return ProofFailure.ALGORITHM
    if exc.reason is JWSRejectedReason.SIGNATURE:
        return ProofFailure.SIGNATURE
    return ProofFailure.MALFORMED


def _proof(key: str, payload: bytes) -> DeviceProof | ProofFailure:
    """The proof's claims: a JSON object with a string ``jti`` and an optional string ``aud``."""
    try:
        # orjson, as for tokenflow's own tokens: UTF-8 only (RFC 8259), no NaN,
        # nesting bounded, in C (json.loads runs three Python frames per proof).
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ProofFailure.MALFORMED
    if type(claims) is not dict:
        return ProofFailure.MALFORMED
    jti = claims.get("jti")
    audience = claims.get("aud")
    if type(jti) is not str or (audience is not None and type(audience) is not str):
        return ProofFailure.MALFORMED
    return DeviceProof(key, jti, audience)
