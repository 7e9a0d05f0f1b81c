"""Sign-in transactions of the OpenID Connect authorization-code flow (sans-IO).

Starting a provider login creates a transaction: a random ``state``, ``nonce``
and PKCE ``code_verifier``, the provider's name and the same-site page to
return to. It travels in its own short-lived cookie, sealed (AES-256-GCM) with
a key derived from the flow's key ring, so the browser holds it and the
server keeps no state. The cookie is named after a digest of the state, so
several tabs can start logins at once without overwriting one another, and
the callback finds its transaction from the ``state`` parameter alone.

Nothing in a transaction cookie is trusted before its tag verifies; every
failure opens to ``None``. The key is derived per cookie (HKDF over the
key-ring key and a fresh 16-byte salt), so the 96-bit random nonces never
meet twice under one key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._base64url import b64url_decode, b64url_encode
from ._http import safe_next as _safe_next
from ._keyring import KeyRing

__all__ = [
    "TRANSACTION_TTL",
    "Transaction",
    "open_transaction",
    "pkce_challenge",
    "safe_next",
    "seal_transaction",
    "transaction_cookie_name",
]

TRANSACTION_TTL: Final = 600
"""Seconds a started login may take before its callback is refused."""
RANDOM_BYTES: Final = 32
"""Entropy of each state, nonce and code verifier (256 bits; 43 base64url characters)."""
_SALT_BYTES: Final = 16
_NONCE_BYTES: Final = 12
_INFO: Final = b"tokenflow/v1/oidc-transaction"
_COOKIE_PREFIX: Final = "tf_oidc_"
_MAX_COOKIE_CHARS: Final = 2048
_MAX_NEXT: Final = 512
_STATE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_KID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A same-site path: one slash, then no second slash or backslash (which
# browsers read as "//host"), printable ASCII only.


@dataclass(frozen=True, slots=True)
class Transaction:
    """One started provider login. The secrets never appear in ``repr``."""

    provider: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    next: str
    issued_at: int

    @classmethod
    def new(
        cls, provider: str, next_path: str, now: float, random: Callable[[int], bytes]
    ) -> Transaction:
        """A fresh transaction: state, nonce and verifier from ``random``."""
        return cls(
            provider,
            b64url_encode(random(RANDOM_BYTES)),
            b64url_encode(random(RANDOM_BYTES)),
            b64url_encode(random(RANDOM_BYTES)),
            next_path,
            int(now),
        )

    def state_matches(self, state: object) -> bool:
        """Whether ``state`` is this transaction's, compared in constant time."""
        return type(state) is str and hmac.compare_digest(
            state.encode("utf-8", "surrogatepass"), self.state.encode()
        )


def pkce_challenge(verifier: str) -> str:
    """The ``S256`` code challenge of a verifier (RFC 7636 section 4.2)."""
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


def safe_next(value: object, default: str = "/") -> str:
    """``value`` if it is a same-site path to return to after login, else ``default``
    (:func:`tokenflow._http.safe_next`, at most 512 characters: it rides in a cookie)."""
    return _safe_next(value, default, limit=_MAX_NEXT)


def transaction_cookie_name(state: object, prefix: str = "__Host-") -> str | None:
    """The cookie a transaction with this ``state`` travels in, or None for a malformed state.

    The name carries a digest of the state, not the state: each tab's login has
    its own cookie, and a callback only ever opens the one its state names.
    """
    if type(state) is not str or not _STATE.fullmatch(state):
        return None
    digest = b64url_encode(hashlib.sha256(state.encode()).digest()[:12])
    return f"{prefix}{_COOKIE_PREFIX}{digest}"


def _aead(secret: bytes, salt: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(secret)
    return AESGCM(key)


def _associated(kid: str, name: str) -> bytes:
    # The cookie name is bound in: a transaction cannot be replayed under
    # another state's cookie.
    return _INFO + b"\x00" + kid.encode() + b"\x00" + name.encode()


def seal_transaction(
    keyring: KeyRing, transaction: Transaction, name: str, random: Callable[[int], bytes]
) -> str:
    """The sealed cookie value of ``transaction`` (cookie ``name``), under the active key."""
    key = keyring.active
    salt, nonce = random(_SALT_BYTES), random(_NONCE_BYTES)
    plain = orjson.dumps(
        [
            transaction.provider,
            transaction.state,
            transaction.nonce,
            transaction.code_verifier,
            transaction.next,
            transaction.issued_at,
        ]
    )
    sealed = _aead(key.secret, salt).encrypt(nonce, plain, _associated(key.kid, name))
    return f"{key.kid}.{b64url_encode(salt + nonce + sealed)}"


def open_transaction(
    keyring: KeyRing, value: object, name: str, now: float, leeway: int = 0
) -> Transaction | None:
    """The transaction in a cookie value, or None: malformed, forged, older than
    :data:`TRANSACTION_TTL`, or issued more than ``leeway`` seconds in the future
    (the clock skew allowed between the server that started and the one that
    takes the callback)."""
    if type(value) is not str or len(value) > _MAX_COOKIE_CHARS:
        return None
    kid, _, body = value.partition(".")
    if not _KID.fullmatch(kid):
        return None
    key = keyring.get(kid)
    raw = b64url_decode(body)
    if key is None or raw is None or len(raw) < _SALT_BYTES + _NONCE_BYTES + 16:
        return None
    salt, nonce = raw[:_SALT_BYTES], raw[_SALT_BYTES : _SALT_BYTES + _NONCE_BYTES]
    try:
        plain = _aead(key.secret, salt).decrypt(
            nonce, raw[_SALT_BYTES + _NONCE_BYTES :], _associated(kid, name)
        )
        fields = orjson.loads(plain)
    except (InvalidTag, orjson.JSONDecodeError):
        return None
    # Authenticated from here on; the shape is still checked (fail closed).
    if type(fields) is not list or len(fields) != 6:
        return None
    provider, state, nonce_, verifier, next_path, issued = fields
    if not all(type(v) is str for v in (provider, state, nonce_, verifier, next_path)):
        return None
    if type(issued) is not int or not issued - leeway <= now < issued + TRANSACTION_TTL:
        return None
    return Transaction(provider, state, nonce_, verifier, next_path, issued)
