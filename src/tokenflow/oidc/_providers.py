"""Provider presets: one call per provider, with its documented quirks built in.

Each preset comes in two spellings: ``google()`` returns a verifier for
:class:`tokenflow.Flow`, ``async_google()`` its async face for
:class:`tokenflow.AsyncFlow` (and so on for every provider). Every preset takes:

- ``leeway``: clock skew allowed on ``exp``, ``nbf`` and ``iat`` (60 s; at most 300 s);
- ``cache``: a :class:`~tokenflow.oidc.CachePolicy` (staleness, refetch cooldown...);
- ``source``: where keys are fetched from (default: the httpx source that
  matches the face; pass your own to share a connection pool or to test).

Endpoints are the providers' documented ones; see ``docs/identity.md``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from .._errors import ConfigError
from .._jose import pin_algorithms
from ._graph import (
    GRAPH_VERSION,
    AsyncFacebookTokenVerifier,
    FacebookTokenVerifier,
    GraphRules,
)
from ._http import AsyncHttpKeySetSource, AsyncKeySetSource, HttpKeySetSource, KeySetSource
from ._keys import CachePolicy, KeyLocation
from ._verify import (
    DEFAULT_LEEWAY,
    AsyncIdTokenVerifier,
    Check,
    IdTokenVerifier,
    NonceCheck,
    RejectedReason,
    TokenRules,
    check_leeway,
    check_names,
)

__all__ = [
    "apple",
    "async_apple",
    "async_cognito",
    "async_entra_id",
    "async_facebook",
    "async_facebook_limited_login",
    "async_google",
    "async_jumpcloud",
    "async_oidc",
    "async_okta",
    "cognito",
    "entra_id",
    "facebook",
    "facebook_limited_login",
    "google",
    "jumpcloud",
    "oidc",
    "okta",
]

GOOGLE_ISSUERS: Final = frozenset({"https://accounts.google.com", "accounts.google.com"})
GOOGLE_KEYS: Final = "https://www.googleapis.com/oauth2/v3/certs"
APPLE_ISSUER: Final = "https://appleid.apple.com"
APPLE_KEYS: Final = "https://appleid.apple.com/auth/keys"
FACEBOOK_ISSUER: Final = "https://www.facebook.com"
FACEBOOK_LIMITED_KEYS: Final = "https://limited.facebook.com/.well-known/oauth/openid/jwks/"
JUMPCLOUD_DISCOVERY: Final = "https://oauth.id.jumpcloud.com/.well-known/openid-configuration"
ENTRA_KEYS: Final = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
ENTRA_ISSUER: Final = "https://login.microsoftonline.com/{tid}/v2.0"
_RS256: Final = frozenset({"RS256"})
_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REGION: Final = re.compile(r"[a-z]{2}(-gov)?-[a-z]+-[0-9]{1,2}")
_HOST: Final = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def _check_cache(cache: object) -> None:
    if cache is not None and not isinstance(cache, CachePolicy):
        raise ConfigError("cache must be a tokenflow.oidc.CachePolicy")


def _check_sync_source(source: object, preset: str) -> None:
    if source is not None and inspect.iscoroutinefunction(getattr(source, "fetch", None)):
        raise ConfigError(f"this source is async: use async_{preset}() for AsyncFlow")


def _check_async_source(source: object, preset: str) -> None:
    if source is not None and not inspect.iscoroutinefunction(getattr(source, "fetch", None)):
        raise ConfigError(f"async_{preset}() needs an AsyncKeySetSource (async def fetch)")


def _sync(
    rules: TokenRules,
    location: KeyLocation,
    source: KeySetSource | None,
    cache: CachePolicy | None,
    preset: str,
) -> IdTokenVerifier:
    _check_cache(cache)
    _check_sync_source(source, preset)
    return IdTokenVerifier(rules, location, source=source or HttpKeySetSource(), cache=cache)


def _async(
    rules: TokenRules,
    location: KeyLocation,
    source: AsyncKeySetSource | None,
    cache: CachePolicy | None,
    preset: str,
) -> AsyncIdTokenVerifier:
    _check_cache(cache)
    _check_async_source(source, preset)
    return AsyncIdTokenVerifier(
        rules, location, source=source or AsyncHttpKeySetSource(), cache=cache
    )


def _claim_in(name: str, allowed: frozenset[str], reason: RejectedReason) -> Check:
    def check(claims: Mapping[str, Any]) -> RejectedReason | None:
        value = claims.get(name)
        return None if type(value) is str and value in allowed else reason

    return check


def _claim_is(name: str, expected: str, reason: RejectedReason) -> Check:
    return _claim_in(name, frozenset({expected}), reason)


# -- Google ------------------------------------------------------------------------


def _google(
    client_ids: Iterable[str],
    *,
    hosted_domains: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    checks: tuple[Check, ...] = ()
    if hosted_domains is not None:
        domains = check_names(hosted_domains, "hosted_domains")
        checks = (_claim_in("hd", domains, RejectedReason.HOSTED_DOMAIN),)
    rules = TokenRules(
        provider="google",
        audiences=check_names(client_ids, "client_ids"),
        algorithms=_RS256,
        issuers=GOOGLE_ISSUERS,
        leeway=check_leeway(leeway),
        checks=checks,
        nonce=nonce,
    )
    return rules, KeyLocation(jwks_url=GOOGLE_KEYS)


def google(
    client_ids: Iterable[str],
    *,
    hosted_domains: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Sign in with Google: ID tokens for your OAuth client ids.

    Both issuer forms Google uses are accepted. ``hosted_domains`` restricts
    logins to Google Workspace domains (the ``hd`` claim); without it, any
    Google account, personal ones included, gets in.
    """
    return _sync(
        *_google(client_ids, hosted_domains=hosted_domains, nonce=nonce, leeway=leeway),
        source,
        cache,
        "google",
    )


def async_google(
    client_ids: Iterable[str],
    *,
    hosted_domains: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`google` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_google(client_ids, hosted_domains=hosted_domains, nonce=nonce, leeway=leeway),
        source,
        cache,
        "google",
    )


# -- Apple -------------------------------------------------------------------------


def _apple(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    rules = TokenRules(
        provider="apple",
        audiences=check_names(client_ids, "client_ids"),
        algorithms=_RS256,
        issuers=frozenset({APPLE_ISSUER}),
        leeway=check_leeway(leeway),
        nonce=nonce,
    )
    return rules, KeyLocation(jwks_url=APPLE_KEYS)


def apple(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Sign in with Apple: ID tokens for your app's bundle id or Services ID.

    The key set is pinned to Apple's published URL (not taken from discovery).
    Apple sends ``email_verified`` as the string ``"true"``; it counts.
    """
    return _sync(*_apple(client_ids, nonce=nonce, leeway=leeway), source, cache, "apple")


def async_apple(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`apple` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(*_apple(client_ids, nonce=nonce, leeway=leeway), source, cache, "apple")


# -- Facebook ------------------------------------------------------------------------


def _facebook_limited_login(
    app_ids: Iterable[str],
    *,
    nonce: NonceCheck | None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    rules = TokenRules(
        provider="facebook",
        audiences=check_names(app_ids, "app_ids"),
        algorithms=_RS256,
        issuers=frozenset({FACEBOOK_ISSUER}),
        leeway=check_leeway(leeway),
        nonce=nonce,
    )
    location = KeyLocation(jwks_url=FACEBOOK_LIMITED_KEYS)
    return rules, location


def facebook_limited_login(
    app_ids: Iterable[str],
    *,
    nonce: NonceCheck | None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Facebook Limited Login: the OIDC token of Facebook's iOS SDK.

    ``aud`` is your app id. ``nonce`` must be given (``None`` only as a
    deliberate choice): Limited Login tokens are replayable without it.
    """
    return _sync(
        *_facebook_limited_login(app_ids, nonce=nonce, leeway=leeway),
        source,
        cache,
        "facebook_limited_login",
    )


def async_facebook_limited_login(
    app_ids: Iterable[str],
    *,
    nonce: NonceCheck | None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`facebook_limited_login` for :class:`tokenflow.AsyncFlow`: the same checks,
    keys fetched without blocking the event loop (default source:
    :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_facebook_limited_login(app_ids, nonce=nonce, leeway=leeway),
        source,
        cache,
        "facebook_limited_login",
    )


def facebook(
    app_id: str,
    app_secret: str,
    *,
    graph_version: str = GRAPH_VERSION,
    source: KeySetSource | None = None,
) -> FacebookTokenVerifier:
    """Classic Facebook Login access tokens, verified online (one Graph API
    ``debug_token`` call per login). The app secret stays out of reprs and errors."""
    rules = GraphRules(app_id, app_secret, version=graph_version)
    _check_sync_source(source, "facebook")
    return FacebookTokenVerifier(rules, source=source or HttpKeySetSource())


def async_facebook(
    app_id: str,
    app_secret: str,
    *,
    graph_version: str = GRAPH_VERSION,
    source: AsyncKeySetSource | None = None,
) -> AsyncFacebookTokenVerifier:
    """:func:`facebook` for :class:`tokenflow.AsyncFlow`: the same Graph API check,
    made without blocking the event loop."""
    rules = GraphRules(app_id, app_secret, version=graph_version)
    _check_async_source(source, "facebook")
    return AsyncFacebookTokenVerifier(rules, source=source or AsyncHttpKeySetSource())


# -- AWS Cognito -------------------------------------------------------------------------


def _cognito(
    region: str,
    user_pool_id: str,
    client_ids: Iterable[str],
    *,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    if not (isinstance(region, str) and _REGION.fullmatch(region)):
        raise ConfigError("region must be an AWS region such as 'eu-west-1'")
    if not (
        isinstance(user_pool_id, str) and re.fullmatch(rf"{region}_[0-9A-Za-z]+", user_pool_id)
    ):
        raise ConfigError(f"user_pool_id must look like '{region}_AbCdEf123' (region prefix)")
    if token_use not in ("id", "access"):
        raise ConfigError("token_use must be 'id' or 'access'")
    issuer = f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"
    rules = TokenRules(
        provider="cognito",
        audiences=check_names(client_ids, "client_ids"),
        algorithms=_RS256,
        issuers=frozenset({issuer}),
        leeway=check_leeway(leeway),
        audience_claim="aud" if token_use == "id" else "client_id",  # noqa: S105 - a claim value, not a secret
        checks=(_claim_is("token_use", token_use, RejectedReason.TOKEN_USE),),
    )
    location = KeyLocation(jwks_url=f"{issuer}/.well-known/jwks.json")
    return rules, location


def cognito(
    region: str,
    user_pool_id: str,
    client_ids: Iterable[str],
    *,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """An AWS Cognito user pool's ID tokens (``token_use="id"``, ``aud`` is the
    app client id) or access tokens (``token_use="access"``, checked on
    ``client_id``: Cognito access tokens carry no ``aud``)."""
    return _sync(
        *_cognito(region, user_pool_id, client_ids, token_use=token_use, leeway=leeway),
        source,
        cache,
        "cognito",
    )


def async_cognito(
    region: str,
    user_pool_id: str,
    client_ids: Iterable[str],
    *,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`cognito` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_cognito(region, user_pool_id, client_ids, token_use=token_use, leeway=leeway),
        source,
        cache,
        "cognito",
    )


# -- Okta --------------------------------------------------------------------------------


def _domain(domain: object, what: str) -> str:
    if not (isinstance(domain, str) and _HOST.fullmatch(domain)):
        raise ConfigError(f"{what} must be a bare host name such as 'example.okta.com'")
    return domain


def _okta(
    domain: str,
    client_ids: Iterable[str],
    *,
    authorization_server: str | None = None,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    audiences: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    host = _domain(domain, "domain")
    clients = check_names(client_ids, "client_ids")
    if authorization_server is None:
        issuer, keys = f"https://{host}", f"https://{host}/oauth2/v1/keys"
    else:
        if not (
            isinstance(authorization_server, str)
            and re.fullmatch(r"[\w-]{1,64}", authorization_server)
        ):
            raise ConfigError("authorization_server must be an id such as 'default' or 'aus1a2b3c'")
        issuer = f"https://{host}/oauth2/{authorization_server}"
        keys = f"{issuer}/v1/keys"
    if token_use == "id":  # noqa: S105 - a claim value, not a secret
        if audiences is not None:
            raise ConfigError("audiences applies to access tokens; ID tokens name client_ids")
        rules = TokenRules(
            provider="okta",
            audiences=clients,
            algorithms=_RS256,
            issuers=frozenset({issuer}),
            leeway=check_leeway(leeway),
            nonce=nonce,
        )
    elif token_use == "access":  # noqa: S105 - a claim value, not a secret
        if authorization_server is None:
            raise ConfigError(
                "Okta access tokens are accepted only from a custom authorization server: "
                "set authorization_server (e.g. 'default'); the org server's access tokens "
                "are meant for Okta's own APIs and cannot be verified by a third party"
            )
        if audiences is None:
            raise ConfigError("access tokens need audiences, e.g. ['api://default']")
        rules = TokenRules(
            provider="okta",
            audiences=check_names(audiences, "audiences"),
            algorithms=_RS256,
            issuers=frozenset({issuer}),
            leeway=check_leeway(leeway),
            checks=(_claim_in("cid", clients, RejectedReason.AUDIENCE),),
        )
    else:
        raise ConfigError("token_use must be 'id' or 'access'")
    return rules, KeyLocation(jwks_url=keys)


def okta(
    domain: str,
    client_ids: Iterable[str],
    *,
    authorization_server: str | None = None,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    audiences: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Okta: ID tokens from the org authorization server
    (``authorization_server=None``, issuer ``https://{domain}``) or a custom one
    (issuer ``https://{domain}/oauth2/{authorization_server}``, e.g. ``"default"``).

    Access tokens (``token_use="access"``) are accepted only from a custom
    authorization server (the org server's are for Okta's own APIs): their
    ``aud`` must be in ``audiences`` and their ``cid`` in ``client_ids``.
    """
    return _sync(
        *_okta(
            domain,
            client_ids,
            authorization_server=authorization_server,
            token_use=token_use,
            audiences=audiences,
            nonce=nonce,
            leeway=leeway,
        ),
        source,
        cache,
        "okta",
    )


def async_okta(
    domain: str,
    client_ids: Iterable[str],
    *,
    authorization_server: str | None = None,
    token_use: Literal["id", "access"] = "id",  # noqa: S107 - a claim value, not a secret
    audiences: Iterable[str] | None = None,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`okta` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_okta(
            domain,
            client_ids,
            authorization_server=authorization_server,
            token_use=token_use,
            audiences=audiences,
            nonce=nonce,
            leeway=leeway,
        ),
        source,
        cache,
        "okta",
    )


# -- JumpCloud -----------------------------------------------------------------------------


def _jumpcloud(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    rules = TokenRules(
        provider="jumpcloud",
        audiences=check_names(client_ids, "client_ids"),
        algorithms=_RS256,
        leeway=check_leeway(leeway),
        nonce=nonce,
    )
    location = KeyLocation(discovery_url=JUMPCLOUD_DISCOVERY)
    return rules, location


def jumpcloud(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """JumpCloud SSO (OIDC): ID tokens for your client ids.

    The issuer is taken verbatim from JumpCloud's discovery document (it ends
    in a slash, which hand-written configurations tend to drop), and must be
    on the discovery document's own origin.
    """
    return _sync(*_jumpcloud(client_ids, nonce=nonce, leeway=leeway), source, cache, "jumpcloud")


def async_jumpcloud(
    client_ids: Iterable[str],
    *,
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`jumpcloud` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(*_jumpcloud(client_ids, nonce=nonce, leeway=leeway), source, cache, "jumpcloud")


# -- Microsoft Entra ID ----------------------------------------------------------------------


def _tenant_issuer(tenants: frozenset[str]) -> Any:
    def issuer_of(claims: Mapping[str, Any]) -> str | None:
        tid = claims.get("tid")
        if type(tid) is not str or not _GUID.fullmatch(tid) or tid not in tenants:
            return None
        return ENTRA_ISSUER.format(tid=tid)

    return issuer_of


def _object_id(claims: Mapping[str, Any]) -> RejectedReason | None:
    oid = claims.get("oid")
    return None if type(oid) is str and _GUID.fullmatch(oid) else RejectedReason.CLAIMS


def _entra_id(
    client_ids: Iterable[str],
    *,
    tenants: Iterable[str],
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    if isinstance(tenants, str):
        raise ConfigError("tenants must be a list of tenant GUIDs, not one string")
    allowed = frozenset(t.lower() for t in tenants if isinstance(t, str))
    if not allowed:
        raise ConfigError(
            "tenants must list the tenant GUIDs allowed to sign in; an empty list would "
            "not mean 'any tenant' (that would let every Entra ID tenant in)"
        )
    if not all(_GUID.fullmatch(t) for t in allowed) or len(allowed) != len(list(tenants)):
        raise ConfigError(
            "tenants must be tenant GUIDs such as '9188040d-6c67-4c5b-b112-36a304b66dad'"
        )
    rules = TokenRules(
        provider="entra_id",
        audiences=check_names(client_ids, "client_ids"),
        algorithms=_RS256,
        issuer_of=_tenant_issuer(allowed),
        leeway=check_leeway(leeway),
        subject_claim="oid",
        checks=(_object_id,),
        nonce=nonce,
    )
    return rules, KeyLocation(jwks_url=ENTRA_KEYS)


def entra_id(
    client_ids: Iterable[str],
    *,
    tenants: Iterable[str],
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Microsoft Entra ID (v2.0 endpoint): ID tokens for your application ids,
    from the tenants on the ``tenants`` allow-list (tenant GUIDs).

    The issuer is the multi-tenant template filled with the token's own
    ``tid``, which must be a GUID on the list; an empty list is refused, it
    never means "any tenant". The user is the object id (``oid``), scoped by
    the tenant-specific issuer.
    """
    return _sync(
        *_entra_id(client_ids, tenants=tenants, nonce=nonce, leeway=leeway),
        source,
        cache,
        "entra_id",
    )


def async_entra_id(
    client_ids: Iterable[str],
    *,
    tenants: Iterable[str],
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`entra_id` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_entra_id(client_ids, tenants=tenants, nonce=nonce, leeway=leeway),
        source,
        cache,
        "entra_id",
    )


# -- any OIDC issuer ---------------------------------------------------------------------------


def _oidc(
    issuer: str,
    client_ids: Iterable[str],
    *,
    algorithms: Iterable[str] = ("RS256",),
    jwks_url: str | None = None,
    provider: str = "oidc",
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[TokenRules, KeyLocation]:
    if not isinstance(issuer, str):
        raise ConfigError("issuer must be a string")
    from ._http import check_url

    check_url(issuer, allow_loopback_http=True)
    if not isinstance(provider, str) or not provider:
        raise ConfigError("provider must be a non-empty name")
    if jwks_url is not None:
        location = KeyLocation(jwks_url=jwks_url)
    else:
        discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
        location = KeyLocation(discovery_url=discovery, issuer=issuer)
    rules = TokenRules(
        provider=provider,
        audiences=check_names(client_ids, "client_ids"),
        algorithms=pin_algorithms(list(algorithms)),
        issuers=frozenset({issuer}),
        leeway=check_leeway(leeway),
        nonce=nonce,
    )
    return rules, location


def oidc(
    issuer: str,
    client_ids: Iterable[str],
    *,
    algorithms: Iterable[str] = ("RS256",),
    jwks_url: str | None = None,
    provider: str = "oidc",
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: KeySetSource | None = None,
) -> IdTokenVerifier:
    """Any OpenID Connect issuer: ID tokens whose ``iss`` is exactly ``issuer``
    and whose ``aud`` holds one of ``client_ids``.

    Keys come from the issuer's discovery document (whose ``issuer`` must equal
    ``issuer`` exactly, trailing slash included), or from ``jwks_url`` when
    given. ``algorithms`` pins what the issuer signs with (RS256 by default).
    """
    return _sync(
        *_oidc(
            issuer,
            client_ids,
            algorithms=algorithms,
            jwks_url=jwks_url,
            provider=provider,
            nonce=nonce,
            leeway=leeway,
        ),
        source,
        cache,
        "oidc",
    )


def async_oidc(
    issuer: str,
    client_ids: Iterable[str],
    *,
    algorithms: Iterable[str] = ("RS256",),
    jwks_url: str | None = None,
    provider: str = "oidc",
    nonce: NonceCheck | None = None,
    leeway: int = DEFAULT_LEEWAY,
    cache: CachePolicy | None = None,
    source: AsyncKeySetSource | None = None,
) -> AsyncIdTokenVerifier:
    """:func:`oidc` for :class:`tokenflow.AsyncFlow`: the same checks, keys fetched
    without blocking the event loop (default source: :class:`AsyncHttpKeySetSource`)."""
    return _async(
        *_oidc(
            issuer,
            client_ids,
            algorithms=algorithms,
            jwks_url=jwks_url,
            provider=provider,
            nonce=nonce,
            leeway=leeway,
        ),
        source,
        cache,
        "oidc",
    )
