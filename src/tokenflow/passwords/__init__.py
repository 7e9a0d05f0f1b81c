"""Password logins on argon2id (extra ``argon2``: ``pip install 'tokenflow[argon2]'``).

- :class:`PasswordVerifier` / :class:`AsyncPasswordVerifier`: the
  :class:`~tokenflow.ports.PasswordVerifier` ports, over the host's
  :class:`PasswordLookup` (username to user id and stored hash) and an
  optional :class:`RehashSink` that receives upgraded hashes.
- :class:`Argon2Parameters`: the cost, OWASP's minimum by default.
- :class:`PasswordHasher`: hashing with the same rules, to seed a user table.
- :class:`LegacyScheme` and :class:`Pbkdf2Sha256`: hashes being migrated.

See docs/passwords.md for the parameters, the timing rule and migration.
"""

from ._legacy import LegacyScheme, Pbkdf2Sha256
from ._verifier import (
    DEFAULT_MAX_LENGTH,
    Argon2Parameters,
    AsyncPasswordLookup,
    AsyncPasswordVerifier,
    AsyncRehashSink,
    PasswordHasher,
    PasswordLookup,
    PasswordVerifier,
    RehashSink,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "Argon2Parameters",
    "AsyncPasswordLookup",
    "AsyncPasswordVerifier",
    "AsyncRehashSink",
    "LegacyScheme",
    "PasswordHasher",
    "PasswordLookup",
    "PasswordVerifier",
    "Pbkdf2Sha256",
    "RehashSink",
]
