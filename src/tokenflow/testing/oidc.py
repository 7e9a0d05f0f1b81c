"""Offline test kit for :mod:`tokenflow.oidc` (``import tokenflow.testing.oidc``).

Test your ID-token login without a network and without real providers:

- :class:`FakeProvider` holds RSA keys and mints tokens in each real
  provider's shape (``FakeProvider.google()``, ``.apple()``, ``.entra_id(...)``
  ...), signed as the real one would sign them; it rotates keys.
- :class:`FakeEndpoints` says what each URL answers: a provider's key set or
  discovery document (live: a rotation shows at once), a fake Graph API
  (:class:`FakeGraphAPI`), or trouble (an error status, a redirect, a hang,
  an oversized body, no answer). It counts the hits on every URL.
- :class:`FakeKeySetSource` / :class:`AsyncFakeKeySetSource` answer a
  verifier's fetches from the endpoints in memory: no socket at all.
- :class:`LoopbackServer` serves the same endpoints over real HTTP on
  127.0.0.1 (port 0), and :meth:`LoopbackServer.source` gives the httpx source
  that reaches it, so timeouts, redirects and size limits are exercised for real.

Presets fetch the providers' real ``https://`` URLs; both sources route those
URLs to the fakes, so a test also checks that a preset asks the right place::

    provider = FakeProvider.google()
    endpoints = FakeEndpoints()
    endpoints.serve_provider(provider)
    verifier = oidc.google(client_ids=["app"], source=FakeKeySetSource(endpoints))
    token = provider.id_token(now, audience="app", subject="user-1")
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import html
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from ..oidc import AsyncHttpKeySetSource, Fetched, FetchError, HttpKeySetSource

__all__ = [
    "Answer",
    "AsyncFakeKeySetSource",
    "AsyncReroutedSource",
    "FakeAuthorizationServer",
    "FakeClient",
    "FakeEndpoints",
    "FakeGraphAPI",
    "FakeKeySetSource",
    "FakeProvider",
    "LoopbackServer",
    "Misbehaviour",
    "ReroutedSource",
    "fake_key",
    "json_answer",
    "sign_raw",
]

GOOGLE_KEYS: Final = "https://www.googleapis.com/oauth2/v3/certs"
APPLE_KEYS: Final = "https://appleid.apple.com/auth/keys"
FACEBOOK_KEYS: Final = "https://limited.facebook.com/.well-known/oauth/openid/jwks/"
JUMPCLOUD_ISSUER: Final = "https://oauth.id.jumpcloud.com/"
ENTRA_KEYS: Final = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
GRAPH_DEBUG_TOKEN: Final = "https://graph.facebook.com/v19.0/debug_token"  # noqa: S105 - a URL

_KEY_LOCK = threading.Lock()
_KEYS: dict[tuple[str, str], Key] = {}


def fake_key(name: str, kind: str = "RSA") -> Key:
    """A private key for tests, made once per process and name (RSA 2048 or EC P-256).

    Key generation is slow; a test suite that asks for the same name gets the
    same key back. Different names give different keys.
    """
    with _KEY_LOCK:
        key = _KEYS.get((name, kind))
        if key is None:
            if kind == "RSA":
                key = RSAKey.generate_key(2048, parameters={"kid": name})
            elif kind == "EC":
                key = ECKey.generate_key("P-256", parameters={"kid": name})
            else:
                raise ValueError("kind is 'RSA' or 'EC'")
            _KEYS[(name, kind)] = key
        return key


# -- the provider ------------------------------------------------------------------------


@dataclass
class FakeProvider:
    """A fake identity provider: signing keys and tokens in one provider's shape.

    ``shape`` names the provider whose claims :meth:`id_token` imitates
    (``"google"``, ``"apple"``, ``"facebook"``, ``"cognito"``,
    ``"cognito_access"``, ``"okta"``, ``"okta_access"``, ``"jumpcloud"``,
    ``"entra_id"`` or ``"oidc"``). The newest key signs; :meth:`rotate` adds
    one, :meth:`retire` drops one from the published key set.
    """

    issuer: str
    keys_url: str
    shape: str = "oidc"
    discovery_url: str | None = None
    name: str = "fake"
    signing: list[Key] = field(default_factory=list, repr=False)
    published: list[Key] = field(default_factory=list, repr=False)
    _rotations: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not self.signing:
            self.rotate()

    # presets: the real providers' issuers and key URLs ---------------------------------

    @classmethod
    def google(cls) -> FakeProvider:
        """Google's issuer and key URL."""
        return cls("https://accounts.google.com", GOOGLE_KEYS, "google", name="google")

    @classmethod
    def apple(cls) -> FakeProvider:
        """Sign in with Apple's issuer and key URL."""
        return cls("https://appleid.apple.com", APPLE_KEYS, "apple", name="apple")

    @classmethod
    def facebook(cls) -> FakeProvider:
        """Facebook Limited Login's issuer and key URL."""
        return cls("https://www.facebook.com", FACEBOOK_KEYS, "facebook", name="facebook")

    @classmethod
    def cognito(
        cls, region: str = "eu-west-1", pool: str = "eu-west-1_Example1", *, access: bool = False
    ) -> FakeProvider:
        """A Cognito user pool (ID tokens, or access tokens with ``access=True``)."""
        issuer = f"https://cognito-idp.{region}.amazonaws.com/{pool}"
        shape = "cognito_access" if access else "cognito"
        return cls(issuer, f"{issuer}/.well-known/jwks.json", shape, name="cognito")

    @classmethod
    def okta(
        cls, domain: str = "example.okta.com", server: str | None = None, *, access: bool = False
    ) -> FakeProvider:
        """An Okta org (``server=None``) or custom authorization server."""
        if server is None:
            issuer, keys = f"https://{domain}", f"https://{domain}/oauth2/v1/keys"
        else:
            issuer = f"https://{domain}/oauth2/{server}"
            keys = f"{issuer}/v1/keys"
        return cls(issuer, keys, "okta_access" if access else "okta", name="okta")

    @classmethod
    def jumpcloud(cls) -> FakeProvider:
        """JumpCloud: issuer (with its trailing slash) and keys from discovery."""
        return cls(
            JUMPCLOUD_ISSUER,
            "https://oauth.id.jumpcloud.com/.well-known/jwks.json",
            "jumpcloud",
            discovery_url="https://oauth.id.jumpcloud.com/.well-known/openid-configuration",
            name="jumpcloud",
        )

    @classmethod
    def entra_id(cls) -> FakeProvider:
        """Microsoft Entra ID: the common key set; the issuer depends on the tenant."""
        return cls(
            "https://login.microsoftonline.com/{tid}/v2.0", ENTRA_KEYS, "entra_id", name="entra"
        )

    @classmethod
    def generic(cls, issuer: str = "https://idp.example.com") -> FakeProvider:
        """Any OIDC issuer, with keys found through discovery."""
        base = issuer.rstrip("/")
        return cls(
            issuer,
            f"{base}/keys",
            "oidc",
            discovery_url=f"{base}/.well-known/openid-configuration",
            name=urlsplit(issuer).hostname or "oidc",
        )

    # keys ----------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The kid of the key that signs now."""
        return str(self.signing[-1].kid)

    def rotate(self, kind: str = "RSA") -> str:
        """Publish a new key and sign with it from now on; its kid."""
        self._rotations += 1
        key = fake_key(f"{self.name}-{self.issuer}-{self._rotations}", kind)
        self.signing.append(key)
        self.published.append(key)
        return str(key.kid)

    def retire(self, kid: str) -> None:
        """Stop publishing the key ``kid`` (tokens it signed stop verifying)."""
        self.published = [k for k in self.published if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """The published key set (public keys only), as the provider serves it."""
        keys = []
        for key in self.published:
            public = key.as_dict(private=False)
            public.update({"use": "sig", "alg": "RS256" if key.key_type == "RSA" else "ES256"})
            keys.append(public)
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        """The discovery document (``issuer``, ``jwks_uri``...)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.keys_url,
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
        }

    # tokens --------------------------------------------------------------------------

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        key: Key | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A compact JWS of ``claims`` signed by ``key`` (default: the newest key).

        ``header`` replaces the default ``{"alg", "kid", "typ"}`` entries it names.
        """
        key = key or self.signing[-1]
        alg = "RS256" if key.key_type == "RSA" else "ES256"
        protected: dict[str, Any] = {"alg": alg, "kid": key.kid, "typ": "JWT"}
        protected.update(header or {})
        payload = json.dumps(dict(claims), separators=(",", ":")).encode()
        return sign_raw(protected, payload, key, protected["alg"])

    def claims(
        self,
        now: float,
        *,
        audience: str | list[str],
        subject: str = "10769150350006150715113082367",
        lifetime: int = 3600,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims a token of this provider's shape carries, plus ``extra``."""
        iat = int(now)
        claims: dict[str, Any] = {"iss": self.issuer, "sub": subject, "iat": iat}
        claims["exp"] = iat + lifetime
        shape = self.shape
        if shape == "google":
            client = audience if isinstance(audience, str) else audience[0]
            claims.update(aud=audience, azp=client, email="user@example.com")
            claims.update(email_verified=True, at_hash="HK6E_P6Dh8Y93mRNtsDB1Q")
        elif shape == "apple":
            claims.update(aud=audience, email="user@privaterelay.appleid.com")
            claims.update(email_verified="true", is_private_email="true", auth_time=iat)
            claims["nonce_supported"] = True
        elif shape == "facebook":
            claims.update(aud=audience, jti=str(uuid.uuid4()), name="Test User")
        elif shape == "cognito":
            claims.update(aud=audience, email="user@example.com")
            claims["token_use"] = "id"  # noqa: S105 - a claim value
            claims.update(email_verified=True, auth_time=iat)
            claims["cognito:username"] = "user"
        elif shape == "cognito_access":
            claims.update(client_id=audience, scope="openid email")
            claims["token_use"] = "access"  # noqa: S105 - a claim value
            claims.update(username="user", jti=str(uuid.uuid4()))
        elif shape == "okta":
            claims.update(aud=audience, ver=1, jti=f"ID.{uuid.uuid4().hex}", amr=["pwd"])
            claims.update(idp="00o1abcd", auth_time=iat, email="user@example.com")
            claims["email_verified"] = True
        elif shape == "okta_access":
            claims.update(aud=audience, ver=1, jti=f"AT.{uuid.uuid4().hex}", cid="client")
            claims.update(uid="00u1abcd", scp=["openid"])
        elif shape == "entra_id":
            tenant = extra.pop("tid", "72f988bf-86f1-41af-91ab-2d7cd011db47")
            claims["iss"] = self.issuer.format(tid=tenant)
            claims.update(aud=audience, tid=tenant, ver="2.0", nbf=iat)
            claims.update(oid=extra.pop("oid", "00000000-0000-0000-66f3-3332eca7ea81"))
            claims.update(preferred_username="user@contoso.example", name="Test User")
        else:
            claims.update(aud=audience, email="user@example.com", email_verified=True)
        claims.update(extra)
        return claims

    def id_token(
        self,
        now: float,
        *,
        audience: str | list[str],
        subject: str = "10769150350006150715113082367",
        lifetime: int = 3600,
        **extra: Any,
    ) -> str:
        """A signed token in this provider's shape, issued at ``now``.

        ``extra`` adds or replaces claims; a claim set to ``None`` is removed.
        """
        claims = self.claims(now, audience=audience, subject=subject, lifetime=lifetime, **extra)
        return self.sign({k: v for k, v in claims.items() if v is not None})


def sign_raw(header: Mapping[str, Any], payload: bytes, key: Key, alg: str) -> str:
    """Sign any header and payload bytes with joserfc: for forging test tokens.

    No check is made on ``header``: it may name any ``alg`` joserfc knows how
    to sign with, a ``crit`` list, a ``jku``...
    """
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
    registry.check_header = lambda _header: None  # type: ignore[method-assign,assignment]
    return jws.serialize_compact(dict(header), payload, key, registry=registry)


# -- what each URL answers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint answers: a status, a body and headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Mapping[str, str]], Answer]


def json_answer(document: Any, cache_control: str | None = None, status: int = 200) -> Answer:
    """A JSON answer, with a Cache-Control header when given."""
    headers = {"content-type": "application/json"}
    if cache_control is not None:
        headers["cache-control"] = cache_control
    return Answer(status, json.dumps(document).encode(), headers)


@dataclass
class _Trouble:
    status: int | None = None
    redirect: str | None = None
    hang: float | None = None
    oversize: int | None = None
    unreachable: bool = False
    body: bytes | None = None


class FakeEndpoints:
    """What each URL answers, for both fake sources; counts hits. Thread-safe.

    URLs are the providers' real ones (``https://www.googleapis.com/...``),
    matched without their query string.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] = {}
        self._trouble: dict[str, _Trouble] = {}
        self._hits: dict[str, int] = {}
        self.cache_control: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"FakeEndpoints(urls={sorted(self._handlers)})"

    def serve(self, url: str, handler: Handler) -> None:
        """Answer ``url`` with ``handler(query parameters)``."""
        with self._lock:
            self._handlers[_base(url)] = handler

    def serve_json(self, url: str, document: Any, cache_control: str | None = None) -> None:
        """Answer ``url`` with a fixed JSON document."""
        self.serve(url, lambda _params: json_answer(document, cache_control))

    def serve_provider(self, provider: FakeProvider, cache_control: str | None = None) -> None:
        """Serve a provider's key set (and discovery document), live: what the
        provider publishes at the time of each request. ``cache_control`` can
        be changed later through :attr:`cache_control` (keyed by URL)."""
        keys_url = _base(provider.keys_url)
        self.cache_control[keys_url] = cache_control
        self.serve(
            provider.keys_url,
            lambda _params: json_answer(provider.jwks(), self.cache_control.get(keys_url)),
        )
        if provider.discovery_url is not None:
            self.serve_json(provider.discovery_url, provider.discovery(), cache_control)

    def serve_graph(self, graph: FakeGraphAPI, url: str = GRAPH_DEBUG_TOKEN) -> None:
        """Serve a fake Graph API ``debug_token`` endpoint."""
        self.serve(url, graph.answer)

    def fail(self, url: str, status: int, body: bytes = b"") -> None:
        """Make ``url`` answer ``status`` (a 500, say)."""
        self._set(url, _Trouble(status=status, body=body))

    def redirect(self, url: str, location: str, status: int = 302) -> None:
        """Make ``url`` answer a redirect to ``location``."""
        self._set(url, _Trouble(status=status, redirect=location))

    def hang(self, url: str, seconds: float = 30.0) -> None:
        """Make ``url`` accept the request and not answer for ``seconds``."""
        self._set(url, _Trouble(hang=seconds))

    def oversize(self, url: str, size: int = 70_000) -> None:
        """Make ``url`` answer a body of ``size`` bytes."""
        self._set(url, _Trouble(oversize=size))

    def unreachable(self, url: str) -> None:
        """Make ``url`` unreachable (the connection is dropped)."""
        self._set(url, _Trouble(unreachable=True))

    def heal(self, url: str | None = None) -> None:
        """Undo the trouble set on ``url`` (on every URL by default)."""
        with self._lock:
            if url is None:
                self._trouble.clear()
            else:
                self._trouble.pop(_base(url), None)

    def hits(self, url: str) -> int:
        """Requests ``url`` received."""
        with self._lock:
            return self._hits.get(_base(url), 0)

    def total_hits(self) -> int:
        """Requests received by every URL."""
        with self._lock:
            return sum(self._hits.values())

    def _set(self, url: str, trouble: _Trouble) -> None:
        with self._lock:
            self._trouble[_base(url)] = trouble

    def lookup(self, url: str) -> tuple[Handler | None, _Trouble | None]:
        """Count a hit on ``url``; its handler and trouble (for the sources)."""
        base = _base(url)
        with self._lock:
            self._hits[base] = self._hits.get(base, 0) + 1
            return self._handlers.get(base), self._trouble.get(base)


def _base(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def _answer(handler: Handler | None, params: Mapping[str, str]) -> Answer:
    if handler is None:
        return Answer(404, b'{"error":"not found"}', {"content-type": "application/json"})
    return handler(params)


class FakeKeySetSource:
    """A :class:`~tokenflow.oidc.KeySetSource` answering from :class:`FakeEndpoints`
    in memory. A hang or a dropped connection raises
    :class:`~tokenflow.oidc.FetchError` at once (no waiting); an oversized body too."""

    def __init__(self, endpoints: FakeEndpoints, *, max_bytes: int = 64 * 1024) -> None:
        self.endpoints = endpoints
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"FakeKeySetSource({self.endpoints!r})"

    def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """Answer as the endpoint is set up to."""
        handler, trouble = self.endpoints.lookup(url)
        if trouble is not None:
            if trouble.unreachable:
                raise FetchError(f"{_base(url)}: ConnectError")
            if trouble.hang is not None:
                raise FetchError(f"{_base(url)}: timed out")
            if trouble.oversize is not None:
                raise FetchError(f"{_base(url)}: body over {self.max_bytes} bytes")
            if trouble.redirect is not None:
                return Fetched(trouble.status or 302, b"", {"location": trouble.redirect})
            if trouble.status is not None:
                return Fetched(trouble.status, trouble.body or b"", {})
        answer = _answer(handler, dict(params or {}))
        return Fetched(answer.status, answer.body, dict(answer.headers))


class AsyncFakeKeySetSource:
    """The async face of :class:`FakeKeySetSource`."""

    def __init__(self, endpoints: FakeEndpoints) -> None:
        self.sync: FakeKeySetSource = FakeKeySetSource(endpoints)

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """See :meth:`FakeKeySetSource.fetch`."""
        await asyncio.sleep(0)  # a real await point, as a network fetch has
        return self.sync.fetch(url, params)


# -- the Graph API ---------------------------------------------------------------------------


@dataclass
class _GraphToken:
    user_id: str
    app_id: str
    expires_at: int
    valid: bool
    type: str


class FakeGraphAPI:
    """A fake of the Graph API's ``debug_token`` for one app.

    :meth:`issue` mints a classic access token for a user; ``debug_token``
    answers like Graph: 200 with ``data`` for a token it knows (``is_valid``
    false when revoked or expired), 400 with OAuthException 190 for one it
    cannot parse, and the same 190 for a wrong app access token.
    """

    def __init__(self, app_id: str = "1234567890", app_secret: str = "0123456789abcdef" * 2):
        self.app_id = app_id
        self._app_secret = app_secret
        self._lock = threading.Lock()
        self._tokens: dict[str, _GraphToken] = {}

    def __repr__(self) -> str:
        return f"FakeGraphAPI(app_id={self.app_id!r}, tokens={len(self._tokens)})"

    @property
    def app_secret(self) -> str:
        """The app secret the fake expects (give it to ``oidc.facebook``)."""
        return self._app_secret

    def issue(
        self,
        user_id: str,
        *,
        expires_at: int,
        app_id: str | None = None,
        valid: bool = True,
        kind: str = "USER",
    ) -> str:
        """A new access token for ``user_id`` (issued for ``app_id``, ours by default)."""
        token = "EAA" + hashlib.sha256(f"{user_id}{time.monotonic_ns()}".encode()).hexdigest()
        with self._lock:
            self._tokens[token] = _GraphToken(
                user_id, app_id or self.app_id, expires_at, valid, kind
            )
        return token

    def revoke(self, token: str) -> None:
        """Make a token report ``is_valid: false``."""
        with self._lock:
            self._tokens[token].valid = False

    def answer(self, params: Mapping[str, str]) -> Answer:
        """The ``debug_token`` answer to a query."""
        if params.get("access_token") != f"{self.app_id}|{self._app_secret}":
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException"}
            return json_answer({"error": {**error, "code": 190}}, status=400)
        token = params.get("input_token", "")
        with self._lock:
            known = self._tokens.get(token)
        if known is None:
            if not token.startswith("EAA"):
                invalid = {
                    "message": "Invalid OAuth access token - Cannot parse access token",
                    "type": "OAuthException",
                    "code": 190,
                }
                return json_answer({"error": invalid}, status=400)
            data: dict[str, Any] = {"is_valid": False, "error": {"code": 190}}
            return json_answer({"data": data})
        data = {
            "app_id": known.app_id,
            "type": known.type,
            "application": "Test App",
            "expires_at": known.expires_at,
            "is_valid": known.valid,
            "issued_at": known.expires_at - 5184000,
            "scopes": ["public_profile", "email"],
            "user_id": known.user_id,
        }
        return json_answer({"data": data})


# -- a real HTTP server on the loopback interface ---------------------------------------------


class LoopbackServer:
    """Serves :class:`FakeEndpoints` over HTTP on 127.0.0.1, on a free port.

    A request for ``http://127.0.0.1:PORT/{host}/{path}`` is answered as
    ``https://{host}/{path}``: :meth:`source` gives the httpx source that
    rewrites a verifier's URLs that way. Use it as a context manager (or call
    :meth:`close`); hanging answers are released when it closes.
    """

    def __init__(self, endpoints: FakeEndpoints | None = None) -> None:
        self.endpoints: FakeEndpoints = endpoints if endpoints is not None else FakeEndpoints()
        self._release = threading.Event()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def url_for(self, url: str) -> str:
        """The loopback URL that serves the real ``url``."""
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.base_url}/{parts.netloc}{parts.path}{query}"

    def source(self, *, timeout: float = 1.0, max_bytes: int = 64 * 1024) -> ReroutedSource:
        """A sync httpx source (loopback HTTP allowed) that reaches this server."""
        inner = HttpKeySetSource(timeout=timeout, max_bytes=max_bytes, allow_loopback_http=True)
        return ReroutedSource(inner, self.url_for)

    def async_source(
        self, *, timeout: float = 1.0, max_bytes: int = 64 * 1024
    ) -> AsyncReroutedSource:
        """An async httpx source (loopback HTTP allowed) that reaches this server."""
        inner = AsyncHttpKeySetSource(
            timeout=timeout, max_bytes=max_bytes, allow_loopback_http=True
        )
        return AsyncReroutedSource(inner, self.url_for)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        host, _, path = parts.path.lstrip("/").partition("/")
        real = f"https://{host}/{path}"
        params = dict(parse_qsl(parts.query))
        handler, trouble = self.endpoints.lookup(real)
        if trouble is not None and trouble.unreachable:
            request.close_connection = True
            request.connection.close()
            return
        if trouble is not None and trouble.hang is not None:
            self._release.wait(trouble.hang)
            request.close_connection = True
            return
        if trouble is not None and trouble.redirect is not None:
            self._send(request, Answer(trouble.status or 302, b"", {"location": trouble.redirect}))
            return
        if trouble is not None and trouble.oversize is not None:
            self._send(request, Answer(200, b'{"keys":[' + b" " * trouble.oversize + b"]}", {}))
            return
        if trouble is not None and trouble.status is not None:
            self._send(request, Answer(trouble.status, trouble.body or b"", {}))
            return
        self._send(request, _answer(handler, params))

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, answer: Answer) -> None:
        try:
            request.send_response(answer.status)
            for name, value in answer.headers.items():
                request.send_header(name, value)
            request.send_header("content-length", str(len(answer.body)))
            request.end_headers()
            request.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up (a timeout test): nothing to answer to

    def close(self) -> None:
        """Release hanging answers and stop the server."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReroutedSource:
    """A sync source that sends every fetch to another URL (``reroute(url)``)."""

    def __init__(self, inner: HttpKeySetSource, reroute: Callable[[str], str]) -> None:
        self.inner = inner
        self.reroute = reroute

    def __repr__(self) -> str:
        return f"ReroutedSource({self.inner!r})"

    def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """Fetch ``reroute(url)`` through the inner source."""
        return self.inner.fetch(self.reroute(url), params)

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()


class AsyncReroutedSource:
    """The async face of :class:`ReroutedSource`."""

    def __init__(self, inner: AsyncHttpKeySetSource, reroute: Callable[[str], str]) -> None:
        self.inner = inner
        self.reroute = reroute

    def __repr__(self) -> str:
        return f"AsyncReroutedSource({self.inner!r})"

    async def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """Fetch ``reroute(url)`` through the inner source."""
        return await self.inner.fetch(self.reroute(url), params)


# -- a fake authorization server (OpenID Connect code flow, issue 20) ----------------------


class Misbehaviour(enum.Enum):
    """What :class:`FakeAuthorizationServer` can do wrong, one at a time.

    Each is something a real provider, a network attacker or a malicious
    page can make a relying party see; a correct client refuses every one
    of them and signs nobody in.
    """

    NONE = "none"
    WRONG_STATE = "wrong_state"
    """The callback carries another state than the one sent."""
    MISSING_STATE = "missing_state"
    """The callback carries no state."""
    ERROR = "error"
    """The callback is ``error=access_denied`` (with the right state)."""
    WRONG_ISS_PARAMETER = "wrong_iss_parameter"
    """The callback's RFC 9207 ``iss`` names another issuer (mix-up)."""
    MISSING_ISS_PARAMETER = "missing_iss_parameter"
    """The callback lacks ``iss`` though discovery advertises it."""
    WRONG_ISSUER = "wrong_issuer"
    """The ID token's ``iss`` is another issuer."""
    OTHER_NONCE = "other_nonce"
    """The ID token carries another nonce."""
    NO_NONCE = "no_nonce"
    """The ID token carries no nonce."""
    OTHER_AUDIENCE = "other_audience"
    """The ID token was issued to another client (``aud``)."""
    BAD_SIGNATURE = "bad_signature"
    """The ID token's signature does not verify."""
    UNKNOWN_KEY = "unknown_key"
    """The ID token is signed by a key the key set does not publish."""
    ALG_NONE = "alg_none"
    """The ID token is unsigned (``alg: none``)."""
    EXPIRED = "expired"
    """The ID token expired an hour ago."""
    MISSING_SUB = "missing_sub"
    """The ID token has no ``sub``."""
    MISSING_IAT = "missing_iat"
    """The ID token has no ``iat``."""
    NO_ID_TOKEN = "no_id_token"  # noqa: S105 - a name
    """The token endpoint answers 200 without an ID token."""
    INVALID_GRANT = "invalid_grant"
    """The token endpoint refuses the code (400 ``invalid_grant``)."""
    TOKEN_500 = "token_500"  # noqa: S105 - a name
    """The token endpoint answers 500."""
    TOKEN_HANG = "token_hang"  # noqa: S105 - a name
    """The token endpoint never answers."""
    TOKEN_REDIRECT = "token_redirect"  # noqa: S105 - a name
    """The token endpoint answers with a redirect elsewhere."""
    TOKEN_HUGE = "token_huge"  # noqa: S105 - a name
    """The token endpoint answers 10 MB."""
    TOKEN_NOT_JSON = "token_not_json"  # noqa: S105 - a name
    """The token endpoint answers something that is not JSON."""
    HTTP_TOKEN_ENDPOINT = "http_token_endpoint"  # noqa: S105 - a name
    """Discovery names a plain-HTTP token endpoint on another host."""
    DISCOVERY_OTHER_ISSUER = "discovery_other_issuer"
    """Discovery names another issuer than the one configured."""


@dataclass(slots=True)
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    subject: str
    used: bool = False


@dataclass(frozen=True, slots=True)
class FakeClient:
    """A client registered at :class:`FakeAuthorizationServer`."""

    client_id: str
    redirect_uris: tuple[str, ...]
    method: str = "client_secret_basic"
    secret: str | None = field(default=None, repr=False)
    public_key: Key | None = field(default=None, repr=False)


class FakeAuthorizationServer:
    """An OpenID Connect provider on 127.0.0.1 for code-flow tests and demos.

    Serves discovery (``/.well-known/openid-configuration``, advertising the
    RFC 9207 ``iss`` parameter), the key set (``/jwks``), an authorization
    endpoint that consents at once for :attr:`subject` (``/authorize``) and
    a token endpoint (``/token``) that checks what a real one checks: the
    client's authentication (its registered method), the exact registered
    ``redirect_uri``, PKCE ``S256``, and that a code is redeemed once, by
    the client it was issued to. :attr:`misbehaviour` makes it misbehave.

    ``hits`` counts requests by path (``"/token"``...). Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self) -> None:
        self.misbehaviour = Misbehaviour.NONE
        self.subject = "fake-user-1"
        self.email = "user@example.com"
        self.hits: dict[str, int] = {}
        self.refusals: list[str] = []
        self._clients: dict[str, FakeClient] = {}
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Buffered: the headers and the body leave in one segment, so a
            # client's delayed ACK does not add 40 ms to every answer.
            wbufsize = 64 * 1024

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.issuer: str = f"http://127.0.0.1:{self._server.server_address[1]}"
        """The provider's issuer URL (``http://127.0.0.1:PORT``)."""
        self.provider: FakeProvider = FakeProvider(
            self.issuer, f"{self.issuer}/jwks", "oidc", name="fake-authorization-server"
        )
        self._stranger = fake_key("fake-authorization-server-stranger")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"FakeAuthorizationServer({self.issuer!r}, misbehaviour={self.misbehaviour.name})"

    # configuration -------------------------------------------------------------------

    @property
    def discovery_url(self) -> str:
        """The discovery document's URL."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        """Where a sign-in starts."""
        return f"{self.issuer}/authorize"

    @property
    def token_endpoint(self) -> str:
        """Where codes are redeemed."""
        return f"{self.issuer}/token"

    def register(self, client: FakeClient) -> FakeClient:
        """Register a client (its id, redirect URIs and authentication)."""
        self._clients[client.client_id] = client
        return client

    # the endpoints ---------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """The discovery document this server serves (before any misbehaviour)."""
        return {
            **self.provider.discovery(),
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/jwks",
            "authorization_response_iss_parameter_supported": True,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
            ],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        path = parts.path
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
        query = dict(parse_qsl(parts.query))
        if method == "GET" and path == "/.well-known/openid-configuration":
            document = self.discovery()
            if self.misbehaviour is Misbehaviour.HTTP_TOKEN_ENDPOINT:
                document["token_endpoint"] = "http://idp.example.net/token"  # noqa: S105
            elif self.misbehaviour is Misbehaviour.DISCOVERY_OTHER_ISSUER:
                document["issuer"] = "https://idp.example.net"
            answer = json_answer(document)
        elif method == "GET" and path == "/jwks":
            answer = json_answer(self.provider.jwks())
        elif method == "GET" and path == "/authorize":
            answer = self._authorize(query)
        elif method == "POST" and path == "/token":
            if self.misbehaviour is Misbehaviour.TOKEN_HANG:
                self._release.wait(30)
                request.close_connection = True
                return
            length = int(request.headers.get("content-length") or 0)
            body = request.rfile.read(min(length, 64 * 1024)).decode("utf-8", "replace")
            answer = self._token(dict(parse_qsl(body)), request.headers.get("authorization"))
        else:
            answer = json_answer({"error": "not_found"}, status=404)
        LoopbackServer._send(request, answer)

    def _authorize(self, query: Mapping[str, str]) -> Answer:
        client = self._clients.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        # Never redirect to an unregistered URI: that is an open redirector
        # carrying codes. A real provider shows an error page instead.
        if client is None or redirect_uri not in client.redirect_uris:
            return self._refuse("authorize: unknown client or redirect_uri", 400)
        state = query.get("state")
        if (
            query.get("response_type") != "code"
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
            or "openid" not in query.get("scope", "").split()
        ):
            return self._redirect_back(redirect_uri, {"error": "invalid_request", "state": state})
        misbehaviour = self.misbehaviour
        back = self._post_back if query.get("response_mode") == "form_post" else self._redirect_back
        if misbehaviour is Misbehaviour.ERROR:
            return back(redirect_uri, {"error": "access_denied", "state": state})
        code = uuid.uuid4().hex + uuid.uuid4().hex
        with self._lock:
            self._grants[code] = _Grant(
                client.client_id,
                redirect_uri,
                query["code_challenge"],
                query.get("nonce"),
                self.subject,
            )
        answer: dict[str, str | None] = {"code": code, "state": state, "iss": self.issuer}
        if misbehaviour is Misbehaviour.WRONG_STATE:
            answer["state"] = "A" * 43
        elif misbehaviour is Misbehaviour.MISSING_STATE:
            answer["state"] = None
        elif misbehaviour is Misbehaviour.WRONG_ISS_PARAMETER:
            answer["iss"] = "https://idp.example.net"
        elif misbehaviour is Misbehaviour.MISSING_ISS_PARAMETER:
            answer["iss"] = None
        return back(redirect_uri, answer)

    @staticmethod
    def _post_back(redirect_uri: str, parameters: Mapping[str, str | None]) -> Answer:
        """``response_mode=form_post``: a page that posts the answer to the callback."""
        fields = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in parameters.items()
            if v is not None
        )
        page = (
            "<!doctype html><title>Signing in</title>"
            '<body onload="document.forms[0].submit()">'
            f'<form method="post" action="{html.escape(redirect_uri)}">{fields}'
            "<noscript><button>Continue</button></noscript></form></body>"
        )
        return Answer(
            200, page.encode(), {"content-type": "text/html", "cache-control": "no-store"}
        )

    @staticmethod
    def _redirect_back(redirect_uri: str, parameters: Mapping[str, str | None]) -> Answer:
        query = urlencode({k: v for k, v in parameters.items() if v is not None})
        return Answer(
            302, b"", {"location": f"{redirect_uri}?{query}", "cache-control": "no-store"}
        )

    def _refuse(self, why: str, status: int = 400, error: str = "invalid_request") -> Answer:
        with self._lock:
            self.refusals.append(why)
        return json_answer({"error": error}, status=status)

    def _authenticate(self, form: Mapping[str, str], authorization: str | None) -> str | None:
        """The client id the token request authenticates, or None."""
        client_id = form.get("client_id")
        if authorization is not None and authorization.startswith("Basic "):
            try:
                pair = base64.b64decode(authorization[6:], validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            raw_id, _, raw_secret = pair.partition(":")
            client = self._clients.get(unquote(raw_id))
            if client is None or client.method != "client_secret_basic" or client.secret is None:
                return None
            ok = hmac.compare_digest(unquote(raw_secret).encode(), client.secret.encode())
            return client.client_id if ok else None
        client = self._clients.get(client_id or "")
        if client is None:
            return None
        if client.method == "client_secret_post":
            secret = form.get("client_secret", "")
            ok = client.secret is not None and hmac.compare_digest(
                secret.encode(), client.secret.encode()
            )
            return client.client_id if ok else None
        if client.method == "apple_client_secret" and client.public_key is not None:
            # Sign in with Apple: client_secret_post, the secret an ES256 JWT.
            try:
                token = jwt.decode(
                    form.get("client_secret", ""), client.public_key, algorithms=["ES256"]
                )
            except JoseError:
                return None
            claims = token.claims
            if (
                claims.get("sub") != client.client_id
                or claims.get("aud") != "https://appleid.apple.com"
                or not isinstance(claims.get("exp"), int)
                or claims["exp"] < time.time()
            ):
                return None
            return client.client_id
        if client.method == "private_key_jwt" and client.public_key is not None:
            if form.get("client_assertion_type") != (
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            ):
                return None
            try:
                token = jwt.decode(
                    form.get("client_assertion", ""),
                    client.public_key,
                    algorithms=["RS256", "ES256"],
                )
            except JoseError:
                return None
            claims = token.claims
            if (
                claims.get("iss") != client.client_id
                or claims.get("sub") != client.client_id
                or claims.get("aud") != self.token_endpoint
                or not isinstance(claims.get("exp"), int)
                or claims["exp"] < time.time()
            ):
                return None
            return client.client_id
        return None

    def _token(self, form: Mapping[str, str], authorization: str | None) -> Answer:
        misbehaviour = self.misbehaviour
        if misbehaviour is Misbehaviour.TOKEN_500:
            return Answer(500, b"internal error", {})
        if misbehaviour is Misbehaviour.TOKEN_REDIRECT:
            return Answer(302, b"", {"location": "https://idp.example.net/token"})
        if misbehaviour is Misbehaviour.TOKEN_HUGE:
            return Answer(200, b'{"id_token":"' + b"a" * (10 * 1024 * 1024) + b'"}', {})
        if misbehaviour is Misbehaviour.TOKEN_NOT_JSON:
            return Answer(200, b"<html>sign in</html>", {"content-type": "text/html"})
        if misbehaviour is Misbehaviour.INVALID_GRANT:
            return self._refuse("token: misbehaviour", error="invalid_grant")
        client_id = self._authenticate(form, authorization)
        if client_id is None:
            return self._refuse("token: client authentication failed", 401, "invalid_client")
        if form.get("grant_type") != "authorization_code":
            return self._refuse("token: grant_type", error="unsupported_grant_type")
        with self._lock:
            grant = self._grants.get(form.get("code", ""))
            if grant is None or grant.used:
                if grant is not None:
                    self.refusals.append("token: code replayed")
                return json_answer({"error": "invalid_grant"}, status=400)
            grant.used = True
        if grant.client_id != client_id:
            return self._refuse("token: code issued to another client", error="invalid_grant")
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("token: redirect_uri differs", error="invalid_grant")
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if not verifier or not hmac.compare_digest(challenge, grant.challenge):
            return self._refuse("token: PKCE verifier does not match", error="invalid_grant")
        id_token = self._id_token(grant, client_id)
        document: dict[str, Any] = {
            "access_token": uuid.uuid4().hex,
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        if misbehaviour is not Misbehaviour.NO_ID_TOKEN:
            document["id_token"] = id_token
        return json_answer(document)

    def _id_token(self, grant: _Grant, client_id: str) -> str:
        misbehaviour = self.misbehaviour
        now = time.time()
        extra: dict[str, Any] = {"nonce": grant.nonce, "email": self.email}
        audience = client_id
        if misbehaviour is Misbehaviour.OTHER_NONCE:
            extra["nonce"] = "another-nonce"
        elif misbehaviour is Misbehaviour.NO_NONCE:
            extra["nonce"] = None
        elif misbehaviour is Misbehaviour.OTHER_AUDIENCE:
            audience = "another-client"
        elif misbehaviour is Misbehaviour.WRONG_ISSUER:
            extra["iss"] = "https://idp.example.net"
        elif misbehaviour is Misbehaviour.EXPIRED:
            now -= 7200
        claims = self.provider.claims(now, audience=audience, subject=grant.subject, **extra)
        claims = {k: v for k, v in claims.items() if v is not None}
        if misbehaviour is Misbehaviour.MISSING_SUB:
            del claims["sub"]
        elif misbehaviour is Misbehaviour.MISSING_IAT:
            del claims["iat"]
        if misbehaviour is Misbehaviour.ALG_NONE:
            header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
            return f"{header.decode()}.{body.decode()}."
        if misbehaviour is Misbehaviour.UNKNOWN_KEY:
            return self.provider.sign(claims, key=self._stranger)
        token = self.provider.sign(claims)
        if misbehaviour is Misbehaviour.BAD_SIGNATURE:
            head, payload, signature = token.split(".")
            flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
            token = f"{head}.{payload}.{flipped}"
        return token

    # lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release a hanging token endpoint and stop the server."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeAuthorizationServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
