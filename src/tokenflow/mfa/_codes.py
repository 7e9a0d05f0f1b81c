"""The codes themselves: TOTP (RFC 6238) through pyotp, recovery codes, and their parser.

Nothing here touches a store. Every function that reads a code the user
typed first bounds its length and checks its alphabet with plain ASCII
rules: ``str.isdigit`` and friends accept full-width and other Unicode
digits, which must never reach a comparison as if they were ``0``-``9``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Final, Literal

import pyotp
import segno

TOTP_DIGITS: Final = 6
TOTP_PERIOD: Final = 30
SECRET_BYTES: Final = 20
"""160-bit secrets: RFC 4226's recommended length, and what every authenticator app reads."""
RECOVERY_BYTES: Final = 10
"""80 bits: 16 base32 characters."""
RECOVERY_COUNT: Final = 10
MAX_INPUT: Final = 64
"""Characters of typed input looked at; anything longer is malformed, unread."""

_SEPARATORS: Final = str.maketrans("", "", " -\t")
_TOTP_RE: Final = re.compile(r"[0-9]+", re.ASCII)
_RECOVERY_RE: Final = re.compile(r"[A-Z2-7]{16}", re.ASCII)
_RECOVERY_LABEL: Final = b"tokenflow/mfa recovery code v1"
_DIGESTS: Final = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


class CodeKind(enum.Enum):
    """What shape a typed code has."""

    TOTP = "totp"
    RECOVERY = "recovery"


def parse_code(text: object, *, digits: int = TOTP_DIGITS) -> tuple[CodeKind, str] | None:
    """The kind and normal form of a typed code, or None if it is the shape of neither.

    Spaces, tabs and dashes are ignored; a TOTP code is then exactly
    ``digits`` ASCII digits, a recovery code 16 base32 characters in either
    case (normalised to upper case). Never raises, whatever ``text`` is.
    """
    if type(text) is not str or len(text) > MAX_INPUT or not text.isascii():
        return None
    compact = text.translate(_SEPARATORS)
    if len(compact) == digits and _TOTP_RE.fullmatch(compact):
        return CodeKind.TOTP, compact
    upper = compact.upper()
    if _RECOVERY_RE.fullmatch(upper):
        return CodeKind.RECOVERY, upper
    return None


# -- TOTP ------------------------------------------------------------------------


def new_secret(random: Callable[[int], bytes]) -> bytes:
    """A fresh 160-bit TOTP secret."""
    secret = random(SECRET_BYTES)
    if len(secret) != SECRET_BYTES:
        raise ValueError("the random source returned the wrong number of bytes")
    return secret


def secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32, upper case, no padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def _otp(
    secret: bytes, digits: int, algorithm: Literal["SHA1", "SHA256", "SHA512"], period: int
) -> pyotp.TOTP:
    return pyotp.TOTP(
        secret_base32(secret), digits=digits, digest=_DIGESTS[algorithm], interval=period
    )


def totp_at_step(
    secret: bytes,
    step: int,
    *,
    digits: int = TOTP_DIGITS,
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1",
) -> str:
    """The code of time step ``step`` (RFC 6238: HOTP of ``floor(t / period)``)."""
    return _otp(secret, digits, algorithm, TOTP_PERIOD).generate_otp(step)


def time_step(now: float, period: int = TOTP_PERIOD) -> int:
    """The RFC 6238 time step ``T = floor((now - T0) / X)`` with ``T0 = 0``."""
    return int(now // period)


def match_step(
    secret: bytes,
    code: str,
    *,
    now: float,
    window: int = 1,
    digits: int = TOTP_DIGITS,
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1",
    period: int = TOTP_PERIOD,
) -> int | None:
    """The time step within ``±window`` of ``now`` whose code is ``code``, or None.

    ``code`` must already be the normal form from :func:`parse_code`. Every
    candidate is computed and compared in constant time (no early exit), so
    the time taken does not say which step matched or how many digits did.
    If two steps share a code (one chance in 10^6 per pair), the latest wins:
    the replay rule then refuses the older one for good.
    """
    otp = _otp(secret, digits, algorithm, period)
    current = time_step(now, period)
    given = code.encode("ascii")
    matched: int | None = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        if hmac.compare_digest(otp.generate_otp(step).encode("ascii"), given):
            matched = step
    return matched


def provisioning_uri(secret: bytes, *, issuer: str, account_name: str) -> str:
    """The ``otpauth://totp/Issuer:account?secret=...&issuer=...`` URI apps scan."""
    return _otp(secret, TOTP_DIGITS, "SHA1", TOTP_PERIOD).provisioning_uri(
        name=account_name, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The URI as a QR code, one inline ``<svg>`` element (made locally: nothing is fetched)."""
    return segno.make(uri, error="m", micro=False).svg_inline(
        scale=4, border=4, dark="#000", light="#fff", omitsize=False
    )


# -- recovery codes --------------------------------------------------------------


def new_recovery_code(random: Callable[[int], bytes]) -> str:
    """A fresh recovery code in normal form: 16 base32 characters, upper case."""
    raw = random(RECOVERY_BYTES)
    if len(raw) != RECOVERY_BYTES:
        raise ValueError("the random source returned the wrong number of bytes")
    return base64.b32encode(raw).decode("ascii")


def show_recovery_code(code: str) -> str:
    """A normal-form recovery code as shown to the user: ``xxxx-xxxx-xxxx-xxxx``."""
    lower = code.lower()
    return "-".join(lower[i : i + 4] for i in range(0, 16, 4))


def recovery_hash(user_id: str, code: str) -> bytes:
    """What the store keeps of a recovery code: SHA-256 over the user id and the normal form.

    80 random bits need no slow hash, and binding the user id means a row
    copied to another account matches nothing there.
    """
    user = user_id.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(_RECOVERY_LABEL)
    digest.update(len(user).to_bytes(4, "big") + user + code.encode("ascii"))
    return digest.digest()
