"""ID-token rules, written once, and the two verifier faces that run them.

Verifying is pure given the keys and ``now`` (the flow's clock). In order::

    1. header pre-checks (size, layout, pinned alg, no crit/b64)   _jose.parse_compact
    2. the key for the header's kid                                 the cache (the only I/O)
    3. signature, key type and declared alg                         joserfc
    4. payload: a JSON object
    5. iss exactly in the issuer set (Entra ID: from the GUID tid,
       on the tenant allow-list); aud holds one of ours; exp, iat
       required, nbf honoured, with the leeway                      joserfc's claims registry
    6. azp ours when aud holds several; the provider's own checks
       (hd, token_use, client_id...); the nonce when asked for
    7. identity: (iss, sub) (Entra ID: oid); email only when
       email_verified is true (or the string "true")

:class:`IdTokenVerifier` and :class:`AsyncIdTokenVerifier` differ in step 2
only: one line each, a call or an await. Every other step is a method of
:class:`TokenRules`, which holds no state and does no I/O.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

import orjson
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import Key
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from .._errors import ConfigError
from .._jose import (
    JWSRejected,
    JWSRejectedReason,
    ParsedJWS,
    parse_compact,
    pin_algorithms,
    verify_parsed,
)
from ..ports import ExternalIdentity
from ._http import AsyncKeySetSource, KeySetSource
from ._keys import AsyncKeySetCache, CachePolicy, Found, KeyLocation, KeySetCache

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_LEEWAY",
    "AsyncIdTokenVerifier",
    "Check",
    "IdTokenVerifier",
    "NonceCheck",
    "Rejected",
    "RejectedReason",
    "TokenRules",
    "Verdict",
    "hashed_nonce",
    "nonce_matches",
]

DEFAULT_LEEWAY: Final = 60
"""Clock skew allowed on ``exp``, ``nbf`` and ``iat``, in seconds."""
MAX_LEEWAY: Final = 300


class RejectedReason(enum.Enum):
    """Why a token was refused: for logs and tests, never for the client."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    ENCRYPTED = "encrypted"
    ALGORITHM = "algorithm"
    """``alg`` not pinned for this provider, or not the key's type or declared alg."""
    CRITICAL_HEADER = "critical_header"
    UNKNOWN_KEY = "unknown_key"
    SIGNATURE = "signature"
    CLAIMS = "claims"
    """The payload is not a JSON object, or a required claim is missing or mistyped."""
    ISSUER = "issuer"
    AUDIENCE = "audience"
    AUTHORIZED_PARTY = "authorized_party"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    NONCE = "nonce"
    TOKEN_USE = "token_use"  # noqa: S105 - a reason name, not a secret
    TENANT = "tenant"
    HOSTED_DOMAIN = "hosted_domain"
    INVALID = "invalid"
    """The provider said the token is not valid (online verification)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused token, with the reason (keep it in your logs)."""

    reason: RejectedReason


Verdict = ExternalIdentity | Rejected
"""What :meth:`IdTokenVerifier.check` returns."""

Check = Callable[[Mapping[str, Any]], "RejectedReason | None"]
"""A provider's own rule over verified claims: ``None`` to pass, a reason to refuse."""


class NonceCheck(Protocol):
    """Your application's nonce check: is this token's ``nonce`` one you issued?

    Called with the token's ``nonce`` claim, after the signature and every
    other claim verified. Return ``True`` to accept (and forget the nonce, so
    that a replayed token fails). Compare with :func:`nonce_matches`, which
    accepts the raw nonce or its SHA-256 as native mobile SDKs send it. Keep
    it quick and local: it runs inside the verification.
    """

    def __call__(self, nonce: str) -> bool:
        """Whether the nonce is acceptable."""
        ...


def hashed_nonce(raw: str) -> str:
    """The SHA-256 of a raw nonce, as lower-case hex: what Sign in with Apple
    (and other native SDKs) expect to be given and put in the token."""
    return hashlib.sha256(raw.encode()).hexdigest()


def nonce_matches(claim: object, raw: str) -> bool:
    """Whether a token's ``nonce`` claim is ``raw`` or its SHA-256 (hex). Constant time."""
    if type(claim) is not str or not raw:
        return False
    given = claim.encode("utf-8", "surrogatepass")
    plain = hmac.compare_digest(given, raw.encode())
    hashed = hmac.compare_digest(given, hashed_nonce(raw).encode())
    return plain | hashed


_FROM_JWS: Final = {
    JWSRejectedReason.TOO_LARGE: RejectedReason.TOO_LARGE,
    JWSRejectedReason.ENCRYPTED: RejectedReason.ENCRYPTED,
    JWSRejectedReason.MALFORMED: RejectedReason.MALFORMED,
    JWSRejectedReason.ALGORITHM: RejectedReason.ALGORITHM,
    JWSRejectedReason.CRITICAL_HEADER: RejectedReason.CRITICAL_HEADER,
    JWSRejectedReason.NO_KEY: RejectedReason.UNKNOWN_KEY,
    JWSRejectedReason.SIGNATURE: RejectedReason.SIGNATURE,
}
_FROM_CLAIM: Final = {
    "iss": RejectedReason.ISSUER,
    "aud": RejectedReason.AUDIENCE,
    "nbf": RejectedReason.NOT_YET_VALID,
    "iat": RejectedReason.ISSUED_IN_FUTURE,
    "client_id": RejectedReason.AUDIENCE,
}
_KEY_TYPE_OF: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _is_true(value: object) -> bool:
    # Apple sends booleans as strings; anything but true or "true" is false.
    return value is True or value == "true"


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def check_leeway(leeway: object) -> int:
    """A validated leeway: a whole number of seconds in [0, 300]."""
    if type(leeway) is not int or not 0 <= leeway <= MAX_LEEWAY:
        raise ConfigError(f"leeway must be a whole number of seconds from 0 to {MAX_LEEWAY}")
    return leeway


def check_names(values: Iterable[str], what: str) -> frozenset[str]:
    """A validated, non-empty set of non-empty strings (client ids, issuers...)."""
    if isinstance(values, str):
        raise ConfigError(f"{what} must be a list of strings, not one string")
    names = frozenset(values)
    if not names or not all(isinstance(v, str) and v and v == v.strip() for v in names):
        raise ConfigError(f"{what} must be a non-empty list of non-empty strings")
    return names


@functools.lru_cache(maxsize=256)
def _claims_registry(
    issuers: frozenset[str], audiences: frozenset[str] | None, leeway: int, now: int
) -> JWTClaimsRegistry:
    """joserfc's claims registry for an issuer set (and ``aud`` when it is the
    audience claim), at one whole second.

    Cached: a registry holds no state of its own beyond its options and its
    ``now``, so verifications within the same second share one. The key space
    is bounded by configuration: issuer sets are configured, discovered, or
    (Entra ID) made from a tenant on the allow-list.
    """
    options: dict[str, ClaimsOption] = {
        "iss": {"essential": True, "values": sorted(issuers)},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if audiences is not None:
        options["aud"] = {"essential": True, "values": sorted(audiences)}
    return JWTClaimsRegistry(now=now, leeway=leeway, **options)


@dataclass(frozen=True, slots=True)
class TokenRules:
    """One provider's rules for its tokens. Pure: no state, no I/O, no clock.

    ``issuers`` is the exact issuer set; ``issuer_of`` instead derives the one
    acceptable issuer from the claims (Entra ID's tenant), returning ``None``
    to refuse; with neither, the issuer comes from discovery. The audience is
    read from ``audience_claim`` (``aud``; ``client_id`` for Cognito access
    tokens) and must be in ``audiences``.
    """

    provider: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    issuers: frozenset[str] = frozenset()
    issuer_of: Callable[[Mapping[str, Any]], str | None] | None = field(default=None, repr=False)
    leeway: int = DEFAULT_LEEWAY
    audience_claim: str = "aud"
    subject_claim: str = "sub"
    checks: tuple[Check, ...] = field(default=(), repr=False)
    nonce: NonceCheck | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ConfigError("TokenRules.audiences must hold at least one non-empty string")
        pin_algorithms(self.algorithms)
        check_leeway(self.leeway)

    def parse(self, token: object) -> ParsedJWS | Rejected:
        """Step 1: the header pre-checks."""
        try:
            return parse_compact(token, self.algorithms)
        except JWSRejected as exc:
            return Rejected(_FROM_JWS[exc.reason])

    def finish(
        self, parsed: ParsedJWS, found: Found | None, now: float, nonce: str | None = None
    ) -> Verdict:
        """Steps 3 to 7, given the keys step 2 found (``None``: no such key)."""
        if found is None:
            return Rejected(RejectedReason.UNKNOWN_KEY)
        keys = found.keys
        key = keys[0] if len(keys) == 1 else _choose(keys, parsed.alg)
        try:
            payload = verify_parsed(parsed, key, self.algorithms)
        except JWSRejected as exc:
            return Rejected(_FROM_JWS[exc.reason])
        try:
            claims = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Rejected(RejectedReason.CLAIMS)
        if type(claims) is not dict:
            return Rejected(RejectedReason.CLAIMS)
        return self.judge(claims, now, found.issuer, nonce)

    def judge(
        self,
        claims: dict[str, Any],
        now: float,
        discovered_issuer: str | None = None,
        nonce: str | None = None,
    ) -> Verdict:
        """Steps 5 to 7 on claims whose signature verified."""
        if self.issuer_of is not None:
            expected = self.issuer_of(claims)
            if expected is None:
                return Rejected(RejectedReason.TENANT)
            issuers = frozenset((expected,))
        elif discovered_issuer is not None:
            issuers = frozenset((discovered_issuer,))
        else:
            issuers = self.issuers
        if not issuers:
            # joserfc skips a check whose value list is empty: never let that happen.
            return Rejected(RejectedReason.ISSUER)
        audience = claims.get(self.audience_claim)
        if self.audience_claim != "aud" and (
            type(audience) is not str or audience not in self.audiences
        ):
            return Rejected(RejectedReason.AUDIENCE)
        registry = _claims_registry(
            issuers,
            self.audiences if self.audience_claim == "aud" else None,
            self.leeway,
            # joserfc compares whole seconds: floor keeps "exp <= now" exact for integer exp.
            math.floor(now),
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            return Rejected(RejectedReason.EXPIRED)
        except MissingClaimError:
            return Rejected(RejectedReason.CLAIMS)
        except ClaimError as exc:
            why = _FROM_CLAIM.get(exc.claim, RejectedReason.CLAIMS)
            if why is RejectedReason.ISSUED_IN_FUTURE and not _number(claims.get("iat")):
                why = RejectedReason.CLAIMS
            return Rejected(why)
        except JoseError:
            return Rejected(RejectedReason.CLAIMS)
        if type(audience) is list and len(audience) > 1:
            # Several audiences: the party the token was issued to must be us.
            azp = claims.get("azp")
            if type(azp) is not str or azp not in self.audiences:
                return Rejected(RejectedReason.AUTHORIZED_PARTY)
        for check in self.checks:
            reason = check(claims)
            if reason is not None:
                return Rejected(reason)
        if nonce is not None and not nonce_matches(claims.get("nonce"), nonce):
            return Rejected(RejectedReason.NONCE)
        if self.nonce is not None:
            value = claims.get("nonce")
            if type(value) is not str or not value or not self.nonce(value):
                return Rejected(RejectedReason.NONCE)
        subject = claims.get(self.subject_claim)
        if type(subject) is not str or not subject:
            return Rejected(RejectedReason.CLAIMS)
        email = claims.get("email")
        verified = type(email) is str and email != "" and _is_true(claims.get("email_verified"))
        return ExternalIdentity(
            provider=self.provider,
            subject=subject,
            claims=MappingProxyType(claims),
            issuer=claims["iss"],
            email=email if verified else None,
        )


def _choose(keys: tuple[Key, ...], alg: str) -> Key:
    """The key to verify with among those sharing a ``kid``: one of the type
    ``alg`` needs, else the first (which joserfc then refuses for its type)."""
    if len(keys) > 1:
        wanted = _KEY_TYPE_OF.get(alg[:2])
        for key in keys:
            if key.key_type == wanted and key.alg in (None, alg):
                return key
    return keys[0]


def check_now(now: object) -> float:
    """``now`` comes from the host's clock: a non-finite one is its bug."""
    if type(now) not in (int, float) or not 0 <= now < 2.0**62:  # type: ignore[operator]
        raise ValueError(f"now must be seconds since the epoch, a finite number; got {now!r}")
    return float(now)  # type: ignore[arg-type]


class IdTokenVerifier:
    """Verifies one provider's ID tokens: an
    :class:`~tokenflow.ports.ExternalTokenVerifier` for :class:`tokenflow.Flow`.

    Built by the presets (:func:`tokenflow.oidc.google`...). :meth:`verify_token`
    returns the identity or ``None``, and raises
    :class:`~tokenflow.oidc.ProviderUnavailable` when the key set cannot be
    had (the flow then answers 503). :meth:`check` says why a token failed.
    Thread-safe.
    """

    def __init__(
        self,
        rules: TokenRules,
        location: KeyLocation,
        *,
        source: KeySetSource,
        cache: CachePolicy | None = None,
    ) -> None:
        self.rules = rules
        self.location = location
        self.source = source
        self.cache: CachePolicy = cache or CachePolicy()
        self._keys = KeySetCache(rules.provider, location, self.cache, source)

    def __repr__(self) -> str:
        return f"IdTokenVerifier({self.rules.provider!r}, audiences={sorted(self.rules.audiences)})"

    @property
    def provider(self) -> str:
        """The provider's natural name (``"google"``...)."""
        return self.rules.provider

    @property
    def key_set_fetches(self) -> int:
        """How many key-set refreshes this verifier has attempted."""
        return self._keys.fetches

    def check(self, token: str, now: float, *, nonce: str | None = None) -> Verdict:
        """The identity, or why the token was refused. ``nonce``: the raw nonce
        this login expects (the token may hold it or its SHA-256)."""
        now = check_now(now)
        parsed = self.rules.parse(token)
        if isinstance(parsed, Rejected):
            return parsed
        found = self._keys.find(parsed.kid, now)
        return self.rules.finish(parsed, found, now, nonce)

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """The verified identity, or ``None``; raises when it cannot decide."""
        # check()'s steps, inlined: this is the call the flow makes at every login.
        now = check_now(now)
        rules = self.rules
        parsed = rules.parse(token)
        if isinstance(parsed, Rejected):
            return None
        verdict = rules.finish(parsed, self._keys.find(parsed.kid, now), now)
        return None if isinstance(verdict, Rejected) else verdict


class AsyncIdTokenVerifier:
    """The async face of :class:`IdTokenVerifier`: same rules, same verdicts, for
    :class:`tokenflow.AsyncFlow`. Fetches keys through an
    :class:`~tokenflow.oidc.AsyncKeySetSource`."""

    def __init__(
        self,
        rules: TokenRules,
        location: KeyLocation,
        *,
        source: AsyncKeySetSource,
        cache: CachePolicy | None = None,
    ) -> None:
        self.rules = rules
        self.location = location
        self.source = source
        self.cache: CachePolicy = cache or CachePolicy()
        self._keys = AsyncKeySetCache(rules.provider, location, self.cache, source)

    def __repr__(self) -> str:
        return (
            f"AsyncIdTokenVerifier({self.rules.provider!r}, "
            f"audiences={sorted(self.rules.audiences)})"
        )

    @property
    def provider(self) -> str:
        """The provider's natural name (``"google"``...)."""
        return self.rules.provider

    @property
    def key_set_fetches(self) -> int:
        """How many key-set refreshes this verifier has attempted."""
        return self._keys.fetches

    async def check(self, token: str, now: float, *, nonce: str | None = None) -> Verdict:
        """See :meth:`IdTokenVerifier.check`."""
        now = check_now(now)
        parsed = self.rules.parse(token)
        if isinstance(parsed, Rejected):
            return parsed
        found = await self._keys.find(parsed.kid, now)
        return self.rules.finish(parsed, found, now, nonce)

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """See :meth:`IdTokenVerifier.verify_token`."""
        verdict = await self.check(token, now)
        return None if isinstance(verdict, Rejected) else verdict
