"""The OpenID Connect authorization-code flow's client side, for one provider.

:func:`code_flow` wraps a preset's verifier into a client that the flow's
``external`` mapping takes like any verifier: it still verifies posted ID
tokens (``verify_token``), and it can also start a sign-in
(``authorization_url``) and redeem the code that comes back
(``exchange_code``). The order of the checks lives in ``tokenflow._flow``
(the transaction, its state, the provider's ``error=``); this module holds
what is particular to talking to a provider:

- the authorization URL: ``response_type=code``, the exact registered
  ``redirect_uri``, ``scope``, ``state``, ``nonce``, PKCE ``S256``;
- the RFC 9207 ``iss`` parameter, checked before the code leaves the
  server: required where the provider advertises it, and when sent it must
  name this client's provider (a code is never redeemed at the wrong token
  endpoint: the mix-up defence);
- the token request, with ``client_secret_basic``, ``client_secret_post`` or
  ``private_key_jwt`` client authentication, through the same HTTPS-only,
  no-redirect, time- and size-bounded source as key sets;
- the ID token it returns, verified by the preset with this sign-in's nonce.

Endpoints come from the provider's discovery document (fetched once, kept;
its issuer must be the one configured, every endpoint must be HTTPS) or are
given. A refused code or token is ``None`` (a failed login, 401); a provider
that cannot be reached or answers garbage raises
:class:`~tokenflow.oidc.ProviderUnavailable` (503). Nothing is minted either way.

The sans-IO steps are the functions at the top; :class:`CodeFlowClient` and
:class:`AsyncCodeFlowClient` only add the fetches.
"""

from __future__ import annotations

import base64
import enum
import hmac
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from .._base64url import b64url_encode
from .._errors import ConfigError
from ..ports import ExternalIdentity
from ._graph import AsyncFacebookTokenVerifier, FacebookTokenVerifier
from ._http import (
    AsyncHttpKeySetSource,
    AsyncTokenEndpointSource,
    Fetched,
    FetchError,
    HttpKeySetSource,
    TokenEndpointSource,
    check_url,
)
from ._keys import ProviderUnavailable
from ._verify import AsyncIdTokenVerifier, IdTokenVerifier, Rejected, Verdict

__all__ = [
    "AppleClientSecret",
    "AsyncCodeFlowClient",
    "AsyncFacebookCodeFlowClient",
    "ClientAuth",
    "CodeFlowClient",
    "FacebookCodeFlowClient",
    "ProviderEndpoints",
    "code_flow",
    "facebook_code_flow",
]

GOOGLE_DISCOVERY: Final = "https://accounts.google.com/.well-known/openid-configuration"
APPLE_ISSUER: Final = "https://appleid.apple.com"
_DEFAULT_SCOPES: Final = ("openid", "email", "profile")
_PRESET_SCOPES: Final = {
    "google": ("openid", "email", "profile"),
    "apple": ("openid",),
    "cognito": ("openid", "email"),
}
_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME: Final = 60
APPLE_SECRET_LIFETIME: Final = 3600
"""Seconds an Apple client secret is made for (Apple allows up to six months)."""
_APPLE_RENEW_BEFORE: Final = 300
_MAX_ISSUER_CHARS: Final = 512


class ClientAuth(enum.Enum):
    """How the client authenticates at the token endpoint (OIDC Core section 9)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name
    """The client id and secret in an HTTP Basic ``Authorization`` header."""
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name
    """The client id and secret as form parameters."""
    PRIVATE_KEY_JWT = "private_key_jwt"
    """A short-lived JWT signed with the client's private key (no shared secret)."""


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """Where a provider's sign-in happens. ``issuer`` is the provider's exact
    issuer identifier; ``iss_parameter_supported`` whether its authorization
    responses carry the RFC 9207 ``iss`` parameter (then it is required)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    iss_parameter_supported: bool = False

    def checked(self, *, allow_loopback_http: bool) -> ProviderEndpoints:
        """These endpoints, if every one is an HTTPS URL; raises :class:`ConfigError`."""
        for url in (self.issuer, self.authorization_endpoint, self.token_endpoint):
            check_url(url, allow_loopback_http=allow_loopback_http)
        if type(self.iss_parameter_supported) is not bool:
            raise ConfigError("iss_parameter_supported must be a bool")
        return self


# -- sans-IO steps ---------------------------------------------------------------


def endpoints_from_discovery(
    fetched: Fetched, expected_issuer: str | None, discovery_url: str, *, allow_loopback_http: bool
) -> ProviderEndpoints:
    """The endpoints a discovery answer names; raises ProviderUnavailable for a
    document that is not a 200 JSON object, names another issuer, or names a
    non-HTTPS endpoint."""
    if fetched.status != 200:
        raise ProviderUnavailable(f"discovery answered {fetched.status}")
    try:
        document = orjson.loads(fetched.body)
    except orjson.JSONDecodeError:
        raise ProviderUnavailable("discovery is not JSON") from None
    if type(document) is not dict:
        raise ProviderUnavailable("discovery is not a JSON object")
    issuer = document.get("issuer")
    if type(issuer) is not str:
        raise ProviderUnavailable("discovery names no issuer")
    if expected_issuer is not None:
        if issuer != expected_issuer:
            raise ProviderUnavailable("discovery names another issuer")
    elif _origin(issuer) != _origin(discovery_url):
        raise ProviderUnavailable("discovery names an issuer of another origin")
    authorization = document.get("authorization_endpoint")
    token = document.get("token_endpoint")
    supported = document.get("authorization_response_iss_parameter_supported", False)
    if type(authorization) is not str or type(token) is not str or type(supported) is not bool:
        raise ProviderUnavailable("discovery lacks the authorization or token endpoint")
    try:
        return ProviderEndpoints(issuer, authorization, token, supported).checked(
            allow_loopback_http=allow_loopback_http
        )
    except ConfigError:
        # An http:// endpoint: a code or secret would cross the network in clear.
        raise ProviderUnavailable("discovery names an endpoint that is not HTTPS") from None


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname or "", parts.port
    except ValueError:
        return "", "", None


def authorization_url(
    endpoints: ProviderEndpoints,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    extra: Mapping[str, str],
    *,
    state: str,
    nonce: str,
    code_challenge: str,
) -> str:
    """The URL that starts a sign-in (OIDC Core 3.1.2.1, RFC 7636)."""
    params = {
        **extra,
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    base = endpoints.authorization_endpoint
    separator = "&" if urlsplit(base).query else "?"
    return base + separator + urlencode(params, quote_via=quote)


def issuer_acceptable(endpoints: ProviderEndpoints, issuer: str | None) -> bool:
    """RFC 9207: the ``iss`` parameter, required when advertised, and when present
    exactly this provider's issuer (compared in constant time)."""
    if issuer is None:
        return not endpoints.iss_parameter_supported
    if type(issuer) is not str or len(issuer) > _MAX_ISSUER_CHARS:
        return False
    return hmac.compare_digest(
        issuer.encode("utf-8", "surrogatepass"), endpoints.issuer.encode("utf-8")
    )


def read_token_response(fetched: Fetched) -> str | None:
    """The ID token of a token endpoint's answer; None when the provider refused
    the code (4xx); raises ProviderUnavailable for an answer that is no answer
    (5xx, a redirect, not JSON)."""
    status = fetched.status
    if 400 <= status < 500:
        return None
    if status != 200:
        raise ProviderUnavailable(f"the token endpoint answered {status}")
    try:
        document = orjson.loads(fetched.body)
    except orjson.JSONDecodeError:
        raise ProviderUnavailable("the token endpoint's answer is not JSON") from None
    if type(document) is not dict:
        raise ProviderUnavailable("the token endpoint's answer is not a JSON object")
    id_token = document.get("id_token")
    # No ID token, or another token type: the code bought no identity.
    if type(id_token) is not str or not id_token:
        return None
    token_type = document.get("token_type")
    if token_type is not None and (type(token_type) is not str or token_type.lower() != "bearer"):
        return None
    return id_token


class AppleClientSecret:
    """Sign in with Apple's client secret: a short-lived ES256 JWT signed with the
    developer's key (``iss`` the team id, ``sub`` the Services ID, ``aud``
    Apple), made on demand and made again five minutes before it expires.

    ``private_key`` is the ``.p8`` key Apple issued (a joserfc ``ECKey`` on
    P-256), ``key_id`` its id. Pass it as ``client_secret`` to
    :func:`code_flow` with ``ClientAuth.CLIENT_SECRET_POST``. Thread-safe.
    """

    def __init__(
        self, *, team_id: str, key_id: str, private_key: ECKey, audience: str = APPLE_ISSUER
    ) -> None:
        for name, value in (("team_id", team_id), ("key_id", key_id)):
            if type(value) is not str or not value:
                raise ConfigError(f"AppleClientSecret needs {name} (a non-empty str)")
        if not isinstance(private_key, ECKey) or not private_key.is_private:
            raise ConfigError("AppleClientSecret needs the private ECKey Apple issued (.p8)")
        if private_key.curve_name != "P-256":
            raise ConfigError("Apple's client secret is ES256: the key must be on P-256")
        self.team_id = team_id
        self.key_id = key_id
        self.audience = audience
        self._key = private_key
        self._lock = threading.Lock()
        self._cached: tuple[str, str, int] | None = None  # client id, secret, exp

    def __repr__(self) -> str:
        return f"AppleClientSecret(team_id={self.team_id!r}, key_id={self.key_id!r})"

    def value(self, client_id: str, now: float) -> str:
        """The secret to send at ``now`` for ``client_id``."""
        with self._lock:
            cached = self._cached
            if (
                cached is not None
                and cached[0] == client_id
                and int(now) < cached[2] - _APPLE_RENEW_BEFORE
            ):
                return cached[1]
            issued = int(now)
            expires = issued + APPLE_SECRET_LIFETIME
            claims = {
                "iss": self.team_id,
                "iat": issued,
                "exp": expires,
                "aud": self.audience,
                "sub": client_id,
            }
            header = {"alg": "ES256", "kid": self.key_id}
            secret = jwt.encode(header, claims, self._key, algorithms=["ES256"])
            self._cached = (client_id, secret, expires)
            return secret


@dataclass(frozen=True, slots=True)
class _ClientCredentials:
    client_id: str
    method: ClientAuth
    secret: str | AppleClientSecret | None = field(default=None, repr=False)
    key: RSAKey | ECKey | OKPKey | None = field(default=None, repr=False)
    algorithm: str | None = None

    def token_request(
        self,
        token_endpoint: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        now: float,
        jti: str,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The form and headers of the token request (OIDC Core 3.1.3.1)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers: dict[str, str] = {}
        secret = self.secret
        if isinstance(secret, AppleClientSecret):
            secret = secret.value(self.client_id, now)
        if self.method is ClientAuth.CLIENT_SECRET_BASIC:
            assert secret is not None
            # RFC 6749 2.3.1: each part form-urlencoded before the Basic encoding.
            pair = f"{quote(self.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif self.method is ClientAuth.CLIENT_SECRET_POST:
            assert secret is not None
            form["client_id"] = self.client_id
            form["client_secret"] = secret
        else:
            assert self.key is not None
            assert self.algorithm is not None
            issued = int(now)
            claims = {
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": token_endpoint,
                "jti": jti,
                "iat": issued,
                "exp": issued + _ASSERTION_LIFETIME,
            }
            header = {"alg": self.algorithm, "typ": "JWT"}
            kid = self.key.kid
            if kid:
                header["kid"] = kid
            form["client_id"] = self.client_id
            form["client_assertion_type"] = _ASSERTION_TYPE
            form["client_assertion"] = jwt.encode(
                header, claims, self.key, algorithms=[self.algorithm]
            )
        return form, headers


# -- the clients -----------------------------------------------------------------


class _Client:
    """What both faces share: configuration and the endpoints once known."""

    def __init__(
        self,
        verifier: IdTokenVerifier | AsyncIdTokenVerifier,
        credentials: _ClientCredentials,
        redirect_uri: str,
        scopes: tuple[str, ...],
        endpoints: ProviderEndpoints | None,
        discovery_url: str | None,
        issuer: str | None,
        extra: Mapping[str, str],
        allow_loopback_http: bool,
        response_mode: str | None,
    ) -> None:
        self.verifier = verifier
        self.response_mode = response_mode
        """``"form_post"`` when the provider answers by a cross-site POST, else None."""
        self._credentials = credentials
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self.discovery_url = discovery_url
        self._issuer = issuer
        self._extra = dict(extra)
        self._loopback = allow_loopback_http
        self._endpoints = endpoints
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.verifier.provider!r}, "
            f"client_id={self._credentials.client_id!r}, "
            f"client_auth={self._credentials.method.value!r})"
        )

    @property
    def client_id(self) -> str:
        """The client id registered at the provider."""
        return self._credentials.client_id

    def _request(
        self, endpoints: ProviderEndpoints, code: str, verifier: str, now: float
    ) -> tuple[dict[str, str], dict[str, str]]:
        return self._credentials.token_request(
            endpoints.token_endpoint,
            code,
            self.redirect_uri,
            verifier,
            now,
            b64url_encode(os.urandom(16)),
        )

    def _authorization_url(
        self, endpoints: ProviderEndpoints, state: str, nonce: str, code_challenge: str
    ) -> str:
        return authorization_url(
            endpoints,
            self._credentials.client_id,
            self.redirect_uri,
            self.scopes,
            self._extra,
            state=state,
            nonce=nonce,
            code_challenge=code_challenge,
        )

    def _discovered(self, fetched: Fetched) -> ProviderEndpoints:
        assert self.discovery_url is not None
        endpoints = endpoints_from_discovery(
            fetched, self._issuer, self.discovery_url, allow_loopback_http=self._loopback
        )
        with self._lock:
            self._endpoints = endpoints
        return endpoints

    @staticmethod
    def _identity(verdict: Verdict) -> ExternalIdentity | None:
        return None if isinstance(verdict, Rejected) else verdict


class CodeFlowClient(_Client):
    """One provider's sign-in for :class:`tokenflow.Flow` (built by :func:`code_flow`).

    An ``external`` verifier with two more methods: :meth:`authorization_url`
    and :meth:`exchange_code`. Thread-safe.
    """

    verifier: IdTokenVerifier

    def __init__(self, *args: Any, source: TokenEndpointSource) -> None:
        super().__init__(*args)
        self.source = source

    def endpoints(self) -> ProviderEndpoints:
        """The provider's endpoints, from discovery on first use (then kept)."""
        endpoints = self._endpoints
        if endpoints is not None:
            return endpoints
        assert self.discovery_url is not None
        try:
            fetched = self.source.fetch(self.discovery_url)
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        return self._discovered(fetched)

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """The URL that starts a sign-in with this state, nonce and PKCE challenge."""
        return self._authorization_url(self.endpoints(), state, nonce, code_challenge)

    def exchange_code(
        self, code: str, *, code_verifier: str, nonce: str, issuer: str | None, now: float
    ) -> ExternalIdentity | None:
        """Redeem ``code`` once and verify the ID token it buys; None if refused."""
        endpoints = self.endpoints()
        if not issuer_acceptable(endpoints, issuer):
            return None
        form, headers = self._request(endpoints, code, code_verifier, now)
        try:
            fetched = self.source.post(endpoints.token_endpoint, form, headers)
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        id_token = read_token_response(fetched)
        if id_token is None:
            return None
        return self._identity(self.verifier.check(id_token, now, nonce=nonce))

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """Verify a posted ID token, as the preset does (the sign-in button's POST)."""
        return self.verifier.verify_token(token, now=now)


class AsyncCodeFlowClient(_Client):
    """The async face of :class:`CodeFlowClient`, for :class:`tokenflow.AsyncFlow`."""

    verifier: AsyncIdTokenVerifier

    def __init__(self, *args: Any, source: AsyncTokenEndpointSource) -> None:
        super().__init__(*args)
        self.source = source

    async def endpoints(self) -> ProviderEndpoints:
        """The provider's endpoints, from discovery on first use (then kept)."""
        endpoints = self._endpoints
        if endpoints is not None:
            return endpoints
        assert self.discovery_url is not None
        try:
            fetched = await self.source.fetch(self.discovery_url)
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        return self._discovered(fetched)

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """See :meth:`CodeFlowClient.authorization_url`."""
        return self._authorization_url(await self.endpoints(), state, nonce, code_challenge)

    async def exchange_code(
        self, code: str, *, code_verifier: str, nonce: str, issuer: str | None, now: float
    ) -> ExternalIdentity | None:
        """See :meth:`CodeFlowClient.exchange_code`."""
        endpoints = await self.endpoints()
        if not issuer_acceptable(endpoints, issuer):
            return None
        form, headers = self._request(endpoints, code, code_verifier, now)
        try:
            fetched = await self.source.post(endpoints.token_endpoint, form, headers)
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        id_token = read_token_response(fetched)
        if id_token is None:
            return None
        return self._identity(await self.verifier.check(id_token, now, nonce=nonce))

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """See :meth:`CodeFlowClient.verify_token`."""
        return await self.verifier.verify_token(token, now=now)


def _default_discovery(verifier: IdTokenVerifier | AsyncIdTokenVerifier) -> str | None:
    location = verifier.location
    if location.discovery_url is not None:
        return location.discovery_url
    if verifier.provider == "google":
        return GOOGLE_DISCOVERY
    return None


def _signing_key(key: object, algorithm: object) -> tuple[RSAKey | ECKey | OKPKey, str]:
    if not isinstance(key, (RSAKey, ECKey, OKPKey)) or not key.is_private:
        raise ConfigError(
            "private_key_jwt needs private_key: a joserfc RSAKey, ECKey or OKPKey "
            "holding the private half (joserfc.jwk.import_key(pem_or_jwk))"
        )
    if algorithm not in {"RS256", "PS256", "ES256", "ES384", "EdDSA"}:
        raise ConfigError("signing_algorithm must be RS256, PS256, ES256, ES384 or EdDSA")
    return key, str(algorithm)


def code_flow(
    verifier: IdTokenVerifier | AsyncIdTokenVerifier,
    *,
    client_id: str,
    redirect_uri: str,
    client_secret: str | AppleClientSecret | None = None,
    client_auth: ClientAuth = ClientAuth.CLIENT_SECRET_BASIC,
    private_key: object = None,
    signing_algorithm: str = "RS256",
    endpoints: ProviderEndpoints | None = None,
    discovery_url: str | None = None,
    issuer: str | None = None,
    scopes: Iterable[str] | None = None,
    extra_parameters: Mapping[str, str] | None = None,
    source: TokenEndpointSource | AsyncTokenEndpointSource | None = None,
    allow_loopback_http: bool = False,
    response_mode: str | None = None,
) -> CodeFlowClient | AsyncCodeFlowClient:
    """Sign in with a provider: ``verifier`` (a preset) plus this client's registration.

    ``client_id`` must be one of the verifier's audiences; ``redirect_uri``
    is the exact callback URL registered at the provider (HTTPS; loopback
    HTTP only with ``allow_loopback_http``). ``client_auth`` picks how the
    client authenticates at the token endpoint: ``client_secret`` for the two
    secret methods, ``private_key`` (a joserfc private key) and
    ``signing_algorithm`` for ``private_key_jwt``. Endpoints come from
    ``endpoints``, else ``discovery_url``, else the preset's discovery
    document (Google's, or the one its keys come from); ``issuer`` is the
    issuer discovery must name (default: the preset's). ``scopes`` default
    to the preset's (``openid`` is always included). ``source`` carries the
    requests (default: the httpx source of the verifier's face).
    ``response_mode="form_post"`` asks the provider to answer by a cross-site
    POST to the callback (Sign in with Apple does when it is asked for the
    e-mail or name); the flow then admits exactly that POST, with the state
    as its defence, and the transaction cookie is ``SameSite=None``. For
    Apple, ``client_secret`` is an :class:`AppleClientSecret`.

    Returns :class:`CodeFlowClient` for a sync verifier, :class:`AsyncCodeFlowClient`
    for an async one. Raises :class:`ConfigError` for anything inconsistent.
    """
    if not isinstance(verifier, (IdTokenVerifier, AsyncIdTokenVerifier)):
        raise ConfigError("code_flow needs an ID token verifier: a preset such as oidc.google()")
    asynchronous = isinstance(verifier, AsyncIdTokenVerifier)
    if type(client_id) is not str or client_id not in verifier.rules.audiences:
        raise ConfigError("client_id must be one of the verifier's client ids (its audiences)")
    check_url(redirect_uri, allow_loopback_http=allow_loopback_http)
    if urlsplit(redirect_uri).query:
        raise ConfigError("redirect_uri must have no query: the provider appends its own")
    if not isinstance(client_auth, ClientAuth):
        raise ConfigError("client_auth must be a ClientAuth member")
    key = None
    algorithm = None
    if client_auth is ClientAuth.PRIVATE_KEY_JWT:
        if client_secret is not None:
            raise ConfigError("private_key_jwt takes private_key, not client_secret")
        key, algorithm = _signing_key(private_key, signing_algorithm)
    elif not isinstance(client_secret, AppleClientSecret) and (
        type(client_secret) is not str or not client_secret
    ):
        raise ConfigError(
            f"{client_auth.value} needs client_secret (a non-empty str or AppleClientSecret)"
        )
    elif private_key is not None:
        raise ConfigError("private_key is used only with ClientAuth.PRIVATE_KEY_JWT")
    credentials = _ClientCredentials(client_id, client_auth, client_secret, key, algorithm)
    if endpoints is not None:
        if discovery_url is not None:
            raise ConfigError("give endpoints or discovery_url, not both")
        if not isinstance(endpoints, ProviderEndpoints):
            raise ConfigError("endpoints must be a ProviderEndpoints")
        endpoints.checked(allow_loopback_http=allow_loopback_http)
    else:
        discovery_url = discovery_url or _default_discovery(verifier)
        if discovery_url is None:
            raise ConfigError(
                f"no discovery document is known for {verifier.provider!r}: "
                "pass endpoints=ProviderEndpoints(...)"
            )
        check_url(discovery_url, allow_loopback_http=allow_loopback_http)
    if issuer is None:
        issuer = verifier.location.issuer
        if issuer is None and len(verifier.rules.issuers) == 1:
            (issuer,) = verifier.rules.issuers
        if issuer is None and verifier.provider == "google":
            issuer = "https://accounts.google.com"
    chosen = (
        tuple(scopes)
        if scopes is not None
        else _PRESET_SCOPES.get(verifier.provider, _DEFAULT_SCOPES)
    )
    if not all(type(s) is str and s and " " not in s for s in chosen):
        raise ConfigError("scopes must be non-empty strings without spaces")
    if "openid" not in chosen:
        chosen = ("openid", *chosen)
    if response_mode not in (None, "form_post"):
        raise ConfigError('response_mode must be None (the query) or "form_post"')
    extra = dict(extra_parameters or {})
    reserved = {
        "response_type",
        "response_mode",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
    }
    if reserved.intersection(extra) or any(k.startswith("code_challenge") for k in extra):
        raise ConfigError("extra_parameters may not set the parameters the flow sets itself")
    args = (
        verifier,
        credentials,
        redirect_uri,
        chosen,
        endpoints,
        discovery_url,
        issuer,
        {**extra, "response_mode": response_mode} if response_mode else extra,
        allow_loopback_http,
        response_mode,
    )
    if asynchronous:
        return AsyncCodeFlowClient(
            *args,
            source=source or AsyncHttpKeySetSource(allow_loopback_http=allow_loopback_http),  # type: ignore[arg-type]
        )
    return CodeFlowClient(
        *args,
        source=source or HttpKeySetSource(allow_loopback_http=allow_loopback_http),  # type: ignore[arg-type]
    )


# -- Facebook Login's code flow: OAuth, then the Graph identity ---------------------------

FACEBOOK_DIALOG: Final = "https://www.facebook.com/{version}/dialog/oauth"
FACEBOOK_ISSUER: Final = "https://www.facebook.com"


def _access_token(fetched: Fetched) -> str | None:
    """The access token of Graph's ``oauth/access_token`` answer; None when the code
    was refused (4xx); raises ProviderUnavailable for anything else."""
    if 400 <= fetched.status < 500:
        return None
    if fetched.status != 200:
        raise ProviderUnavailable(f"facebook: oauth/access_token answered {fetched.status}")
    try:
        document = orjson.loads(fetched.body)
    except orjson.JSONDecodeError:
        raise ProviderUnavailable("facebook: oauth/access_token answered non-JSON") from None
    token = document.get("access_token") if type(document) is dict else None
    return token if type(token) is str and token else None


class _FacebookClient:
    """What both faces of Facebook's code flow share."""

    def __init__(
        self,
        verifier: FacebookTokenVerifier | AsyncFacebookTokenVerifier,
        redirect_uri: str,
        scopes: tuple[str, ...],
    ) -> None:
        self.verifier = verifier
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self.response_mode: str | None = None
        rules = verifier.rules
        self._dialog = FACEBOOK_DIALOG.format(version=rules.version)
        self._token_url = f"{rules.graph_url.rstrip('/')}/{rules.version}/oauth/access_token"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app_id={self.verifier.rules.app_id!r})"

    def _authorization_url(self, state: str, code_challenge: str) -> str:
        params = {
            "client_id": self.verifier.rules.app_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": ",".join(self.scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        return self._dialog + "?" + urlencode(params, quote_via=quote)

    def _token_query(self, code: str, code_verifier: str) -> dict[str, str]:
        rules = self.verifier.rules
        return {
            "client_id": rules.app_id,
            "client_secret": rules.app_secret,
            "redirect_uri": self.redirect_uri,
            "code": code,
            "code_verifier": code_verifier,
        }


class FacebookCodeFlowClient(_FacebookClient):
    """Facebook Login for :class:`tokenflow.Flow` (built by :func:`facebook_code_flow`):
    the code buys an access token, which the preset verifies with Graph."""

    verifier: FacebookTokenVerifier

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """The login dialog's URL (Facebook issues no ID token: ``nonce`` is unused)."""
        return self._authorization_url(state, code_challenge)

    def exchange_code(
        self, code: str, *, code_verifier: str, nonce: str, issuer: str | None, now: float
    ) -> ExternalIdentity | None:
        """Redeem ``code`` for an access token and verify it with Graph; None if refused."""
        if issuer is not None and issuer != FACEBOOK_ISSUER:
            return None
        try:
            fetched = self.verifier.source.fetch(
                self._token_url, self._token_query(code, code_verifier)
            )
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        token = _access_token(fetched)
        return None if token is None else self.verifier.verify_token(token, now=now)

    def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """Verify a posted access token, as the preset does."""
        return self.verifier.verify_token(token, now=now)


class AsyncFacebookCodeFlowClient(_FacebookClient):
    """The async face of :class:`FacebookCodeFlowClient`."""

    verifier: AsyncFacebookTokenVerifier

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """See :meth:`FacebookCodeFlowClient.authorization_url`."""
        return self._authorization_url(state, code_challenge)

    async def exchange_code(
        self, code: str, *, code_verifier: str, nonce: str, issuer: str | None, now: float
    ) -> ExternalIdentity | None:
        """See :meth:`FacebookCodeFlowClient.exchange_code`."""
        if issuer is not None and issuer != FACEBOOK_ISSUER:
            return None
        try:
            fetched = await self.verifier.source.fetch(
                self._token_url, self._token_query(code, code_verifier)
            )
        except FetchError as exc:
            raise ProviderUnavailable(str(exc)) from None
        token = _access_token(fetched)
        return None if token is None else await self.verifier.verify_token(token, now=now)

    async def verify_token(self, token: str, *, now: float) -> ExternalIdentity | None:
        """See :meth:`FacebookCodeFlowClient.verify_token`."""
        return await self.verifier.verify_token(token, now=now)


def facebook_code_flow(
    verifier: FacebookTokenVerifier | AsyncFacebookTokenVerifier,
    *,
    redirect_uri: str,
    scopes: Iterable[str] = ("public_profile", "email"),
    allow_loopback_http: bool = False,
) -> FacebookCodeFlowClient | AsyncFacebookCodeFlowClient:
    """Facebook Login's code flow around the classic preset (:func:`oidc.facebook`):
    the login dialog with state and PKCE, the code redeemed at Graph's
    ``oauth/access_token`` with the app secret (through the preset's source,
    under the same rules as key sets), and the access token verified with
    ``debug_token`` as the preset does. ``redirect_uri`` is the exact *Valid
    OAuth Redirect URI* registered for the app."""
    if isinstance(verifier, AsyncFacebookTokenVerifier):
        asynchronous = True
    elif isinstance(verifier, FacebookTokenVerifier):
        asynchronous = False
    else:
        raise ConfigError("facebook_code_flow needs the oidc.facebook(...) preset")
    check_url(redirect_uri, allow_loopback_http=allow_loopback_http)
    if urlsplit(redirect_uri).query:
        raise ConfigError("redirect_uri must have no query: the provider appends its own")
    chosen = tuple(scopes)
    if not chosen or not all(type(s) is str and s and "," not in s for s in chosen):
        raise ConfigError("scopes must be non-empty strings without commas")
    if asynchronous:
        return AsyncFacebookCodeFlowClient(verifier, redirect_uri, chosen)
    return FacebookCodeFlowClient(verifier, redirect_uri, chosen)
