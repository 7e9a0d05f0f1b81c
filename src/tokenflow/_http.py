"""Reading what a server hands over into the facts a :class:`~tokenflow.Request` holds.

Pure functions, no framework import and no I/O: :meth:`Request.from_asgi`,
:meth:`Request.from_wsgi` and :meth:`Request.from_headers` build their
Request from the :class:`RequestFacts` read here, so that no header the
decision needs (``Cookie``, ``Sec-Fetch-Site``, ``Origin``, ``Host``, the
peer address) can be forgotten by glue code. A leaf of the package: it
imports nothing of tokenflow but its errors, so the request type can import
it without a cycle.

Rules, and why:

* **Header bytes are decoded as latin-1**, which maps every byte to one
  character and never fails; odd characters then fail the checks that read
  them (an ``Origin`` that is not an origin matches nothing).
* **Several ``Cookie`` fields are joined with ``"; "``**: HTTP/2 and HTTP/3
  clients may split the cookie into one field per pair (RFC 9113, section
  8.2.3), and the receiver must concatenate them that way.
* **Any other field sent twice is joined with ``", "``** (RFC 9110, section
  5.3). For ``Origin``, ``Host`` and ``Sec-Fetch-Site``, which are single
  values, the joined text is not a valid value, so the cross-origin check
  fails closed on it instead of picking one copy.
* **Forwarded headers are read only behind a declared proxy.** Without
  :class:`TrustedProxies`, ``X-Forwarded-*`` and ``Forwarded`` are ignored:
  anyone can send them. With it, and only when the connection's peer is one
  of the proxies, the client address is the rightmost address in the chain
  that is not a trusted proxy (every hop to its right was appended by a proxy
  of ours; anything to its left was written by the client and may be forged).
* **Client garbage never raises**: a malformed address or header becomes an
  absent value, and the decision fails closed. Integrator mistakes (a scope
  that is not HTTP, headers that are not pairs) raise :class:`TypeError`.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

from ._errors import ConfigError

__all__ = [
    "NEXT_LIMIT",
    "SAFE_METHODS",
    "ForwardedHeaders",
    "RequestFacts",
    "TrustedProxies",
    "read_asgi",
    "read_asgi_route",
    "read_headers",
    "read_wsgi",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_USER_AGENT_LIMIT: Final = 256
"""User agents are stored with sessions ("your devices"): clipped, so a client
cannot make the store keep kilobytes per session."""
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""The methods tokenflow treats as safe (RFC 9110, section 9.2.1), the one set
every module reads: no cross-origin check, and the middleware's hot path
reads only the cookie. TRACE is left out on purpose: it is refused by
servers, and an unsafe method is the cautious reading of anything unknown."""
_HOP_LIMIT: Final = 32
"""Forwarded chains longer than this are cut from the left (the client's side)."""


class ForwardedHeaders(enum.Enum):
    """Which forwarded headers a trusted proxy sets. Exactly one family is read."""

    X_FORWARDED = "x-forwarded"
    """``X-Forwarded-For`` and ``X-Forwarded-Host`` (nginx, HAProxy, most load balancers)."""
    FORWARDED = "forwarded"
    """The standard ``Forwarded`` header of RFC 7239 (``for=`` and ``host=``)."""


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies in front of the application, whose forwarded headers count.

    ``networks`` are addresses or CIDR blocks (``"10.0.0.0/8"``,
    ``"127.0.0.1"``, ``"::1"``); a request whose connection comes from one of
    them has its client address and ``Host`` taken from ``headers`` (one
    family, :class:`ForwardedHeaders`). Every proxy in the chain must be
    listed, and the last one must overwrite (not append to) the host header
    it forwards. A request from any other peer is read as if no proxy were
    declared: its forwarded headers are ignored.
    """

    networks: tuple[str, ...]
    headers: ForwardedHeaders = ForwardedHeaders.X_FORWARDED
    _parsed: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks = self.networks
        if isinstance(networks, str) or not isinstance(networks, Iterable):
            raise ConfigError(
                "TrustedProxies.networks must be a tuple of addresses or CIDR blocks, "
                "such as ('10.0.0.0/8',)"
            )
        networks = tuple(networks)
        if not networks:
            raise ConfigError("TrustedProxies needs at least one address or CIDR block")
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text, strict=False))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"TrustedProxies: {text!r} is not an IP address or CIDR block"
                ) from None
        if not isinstance(self.headers, ForwardedHeaders):
            raise ConfigError(
                "TrustedProxies.headers must be ForwardedHeaders.X_FORWARDED or "
                "ForwardedHeaders.FORWARDED"
            )
        object.__setattr__(self, "networks", networks)
        object.__setattr__(self, "_parsed", tuple(parsed))

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (an IP address as text) is one of the proxies."""
        ip = _ip(address)
        return ip is not None and self._trusts_ip(ip)

    def _trusts_ip(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._parsed)


def _ip(text: str | None) -> IPAddress | None:
    """An IP address, or None for anything else (client garbage)."""
    if not text or len(text) > 64:
        return None
    return _parse_ip(text)


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    # Cached: a server sees the same peers (its proxies, keep-alive clients)
    # over and over, and parsing an address costs more than the rest of a
    # request's headers. Bounded, so a flood of addresses cannot grow it.
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _text(value: object, what: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


# -- forwarded chains ------------------------------------------------------------


def _strip_port(node: str) -> str:
    """The address of an ``X-Forwarded-For`` or ``Forwarded`` node (port dropped)."""
    node = node.strip().strip('"')
    if node.startswith("["):  # [v6]:port
        end = node.find("]")
        return node[1:end] if end > 0 else ""
    if node.count(":") == 1:  # v4:port
        return node.partition(":")[0]
    return node


# RFC 7239 section 4 with RFC 9110's token and quoted-string:
#   Forwarded = 1#forwarded-element
#   forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
#   forwarded-pair = token "=" value ; value = token / quoted-string
# Optional whitespace is allowed around "," (the list rule) and ";" (some
# proxies write "; "), nowhere else.
_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 - the HTTP token syntax
_QUOTED: Final = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x20-\x7e\x80-\xff])*"'
_PAIR: Final = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_OWS: Final = r"[ \t]*"
_ELEMENT: Final = rf"(?:{_PAIR})?(?:{_OWS};{_OWS}(?:{_PAIR})?)*"
_FORWARDED: Final = re.compile(rf"{_OWS}{_ELEMENT}(?:{_OWS},{_OWS}{_ELEMENT})*{_OWS}")
_FORWARDED_PARTS: Final = re.compile(rf"({_TOKEN})=({_TOKEN}|{_QUOTED})|,")
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)


def _forwarded_elements(header: str) -> list[dict[str, str]] | None:
    """RFC 7239 elements, left to right, as parameter dicts (lower-case names).

    None when the header is malformed anywhere (an unterminated quote, a pair
    without ``=`` or value, stray bytes, a parameter twice in one element):
    a client that can break the syntax can make its own text swallow what a
    trusted proxy appended, so no part of such a header is believed.
    """
    if not _FORWARDED.fullmatch(header):
        return None
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for part in _FORWARDED_PARTS.finditer(header):
        name = part.group(1)
        if name is None:  # ","
            elements.append(current)
            current = {}
            continue
        name = name.lower()
        if name in current:
            return None
        value = part.group(2)
        if value[0] == '"':
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
        current[name] = value
    elements.append(current)
    return elements[-_HOP_LIMIT:]


def _client_from_chain(hops: list[str], proxies: TrustedProxies) -> int | None:
    """Index into ``hops`` of the client: the rightmost hop that is not a proxy.

    ``None`` when a hop on the way is not an address (the chain cannot be
    trusted past it). When every hop is a proxy, the leftmost one is the client.
    """
    for index in range(len(hops) - 1, -1, -1):
        ip = _ip(_strip_port(hops[index]))
        if ip is None:
            return None
        if not proxies._trusts_ip(ip):
            return index
    return 0 if hops else None


@dataclass(frozen=True, slots=True)
class _Facts:
    client_address: str | None
    host: str | None


def _behind_proxy(
    fields: Mapping[str, str], peer: IPAddress, proxies: TrustedProxies, host: str | None
) -> _Facts:
    if proxies.headers is ForwardedHeaders.FORWARDED:
        header = fields.get("forwarded")
        if header is None:
            return _Facts(str(peer), host)
        elements = _forwarded_elements(header)
        if elements is None:
            return _Facts(None, host)
        index = _client_from_chain([e.get("for", "") for e in elements], proxies)
        if index is None:
            return _Facts(None, host)
        address = _ip(_strip_port(elements[index].get("for", "")))
        # The host the client asked for is what the first proxy (the one that
        # wrote this element) received; it is as trusted as the address.
        forwarded_host = elements[index].get("host")
        return _Facts(
            None if address is None else str(address),
            forwarded_host if forwarded_host else host,
        )
    chain = fields.get("x-forwarded-for")
    if chain is None:
        address_text: str | None = str(peer)
    else:
        hops = chain.split(",")[-_HOP_LIMIT:]
        index = _client_from_chain(hops, proxies)
        ip = None if index is None else _ip(_strip_port(hops[index]))
        address_text = None if ip is None else str(ip)
    forwarded_host = fields.get("x-forwarded-host")
    if forwarded_host is not None:
        # The last proxy overwrites it (documented); if several values arrive
        # anyway, the rightmost is the one a trusted proxy wrote.
        forwarded_host = forwarded_host.rpartition(",")[2].strip() or None
    return _Facts(address_text, forwarded_host or host)


# -- the readers -----------------------------------------------------------------


_WANTED: Final = frozenset(
    {
        "cookie",
        "origin",
        "host",
        "sec-fetch-site",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
    }
)


_WANTED_BYTES: Final = {name.encode(): name for name in _WANTED}


def _collect(headers: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    """The wanted fields, lower-cased names, repeated fields joined."""
    fields: dict[str, str] = {}
    wanted = _WANTED_BYTES
    try:
        for raw_name, raw_value in headers:
            # Fast path for ASGI, whose names are lower-case bytes: the other
            # fields (accept, client hints...) are skipped without decoding.
            if type(raw_name) is bytes:
                name = wanted.get(raw_name) or wanted.get(raw_name.lower())
                if name is None:
                    continue
            else:
                name = _text(raw_name, "a header name").lower()
                if name not in _WANTED:
                    continue
            value = (
                raw_value.decode("latin-1")
                if type(raw_value) is bytes
                else _text(raw_value, f"the value of header {name!r}")
            )
            if name in fields:
                fields[name] += ("; " if name == "cookie" else ", ") + value
            else:
                fields[name] = value
    except (TypeError, ValueError) as exc:
        if "header" in str(exc):
            raise
        raise TypeError("headers must be an iterable of (name, value) pairs") from None
    return fields


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request says about itself, read and decoded: every value a str or None."""

    method: str
    cookie_header: str | None = field(repr=False)
    sec_fetch_site: str | None
    origin: str | None
    host: str | None
    metadata: Mapping[str, str]
    client_address: str | None


def _build(
    method: str,
    fields: Mapping[str, str],
    peer: str | None,
    proxies: TrustedProxies | None,
) -> RequestFacts:
    if proxies is not None and not isinstance(proxies, TrustedProxies):
        raise TypeError("proxies must be a TrustedProxies or None")
    host = fields.get("host")
    peer_ip = _ip(peer)
    if proxies is not None and peer_ip is not None and proxies._trusts_ip(peer_ip):
        facts = _behind_proxy(fields, peer_ip, proxies, host)
    else:
        facts = _Facts(None if peer_ip is None else str(peer_ip), host)
    metadata: dict[str, str] = {}
    agent = fields.get("user-agent")
    if agent:
        metadata["user_agent"] = agent[:_USER_AGENT_LIMIT]
    if facts.client_address is not None:
        metadata["address"] = facts.client_address
    return RequestFacts(
        method,
        fields.get("cookie"),
        fields.get("sec-fetch-site"),
        fields.get("origin"),
        facts.host,
        metadata,
        facts.client_address,
    )


def read_headers(
    method: str | bytes,
    headers: Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str],
    *,
    peer: str | None = None,
    proxies: TrustedProxies | None = None,
) -> RequestFacts:
    """See :meth:`tokenflow.Request.from_headers`."""
    if isinstance(headers, Mapping):
        headers = headers.items()
    if peer is not None and type(peer) is not str:
        raise TypeError(f"peer must be an IP address as str, or None, not {type(peer).__name__}")
    return _build(_text(method, "method"), _collect(headers), peer, proxies)


def read_asgi(scope: Mapping[str, Any], *, proxies: TrustedProxies | None = None) -> RequestFacts:
    """See :meth:`tokenflow.Request.from_asgi`."""
    if not isinstance(scope, Mapping) or scope.get("type") != "http":
        raise TypeError("Request.from_asgi takes an ASGI HTTP scope (scope['type'] == 'http')")
    client = scope.get("client")
    peer = None
    if client is not None:
        try:
            peer = str(client[0])
        except (TypeError, IndexError, KeyError):
            raise TypeError("scope['client'] must be a (host, port) pair or None") from None
    method = scope.get("method", "GET")
    return _build(
        _text(method, "scope['method']"),
        _collect(scope.get("headers", ())),
        peer,
        proxies,
    )


_T = TypeVar("_T")
RouteBuilder: TypeAlias = Callable[
    [str, "str | None", "str | None", "str | None", "str | None"], _T
]
"""Called with ``(method, cookie_header, sec_fetch_site, origin, host)``."""


def read_asgi_route(scope: Mapping[str, Any], build: RouteBuilder[_T]) -> _T:
    """What ``decide`` reads of an ASGI request, for the middleware's hot path.

    The client address and the metadata serve only logins (the throttle and
    the new session), which the middleware reads with :func:`read_asgi`; the
    rest is read here without parsing the peer address, and handed to
    ``build`` (no tuple in between: this runs on every request). Only for a
    request without trusted proxies (they change the host).
    """
    method = scope["method"]
    if type(method) is not str:
        raise TypeError("scope['method'] must be str")
    if method in SAFE_METHODS:
        # GET, HEAD, OPTIONS: the flow consults no header but the cookie (the
        # cross-origin check applies to unsafe methods and logins only), so
        # the hot path reads nothing else. ASGI header names are lower-case
        # bytes; anything else takes the full reader, which checks types.
        cookie: str | None = None
        for name, value in scope["headers"]:
            # The length first: the one test most names fail, and the cheapest.
            if len(name) == 6 and (
                name == b"cookie" or (type(name) is bytes and name.lower() == b"cookie")
            ):
                if type(value) is not bytes:
                    break
                text = value.decode("latin-1")
                cookie = text if cookie is None else f"{cookie}; {text}"
        else:
            return build(method, cookie, None, None, None)
    fields = _collect(scope["headers"])
    get = fields.get
    return build(method, get("cookie"), get("sec-fetch-site"), get("origin"), get("host"))


def read_wsgi(environ: Mapping[str, Any], *, proxies: TrustedProxies | None = None) -> RequestFacts:
    """See :meth:`tokenflow.Request.from_wsgi`."""
    if not isinstance(environ, Mapping):
        raise TypeError("Request.from_wsgi takes a WSGI environ (a dict)")
    pairs: list[tuple[str, str]] = []
    for name in _WANTED:
        key = "HTTP_" + name.upper().replace("-", "_")
        value = environ.get(key)
        if value is not None:
            pairs.append((name, _text(value, f"environ[{key!r}]")))
    peer = environ.get("REMOTE_ADDR")
    return _build(
        _text(environ.get("REQUEST_METHOD", "GET"), "environ['REQUEST_METHOD']"),
        _collect(pairs),
        peer if type(peer) is str else None,
        proxies,
    )


# -- where to send the browser after a login ------------------------------------------

NEXT_LIMIT: Final = 2048
"""The longest same-site path :func:`safe_next` keeps."""
_SAME_SITE_PATH: Final = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")


def safe_next(value: object, default: str, *, limit: int = NEXT_LIMIT) -> str:
    """``value`` if it is a path on this site, else ``default``: no open redirect.

    Kept only: one leading ``/`` not followed by another ``/`` or a ``\\``,
    then printable ASCII without spaces or backslashes (``//evil.example``,
    ``/\\evil.example``, absolute URLs, spaces and control characters would
    send the user elsewhere, or be read differently by a browser), at most
    ``limit`` characters. The one rule for the login endpoints' ``next`` and the
    provider sign-in's return path.
    """
    if type(value) is str and len(value) <= limit and _SAME_SITE_PATH.fullmatch(value):
        return value
    return default
