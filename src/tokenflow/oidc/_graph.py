"""Facebook classic access tokens, verified online through the Graph API.

A classic Facebook Login access token is not a JWT: nothing can verify it
offline. The Graph API's ``debug_token`` endpoint says whether it is valid,
for which app, until when, and for which user. That is one network call per
login, through the same :class:`~tokenflow.oidc.KeySetSource` port as key
sets. The rules, written once in :class:`GraphRules`::

    token       printable token characters only, at most 4 KiB (never sent otherwise)
    answer 200  data.is_valid is true, data.app_id is ours, data.type is USER,
                data.expires_at is a time after now, data.user_id is set
    answer 400  Graph refused the token (OAuthException 190 "invalid token",
                100 "invalid parameter", ...): a failed login (401, counted
                by the throttle); but an error Graph names as its own fault
                or a rate limit (codes 1, 2, 4, 17, 32, 341, 613) is not
    otherwise   (5xx, 429, 401/403, unreadable JSON, no answer):
                ProviderUnavailable, the flow answers 503

Graph answers code 190 both for a client token it cannot use and for an app
access token it refuses, and the two cannot be told apart from the answer.
Any client can send a garbage token, so 190 is read as the client's fault: a
failed login, throttled like a wrong password, never a 503 a client can cause
at will. The cost: a wrong ``app_secret`` shows as every classic Facebook
login failing (401), not as 503; docs/identity.md says how to check it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import orjson

from .._errors import ConfigError
from ..ports import ExternalIdentity
from ._http import AsyncKeySetSource, Fetched, FetchError, KeySetSource, check_url
from ._keys import ProviderUnavailable
from ._verify import Rejected, RejectedReason, Verdict, check_now

__all__ = [
    "FACEBOOK_ISSUER",
    "GRAPH_URL",
    "AsyncFacebookTokenVerifier",
    "FacebookTokenVerifier",
    "GraphRules",
]

GRAPH_URL: Final = "https://graph.facebook.com"
GRAPH_VERSION: Final = "v19.0"
FACEBOOK_ISSUER: Final = "https://www.facebook.com"
"""The issuer Limited Login tokens carry; classic logins report it too, so that
both name a user the same way (their ``sub`` / ``user_id`` are both app-scoped)."""
_TOKEN: Final = re.compile(r"[A-Za-z0-9._|\-]{16,4096}")
_VERSION: Final = re.compile(r"v[0-9]{1,2}\.[0-9]{1,2}")


@dataclass(frozen=True, slots=True)
class GraphRules:
    """How to ask ``debug_token`` about a token, and how to read the answer. Pure."""

    app_id: str
    app_secret: str = field(repr=False)
    graph_url: str = GRAPH_URL
    version: str = GRAPH_VERSION
    provider: str = "facebook"

    def __post_init__(self) -> None:
        if not (isinstance(self.app_id, str) and re.fullmatch(r"[0-9]+", self.app_id)):
            raise ConfigError("app_id must be your Facebook app's numeric id, as a string")
        if not (
            isinstance(self.app_secret, str) and re.fullmatch(r"[0-9a-f]{16,64}", self.app_secret)
        ):
            raise ConfigError("app_secret must be your Facebook app's secret (hexadecimal)")
        if not (isinstance(self.version, str) and _VERSION.fullmatch(self.version)):
            raise ConfigError("version must be a Graph API version such as 'v19.0'")
        check_url(self.graph_url, allow_loopback_http=True)

    @property
    def url(self) -> str:
        """The ``debug_token`` endpoint."""
        return f"{self.graph_url.rstrip('/')}/{self.version}/debug_token"

    def request(self, token: object) -> Mapping[str, str] | Rejected:
        """The query for ``debug_token``, or the refusal of a token not worth sending."""
        if type(token) is not str or not _TOKEN.fullmatch(token):
            return Rejected(RejectedReason.MALFORMED)
        return {"input_token": token, "access_token": f"{self.app_id}|{self.app_secret}"}

    def read(self, fetched: Fetched, now: float) -> Verdict:
        """The verdict on ``debug_token``'s answer; raises :class:`ProviderUnavailable`."""
        if fetched.status == 400:
            code = _error_code(fetched.body)
            if code in _PROVIDER_FAULTS:
                raise ProviderUnavailable(f"{self.provider}: debug_token answered error {code}")
            return Rejected(RejectedReason.INVALID)
        if fetched.status in (401, 403):
            raise ProviderUnavailable(
                f"{self.provider}: Graph refused the app access token; check app_id and app_secret"
            )
        if fetched.status != 200:
            raise ProviderUnavailable(f"{self.provider}: debug_token answered {fetched.status}")
        try:
            document = orjson.loads(fetched.body)
        except orjson.JSONDecodeError:
            raise ProviderUnavailable(f"{self.provider}: debug_token answered non-JSON") from None
        data = document.get("data") if type(document) is dict else None
        if type(data) is not dict:
            raise ProviderUnavailable(f"{self.provider}: debug_token answered without 'data'")
        if data.get("is_valid") is not True:
            return Rejected(RejectedReason.INVALID)
        if data.get("app_id") != self.app_id:
            return Rejected(RejectedReason.AUDIENCE)
        if data.get("type") != "USER":
            return Rejected(RejectedReason.TOKEN_USE)
        expires_at = data.get("expires_at")
        # 0 means "never expires": not something a login token should be.
        if type(expires_at) is not int or not expires_at > now:
            return Rejected(RejectedReason.EXPIRED)
        user_id = data.get("user_id")
        if type(user_id) is not str or not user_id:
            return Rejected(RejectedReason.CLAIMS)
        claims: dict[str, Any] = {
            "iss": FACEBOOK_ISSUER,
            "sub": user_id,
            "app_id": self.app_id,
            "exp": expires_at,
        }
        for name in ("issued_at", "scopes"):
            if name in data:
                claims[name] = data[name]
        return ExternalIdentity(
            provider=self.provider,
            subject=user_id,
            claims=MappingProxyType(claims),
            issuer=FACEBOOK_ISSUER,
        )


_PROVIDER_FAULTS: Final = frozenset({1, 2, 4, 17, 32, 341, 613})
"""Graph error codes that are Graph's own trouble (unknown error, service
unavailable) or a rate limit on the app or its calls: no answer about the token."""


def _error_code(body: bytes) -> object:
    """The ``error.code`` of a Graph error answer (None when there is none)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if type(document) is dict else None
    if type(error) is not dict:
        return None
    code = error.get("code")
    return code if type(code) is int else None


def _failure(provider: str, exc: Exception) -> str:
    # A source of the application's own might echo the query, which holds the
    # app secret: only tokenflow's own FetchError text is known to be clean.
    detail = str(exc) if isinstance(exc, FetchError) else type(exc).__name__
    return f"{provider}: debug_token failed: {detail}"


class FacebookTokenVerifier:
    """Verifies classic Facebook Login access tokens through the Graph API (sync).

    One ``debug_token`` call per login. Raises
    :class:`~tokenflow.oidc.ProviderUnavailable` when Graph does not answer
    usefully. The app secret never appears in ``repr`` or errors.
    """

    def __init__(self, rules: GraphRules, *, source: KeySetSource) -> None:
        self.rules = rules
        self.source = source

    def __repr__(self) -> str:
        return f"FacebookTokenVerifier(app_id={self.rules.app_id!r})"

    @property
    def provider(self) -> str:
        """The provider's natural name, ``"facebook"``."""
        return self.rules.provider

    def check(self, token: str, now: float) -> Verdict:
        """The identity, or why the token was refused."""
        now = check_now(now)
        params = self.rules.request(token)
        if isinstance(params, Rejected):
            return params
        try:
            fetched = self.source.fetch(self.rules.url, params)
        except Exception as exc:
            raise ProviderUnavailable(_failure(self.provider, exc)) from None
        return self.rules.read(fetched, now)

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """The verified identity, or ``None``; raises when Graph cannot answer."""
        verdict = self.check(token, now)
        return None if isinstance(verdict, Rejected) else verdict


class AsyncFacebookTokenVerifier:
    """The async face of :class:`FacebookTokenVerifier`."""

    def __init__(self, rules: GraphRules, *, source: AsyncKeySetSource) -> None:
        self.rules = rules
        self.source = source

    def __repr__(self) -> str:
        return f"AsyncFacebookTokenVerifier(app_id={self.rules.app_id!r})"

    @property
    def provider(self) -> str:
        """The provider's natural name, ``"facebook"``."""
        return self.rules.provider

    async def check(self, token: str, now: float) -> Verdict:
        """See :meth:`FacebookTokenVerifier.check`."""
        now = check_now(now)
        params = self.rules.request(token)
        if isinstance(params, Rejected):
            return params
        try:
            fetched = await self.source.fetch(self.rules.url, params)
        except Exception as exc:
            raise ProviderUnavailable(_failure(self.provider, exc)) from None
        return self.rules.read(fetched, now)

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """See :meth:`FacebookTokenVerifier.verify_token`."""
        verdict = await self.check(token, now)
        return None if isinstance(verdict, Rejected) else verdict
