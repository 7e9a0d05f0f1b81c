"""Named sealing keys: one active key seals, every key in the ring opens.

A key ring travels as one environment-variable-friendly string::

    *k7qm2x:Jq0...43 base64url chars...,k3ab9z:Xc1...

Entries are separated by commas. Each is ``<key id>:<key>``, where the key id
is 1 to 16 characters of ``[A-Za-z0-9_-]`` and the key is 32 random bytes in
unpadded base64url (43 characters). Exactly one entry starts with ``*``: the
active key, which seals every new token. The others only open tokens sealed
before the last rotation; drop them once those tokens have expired (the refresh
lifetime at most). The order of entries carries no meaning.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._base64url import b64url_decode, b64url_encode
from ._errors import ConfigError, InvalidToken, InvalidTokenReason

__all__ = ["KEY_BYTES", "Key", "KeyRing"]

KEY_BYTES = 32
"""Every key is 256 bits."""

_KID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_B64URL_KEY = re.compile(r"[A-Za-z0-9_-]{43}")
_KID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

# Sealed data at rest (KeyRing.seal_bytes): its own version byte and HKDF
# label, so no sealed blob can ever be opened as a token, nor a token as one.
_SEALED_VERSION: Final = 1
_SEALED_SALT: Final = 16
_SEALED_NONCE: Final = 12
_SEALED_TAG: Final = 16
_SEALED_INFO: Final = b"tokenflow/v1 sealed bytes"
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9./_-]{0,63}")


def _decode_key(text: str, kid: str) -> bytes:
    # Strict: exactly 43 alphabet characters, and canonical (the two spare low
    # bits of the last character are zero), so one key has one spelling.
    if not _B64URL_KEY.fullmatch(text):
        raise ConfigError(
            f"key {kid!r}: the secret must be 43 base64url characters (32 bytes, no "
            "padding); generate one with `python -m tokenflow keygen`"
        )
    raw = b64url_decode(text)
    if raw is None:
        raise ConfigError(f"key {kid!r}: the secret is not canonical base64url")
    return raw


@dataclass(frozen=True, slots=True, eq=False)
class Key:
    """One named 256-bit key. Its secret never appears in ``repr`` or ``str``."""

    kid: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not _KID.fullmatch(self.kid):
            # Never echo an invalid id: with the arguments or the entry's two
            # halves swapped, the "id" is the secret.
            found = (
                f"{len(self.kid)} characters"
                if isinstance(self.kid, str)
                else f"a {type(self.kid).__name__}"
            )
            raise ConfigError(
                f"a key id is invalid ({found}): use 1 to 16 characters of "
                "A-Z, a-z, 0-9, '_' or '-'"
            )
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            length = len(self.secret) if isinstance(self.secret, bytes) else "non-bytes"
            raise ConfigError(
                f"key {self.kid!r} has {length} bytes of secret; tokenflow keys are exactly "
                f"{KEY_BYTES} random bytes: generate one with `python -m tokenflow keygen`"
            )

    def __eq__(self, other: object) -> bool:
        # Secrets are compared in constant time, unlike a generated __eq__.
        if not isinstance(other, Key):
            return NotImplemented
        return self.kid == other.kid and hmac.compare_digest(self.secret, other.secret)

    def __hash__(self) -> int:
        return hash(self.kid)

    @classmethod
    def generate(cls, kid: str | None = None) -> Self:
        """A fresh key from the operating system's CSPRNG, with a random id if none is given."""
        if kid is None:
            kid = "".join(secrets.choice(_KID_ALPHABET) for _ in range(6))
        return cls(kid, secrets.token_bytes(KEY_BYTES))

    def entry(self, *, active: bool) -> str:
        """This key as one key-ring entry (contains the secret: handle as one)."""
        encoded = b64url_encode(self.secret)
        return f"{'*' if active else ''}{self.kid}:{encoded}"


class KeyRing:
    """An immutable set of named keys with exactly one active (sealing) key.

    Construct it from :class:`Key` objects, or parse the string form with
    :meth:`parse`. Validation happens here, so a broken ring fails at start-up
    with :class:`ConfigError` rather than on the first request.
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, active: Key, retired: Iterable[Key] = ()) -> None:
        keys: dict[str, Key] = {}
        for key in (active, *retired):
            if not isinstance(key, Key):
                raise ConfigError(f"a key ring holds Key objects, not {type(key).__name__}")
            if key.kid in keys:
                raise ConfigError(
                    f"key id {key.kid!r} appears twice in the key ring; every key needs its own id"
                )
            keys[key.kid] = key
        self._active = active
        self._keys = keys

    @classmethod
    def generate(cls) -> Self:
        """A ring holding one freshly generated active key."""
        return cls(Key.generate())

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the string form (see the module documentation).

        Raises :class:`ConfigError` naming the faulty entry by position and key
        id, never echoing a secret.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(
                "the key ring is empty; generate one with `python -m tokenflow keygen`"
            )
        active: list[Key] = []
        retired: list[Key] = []
        for position, raw_entry in enumerate(text.split(","), start=1):
            entry = raw_entry.strip()
            is_active = entry.startswith("*")
            kid, sep, secret = entry.removeprefix("*").partition(":")
            if not sep:
                raise ConfigError(
                    f"key ring entry {position} is not of the form '<key id>:<key>' "
                    "(entries are separated by commas; the active one starts with '*')"
                )
            if not _KID.fullmatch(kid):
                raise ConfigError(
                    f"key ring entry {position} has an invalid key id: use 1 to 16 characters "
                    "of A-Z, a-z, 0-9, '_' or '-', then ':', then the key"
                )
            key = Key(kid, _decode_key(secret, kid))
            (active if is_active else retired).append(key)
        if len(active) != 1:
            raise ConfigError(
                f"the key ring marks {len(active)} keys active; mark exactly one entry with a "
                "leading '*' (the key that seals new tokens)"
            )
        return cls(active[0], retired)

    def serialize(self) -> str:
        """The string form, active key first. The result contains every secret."""
        return ",".join(key.entry(active=key is self._active) for key in self._keys.values())

    def rotated(self, new_active: Key | None = None) -> KeyRing:
        """A ring whose active key is ``new_active`` (fresh if omitted).

        The previous active key stays in the ring, open-only, so tokens it
        sealed keep working until they expire.
        """
        new = new_active if new_active is not None else Key.generate()
        return KeyRing(new, list(self._keys.values()))

    def without(self, kid: str) -> KeyRing:
        """A ring without the retired key ``kid``. The active key cannot be removed."""
        if kid == self._active.kid:
            raise ConfigError(f"key {kid!r} is active; rotate to a new key before removing it")
        if kid not in self._keys:
            raise ConfigError(f"key {kid!r} is not in the key ring")
        return KeyRing(
            self._active, [k for k in self._keys.values() if k.kid != kid and k is not self._active]
        )

    def seal_bytes(self, plaintext: bytes, *, purpose: str, context: bytes = b"") -> bytes:
        """Seal ``plaintext`` under the active key, for storage at rest.

        AES-256-GCM under a subkey derived (HKDF-SHA256-Expand, label
        ``tokenflow/v1 sealed bytes``) from the active key and a random
        128-bit salt drawn for this blob alone, so nonce reuse needs a salt
        collision first (about 2^-64 for 2^32 blobs) whatever the volume. The
        authenticated data binds the key id, the salt, ``purpose`` (a short
        lower-case label such as ``"mfa/totp-secret"``) and ``context`` (what
        the blob belongs to, such as a user id): a blob opens only under the
        same purpose and context. Tokens are never blobs and blobs never
        tokens (their own label and layout). Layout::

            0x01 | kid length | kid | salt (16) | nonce (12) | ciphertext | tag (16)

        Keys can rotate: a blob opens as long as its key stays in the ring.
        Reseal it (open, seal) to move it to the active key.
        """
        if not isinstance(plaintext, bytes):
            raise TypeError("seal_bytes seals bytes")
        kid = self._active.kid.encode()
        header = bytes((_SEALED_VERSION, len(kid))) + kid + secrets.token_bytes(_SEALED_SALT)
        nonce = secrets.token_bytes(_SEALED_NONCE)
        aead = AESGCM(_sealing_subkey(self._active.secret, header[-_SEALED_SALT:]))
        sealed = aead.encrypt(nonce, plaintext, _sealed_ad(header, purpose, context))
        return header + nonce + sealed

    def open_bytes(self, sealed: bytes, *, purpose: str, context: bytes = b"") -> bytes:
        """Open a blob made by :meth:`seal_bytes` with the same ``purpose`` and ``context``.

        Every failure (wrong shape, unknown key id, tampered, another purpose
        or context) raises :class:`~tokenflow.tokens.InvalidToken`, whose
        message never says which check failed.
        """
        _sealed_ad(b"", purpose, context)  # misuse raises before any input is read
        if not isinstance(sealed, bytes) or len(sealed) < 2 or sealed[0] != _SEALED_VERSION:
            raise InvalidToken(InvalidTokenReason.MALFORMED)
        end = 2 + sealed[1] + _SEALED_SALT
        if len(sealed) < end + _SEALED_NONCE + _SEALED_TAG:
            raise InvalidToken(InvalidTokenReason.MALFORMED)
        try:
            kid = sealed[2 : 2 + sealed[1]].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidToken(InvalidTokenReason.MALFORMED) from None
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken(InvalidTokenReason.UNKNOWN_KEY)
        header = sealed[:end]
        aead = AESGCM(_sealing_subkey(key.secret, header[-_SEALED_SALT:]))
        ad = _sealed_ad(header, purpose, context)
        try:
            return aead.decrypt(
                sealed[end : end + _SEALED_NONCE], sealed[end + _SEALED_NONCE :], ad
            )
        except InvalidTag:
            raise InvalidToken(InvalidTokenReason.TAG_MISMATCH) from None

    @property
    def active(self) -> Key:
        """The key that seals new tokens."""
        return self._active

    def get(self, kid: str) -> Key | None:
        """The key with id ``kid``, or ``None``."""
        return self._keys.get(kid)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __repr__(self) -> str:
        retired = [k.kid for k in self._keys.values() if k is not self._active]
        return f"KeyRing(active={self._active.kid!r}, retired={retired!r})"

    __str__ = __repr__


def _check_purpose(purpose: object) -> bytes:
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise ValueError(
            "a sealing purpose is 1 to 64 characters of a-z, 0-9, '.', '/', '_' or '-', "
            "starting with a letter or digit"
        )
    return purpose.encode()


def _sealed_ad(header: bytes, purpose: str, context: bytes) -> bytes:
    ad_purpose = _check_purpose(purpose)
    if not isinstance(context, bytes):
        raise TypeError("context must be bytes")
    # The purpose is length-prefixed so that (purpose, context) pairs never
    # run into each other; the context is last and takes the rest.
    return header + len(ad_purpose).to_bytes(1, "big") + ad_purpose + context


def _sealing_subkey(key: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256-Expand with the 256-bit key as PRK, one output block."""
    return hmac.digest(key, _SEALED_INFO + salt + b"\x01", "sha256")
