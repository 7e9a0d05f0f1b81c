"""Legacy password-hash schemes a host migrates away from.

A :class:`LegacyScheme` recognises and checks hashes made by another system;
:class:`~tokenflow.passwords.PasswordVerifier` accepts them and, after the
first successful login, hands an argon2id replacement to the host's sink.
:class:`Pbkdf2Sha256` reads Django's ``pbkdf2_sha256$<iterations>$<salt>$<hash>``
format with the standard library alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final, Protocol, runtime_checkable

from .._errors import ConfigError

__all__ = ["LegacyScheme", "Pbkdf2Sha256"]


@runtime_checkable
class LegacyScheme(Protocol):
    """A password-hash format accepted for migration only. Contract:

    - ``identifies`` says, from the stored hash alone and without raising,
      whether the hash is in this scheme (usually by its prefix).
    - ``verify`` checks a password against such a hash: ``True`` or ``False``,
      comparing secrets in constant time. A malformed hash is ``False``.
    - ``name`` is a short label (``"pbkdf2_sha256"``, ``"bcrypt"``), never
      anything derived from a hash or a password.

    The password is passed exactly as the user typed it (not normalised):
    legacy systems hashed the raw text.
    """

    name: str

    def identifies(self, stored_hash: str) -> bool:
        """True if ``stored_hash`` is in this scheme."""
        ...

    def verify(self, password: str, stored_hash: str) -> bool:
        """True if ``password`` matches ``stored_hash``."""
        ...


_PREFIX: Final = "pbkdf2_sha256$"
_MAX_ITERATIONS: Final = 10_000_000
"""A stored hash claiming more work than this is refused rather than computed."""


class Pbkdf2Sha256:
    """Django's ``pbkdf2_sha256`` hashes: PBKDF2-HMAC-SHA256, base64 digest.

    Format: ``pbkdf2_sha256$<iterations>$<salt>$<base64 of the derived key>``,
    the salt used as its UTF-8 text. Any iteration count from 1 to 10 million
    is accepted, since migrating means reading whatever the old system wrote;
    a weak count is exactly why the hash is replaced at the next login.
    """

    name = "pbkdf2_sha256"

    def __repr__(self) -> str:
        return "Pbkdf2Sha256()"

    def identifies(self, stored_hash: str) -> bool:
        """True for a string starting with ``pbkdf2_sha256$``."""
        return isinstance(stored_hash, str) and stored_hash.startswith(_PREFIX)

    def verify(self, password: str, stored_hash: str) -> bool:
        """Check ``password`` against a ``pbkdf2_sha256$...`` hash, in constant time."""
        parts = stored_hash.split("$")
        if len(parts) != 4 or parts[0] != self.name:
            return False
        _, iterations_text, salt, encoded = parts
        if not iterations_text.isascii() or not iterations_text.isdigit():
            return False
        iterations = int(iterations_text)
        if not 1 <= iterations <= _MAX_ITERATIONS or not salt:
            return False
        try:
            expected = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            return False
        if not expected:
            return False
        derived = hashlib.pbkdf2_hmac(
            "sha256",
            password.encode("utf-8", "surrogatepass"),
            salt.encode("utf-8", "surrogatepass"),
            iterations,
            dklen=len(expected),
        )
        return hmac.compare_digest(derived, expected)

    @staticmethod
    def encode(password: str, salt: str, iterations: int) -> str:
        """A hash in this format, as the legacy system would have written it (for tests)."""
        if not salt or "$" in salt:
            raise ConfigError("a pbkdf2_sha256 salt must be non-empty and contain no '$'")
        if not 1 <= iterations <= _MAX_ITERATIONS:
            raise ConfigError(f"iterations must be between 1 and {_MAX_ITERATIONS}")
        derived = hashlib.pbkdf2_hmac(
            "sha256", password.encode("utf-8", "surrogatepass"), salt.encode("utf-8"), iterations
        )
        return f"{_PREFIX}{iterations}${salt}${base64.b64encode(derived).decode('ascii')}"
