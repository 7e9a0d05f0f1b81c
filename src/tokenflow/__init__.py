"""tokenflow: cookie-based authentication with short-lived sealed access tokens
and revocable, rotating refresh tokens, for any Python web stack.

Build a :class:`Flow` (or :class:`AsyncFlow`) once, then ask it for a
:class:`Decision` on every request::

    flow = Flow(KeyRing.parse(os.environ["TOKENFLOW_KEYS"]), SQLiteStore("sessions.db"),
                users=my_users, passwords=my_passwords)
    decision = flow.decide(Request(method="GET", cookie_header=headers.get("Cookie")))

The top level holds what a first program types: the flow, the values it is
built with, the request and its credentials, every decision it answers with,
and the errors to catch. Everything else has one home of its own:
:mod:`tokenflow.events` (security events and every reason),
:mod:`tokenflow.ports` (the Protocols and the values they exchange),
:mod:`tokenflow.tokens` (the token codec), :mod:`tokenflow.observers`,
:mod:`tokenflow.web` (the HTTP edge), and the adapters (stores, throttles,
passwords, oidc, dbsc, otel, testing).

See ``docs/`` for the flow, the token format and the threat model.
"""

from ._config import FlowConfig
from ._cookies import CookiePolicy, SameSite
from ._dbsc import DeviceBinding
from ._drivers import AsyncFlow, Flow
from ._errors import ConfigError, TokenflowError
from ._keyring import Key, KeyRing
from ._model import (
    AuthorizationCodeCredentials,
    ButtonCredentials,
    Credentials,
    Decision,
    DeviceProofRequired,
    DeviceRegistered,
    ExternalTokenCredentials,
    Forbidden,
    LoggedOut,
    PasskeyCredentials,
    PasswordCredentials,
    Process,
    ProviderRedirect,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    SecondFactorRequired,
    StepUpRequired,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from ._throttle import ThrottlePolicy, ThrottleRule
from .ports import Identity

__all__ = [
    "AsyncFlow",
    "AuthorizationCodeCredentials",
    "ButtonCredentials",
    "ConfigError",
    "CookiePolicy",
    "Credentials",
    "Decision",
    "DeviceBinding",
    "DeviceProofRequired",
    "DeviceRegistered",
    "ExternalTokenCredentials",
    "Flow",
    "FlowConfig",
    "Forbidden",
    "Identity",
    "Key",
    "KeyRing",
    "LoggedOut",
    "PasskeyCredentials",
    "PasswordCredentials",
    "Process",
    "ProviderRedirect",
    "Reissue",
    "Request",
    "Requirement",
    "SameSite",
    "SecondFactorCredentials",
    "SecondFactorRequired",
    "StepUpRequired",
    "ThrottlePolicy",
    "ThrottleRule",
    "TokenflowError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]

__version__ = "0.1.0"
