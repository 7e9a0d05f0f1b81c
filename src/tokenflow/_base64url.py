"""Unpadded base64url (RFC 4648, section 5), the one spelling tokenflow reads and writes.

Every token, key, challenge MAC and JWK member tokenflow handles is unpadded
base64url. :func:`b64url_decode` is strict: one value has exactly one accepted
spelling, so a token cannot be altered into a second form that still opens
(padding, a character outside the alphabet, which the standard library would
silently skip, or non-zero spare bits in the last character all fail). The
token codec (:mod:`tokenflow._token`) keeps its own inlined decoder on its hot
path; it accepts the same spellings.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["b64url_decode", "b64url_encode"]


def b64url_encode(raw: bytes) -> str:
    """``raw`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: object) -> bytes | None:
    """The bytes of canonical unpadded base64url ``text``, or None for anything else.

    Never raises for client input: a value that is not a str, not ASCII, padded,
    holds a character outside the alphabet, has an impossible length or
    non-zero spare bits is None.
    """
    if type(text) is not str:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Re-encoding is the canonical-form check: it catches skipped characters,
    # padding and stray low bits in one comparison.
    if b64url_encode(raw) != text:
        return None
    return raw
