"""Cross-origin request protection (CSRF), after Go 1.25's ``net/http.CrossOriginProtection``.

Auth cookies ride along on requests that other sites make a browser send, so
an unsafe request must prove that it comes from this site's own pages. The
algorithm trusts the headers that browsers set and pages cannot forge:

1. ``GET``, ``HEAD`` and ``OPTIONS`` always pass: they must not change state.
2. If ``Sec-Fetch-Site`` is present (every major browser since 2023):
   ``same-origin`` and ``none`` (typed URL, bookmark) pass; anything else
   (``cross-site``, ``same-site``, an unknown value) passes only if ``Origin``
   is a trusted origin.
3. Otherwise, without an ``Origin`` header the request did not come from a
   browser (browsers send ``Origin`` on every unsafe request): it passes, as
   cookies are then not being used by a third party.
4. Otherwise ``Origin`` whose host (and port) equals the request's ``Host``
   passes: an older browser on this site. The scheme cannot be checked, as
   ``Host`` carries none, so an ``http://`` page of this host passes too;
   HSTS closes that gap.
5. Otherwise ``Origin`` must be a trusted origin.

``same-site`` is refused on purpose: a sibling subdomain is a different
origin, and may be run by someone else.

Like Go, methods and ``Sec-Fetch-Site`` values are compared exactly (``"get"``
is an unsafe method), an empty header counts as absent, and trusted origins
match the ``Origin`` header as a whole string; :func:`normalize_trusted_origins`
writes them the way browsers serialize origins. Two deliberate differences,
both failing closed on inputs no browser sends: ``Origin`` must have the
serialized-origin shape ``scheme://host[:port]`` to match ``Host`` (Go also
accepts a path or user information), and a missing or empty ``Host`` matches
nothing (Go lets ``Origin: null`` match it).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from ._errors import ConfigError
from ._http import SAFE_METHODS

__all__ = ["CsrfVerdict", "check_cross_origin", "normalize_trusted_origins"]

_OWS: Final = " \t"
# A serialized origin. The authority excludes what would make it a URL with
# more than an origin (path, query, fragment, user information) and anything
# that is not visible ASCII; its one group is compared with Host.
_ORIGIN: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#@\\\x00-\x20\x7f-\U0010ffff]+)")
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*")
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_REG_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT: Final = re.compile(r"[0-9]+")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class CsrfVerdict(enum.Enum):
    """The outcome of :func:`check_cross_origin`, with the reason.

    Six members allow the request and two reject it; test :attr:`allowed`
    rather than listing members. A rejection becomes a 403 Forbidden.
    """

    SAFE_METHOD = "safe_method"
    """``GET``, ``HEAD`` or ``OPTIONS``: allowed without looking further."""
    SAME_ORIGIN = "same_origin"
    """``Sec-Fetch-Site: same-origin``: sent by one of this origin's pages."""
    USER_INITIATED = "user_initiated"
    """``Sec-Fetch-Site: none``: the user typed the URL or opened a bookmark."""
    NOT_A_BROWSER = "not_a_browser"
    """Neither ``Sec-Fetch-Site`` nor ``Origin``: not a browser's cross-origin request."""
    ORIGIN_MATCHES_HOST = "origin_matches_host"
    """No ``Sec-Fetch-Site`` (an older browser), and ``Origin`` names the ``Host``."""
    TRUSTED_ORIGIN = "trusted_origin"
    """``Origin`` is one of the configured trusted origins."""
    CROSS_ORIGIN = "cross_origin"
    """Rejected: ``Sec-Fetch-Site`` says another site sent it, and its origin is not trusted."""
    ORIGIN_MISMATCH = "origin_mismatch"
    """Rejected: no ``Sec-Fetch-Site`` (an older browser), and ``Origin`` is
    neither the ``Host`` nor trusted."""

    @property
    def allowed(self) -> bool:
        """Whether the request may proceed."""
        return self is not CsrfVerdict.CROSS_ORIGIN and self is not CsrfVerdict.ORIGIN_MISMATCH


def check_cross_origin(
    method: str,
    sec_fetch_site: str | None,
    origin: str | None,
    host: str | None,
    trusted: frozenset[str],
) -> CsrfVerdict:
    """Decide whether a request may have been forged by another site.

    Pass the request method and the ``Sec-Fetch-Site``, ``Origin`` and ``Host``
    header values as received (``None`` for a missing header; for HTTP/2, the
    ``:authority`` as ``host``), and the set from
    :func:`normalize_trusted_origins`. Behind a proxy that rewrites ``Host``,
    pass the host the browser addressed, or list the public origin as trusted.

    The algorithm is described in this module's docstring. Header values are
    untrusted: any text gives a verdict, never an exception.
    """
    if method in SAFE_METHODS:
        return CsrfVerdict.SAFE_METHOD
    # Servers strip optional whitespace around field values; Go's reader does
    # too. An empty value is absent, as Go's Header.Get cannot tell them apart.
    site = sec_fetch_site.strip(_OWS) if sec_fetch_site else ""
    origin = origin.strip(_OWS) if origin else ""
    if site:
        if site == "same-origin":
            return CsrfVerdict.SAME_ORIGIN
        if site == "none":
            return CsrfVerdict.USER_INITIATED
        # An unknown value falls here too: refusing is the safe reading.
        if origin in trusted:
            return CsrfVerdict.TRUSTED_ORIGIN
        return CsrfVerdict.CROSS_ORIGIN
    if not origin:
        return CsrfVerdict.NOT_A_BROWSER
    host = host.strip(_OWS) if host else ""
    if host:
        shape = _ORIGIN.fullmatch(origin)
        if shape is not None and shape.group(1) == host:
            return CsrfVerdict.ORIGIN_MATCHES_HOST
    if origin in trusted:
        return CsrfVerdict.TRUSTED_ORIGIN
    return CsrfVerdict.ORIGIN_MISMATCH


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    """The WHATWG URL serialization: lowercase hex, the first longest zero run as '::'.

    Not ``address.compressed``: Python 3.13 writes IPv4-mapped addresses in
    dotted form, which no browser sends.
    """
    packed = address.packed
    pieces = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
    best_start, best_len, run_start = -1, 1, -1
    for i, piece in enumerate([*pieces, 1]):  # the sentinel closes a trailing run
        if piece == 0:
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = -1
    if best_start < 0:
        return ":".join(f"{p:x}" for p in pieces)
    head = ":".join(f"{p:x}" for p in pieces[:best_start])
    tail = ":".join(f"{p:x}" for p in pieces[best_start + best_len :])
    return f"{head}::{tail}"


def _normalize_origin(origin: object) -> str:
    """One trusted origin in the form browsers send, or ConfigError saying how to fix it."""
    shape = "write it as scheme://host[:port], e.g. 'https://app.example.com'"
    if not isinstance(origin, str):
        raise ConfigError(f"trusted origin {origin!r} is not a string: {shape}")
    what = f"trusted origin {origin!r}"
    if origin.strip().lower() == "null":
        raise ConfigError(
            f"{what}: browsers send 'null' from sandboxed frames, local files and some "
            "redirects, so any site can produce it; it cannot be trusted, remove it"
        )
    if "*" in origin:
        raise ConfigError(f"{what}: wildcards are not supported; list each origin, {shape}")
    if not origin.isascii():
        raise ConfigError(
            f"{what}: write an internationalized host name in its ASCII (punycode) form, "
            "as browsers send it, e.g. 'https://xn--bcher-kva.example'"
        )
    if not origin.isprintable() or " " in origin:
        raise ConfigError(f"{what}: remove the whitespace or control characters")
    scheme, sep, authority = origin.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(f"{what}: {shape}")
    if "@" in authority:
        raise ConfigError(f"{what}: remove the user information before '@'; {shape}")
    if authority.endswith("/") and authority.count("/") == 1 and "?" not in authority:
        raise ConfigError(f"{what}: remove the trailing '/'; an origin has no path")
    if any(c in authority for c in "/?#\\"):
        raise ConfigError(f"{what}: an origin has no path, query or fragment; {shape}")

    if authority.startswith("["):
        # IPv6 literal: browsers send its shortest form, so write it that way.
        close = authority.find("]")
        if "%" in authority:
            raise ConfigError(f"{what}: remove the IPv6 zone ('%...'); browsers never send it")
        try:
            address = ipaddress.IPv6Address(authority[1:close]) if close > 0 else None
        except ValueError:
            address = None
        if address is None:
            raise ConfigError(f"{what}: the IPv6 address is invalid; e.g. 'http://[::1]:8080'")
        host = f"[{_ipv6_text(address)}]"
        rest = authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{what}: {shape}")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.partition(":")
        host = host.lower()
        port = port_text if colon else None
        if ":" in port_text:
            raise ConfigError(f"{what}: put an IPv6 address in brackets, e.g. 'http://[::1]:8080'")
        if not host:
            raise ConfigError(f"{what}: the host is missing; {shape}")
        if not _REG_NAME.fullmatch(host):
            raise ConfigError(
                f"{what}: {host!r} is not a valid host name (letters, digits, '-', '_', '.')"
            )
    if port is None:
        return f"{scheme}://{host}"
    # The length bound keeps int() away from absurd digit strings.
    if not _PORT.fullmatch(port) or len(port) > 5 or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: the port must be a number from 1 to 65535, or omitted")
    number = int(port)
    # Browsers leave the scheme's default port out of Origin; so must we, or
    # the entry would never match.
    if _DEFAULT_PORTS.get(scheme) == number:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{number}"


def normalize_trusted_origins(origins: Iterable[str]) -> frozenset[str]:
    """Validate trusted origins at configuration time, in the form browsers send.

    Each entry is ``scheme://host[:port]``: scheme and host are lowercased, a
    default port (80 for http, 443 for https) is dropped, an IPv6 address is
    shortened. Anything else raises :class:`ConfigError` with the fix: a path
    (even a trailing ``/``), a query, a fragment, user information, a
    wildcard, ``null``, a non-ASCII host, a bad port, or a single string passed
    where a collection is expected.

    Trust an origin only if every page it serves may act as the user here.
    """
    if isinstance(origins, (str, bytes)):
        raise ConfigError(
            f"trusted origins must be a collection of strings, not the single string "
            f"{origins!r}: wrap it in a list, e.g. ['https://app.example.com']"
        )
    return frozenset(_normalize_origin(origin) for origin in origins)
