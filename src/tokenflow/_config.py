"""Flow configuration, validated eagerly: a bad setting fails at start-up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._cookies import CookiePolicy
from ._csrf import normalize_trusted_origins
from ._dbsc import DeviceBinding
from ._errors import ConfigError
from ._throttle import ThrottlePolicy

__all__ = ["FlowConfig"]


_MAX_LIFETIME = 366 * 86400
"""No lifetime beyond a year: longer is a mistake, and keeps every expiry in 64 bits."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive whole number of seconds, not {value!r}")
    if value > _MAX_LIFETIME:
        raise ConfigError(
            f"{name} is {value} s, over a year ({_MAX_LIFETIME} s); sessions that long "
            "belong to a different design (long-lived API keys)"
        )
    return value


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Lifetimes, grace window, cookie policy and trusted origins.

    - ``access_ttl``: access token lifetime (default 120 s). Revocation and
      role changes take effect within this time.
    - ``refresh_idle_ttl``: a session dies after this long without a refresh
      (default 1800 s).
    - ``refresh_absolute_ttl``: a session dies this long after login whatever
      happens (default 12 h); sliding renewal never passes it.
    - ``grace_seconds``: how long after a rotation its immediate predecessor
      still gets the same successor (default 5 s; 0 disables the window).
      Parallel tabs and lost responses need it; a thief holding the
      predecessor inside the window gets the successor too, so keep it short.
    - ``leeway``: clock skew tolerated between servers (default 5 s).
    - ``cookies``: names and attributes (:class:`~tokenflow.CookiePolicy`).
    - ``trusted_origins``: origins (``https://app.example.com``) whose
      cross-origin unsafe requests are allowed.
    - ``throttle``: how failed logins slow further attempts down
      (:class:`~tokenflow.ThrottlePolicy`); it applies when the flow is given
      a throttle port.
    - ``device_binding``: turns device-bound sessions (DBSC) on
      (:class:`~tokenflow.DeviceBinding`); the flow then needs a proof
      verifier and a store that can bind keys. ``None`` (the default): off.
    - ``second_factor_ttl``: how long a partial login (first factor right,
      second factor asked for) may take before it must start over (default
      300 s). It applies when the flow has ``second_factors=``.
    - ``passkey_user_verification_is_second_factor``: a passkey login whose
      authenticator verified the user (PIN, biometrics: ``amr`` holds
      ``"user"``) counts as two factors, assurance level 2 (default False:
      assurance level 1, like a password).
    """

    access_ttl: int = 120
    refresh_idle_ttl: int = 1800
    refresh_absolute_ttl: int = 12 * 3600
    grace_seconds: float = 5.0
    leeway: int = 5
    cookies: CookiePolicy = field(default_factory=CookiePolicy)
    trusted_origins: frozenset[str] | Iterable[str] = frozenset()
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    device_binding: DeviceBinding | None = None
    second_factor_ttl: int = 300
    passkey_user_verification_is_second_factor: bool = False

    def __post_init__(self) -> None:
        access = _positive_int("access_ttl", self.access_ttl)
        idle = _positive_int("refresh_idle_ttl", self.refresh_idle_ttl)
        absolute = _positive_int("refresh_absolute_ttl", self.refresh_absolute_ttl)
        if access >= idle:
            raise ConfigError(
                f"access_ttl ({access} s) must be shorter than refresh_idle_ttl ({idle} s): "
                "access tokens are the short-lived half"
            )
        if idle > absolute:
            raise ConfigError(
                f"refresh_idle_ttl ({idle} s) cannot exceed refresh_absolute_ttl ({absolute} s)"
            )
        grace = self.grace_seconds
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 60:
            raise ConfigError(
                f"grace_seconds must be between 0 and 60, not {grace!r}; a few seconds covers "
                "parallel tabs and retried requests"
            )
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, int):
            raise ConfigError(f"leeway must be whole seconds, not {self.leeway!r}")
        if not 0 <= self.leeway <= 60:
            raise ConfigError(f"leeway must be between 0 and 60 seconds, not {self.leeway}")
        if not isinstance(self.cookies, CookiePolicy):
            raise ConfigError("cookies must be a CookiePolicy")
        if not isinstance(self.throttle, ThrottlePolicy):
            raise ConfigError("throttle must be a ThrottlePolicy")
        if self.device_binding is not None and not isinstance(self.device_binding, DeviceBinding):
            raise ConfigError("device_binding must be a DeviceBinding or None")
        if _positive_int("second_factor_ttl", self.second_factor_ttl) > 3600:
            raise ConfigError(
                f"second_factor_ttl is {self.second_factor_ttl} s; a partial login should "
                "expire in minutes (at most 3600 s)"
            )
        if not isinstance(self.passkey_user_verification_is_second_factor, bool):
            raise ConfigError("passkey_user_verification_is_second_factor must be True or False")
        if isinstance(self.trusted_origins, str):
            raise ConfigError("trusted_origins is a collection of origins, not one string")
        object.__setattr__(self, "trusted_origins", normalize_trusted_origins(self.trusted_origins))
