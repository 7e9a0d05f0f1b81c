"""Exceptions raised by tokenflow.

Errors are split by blame. Untrusted input (a cookie, a header, a token) never
raises out of the flow; inside the token codec it surfaces as one opaque
:class:`InvalidToken`. Integrator mistakes (a bad key ring, an impossible
configuration) raise :class:`ConfigError` at construction time, with a message
that says how to fix them.
"""

from __future__ import annotations

import enum

__all__ = ["ConfigError", "InvalidToken", "InvalidTokenReason", "TokenTooLarge", "TokenflowError"]


class TokenflowError(Exception):
    """Base class of every exception tokenflow raises on purpose."""


class ConfigError(TokenflowError, ValueError):
    """The integrator's configuration is invalid.

    Raised when an object is constructed, never on a request. The message names
    the setting and how to fix it; it never contains key material.
    """


class InvalidTokenReason(enum.Enum):
    """Why a token failed to open: for security events and tests only.

    The reason is deliberately kept out of ``str(InvalidToken)``: a client must
    not learn which check its forgery failed.
    """

    MALFORMED = "malformed"
    """Not a well-formed v1 token: wrong type, length, alphabet or layout."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The version byte names no format this release opens."""
    UNKNOWN_KEY = "unknown_key"
    """The key id is not in the key ring (a removed key, or a forgery)."""
    TAG_MISMATCH = "tag_mismatch"
    """Authentication failed: tampered, truncated, sealed by another key, or
    sealed for the other purpose (an access token presented as a refresh token)."""
    BAD_CLAIMS = "bad_claims"
    """The tag verified but the claims are not a valid v1 claim set."""
    EXPIRED = "expired"
    """``now`` is at or past ``exp`` plus the leeway."""
    NOT_YET_VALID = "not_yet_valid"
    """``iat`` lies further in the future than the leeway allows."""


class InvalidToken(TokenflowError):
    """A token could not be opened.

    Every failure (encoding, version, key id, tag, claims, expiry) raises this
    one type with one fixed message. :attr:`reason` tells tests and security
    events which check failed; never echo it to the client.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: InvalidTokenReason) -> None:
        super().__init__("invalid token")
        self.reason: InvalidTokenReason = reason

    def __repr__(self) -> str:
        return f"InvalidToken({self.reason})"


class TokenTooLarge(TokenflowError):
    """A sealed token would not fit in its cookie.

    Browsers drop cookies whose name plus value exceed 4096 bytes, silently
    logging the user out. tokenflow refuses at sealing time instead, so the
    oversized claims are found in development. Trim the application claims.
    """

    def __init__(self, cookie_name: str, size: int, budget: int) -> None:
        super().__init__(
            f"cookie {cookie_name!r} would be {size} bytes (name plus value), over its "
            f"{budget}-byte budget; put fewer application claims in the token"
        )
        self.cookie_name = cookie_name
        self.size = size
        self.budget = budget
