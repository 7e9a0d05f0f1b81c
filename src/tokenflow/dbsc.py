"""Device-bound sessions (DBSC): the proof verifier, on joserfc.

Install with ``pip install 'tokenflow[dbsc]'`` and turn the feature on::

    from tokenflow import DeviceBinding, Flow, FlowConfig
    from tokenflow.dbsc import DbscProofVerifier

    config = FlowConfig(device_binding=DeviceBinding())
    flow = Flow(keyring, store, users, config=config, proofs=DbscProofVerifier())

:class:`DbscProofVerifier` checks one ``dbsc+jwt`` proof, with the
compact-JWS checks of :mod:`tokenflow.oidc` (which refuse ``none``, ``HS*``,
``crit`` and unencoded payloads before any key is chosen), and then:

- ``typ`` must be ``dbsc+jwt``, ``alg`` one of the offered algorithms
  (ES256, RS256);
- at registration the key comes from the ``jwk`` header, and only from
  there: a public P-256 key for ES256, a public RSA key of 2048 to 4096 bits
  for RS256 (a JWK holding private members is refused);
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

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from ._base64url import b64url_decode
from ._dbsc import SUPPORTED_ALGORITHMS, DeviceBinding, DeviceProof, ProofFailure
from .oidc._jws import JWSRejected, JWSRejectedReason, parse_compact, verify_parsed

__all__ = ["DbscProofVerifier", "DeviceBinding", "DeviceProof", "ProofFailure", "canonical_jwk"]

_TYP: Final = "dbsc+jwt"
_MAX_PROOF_BYTES: Final = 8192
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _b64_length(text: object) -> int | None:
    """Decoded length of a canonical unpadded base64url string, or None."""
    if type(text) is not str or not text or len(text) > 1024:
        return None
    raw = b64url_decode(text)
    return None if raw is None else len(raw)


def canonical_jwk(jwk: object, alg: str) -> str | None:
    """The public key of ``jwk`` as canonical JSON (RFC 7638 members, sorted), or None.

    None for anything but a public P-256 key (``alg`` ES256) or a public RSA
    key of 2048 to 4096 bits (RS256).
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
        n_bytes = _b64_length(jwk.get("n"))
        e_bytes = _b64_length(jwk.get("e"))
        if jwk.get("kty") != "RSA" or n_bytes is None or not 256 <= n_bytes <= 512:
            return None
        if e_bytes is None or e_bytes > 8:
            return None
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    else:
        return None
    return json.dumps(members, separators=(",", ":"), sort_keys=True)


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
        pinned = frozenset(a for a in algorithms if a in SUPPORTED_ALGORITHMS)
        if not pinned:
            return ProofFailure.ALGORITHM
        try:
            parsed = parse_compact(token, pinned, max_bytes=_MAX_PROOF_BYTES)
        except JWSRejected as exc:
            return (
                ProofFailure.ALGORITHM
                if exc.reason is JWSRejectedReason.ALGORITHM
                else (ProofFailure.MALFORMED)
            )
        header = parsed.header
        if header.get("typ") != _TYP:
            return ProofFailure.MALFORMED
        if key is None:
            canonical = canonical_jwk(header.get("jwk"), parsed.alg)
            if canonical is None:
                return ProofFailure.KEY
        else:
            if "jwk" in header:
                # A refresh proof names no key: only the stored one may verify it.
                return ProofFailure.KEY
            canonical = key
        imported = _import(canonical)
        if imported is None:
            return ProofFailure.KEY
        try:
            payload = verify_parsed(parsed, imported, pinned)
        except JWSRejected as exc:
            return (
                ProofFailure.ALGORITHM
                if exc.reason is JWSRejectedReason.ALGORITHM
                else (ProofFailure.SIGNATURE)
            )
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            return ProofFailure.MALFORMED
        if type(claims) is not dict:
            return ProofFailure.MALFORMED
        jti = claims.get("jti")
        audience = claims.get("aud")
        if type(jti) is not str or (audience is not None and type(audience) is not str):
            return ProofFailure.MALFORMED
        return DeviceProof(canonical, jti, audience)
