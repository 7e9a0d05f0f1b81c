"""What every shipped store accepts at ``create``, checked and normalised alike.

The contract (see docs/writing-a-store.md): metadata keys and values are any
``str`` that encodes as UTF-8, U+0000 included, and come back exactly; times
are any float, judged by the reference rule :func:`apply_rotation`, under
which a NaN expiry is never live (``now < nan`` is false).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .._sessions import SessionInfo

__all__ = ["check_metadata", "stored_times"]

_NEVER_LIVE = float("-inf")


def stored_times(info: SessionInfo) -> tuple[float, float, float, float]:
    """``(created, refreshed, idle expiry, absolute expiry)`` as stores write them.

    A NaN expiry becomes -inf: both are expired at every ``now`` under the
    reference rule, and -inf is a value every backend stores and orders as
    Python does (SQLite turns NaN into NULL; PostgreSQL orders NaN above
    every number, which would make it live). A NaN creation or refresh time
    orders nothing and is refused.
    """
    created, refreshed = float(info.created_at), float(info.refreshed_at)
    if math.isnan(created) or math.isnan(refreshed):
        raise ValueError("created_at and refreshed_at must be numbers, not NaN")
    idle, absolute = float(info.idle_expires_at), float(info.absolute_expires_at)
    return (
        created,
        refreshed,
        _NEVER_LIVE if math.isnan(idle) else idle,
        _NEVER_LIVE if math.isnan(absolute) else absolute,
    )


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Refuse metadata that is not text every store round-trips exactly.

    Keys and values must be ``str`` that encode as UTF-8: every Unicode
    scalar value, U+0000 included. A surrogate code point (which only a
    mis-decoded byte string produces) is refused with ``ValueError`` rather
    than stored: JSON would merge two of them into one character.
    """
    for key, value in metadata.items():
        for text in (key, value):
            if not isinstance(text, str):
                raise ValueError("session metadata keys and values must be str")
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(
                        "session metadata must be valid Unicode text (no surrogate code points)"
                    ) from None
