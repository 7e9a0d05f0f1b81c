"""Login throttling: the policy, and the keys failures are counted under.

A throttle slows password guessing down without locking anyone out for long.
The store behind it (a :class:`~tokenflow.ports.LoginThrottle`) only counts
failures per key; everything that decides how long a client must wait lives
here, so that every backend applies the same rule:

- failures are counted per **account** (as the password verifier names it;
  the normalised typed username when it names none) and per **client
  address**;
- the first ``free`` failures of a key cost nothing; after that each new
  attempt must wait ``base * 2**(failures - free)`` seconds after the last
  failure, never more than ``cap``;
- a key's count is forgotten ``window`` seconds after its last failure, and a
  successful login forgets its account's count at once.

Second-factor codes (an account's TOTP and recovery codes) are counted under
a rule of their own, remembered longer (``second_factor_window``), and with a
hard limit: once an account has ``second_factor_limit`` consecutive failed
codes, every code attempt for it is refused, unverified, until the window has
passed since the last failure or an operator resets the count
(:func:`tokenflow.throttles.second_factor_key`). Someone holding the password
cannot guess codes forever.

A throttled attempt is answered before any credential is verified: no hash is
computed, so guessing costs the attacker time and costs the server nothing.
An attempt let through is counted before it is verified (the flow reserves
it), so simultaneous attempts cannot all pass the check at once.
Delays grow per account (a targeted account) and, with a higher ceiling, per
address (one source trying many accounts). Because the delay is capped, an
attacker who stops can keep a victim waiting for at most ``cap`` seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ._errors import ConfigError

__all__ = ["FailureCount", "ThrottlePolicy", "ThrottleRule"]

_USER_PREFIX: Final = "u:"
_ACCOUNT_PREFIX: Final = "u:#"
_SECOND_FACTOR_PREFIX: Final = "u:!"
"""Account keys are username keys too (same rule), in a namespace no typed
username reaches: a username key continues with hex digits only."""
_ADDRESS_PREFIX: Final = "a:"
_MAX_SECOND_FACTOR_LIMIT: Final = 100
"""NIST SP 800-63B: at most 100 consecutive failed attempts on one account."""
_IPV6_PREFIX_BITS: Final = 64
"""One IPv6 client usually holds a whole /64: counting single addresses would
give it 2^64 fresh counters."""


@dataclass(frozen=True, slots=True)
class FailureCount:
    """A key's failed logins, as a :class:`~tokenflow.ports.LoginThrottle` reports them.

    ``count`` is the number of failures since the key's count last started
    (0 when the throttle holds nothing for the key, or the window ran out);
    ``last_failure_at`` is the time of the latest one (seconds since the
    epoch; 0.0 when ``count`` is 0).
    """

    count: int
    last_failure_at: float

    def __post_init__(self) -> None:
        if type(self.count) is not int or self.count < 0:
            raise TypeError("FailureCount.count must be a non-negative int")
        if not isinstance(self.last_failure_at, (int, float)) or isinstance(
            self.last_failure_at, bool
        ):
            raise TypeError("FailureCount.last_failure_at must be a number")


NO_FAILURES: Final = FailureCount(0, 0.0)


def _rule_number(name: str, value: object, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    if value < 0:
        raise ConfigError(f"{name} cannot be negative ({value!r})")
    return float(value)


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """How one kind of key is slowed down.

    The first ``free`` failures cost nothing; then each attempt waits
    ``base * 2**(failures - free)`` seconds after the last failure, at most
    ``cap`` seconds.
    """

    free: int
    base: float
    cap: float

    def __post_init__(self) -> None:
        _rule_number("ThrottleRule.free", self.free, integer=True)
        if _rule_number("ThrottleRule.base", self.base) <= 0:
            raise ConfigError("ThrottleRule.base must be a positive number of seconds")
        if _rule_number("ThrottleRule.cap", self.cap) < self.base:
            raise ConfigError("ThrottleRule.cap must be at least ThrottleRule.base")

    def delay(self, failures: int) -> float:
        """Seconds an attempt must wait after the last of ``failures`` failures."""
        over = failures - self.free
        if over < 0:
            return 0.0
        # 2**over overflows a float past ~1024; the cap is reached long before.
        return self.cap if over >= 64 else min(self.cap, self.base * 2.0**over)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Throttling settings, part of :class:`~tokenflow.FlowConfig`.

    - ``username``: 5 free failures, then 1 s doubling up to 5 minutes. A
      targeted account slows to about 12 guesses an hour; its owner waits at
      most 5 minutes once the guessing stops.
    - ``address``: 100 free failures (offices and mobile carriers share
      addresses), then 1 s doubling up to 15 minutes.
    - ``window``: a key's failures are forgotten this long after its last
      one (default 1 hour); longer than either cap.
    - ``second_factor``: an account's wrong second-factor codes (TOTP or
      recovery): 5 free failures, then 1 s doubling up to 15 minutes.
    - ``second_factor_window``: an account's code failures are forgotten this
      long after the last one (default 24 hours); longer than that cap.
    - ``second_factor_limit``: after this many consecutive failed codes
      (default 100, at most 100, as NIST SP 800-63B requires) every code
      attempt for the account is refused without being verified, until
      ``second_factor_window`` has passed since the last failure or an
      operator resets the count
      (``throttle.reset([tokenflow.throttles.second_factor_key(user_id)])``).
      Refused attempts neither extend nor shorten the lockout.

    The policy applies only when the flow has a throttle port
    (``Flow(..., throttle=...)``).
    """

    username: ThrottleRule = field(default_factory=lambda: ThrottleRule(5, 1.0, 300.0))
    address: ThrottleRule = field(default_factory=lambda: ThrottleRule(100, 1.0, 900.0))
    window: float = 3600.0
    second_factor: ThrottleRule = field(default_factory=lambda: ThrottleRule(5, 1.0, 900.0))
    second_factor_window: float = 86400.0
    second_factor_limit: int = 100

    def __post_init__(self) -> None:
        for name in ("username", "address", "second_factor"):
            if not isinstance(getattr(self, name), ThrottleRule):
                raise ConfigError(f"ThrottlePolicy.{name} must be a ThrottleRule")
        window = _rule_number("ThrottlePolicy.window", self.window)
        longest = max(self.username.cap, self.address.cap)
        if window <= longest:
            raise ConfigError(
                f"ThrottlePolicy.window ({window:g} s) must be longer than the longest delay "
                f"({longest:g} s), or counts would be forgotten when a delay ends"
            )
        second = _rule_number("ThrottlePolicy.second_factor_window", self.second_factor_window)
        if second <= self.second_factor.cap:
            raise ConfigError(
                f"ThrottlePolicy.second_factor_window ({second:g} s) must be longer than "
                f"ThrottlePolicy.second_factor.cap ({self.second_factor.cap:g} s), or counts "
                "would be forgotten when a delay ends"
            )
        limit = self.second_factor_limit
        if type(limit) is not int or not 1 <= limit <= _MAX_SECOND_FACTOR_LIMIT:
            raise ConfigError(
                f"ThrottlePolicy.second_factor_limit must be a whole number from 1 to "
                f"{_MAX_SECOND_FACTOR_LIMIT} (NIST SP 800-63B allows at most "
                f"{_MAX_SECOND_FACTOR_LIMIT} consecutive failures), not {limit!r}"
            )

    def window_of(self, key: str) -> float:
        """Seconds a key's failures are remembered after its last one."""
        return self.second_factor_window if is_second_factor_key(key) else self.window

    def retry_after(self, keys: Sequence[str], counts: Sequence[FailureCount], now: float) -> int:
        """Whole seconds an attempt must wait (0: go ahead), given its keys' failure counts.

        An account at its second-factor limit waits until the count is
        forgotten (``second_factor_window`` after its last failure).
        """
        wait = 0.0
        for key, failures in zip(keys, counts, strict=True):
            if is_second_factor_key(key):
                if failures.count >= self.second_factor_limit:
                    wait = max(wait, failures.last_failure_at + self.second_factor_window - now)
                    # A count the store still reports is never waved through,
                    # even if its time says the window ran out.
                    wait = max(wait, 1.0)
                    continue
                rule = self.second_factor
            else:
                rule = self.username if key.startswith(_USER_PREFIX) else self.address
            delay = rule.delay(failures.count)
            if delay > 0:
                wait = max(wait, failures.last_failure_at + delay - now)
        return math.ceil(wait) if wait > 0 else 0


def username_key(username: str) -> str:
    """The throttle key of a username.

    Usernames are compared as people type them: Unicode NFKC and case-folded,
    so "Alice" and "ALICE" (or its full-width form) share one count. The key is a digest, so the
    throttle's storage holds no username and every key has the same size.
    """
    folded = unicodedata.normalize("NFKC", username).casefold()
    return _USER_PREFIX + hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def account_key(account: str) -> str:
    """The throttle key of an account, as the password verifier names it.

    Every spelling of a username that the host's lookup resolves to one
    account shares this key (and so one count), whatever rule the lookup
    applies (trimming, accent-insensitive collation...). Digested like a
    username key.
    """
    return (
        _ACCOUNT_PREFIX + hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    )


def second_factor_key(user_id: str) -> str:
    """The throttle key of an account's second-factor guesses.

    Counted under :attr:`ThrottlePolicy.second_factor` (and its window and
    limit), and reset by a success like an account key, under a prefix of its
    own: code guesses and password guesses are counted apart, and no account
    id, whatever it spells, shares the count of another account's codes.

    Operators lift a locked-out account with
    ``throttle.reset([second_factor_key(user_id)])`` on the flow's throttle.
    """
    return (
        _SECOND_FACTOR_PREFIX
        + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    )


def address_key(address: str) -> str:
    """The throttle key of a client address: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        # Not an IP (a host passed a name, or garbage): counted as given, but
        # digested, so its size is bounded.
        return (
            _ADDRESS_PREFIX
            + hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        )
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return _ADDRESS_PREFIX + str(mapped)
        network = ipaddress.IPv6Network((ip, _IPV6_PREFIX_BITS), strict=False)
        return _ADDRESS_PREFIX + str(network)
    return _ADDRESS_PREFIX + str(ip)


def is_username_key(key: str) -> bool:
    """True for a key made by :func:`username_key` (or an account or second-factor key)."""
    return key.startswith(_USER_PREFIX)


def is_second_factor_key(key: str) -> bool:
    """True for a key made by :func:`second_factor_key`."""
    return key.startswith(_SECOND_FACTOR_PREFIX)
