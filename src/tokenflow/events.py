"""Security events, and every reason the library names.

A decision carries the events its request produced (``decision.events``):
match them by type and log what you need; the core never logs. The reasons
are enums, for logs, metrics and tests: a client is told no more than the
decision's status::

    from tokenflow.events import LoginFailed, ReuseDetected

    for event in decision.events:
        match event:
            case ReuseDetected(user_id=user, session_id=session):
                log.warning("refresh token reused: session %s of %s revoked", session, user)
            case LoginFailed(reason=reason):
                log.info("failed login: %s", reason.name)

See ``docs/flow.md`` for when each event is produced.
"""

from ._dbsc import ProofFailure
from ._errors import InvalidTokenReason
from ._model import (
    AmbiguousCookie,
    AuthenticatorCloned,
    BareRefreshRefused,
    CrossOriginRejected,
    DeviceBound,
    DeviceProofRejected,
    Event,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    LoginThrottled,
    PasskeyReplayed,
    PortFailed,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    ReuseDetected,
    ReuseDetectedReason,
    SecondFactorChallenged,
    SecondFactorVerified,
    SessionRevoked,
    SessionRevokedReason,
    SteppedUp,
    TokenRejected,
    UnauthorizedReason,
)

__all__ = [
    "AmbiguousCookie",
    "AuthenticatorCloned",
    "BareRefreshRefused",
    "CrossOriginRejected",
    "DeviceBound",
    "DeviceProofRejected",
    "Event",
    "InvalidTokenReason",
    "LoggedIn",
    "LoginFailed",
    "LoginFailedReason",
    "LoginThrottled",
    "PasskeyReplayed",
    "PortFailed",
    "ProofFailure",
    "RefreshEnded",
    "RefreshEndedReason",
    "Refreshed",
    "ReuseDetected",
    "ReuseDetectedReason",
    "SecondFactorChallenged",
    "SecondFactorVerified",
    "SessionRevoked",
    "SessionRevokedReason",
    "SteppedUp",
    "TokenRejected",
    "UnauthorizedReason",
]
