"""The key-set cache: which keys verify a provider's tokens right now.

The rules (the numbers are :class:`CachePolicy`'s defaults)::

    lifetime      Cache-Control max-age (less Age), clamped to [5 min, 24 h];
                  1 h when the answer says nothing; 5 min for no-cache/no-store
    stale         past its lifetime the key set is refreshed, and while
                  refreshes fail it keeps serving for max_stale (6 h); past
                  that the verifier raises ProviderUnavailable (503, never 401)
    unknown kid   one refetch, at most once per refetch_cooldown (60 s, never
                  under 30 s) whatever the kid, then that kid is negatively
                  cached for unknown_kid_ttl (5 min): a flood of random kids
                  costs at most one fetch per cooldown
    failures      a failed refresh is retried after retry_after_failure (10 s)
    single flight one refresh in flight at a time; readers with a usable key
                  set never wait for it, and no lock is held over network I/O

:class:`_CacheState` holds the rules and no I/O: it plans, and it parses what
was fetched. :class:`KeySetCache` (threads) and :class:`AsyncKeySetCache`
(asyncio) are the two faces that run the fetches through a source; they
differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from .._base64url import b64url_decode
from .._errors import ConfigError, TokenflowError
from ._http import MAX_TIMEOUT, AsyncKeySetSource, Fetched, KeySetSource, check_url

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "MIN_LIFETIME",
    "AsyncKeySetCache",
    "CachePolicy",
    "Found",
    "KeyLocation",
    "KeySetCache",
    "KeySetError",
    "ProviderUnavailable",
    "lifetime_of",
]

MIN_LIFETIME: Final = 300.0
MAX_LIFETIME: Final = 86_400.0
DEFAULT_LIFETIME: Final = 3_600.0
_MIN_COOLDOWN: Final = 30.0
_MAX_KEYS: Final = 100
_NEGATIVE_CACHE_SIZE: Final = 1024
_MIN_RSA_BITS: Final = 2048
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
_SECONDS: Final = re.compile(r"[0-9]+")
# Waiters give up on an in-flight refresh after this long: two fetches
# (discovery, then keys) at the longest timeout, and a margin.
_WAIT_SECONDS: Final = 2 * MAX_TIMEOUT + 1.0


class KeySetError(TokenflowError):
    """A fetched document was refused: not JSON, not a JWK Set, no usable key,
    a discovery document naming another issuer, an error status..."""


class ProviderUnavailable(TokenflowError):
    """The verifier cannot decide: no usable key set and none could be fetched
    (or, for online verification, the provider did not answer).

    Raised out of ``verify_token``; the flow answers Unavailable (503) and mints
    nothing. The message says why (never what the token contained).
    """


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How a verifier caches its provider's key set. Validated at construction."""

    max_stale: float = 6 * 3600.0
    """How long past its lifetime a key set keeps serving while refreshes fail (at most 7 days)."""
    refetch_cooldown: float = 60.0
    """Least time between two fetches caused by unknown ``kid`` values (at least 30 s)."""
    unknown_kid_ttl: float = 300.0
    """How long a ``kid`` still missing after a refetch is refused without asking again."""
    retry_after_failure: float = 10.0
    """Least time between a failed refresh and the next attempt."""

    def __post_init__(self) -> None:
        for name in ("max_stale", "refetch_cooldown", "unknown_kid_ttl", "retry_after_failure"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"CachePolicy.{name} must be a finite number of seconds >= 0")
        if self.max_stale > 7 * 86_400:
            raise ConfigError("CachePolicy.max_stale is at most 7 days (604800 s)")
        if not _MIN_COOLDOWN <= self.refetch_cooldown <= 3600:
            raise ConfigError("CachePolicy.refetch_cooldown must be between 30 s and 1 h")
        if self.unknown_kid_ttl < self.refetch_cooldown:
            raise ConfigError("CachePolicy.unknown_kid_ttl must be at least refetch_cooldown")
        if not 1 <= self.retry_after_failure <= self.refetch_cooldown:
            raise ConfigError(
                "CachePolicy.retry_after_failure must be between 1 s and refetch_cooldown"
            )


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where a provider's keys are: a pinned JWK Set URL, or a discovery document.

    With ``discovery_url``, the document's ``issuer`` must equal ``issuer``
    exactly; with ``issuer=None`` it is taken verbatim from the document but
    must share the discovery URL's origin.
    """

    jwks_url: str | None = None
    discovery_url: str | None = None
    issuer: str | None = None

    def __post_init__(self) -> None:
        if (self.jwks_url is None) == (self.discovery_url is None):
            raise ConfigError("a key location is either a jwks_url or a discovery_url")
        for url in (self.jwks_url, self.discovery_url):
            if url is not None:
                # Loopback HTTP passes here; the source refuses it unless allowed.
                check_url(url, allow_loopback_http=True)


@dataclass(frozen=True, slots=True)
class Found:
    """The keys published under one ``kid``, and the issuer discovery named (if any)."""

    keys: tuple[Key, ...]
    issuer: str | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_kid: Mapping[str, tuple[Key, ...]]
    only: Key | None
    """The key to use for a token without ``kid``: set only when the set has one key."""
    issuer: str | None
    fresh_until: float
    found: Mapping[str, Found] = field(default_factory=dict)
    """``by_kid`` as ready answers, for the lock-free fast path."""

    def __post_init__(self) -> None:
        if not self.found:
            answers = {kid: Found(keys, self.issuer) for kid, keys in self.by_kid.items()}
            object.__setattr__(self, "found", answers)

    def fresh_answer(self, kid: str | None, now: float) -> Found | None:
        """The answer for ``kid`` while this snapshot is fresh, else ``None``.

        Reading it needs no lock: a snapshot never changes, and the faces
        replace the whole snapshot in one assignment.
        """
        if kid is None or not now < self.fresh_until:
            return None
        return self.found.get(kid)


@dataclass(frozen=True, slots=True)
class _Discovery:
    issuer: str
    jwks_uri: str
    fresh_until: float


class _Action(enum.Enum):
    USE = "use"
    REFUSE = "refuse"
    REFRESH = "refresh"
    WAIT = "wait"
    RAISE = "raise"


@dataclass(frozen=True, slots=True)
class _Plan:
    action: _Action
    found: Found | None = None
    error: ProviderUnavailable | None = None


_REFUSE: Final = _Plan(_Action.REFUSE)
_REFRESH: Final = _Plan(_Action.REFRESH)
_WAIT: Final = _Plan(_Action.WAIT)


def lifetime_of(fetched: Fetched) -> float:
    """The cache lifetime of a fetched document, in seconds, clamped to [5 min, 24 h]."""
    header = fetched.headers.get("cache-control")
    if header is None:
        return DEFAULT_LIFETIME
    max_age: float | None = None
    for directive in header.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            return MIN_LIFETIME
        if name == "max-age":
            value = value.strip().strip('"')
            # ASCII digits only: str.isdigit() also passes "²", which float()
            # then refuses.
            if not _SECONDS.fullmatch(value):
                return MIN_LIFETIME  # unreadable: the cautious end
            max_age = float(value[:12])
    if max_age is None:
        return DEFAULT_LIFETIME
    age = fetched.headers.get("age", "").strip()
    if _SECONDS.fullmatch(age):
        max_age -= float(age[:12])
    return min(MAX_LIFETIME, max(MIN_LIFETIME, max_age))


def _json_object(fetched: Fetched, what: str, url: str) -> dict[str, Any]:
    if fetched.status != 200:
        kind = "a redirect (not followed)" if 300 <= fetched.status < 400 else "an error"
        raise KeySetError(f"{what} at {url} answered {fetched.status}, {kind}")
    try:
        document = orjson.loads(fetched.body)
    except orjson.JSONDecodeError:
        raise KeySetError(f"{what} at {url} is not JSON") from None
    if type(document) is not dict:
        raise KeySetError(f"{what} at {url} is not a JSON object")
    return document


def _rsa_bits(n: object) -> int:
    raw = b64url_decode(n)
    return 0 if raw is None else int.from_bytes(raw, "big").bit_length()


def _import_key(entry: object) -> Key | None:
    """One JWK Set entry as a public verification key, or ``None`` to skip it."""
    if type(entry) is not dict:
        return None
    kty = entry.get("kty")
    if kty not in _KEY_TYPES or entry.get("use", "sig") != "sig":
        return None  # symmetric, unknown or encryption keys never verify a signature
    if kty == "RSA" and _rsa_bits(entry.get("n")) < _MIN_RSA_BITS:
        return None
    kid = entry.get("kid")
    if kid is not None and type(kid) is not str:
        return None
    public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
    try:
        return JWKRegistry.import_key(public)
    except (JoseError, ValueError, TypeError):
        return None


def parse_key_set(fetched: Fetched, url: str, issuer: str | None, fresh_until: float) -> _Snapshot:
    """A fetched JWK Set as a snapshot, or :class:`KeySetError`."""
    document = _json_object(fetched, "the key set", url)
    entries = document.get("keys")
    if type(entries) is not list:
        raise KeySetError(f"the key set at {url} has no 'keys' list: not a JWK Set")
    by_kid: dict[str, list[Key]] = {}
    usable: list[Key] = []
    for entry in entries[:_MAX_KEYS]:
        key = _import_key(entry)
        if key is None:
            continue
        usable.append(key)
        if key.kid is not None:
            by_kid.setdefault(key.kid, []).append(key)
    if not usable:
        raise KeySetError(f"the key set at {url} holds no usable signature key")
    return _Snapshot(
        {kid: tuple(keys) for kid, keys in by_kid.items()},
        usable[0] if len(usable) == 1 else None,
        issuer,
        fresh_until,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def parse_discovery(
    fetched: Fetched, location: KeyLocation, url: str, fresh_until: float
) -> _Discovery:
    """A fetched discovery document, checked against the location, or :class:`KeySetError`."""
    document = _json_object(fetched, "the discovery document", url)
    issuer, jwks_uri = document.get("issuer"), document.get("jwks_uri")
    if type(issuer) is not str or type(jwks_uri) is not str:
        raise KeySetError(f"the discovery document at {url} lacks 'issuer' or 'jwks_uri'")
    if location.issuer is not None:
        if issuer != location.issuer:
            raise KeySetError(
                f"the discovery document at {url} names issuer {issuer[:200]!r}, "
                f"not the configured {location.issuer!r}"
            )
    else:
        try:
            same_origin = _origin(issuer) == _origin(url)
        except ValueError:
            same_origin = False
        if not same_origin:
            raise KeySetError(f"the discovery document at {url} names an issuer on another origin")
    try:
        check_url(jwks_uri, allow_loopback_http=True)
    except ConfigError as exc:
        raise KeySetError(f"the discovery document at {url}: jwks_uri refused: {exc}") from None
    return _Discovery(issuer, jwks_uri, fresh_until)


class _CacheState:
    """The cache's rules and data. No I/O and no locking: the faces do both."""

    def __init__(self, name: str, location: KeyLocation, policy: CachePolicy) -> None:
        self.name = name
        self.location = location
        self.policy = policy
        self.snapshot: _Snapshot | None = None
        self.discovery: _Discovery | None = None
        self.last_attempt = -math.inf
        self.last_failed = False
        self.last_error = ""
        self.in_flight = False
        self.negative: OrderedDict[str, float] = OrderedDict()
        self.fetches = 0

    def plan(self, kid: str | None, now: float) -> _Plan:
        """What to do for a token with this ``kid`` at ``now``."""
        snapshot = self.snapshot
        policy = self.policy
        may_retry = not self.in_flight and (
            not self.last_failed or now >= self.last_attempt + policy.retry_after_failure
        )
        if snapshot is None or now >= snapshot.fresh_until + policy.max_stale:
            # Nothing usable: refresh, wait for the refresh in flight, or give up.
            if may_retry:
                return _REFRESH
            if self.in_flight:
                return _WAIT
            return self._unavailable(snapshot)
        if now >= snapshot.fresh_until and may_retry:
            return _REFRESH  # stale but usable: refresh first, fall back on failure
        keys = snapshot.by_kid.get(kid) if kid is not None else None
        if keys is None and kid is None and snapshot.only is not None:
            keys = (snapshot.only,)
        if keys is not None:
            return _Plan(_Action.USE, Found(keys, snapshot.issuer))
        if kid is None:
            return _REFUSE  # a kid-less token against a set of several keys
        until = self.negative.get(kid)
        if until is not None and now < until:
            return _REFUSE
        if self.in_flight:
            return _WAIT  # the refresh running now may bring this kid
        if now >= self.last_attempt + policy.refetch_cooldown and may_retry:
            return _REFRESH
        return _REFUSE

    def _unavailable(self, snapshot: _Snapshot | None) -> _Plan:
        if snapshot is None:
            why = "no key set fetched yet"
        else:
            why = "the last key set is older than the allowed staleness"
        detail = f": {self.last_error}" if self.last_error else ""
        return _Plan(
            _Action.RAISE,
            error=ProviderUnavailable(f"{self.name}: {why}, and refreshing failed{detail}"),
        )

    def begin(self, now: float) -> None:
        self.in_flight = True
        self.last_attempt = now
        self.fetches += 1

    def steps(self, now: float) -> Generator[str, Fetched, tuple[_Snapshot, _Discovery | None]]:
        """The fetches of one refresh: yields URLs, receives what each answered."""
        location = self.location
        discovery = self.discovery
        issuer: str | None = None
        if location.discovery_url is not None:
            if discovery is None or now >= discovery.fresh_until:
                fetched = yield location.discovery_url
                discovery = parse_discovery(
                    fetched, location, location.discovery_url, now + lifetime_of(fetched)
                )
            jwks_url, issuer = discovery.jwks_uri, discovery.issuer
        else:
            assert location.jwks_url is not None
            jwks_url = location.jwks_url
        fetched = yield jwks_url
        snapshot = parse_key_set(fetched, jwks_url, issuer, now + lifetime_of(fetched))
        return snapshot, discovery

    def succeeded(
        self, result: tuple[_Snapshot, _Discovery | None], now: float, kid: str | None
    ) -> None:
        self.snapshot, self.discovery = result
        self.in_flight = False
        self.last_failed = False
        self.last_error = ""
        negative = self.negative
        for known in [k for k in negative if k in result[0].by_kid]:
            del negative[known]
        if kid is not None and kid not in result[0].by_kid:
            negative[kid] = now + self.policy.unknown_kid_ttl
            negative.move_to_end(kid)
            while len(negative) > _NEGATIVE_CACHE_SIZE:
                negative.popitem(last=False)

    def failed(self, error: BaseException) -> None:
        self.in_flight = False
        self.last_failed = True
        text = str(error) or type(error).__name__
        self.last_error = text[:300]


class KeySetCache:
    """A provider's key set for sync verifiers: thread-safe, one refresh in flight."""

    def __init__(
        self, name: str, location: KeyLocation, policy: CachePolicy, source: KeySetSource
    ) -> None:
        self._state = _CacheState(name, location, policy)
        self._source = source
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)

    @property
    def fetches(self) -> int:
        """Refreshes attempted so far (each is one or two GETs)."""
        return self._state.fetches

    def find(self, kid: str | None, now: float) -> Found | None:
        """The keys for ``kid``; ``None`` when there are none; raises
        :class:`ProviderUnavailable` when it cannot tell."""
        state = self._state
        snapshot = state.snapshot
        if snapshot is not None:
            found = snapshot.fresh_answer(kid, now)
            if found is not None:
                return found  # the hot path: a fresh key set that has this kid
        for _ in range(4):
            with self._lock:
                plan = state.plan(kid, now)
                if plan.action is _Action.WAIT:
                    if not self._settled.wait_for(lambda: not state.in_flight, _WAIT_SECONDS):
                        raise ProviderUnavailable(f"{state.name}: the key set refresh hangs")
                    continue
                if plan.action is _Action.REFRESH:
                    state.begin(now)
            if plan.action is _Action.USE:
                return plan.found
            if plan.action is _Action.REFUSE:
                return None
            if plan.action is _Action.RAISE:
                assert plan.error is not None
                raise plan.error
            self._refresh(now, kid)
        raise ProviderUnavailable(f"{state.name}: the key set did not settle")

    def _refresh(self, now: float, kid: str | None) -> None:
        state = self._state
        steps = state.steps(now)
        outcome: tuple[_Snapshot, _Discovery | None] | None = None
        error: BaseException = KeySetError("refresh interrupted")
        try:
            url = next(steps)
            while True:
                url = steps.send(self._source.fetch(url))
        except StopIteration as done:
            outcome = done.value
        except Exception as exc:
            error = exc
        finally:
            with self._lock:
                if outcome is not None:
                    state.succeeded(outcome, now, kid)
                else:
                    state.failed(error)
                self._settled.notify_all()


class AsyncKeySetCache:
    """A provider's key set for async verifiers: one refresh in flight per cache.

    The state is only touched between awaits, so no lock is needed; waiters
    wait on an event the refreshing task sets.
    """

    def __init__(
        self, name: str, location: KeyLocation, policy: CachePolicy, source: AsyncKeySetSource
    ) -> None:
        self._state = _CacheState(name, location, policy)
        self._source = source
        self._settled: asyncio.Event | None = None

    @property
    def fetches(self) -> int:
        """Refreshes attempted so far (each is one or two GETs)."""
        return self._state.fetches

    async def find(self, kid: str | None, now: float) -> Found | None:
        """See :meth:`KeySetCache.find`."""
        state = self._state
        snapshot = state.snapshot
        if snapshot is not None:
            found = snapshot.fresh_answer(kid, now)
            if found is not None:
                return found
        for _ in range(4):
            plan = state.plan(kid, now)
            if plan.action is _Action.USE:
                return plan.found
            if plan.action is _Action.REFUSE:
                return None
            if plan.action is _Action.RAISE:
                assert plan.error is not None
                raise plan.error
            if plan.action is _Action.WAIT:
                settled = self._settled
                if settled is not None:
                    try:
                        await asyncio.wait_for(settled.wait(), _WAIT_SECONDS)
                    except TimeoutError:
                        raise ProviderUnavailable(
                            f"{state.name}: the key set refresh hangs"
                        ) from None
                continue
            state.begin(now)
            self._settled = asyncio.Event()
            await self._refresh(now, kid)
        raise ProviderUnavailable(f"{state.name}: the key set did not settle")

    async def _refresh(self, now: float, kid: str | None) -> None:
        state = self._state
        settled = self._settled
        steps = state.steps(now)
        outcome: tuple[_Snapshot, _Discovery | None] | None = None
        error: BaseException = KeySetError("refresh interrupted")
        try:
            url = next(steps)
            while True:
                url = steps.send(await self._source.fetch(url))
        except StopIteration as done:
            outcome = done.value
        except Exception as exc:
            error = exc
        finally:
            # Cancellation lands here too: the state must never stay in flight.
            if outcome is not None:
                state.succeeded(outcome, now, kid)
            else:
                state.failed(error)
            if settled is not None:
                settled.set()
