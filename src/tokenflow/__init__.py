"""tokenflow: cookie-based authentication with short-lived sealed access tokens
and revocable, rotating refresh tokens, for any Python web stack."""

from ._errors import ConfigError, InvalidToken, TokenFailure, TokenflowError, TokenTooLarge
from ._keyring import Key, KeyRing
from ._token import COOKIE_BUDGET, Purpose, TokenCodec

__all__ = [
    "COOKIE_BUDGET",
    "ConfigError",
    "InvalidToken",
    "Key",
    "KeyRing",
    "Purpose",
    "TokenCodec",
    "TokenFailure",
    "TokenTooLarge",
    "TokenflowError",
]

__version__ = "0.1.0"
