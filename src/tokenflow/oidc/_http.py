"""The HTTP port that key sets, discovery documents and the Graph API come through.

:class:`KeySetSource` and :class:`AsyncKeySetSource` are the ports: one GET,
one answer. :class:`HttpKeySetSource` and :class:`AsyncHttpKeySetSource` are
the defaults, on httpx. They enforce the transport rules: HTTPS only (plain
HTTP only to a loopback address, and only with ``allow_loopback_http=True``),
no redirects followed, every network wait bounded by a timeout of at most
5 s, and bodies of at most 64 KiB. What a body means is decided elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx

from .._errors import ConfigError, TokenflowError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_TIMEOUT",
    "AsyncHttpKeySetSource",
    "AsyncKeySetSource",
    "AsyncTokenEndpointSource",
    "FetchError",
    "Fetched",
    "HttpKeySetSource",
    "KeySetSource",
    "TokenEndpointSource",
    "check_url",
]

MAX_TIMEOUT: Final = 5.0
"""The longest a fetch may wait on the network, in seconds."""
MAX_BODY_BYTES: Final = 64 * 1024
"""The largest body read; a longer one is a failed fetch."""
_KEPT_HEADERS: Final = ("cache-control", "age", "location", "content-type")
_USER_AGENT: Final = "tokenflow-oidc"


class FetchError(TokenflowError):
    """A fetch could not complete (network, timeout, oversized body, refused URL).

    The message names the URL without its query, which may carry a token.
    """


@dataclass(frozen=True, slots=True)
class Fetched:
    """One HTTP answer: its status, the headers that matter here (lower-case
    names: ``cache-control``, ``age``, ``location``, ``content-type``) and the body."""

    status: int
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class KeySetSource(Protocol):
    """Fetches documents for verifiers: key sets, discovery documents, Graph API answers.

    Contract: ``fetch`` performs one GET of ``url`` with ``params`` as its
    query and returns the answer *whatever its status* (a 3xx is returned, not
    followed). It raises :class:`FetchError` (or any exception) when no answer
    came: connection refused, timeout, a body over 64 KiB. It never puts
    ``params`` (they may hold a token or an app secret) in an error message.
    """

    def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``; the answer, or raise."""
        ...


class TokenEndpointSource(KeySetSource, Protocol):
    """A :class:`KeySetSource` that can also POST a form: what a code-flow client
    talks to a token endpoint through.

    Contract: ``post`` sends ``form`` url-encoded with ``headers`` and returns
    the answer whatever its status (a 3xx is returned, not followed), under
    the same rules as ``fetch``. It never puts the form (a code, a client
    secret) or the headers in an error message.
    """

    def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """POST ``form`` to ``url``; the answer, or raise."""
        ...


class AsyncKeySetSource(Protocol):
    """The async variant of :class:`KeySetSource`, with the same contract."""

    async def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``; the answer, or raise."""
        ...


class AsyncTokenEndpointSource(AsyncKeySetSource, Protocol):
    """The async variant of :class:`TokenEndpointSource`."""

    async def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """POST ``form`` to ``url``; the answer, or raise."""
        ...


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_loopback_http: bool = False) -> str:
    """``url`` if it may be fetched: ``https://``, or ``http://`` to a loopback
    host when allowed. Raises :class:`ConfigError` otherwise."""
    if not isinstance(url, str):
        raise ConfigError("a URL must be a string")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a valid URL") from exc
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{_public(url)}: credentials in a URL are not allowed")
    if not host or parts.fragment:
        raise ConfigError(f"{url!r} is not an absolute URL without a fragment")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _is_loopback(host):
        if allow_loopback_http:
            return url
        raise ConfigError(
            f"{url} is plain HTTP: allowed only to loopback hosts, and only with "
            "allow_loopback_http=True on the key set source (for local testing)"
        )
    raise ConfigError(f"{_public(url)} must be an https:// URL")


def _public(url: str) -> str:
    """A URL without query, fragment or credentials: safe for an error message."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"
    except ValueError:
        return "<unparsable URL>"


def _check_settings(timeout: float, max_bytes: int) -> None:
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= MAX_TIMEOUT):
        raise ConfigError(f"timeout must be more than 0 and at most {MAX_TIMEOUT} seconds")
    if not (isinstance(max_bytes, int) and 0 < max_bytes <= MAX_BODY_BYTES):
        raise ConfigError(f"max_bytes must be more than 0 and at most {MAX_BODY_BYTES}")


def _headers(response: httpx.Response) -> Mapping[str, str]:
    return MappingProxyType(
        {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    )


class HttpKeySetSource:
    """The default :class:`KeySetSource`, on an ``httpx.Client``.

    ``timeout`` (at most 5 s) bounds every network wait, and a fetch still
    running past it is abandoned; bodies over ``max_bytes`` (at most 64 KiB)
    are refused. Redirects are never followed. ``allow_loopback_http`` lets
    plain ``http://`` reach 127.0.0.1, ::1 or localhost, for tests and local
    identity providers; nothing else is ever fetched over plain HTTP.
    Thread-safe; :meth:`close` releases its connections.
    """

    def __init__(
        self,
        *,
        timeout: float = MAX_TIMEOUT,
        max_bytes: int = MAX_BODY_BYTES,
        allow_loopback_http: bool = False,
    ) -> None:
        _check_settings(timeout, max_bytes)
        self.timeout: float = float(timeout)
        self.max_bytes = max_bytes
        self.allow_loopback_http = allow_loopback_http
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
        )

    def __repr__(self) -> str:
        return (
            f"HttpKeySetSource(timeout={self.timeout}, max_bytes={self.max_bytes}, "
            f"allow_loopback_http={self.allow_loopback_http})"
        )

    def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``; see :class:`KeySetSource`."""
        return self._send("GET", url, params=dict(params or {}))

    def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """POST ``form`` (``application/x-www-form-urlencoded``) to ``url``: a token
        endpoint. Same rules as :meth:`fetch` (HTTPS only, no redirect followed,
        time and size limits); see :class:`TokenEndpointSource`."""
        return self._send("POST", url, data=dict(form), headers=dict(headers or {}))

    def _send(self, method: str, url: str, **request: Any) -> Fetched:
        try:
            check_url(url, allow_loopback_http=self.allow_loopback_http)
        except ConfigError as exc:
            raise FetchError(str(exc)) from None
        deadline = time.monotonic() + self.timeout
        try:
            with self._client.stream(method, url, follow_redirects=False, **request) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(f"{_public(url)}: body over {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"{_public(url)}: timed out after {self.timeout} s")
                return Fetched(response.status_code, bytes(body), _headers(response))
        except httpx.HTTPError as exc:
            # ``from None``: httpx errors carry the request, whose URL may hold params.
            raise FetchError(f"{_public(url)}: {type(exc).__name__}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class AsyncHttpKeySetSource:
    """The default :class:`AsyncKeySetSource`, on an ``httpx.AsyncClient``.

    Same rules as :class:`HttpKeySetSource`; here the timeout bounds the
    whole fetch. One client is kept per event loop.
    """

    def __init__(
        self,
        *,
        timeout: float = MAX_TIMEOUT,
        max_bytes: int = MAX_BODY_BYTES,
        allow_loopback_http: bool = False,
    ) -> None:
        _check_settings(timeout, max_bytes)
        self.timeout: float = float(timeout)
        self.max_bytes = max_bytes
        self.allow_loopback_http = allow_loopback_http
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return (
            f"AsyncHttpKeySetSource(timeout={self.timeout}, max_bytes={self.max_bytes}, "
            f"allow_loopback_http={self.allow_loopback_http})"
        )

    def _client(self) -> httpx.AsyncClient:
        # An AsyncClient's connections belong to the loop that opened them.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [known for known in self._clients if known.is_closed()]:
                del self._clients[old]
            client = self._clients[loop] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            )
        return client

    async def fetch(self, url: str, params: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``; see :class:`AsyncKeySetSource`."""
        return await self._send("GET", url, params=dict(params or {}))

    async def post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """POST ``form`` to ``url`` (see :meth:`HttpKeySetSource.post`)."""
        return await self._send("POST", url, data=dict(form), headers=dict(headers or {}))

    async def _send(self, method: str, url: str, **request: Any) -> Fetched:
        try:
            check_url(url, allow_loopback_http=self.allow_loopback_http)
        except ConfigError as exc:
            raise FetchError(str(exc)) from None
        try:
            return await asyncio.wait_for(self._fetch(method, url, request), self.timeout)
        except TimeoutError:
            raise FetchError(f"{_public(url)}: timed out after {self.timeout} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{_public(url)}: {type(exc).__name__}") from None

    async def _fetch(self, method: str, url: str, request: dict[str, Any]) -> Fetched:
        async with self._client().stream(
            method, url, follow_redirects=False, **request
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise FetchError(f"{_public(url)}: body over {self.max_bytes} bytes")
            return Fetched(response.status_code, bytes(body), _headers(response))

    async def aclose(self) -> None:
        """Close the client of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
