"""Verify third-party ID tokens: Google, Apple, Facebook, Cognito, Okta, JumpCloud,
Entra ID, or any OpenID Connect issuer (``pip install 'tokenflow[oidc]'``).

Each preset is one call and returns a verifier that plugs into the flow::

    from tokenflow import oidc

    flow = Flow(keyring, store, users, external={
        "google": oidc.google(client_ids=["1234.apps.googleusercontent.com"]),
        "apple": oidc.apple(client_ids=["com.example.app"]),
    })
    # AsyncFlow: the same presets, spelled async_*
    flow = AsyncFlow(keyring, store, users, external={
        "google": oidc.async_google(client_ids=[...]),
    })

To let users sign in through the provider's pages (the authorization-code
flow with PKCE, state and nonce), wrap the preset with :func:`code_flow`::

    "google": oidc.code_flow(
        oidc.google(client_ids=[CLIENT_ID]),
        client_id=CLIENT_ID, client_secret=SECRET,
        redirect_uri="https://app.example/auth/oidc/google/callback",
    )

A bad token is a failed login (401); a key set that cannot be had is an
outage: the verifier raises :class:`ProviderUnavailable` and the flow answers
503, minting nothing. Signature and claim checks run on joserfc; tokenflow
adds the provider rules around them. See ``docs/identity.md``.
"""

from ._codeflow import (
    AppleClientSecret,
    AsyncCodeFlowClient,
    AsyncFacebookCodeFlowClient,
    ClientAuth,
    CodeFlowClient,
    FacebookCodeFlowClient,
    ProviderEndpoints,
    code_flow,
    facebook_code_flow,
)
from ._graph import AsyncFacebookTokenVerifier, FacebookTokenVerifier, GraphRules
from ._http import (
    AsyncHttpKeySetSource,
    AsyncKeySetSource,
    AsyncTokenEndpointSource,
    Fetched,
    FetchError,
    HttpKeySetSource,
    KeySetSource,
    TokenEndpointSource,
)
from ._keys import CachePolicy, KeyLocation, KeySetError, ProviderUnavailable
from ._providers import (
    apple,
    async_apple,
    async_cognito,
    async_entra_id,
    async_facebook,
    async_facebook_limited_login,
    async_google,
    async_jumpcloud,
    async_oidc,
    async_okta,
    cognito,
    entra_id,
    facebook,
    facebook_limited_login,
    google,
    jumpcloud,
    oidc,
    okta,
)
from ._verify import (
    AsyncIdTokenVerifier,
    IdTokenVerifier,
    NonceCheck,
    Rejected,
    RejectedReason,
    TokenRules,
    Verdict,
    hashed_nonce,
    nonce_matches,
)

__all__ = [
    "AppleClientSecret",
    "AsyncCodeFlowClient",
    "AsyncFacebookCodeFlowClient",
    "AsyncFacebookTokenVerifier",
    "AsyncHttpKeySetSource",
    "AsyncIdTokenVerifier",
    "AsyncKeySetSource",
    "AsyncTokenEndpointSource",
    "CachePolicy",
    "ClientAuth",
    "CodeFlowClient",
    "FacebookCodeFlowClient",
    "FacebookTokenVerifier",
    "FetchError",
    "Fetched",
    "GraphRules",
    "HttpKeySetSource",
    "IdTokenVerifier",
    "KeyLocation",
    "KeySetError",
    "KeySetSource",
    "NonceCheck",
    "ProviderEndpoints",
    "ProviderUnavailable",
    "Rejected",
    "RejectedReason",
    "TokenEndpointSource",
    "TokenRules",
    "Verdict",
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
    "code_flow",
    "cognito",
    "entra_id",
    "facebook",
    "facebook_code_flow",
    "facebook_limited_login",
    "google",
    "hashed_nonce",
    "jumpcloud",
    "nonce_matches",
    "oidc",
    "okta",
]
