"""What a decision means, in the words of the docs: the demos' narration.

Both demos (``python -m tokenflow demo`` and ``web-demo``) print a decision
the way docs/flow.md explains it: a login is a new session with two cookies,
a refresh is a rotation, a revoked session is revoked. The type names
(``Reissue``, ``Unauthorized``) are shown beside the words, not instead of
them. Nothing here is part of the library's API.
"""

from __future__ import annotations

import enum
from dataclasses import fields

from ._model import (
    Decision,
    DeviceProofRequired,
    DeviceRegistered,
    Event,
    Forbidden,
    LoggedIn,
    LoggedOut,
    Process,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    Reissue,
    SecondFactorRequired,
    StepUpRequired,
    TooManyRequests,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
)

__all__ = ["describe_event", "meaning"]

_UNAUTHORIZED = {
    UnauthorizedReason.NO_CREDENTIALS: "no valid auth cookie and no credentials: anonymous",
    UnauthorizedReason.LOGIN_FAILED: "login failed: wrong username or password",
    UnauthorizedReason.REFRESH_REUSED: (
        "an old refresh token came back: reuse detected, the whole session revoked"
    ),
    UnauthorizedReason.SESSION_ENDED: "the session is over: log in again",
    UnauthorizedReason.USER_DISABLED: "the user is disabled: the session was revoked",
    UnauthorizedReason.MALFORMED_REQUEST: "the Cookie header was too large to read",
    UnauthorizedReason.DEVICE_BOUND: (
        "a device-bound session: only a proof of the device key refreshes it"
    ),
    UnauthorizedReason.DEVICE_PROOF: "the device proof was refused",
}

_ENDED = {
    RefreshEndedReason.EXPIRED: "the session expired (idle or absolute lifetime): log in again",
    RefreshEndedReason.REVOKED: "the session was revoked (logout, revoke, reuse): log in again",
}


def _cookies(decision: Decision) -> str:
    count = len(decision.set_cookies)
    return f"{count} cookie{'s' if count != 1 else ''}"


def meaning(decision: Decision) -> str:
    """One line saying what happened, as the docs name it."""
    events = decision.events
    if isinstance(decision, Process):
        return "access token valid: served, no store read"
    if isinstance(decision, Reissue):
        for event in events:
            if isinstance(event, LoggedIn):
                return f"logged in ({event.method}): a new session, {_cookies(decision)} set"
            if isinstance(event, Refreshed):
                if event.grace:
                    return (
                        "refresh inside the grace window: the same successor again "
                        "(a second tab, not a theft)"
                    )
                return (
                    "silent refresh: the refresh token rotated, a new access token, "
                    f"{_cookies(decision)} set"
                )
        return f"access token reissued, {_cookies(decision)} set"
    if isinstance(decision, Unauthorized):
        if decision.reason is UnauthorizedReason.SESSION_ENDED:
            for event in events:
                if isinstance(event, RefreshEnded):
                    return _ENDED[event.reason]
        return _UNAUTHORIZED[decision.reason]
    if isinstance(decision, LoggedOut):
        return "logged out: the session revoked, both cookies cleared"
    if isinstance(decision, Forbidden):
        return "an unsafe request from another origin: refused (CSRF check)"
    if isinstance(decision, TooManyRequests):
        return (
            f"too many failed logins: retry after {decision.retry_after} s "
            "(no password was checked)"
        )
    if isinstance(decision, Unavailable):
        return "a port failed (the store is down?): nothing minted, nothing cleared"
    if isinstance(decision, DeviceRegistered):
        return "the session is now bound to this device's key"
    if isinstance(decision, DeviceProofRequired):
        return "a proof of the device key is required to refresh"
    if isinstance(decision, SecondFactorRequired):
        return (
            f"password right, second factor required ({', '.join(decision.methods)}): "
            "no session yet, a short-lived partial-login cookie set"
        )
    if isinstance(decision, StepUpRequired):
        return "signed in, but this needs a stronger or more recent authentication (step-up)"
    raise TypeError(f"not a decision: {type(decision).__name__}")


def describe_event(event: Event) -> str:
    """``Refreshed user_id=alice session_id=13ML5FC7… generation=1 grace=False``.

    Enum fields show their value (``reason=revoked``), session ids are
    shortened, and a port failure's exception shows its type only.
    """
    parts = [type(event).__name__]
    for field in fields(event):
        value = getattr(event, field.name)
        if isinstance(value, enum.Enum):
            shown = str(value.value)
        elif isinstance(value, BaseException):
            shown = type(value).__name__
        elif field.name == "session_id" and isinstance(value, str):
            shown = f"{value[:8]}…"
        else:
            shown = str(value)
        parts.append(f"{field.name}={shown}")
    return " ".join(parts)
