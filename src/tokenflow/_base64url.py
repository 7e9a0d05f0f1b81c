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

from binascii import Error as _Base64Error
from binascii import a2b_base64 as _a2b
from binascii import b2a_base64 as _b2a
from typing import Final

__all__ = ["b64url_decode", "b64url_encode"]

# base64url -> standard alphabet; '+', '/' and '=' map to '*', which the strict
# decoder refuses, so only the url-safe alphabet without padding gets through.
_TO_STD: Final = bytes.maketrans(b"-_+/=", b"+/***")
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
# The last character of a value whose length is 2 (or 3) mod 4 carries 4 (or 2)
# spare bits, which must be zero: only these characters have them so. The
# strict decoder does not look at spare bits, so this is the canonical-form check.
_ZERO_LOW_4: Final = frozenset(b"AQgw")
_ZERO_LOW_2: Final = frozenset(b"AEIMQUYcgkosw048")


def b64url_encode(raw: bytes) -> str:
    """``raw`` as unpadded base64url text."""
    return _b2a(raw, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


def b64url_decode(text: object) -> bytes | None:
    """The bytes of canonical unpadded base64url ``text``, or None for anything else.

    Never raises for client input: a value that is not a str, not ASCII, padded,
    holds a character outside the alphabet, has an impossible length or
    non-zero spare bits is None.
    """
    if type(text) is not str:
        return None
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    spare = len(data) & 3
    if spare:
        if spare == 1 or data[-1] not in (_ZERO_LOW_4 if spare == 2 else _ZERO_LOW_2):
            return None
        data = data.translate(_TO_STD) + (b"==" if spare == 2 else b"=")
    else:
        data = data.translate(_TO_STD)
    try:
        return _a2b(data, strict_mode=True)
    except _Base64Error:
        return None
