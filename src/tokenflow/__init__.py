"""tokenflow: cookie-based authentication with short-lived sealed access tokens
and revocable, rotating refresh tokens, for any Python web stack.

Build a :class:`Flow` (or :class:`AsyncFlow`) once, then ask it for a
:class:`Decision` on every request::

    flow = Flow(KeyRing.parse(os.environ["TOKENFLOW_KEYS"]), SQLiteStore("sessions.db"),
                users=my_users, passwords=my_passwords)
    decision = flow.decide(Request(method="GET", cookie_header=headers.get("Cookie")))

See ``docs/`` for the flow, the token format and the threat model.
"""

from ._config import FlowConfig
from ._cookies import CookiePolicy, SameSite, parse_cookie_header
from ._dbsc import DeviceBinding, DeviceProof, ProofFailure
from ._drivers import (
    AsyncFlow,
    Flow,
    FlowObserver,
    FlowOperation,
    PendingDecision,
    PortCall,
    combine_observers,
)
from ._errors import ConfigError, InvalidToken, InvalidTokenReason, TokenflowError, TokenTooLarge
from ._http import ForwardedHeaders, TrustedProxies
from ._keyring import Key, KeyRing
from ._model import (
    AmbiguousCookie,
    AuthorizationCodeCredentials,
    BareRefreshRefused,
    ButtonCredentials,
    Credentials,
    CrossOriginRejected,
    Decision,
    DeviceBound,
    DeviceProofRejected,
    DeviceProofRequired,
    DeviceRegistered,
    Event,
    ExternalTokenCredentials,
    Forbidden,
    LoggedIn,
    LoggedOut,
    LoginFailed,
    LoginFailedReason,
    LoginThrottled,
    PasswordCredentials,
    PortFailed,
    Process,
    ProviderRedirect,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    Reissue,
    Request,
    ReuseDetected,
    ReuseDetectedReason,
    SessionRevoked,
    SessionRevokedReason,
    TokenRejected,
    TooManyRequests,
    Unauthorized,
    UnauthorizedReason,
    Unavailable,
)
from ._sessions import SessionInfo
from ._throttle import FailureCount, ThrottlePolicy, ThrottleRule
from ._token import COOKIE_BUDGET, Purpose, TokenCodec
from .ports import ExternalIdentity, Identity

__all__ = [
    "COOKIE_BUDGET",
    "AmbiguousCookie",
    "AsyncFlow",
    "AuthorizationCodeCredentials",
    "BareRefreshRefused",
    "ButtonCredentials",
    "ConfigError",
    "CookiePolicy",
    "Credentials",
    "CrossOriginRejected",
    "Decision",
    "DeviceBinding",
    "DeviceBound",
    "DeviceProof",
    "DeviceProofRejected",
    "DeviceProofRequired",
    "DeviceRegistered",
    "Event",
    "ExternalIdentity",
    "ExternalTokenCredentials",
    "FailureCount",
    "Flow",
    "FlowConfig",
    "FlowObserver",
    "FlowOperation",
    "Forbidden",
    "ForwardedHeaders",
    "Identity",
    "InvalidToken",
    "InvalidTokenReason",
    "Key",
    "KeyRing",
    "LoggedIn",
    "LoggedOut",
    "LoginFailed",
    "LoginFailedReason",
    "LoginThrottled",
    "PasswordCredentials",
    "PendingDecision",
    "PortCall",
    "PortFailed",
    "Process",
    "ProofFailure",
    "ProviderRedirect",
    "Purpose",
    "RefreshEnded",
    "RefreshEndedReason",
    "Refreshed",
    "Reissue",
    "Request",
    "ReuseDetected",
    "ReuseDetectedReason",
    "SameSite",
    "SessionInfo",
    "SessionRevoked",
    "SessionRevokedReason",
    "ThrottlePolicy",
    "ThrottleRule",
    "TokenCodec",
    "TokenRejected",
    "TokenTooLarge",
    "TokenflowError",
    "TooManyRequests",
    "TrustedProxies",
    "Unauthorized",
    "UnauthorizedReason",
    "Unavailable",
    "combine_observers",
    "parse_cookie_header",
]

__version__ = "0.1.0"
