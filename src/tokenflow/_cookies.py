"""Auth cookies: the policy, ``Set-Cookie`` rendering, and ``Cookie`` header reading.

Pure functions and values: no I/O, no clock.

Writing
-------
:class:`CookiePolicy` holds the attributes every auth cookie carries and checks
them once, at construction, against the rules browsers enforce: a cookie that
breaks them is dropped silently by the browser, which would show up as users
who are logged out for no visible reason. :func:`render_set_cookie` and
:func:`render_clear_cookie` turn a name and value into one ``Set-Cookie``
header value (RFC 6265 section 4.1).

Reading
-------
One set of rules, shared by :func:`read_auth_cookies` (the flow's hot path) and
:func:`parse_cookie_header` (a helper for hosts):

1. A header longer than :data:`MAX_COOKIE_HEADER_BYTES` characters is not
   scanned at all. Hosts decode header bytes as latin-1, so one character is
   one byte.
2. The header is split on ``;``. Each piece is stripped of spaces and tabs on
   both ends, then split at its first ``=`` into a name and a value.
3. A piece without ``=``, or whose name is empty or not an RFC 6265 token, is
   skipped. It never affects the pieces after it, so a stray byte in some other
   site's cookie cannot hide the auth cookies.
4. Names match exactly and case-sensitively: ``__host-tf_access`` and
   ``__Host-tf_access2`` are different cookies from ``__Host-tf_access``.
5. A value wrapped in one pair of double quotes loses them. Values are
   otherwise returned as sent; the token codec validates them strictly.

``;`` always ends a pair, even inside double quotes: RFC 6265 cookie values
cannot contain it, and honouring quotes would let one malformed cookie swallow
the ones after it.

If a request carries several ``Cookie`` fields (HTTP/2 may split them), join
them with ``"; "`` before calling a reader (RFC 9113 section 8.2.3).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from ._errors import ConfigError, TokenflowError

__all__ = [
    "MAX_COOKIE_HEADER_BYTES",
    "CookieFault",
    "CookieHeaderTooLarge",
    "CookiePolicy",
    "CookieValue",
    "SameSite",
    "parse_cookie_header",
    "read_auth_cookies",
    "read_auth_cookies_from_mapping",
    "render_clear_cookie",
    "render_set_cookie",
]

MAX_COOKIE_HEADER_BYTES: Final = 16384
"""Longest ``Cookie`` header the readers scan, in characters (bytes, as latin-1).

Browsers keep at most about 180 cookies of 4096 bytes per site, but real
headers are a few kilobytes; 16 KiB is also a common server default (nginx
``large_client_header_buffers``). Anything longer is refused without scanning.
"""

# RFC 6265 section 4.1.1 (by reference to RFC 2616): token and cookie-octet.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_COOKIE_OCTETS: Final = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
# Path: visible ASCII without ';' (it would end the attribute) or ',' (it breaks
# hosts that fold several Set-Cookie values into one line).
_PATH: Final = re.compile(r"/[\x21-\x2B\x2D-\x3A\x3C-\x7E]*")
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_OWS: Final = " \t"

_SECURE_ACCESS: Final = "__Host-tf_access"
_SECURE_REFRESH: Final = "__Host-tf_refresh"
_LOCAL_ACCESS: Final = "tf_access"
_LOCAL_REFRESH: Final = "tf_refresh"


class SameSite(enum.Enum):
    """The ``SameSite`` attribute: which cross-site requests carry the cookie."""

    LAX = "Lax"
    """Sent on same-site requests and on top-level cross-site navigations (the default)."""
    STRICT = "Strict"
    """Sent on same-site requests only: following a link from another site logs out."""
    NONE = "None"
    """Sent on every request, cross-site included. Browsers require ``Secure`` with it."""


class CookieFault(enum.Enum):
    """Why a reader reports no usable value for an auth cookie.

    The flow turns either fault into a rejection; neither is an exception,
    because both come from the client.
    """

    AMBIGUOUS = "ambiguous"
    """The name appeared more than once. A sibling subdomain (or an attacker on
    one) can plant a second cookie with the same name, and the server cannot
    tell which is which: "cookie tossing". Reported even if the values agree."""
    OVERSIZE = "oversize"
    """The header exceeded :data:`MAX_COOKIE_HEADER_BYTES` and was not scanned."""


CookieValue: TypeAlias = str | CookieFault | None
"""What a reader reports for one auth cookie: its value, ``None`` if absent, or a fault."""


class CookieHeaderTooLarge(TokenflowError, ValueError):
    """:func:`parse_cookie_header` refused a header over :data:`MAX_COOKIE_HEADER_BYTES`.

    The header comes from the client: answer 431 (Request Header Fields Too
    Large) or 400. :func:`read_auth_cookies` reports the same condition as
    :attr:`CookieFault.OVERSIZE` instead of raising.
    """

    def __init__(self, size: int) -> None:
        super().__init__(
            f"Cookie header of {size} characters exceeds the "
            f"{MAX_COOKIE_HEADER_BYTES}-character limit"
        )
        self.size = size


class _ModeDefault(str):
    """A default cookie name the integrator did not choose.

    Its type, not its text, marks it: :class:`CookiePolicy` swaps it for the
    default of the security mode, so ``insecure_http_for_local_development=True``
    alone gives plain names, while the same ``__Host-`` name passed explicitly
    in insecure mode is reported as the mistake it is.
    """

    __slots__ = ()


def _check_name(name: object, what: str, secure: bool, domain: str | None, path: str) -> None:
    """Raise ConfigError unless browsers would store ``name`` with these attributes."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid cookie name: use letters, digits and "
            "!#$%&'*+-.^_`|~ only (no spaces, '=', ';', quotes or non-ASCII), "
            f"e.g. {_SECURE_ACCESS!r}"
        )
    # Browsers match the prefixes case-insensitively (RFC 6265bis), so
    # "__host-x" gets the __Host- rules too. "__Host-Http-" starts with "__host-".
    folded = name[:9].lower()
    if folded.startswith("__host-"):
        prefix = name[:7]
    elif folded.startswith(("__secure-", "__http-")):
        prefix = name[: folded.index("-") + 1]
    else:
        return
    if not secure:
        raise ConfigError(
            f"{what} {name!r} starts with {prefix!r}, which browsers accept only on "
            "Secure cookies, but insecure_http_for_local_development=True drops Secure: "
            f"use a plain name such as {_LOCAL_ACCESS!r}, or leave the names unset "
            "(CookiePolicy.local_development() does this)"
        )
    if prefix.lower() != "__host-":
        return
    if domain is not None:
        raise ConfigError(
            f"{what} {name!r} starts with {prefix!r}, which browsers refuse with a Domain "
            "attribute: set domain=None (the cookie then stays on this exact host), or use "
            "a '__Secure-' name to share it with subdomains"
        )
    if path != "/":
        raise ConfigError(
            f"{what} {name!r} starts with {prefix!r}, which browsers accept only with "
            f"Path=/, not {path!r}: set path='/', or use a '__Secure-' name"
        )


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """The names and attributes of the two auth cookies.

    The defaults are the safe choice for production: ``__Host-`` names,
    ``Secure``, ``HttpOnly`` (always), ``Path=/``, no ``Domain`` and
    ``SameSite=Lax``. Every combination a browser would silently refuse is a
    :class:`ConfigError` here instead.

    Left unset, the names follow the mode: ``__Host-tf_access`` and
    ``__Host-tf_refresh``, or ``tf_access`` and ``tf_refresh`` when
    ``insecure_http_for_local_development`` is set (the ``__Host-`` prefix
    requires ``Secure``). Names chosen explicitly are kept as given; a plain
    name is allowed, and still gets ``Secure``.

    ``insecure_http_for_local_development=True`` is the only way to drop
    ``Secure``, for serving over plain ``http://localhost``. Never set it in
    production: the cookies would then travel over unencrypted connections.
    :meth:`local_development` builds that policy.
    """

    access_name: str = _ModeDefault(_SECURE_ACCESS)
    """Name of the access-token cookie."""
    refresh_name: str = _ModeDefault(_SECURE_REFRESH)
    """Name of the refresh-token cookie."""
    same_site: SameSite = SameSite.LAX
    """The ``SameSite`` attribute of both cookies."""
    insecure_http_for_local_development: bool = False
    """Drop ``Secure`` so that cookies work over plain HTTP. Development only."""
    domain: str | None = None
    """``Domain`` attribute, to share the cookies with subdomains; ``None`` keeps
    them on the exact host. Not allowed with ``__Host-`` names."""
    path: str = "/"
    """``Path`` attribute. Must be ``/`` with ``__Host-`` names."""

    # Derived once, so that rendering and reading do no string building per call.
    _attributes: str = field(init=False, repr=False, compare=False)
    _access_key: str = field(init=False, repr=False, compare=False)
    _refresh_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        insecure = self.insecure_http_for_local_development
        if not isinstance(insecure, bool):
            raise ConfigError(
                f"insecure_http_for_local_development must be True or False, not {insecure!r}"
            )
        if not isinstance(self.same_site, SameSite):
            raise ConfigError(
                f"same_site must be a SameSite member such as SameSite.LAX, not {self.same_site!r}"
            )
        secure = not insecure
        if type(self.access_name) is _ModeDefault:
            object.__setattr__(self, "access_name", _SECURE_ACCESS if secure else _LOCAL_ACCESS)
        if type(self.refresh_name) is _ModeDefault:
            object.__setattr__(self, "refresh_name", _SECURE_REFRESH if secure else _LOCAL_REFRESH)

        domain = self.domain
        if domain is not None and (
            not isinstance(domain, str) or not _DOMAIN.fullmatch(domain) or len(domain) > 253
        ):
            hint = (
                "drop the leading '.' (browsers ignore it)"
                if isinstance(domain, str) and domain.startswith(".")
                else "use a host name such as 'example.com', or None"
            )
            raise ConfigError(f"domain {domain!r} is not a valid cookie domain: {hint}")
        path = self.path
        if not isinstance(path, str) or not _PATH.fullmatch(path):
            raise ConfigError(
                f"path {path!r} is not a valid cookie path: start it with '/' and use visible "
                "ASCII without ';' or ','; '/' covers the whole site"
            )
        _check_name(self.access_name, "access_name", secure, domain, path)
        _check_name(self.refresh_name, "refresh_name", secure, domain, path)
        if self.access_name == self.refresh_name:
            raise ConfigError(
                f"access_name and refresh_name are both {self.access_name!r}: give the two "
                "cookies different names"
            )
        if self.same_site is SameSite.NONE and not secure:
            raise ConfigError(
                "same_site=SameSite.NONE requires Secure, which "
                "insecure_http_for_local_development=True drops: browsers would refuse the "
                "cookies; use SameSite.LAX for local development"
            )

        attributes = f"; Path={path}"
        if domain is not None:
            attributes += f"; Domain={domain}"
        if secure:
            attributes += "; Secure"
        attributes += f"; HttpOnly; SameSite={self.same_site.value}"
        object.__setattr__(self, "_attributes", attributes)
        object.__setattr__(self, "_access_key", self.access_name + "=")
        object.__setattr__(self, "_refresh_key", self.refresh_name + "=")

    @classmethod
    def local_development(cls) -> CookiePolicy:
        """The policy for plain ``http://localhost``: no ``Secure``, plain names.

        The cookies are ``tf_access`` and ``tf_refresh``, ``HttpOnly``,
        ``Path=/``, ``SameSite=Lax``. Never use it in production.
        """
        return cls(insecure_http_for_local_development=True)

    @property
    def secure(self) -> bool:
        """Whether the cookies carry the ``Secure`` attribute."""
        return not self.insecure_http_for_local_development

    @property
    def names(self) -> tuple[str, str]:
        """``(access_name, refresh_name)``, in the order the readers report them."""
        return self.access_name, self.refresh_name


# -- writing -------------------------------------------------------------------


def _check_rendered_name(name: str, policy: CookiePolicy) -> None:
    # The policy's own names were checked at construction; only others need it.
    if name != policy.access_name and name != policy.refresh_name:
        _check_name(name, "cookie name", policy.secure, policy.domain, policy.path)


def render_set_cookie(name: str, value: str, *, max_age: int, policy: CookiePolicy) -> str:
    """One ``Set-Cookie`` header value that stores ``value`` under ``name``.

    For the default policy::

        __Host-tf_access=<value>; Max-Age=120; Path=/; Secure; HttpOnly; SameSite=Lax

    ``name`` is normally ``policy.access_name`` or ``policy.refresh_name``.
    ``max_age`` is in seconds; a negative one is sent as ``0``. It only tells
    the browser when to discard the cookie: expiry is enforced by the claims
    sealed inside the token.

    Raises :class:`ValueError` if ``value`` is not RFC 6265 cookie-octets
    (tokens are base64url, so this is a programming error, never client input)
    or if ``name`` is not valid under ``policy`` (:class:`ConfigError`), and
    :class:`TypeError` if ``max_age`` is not an ``int``.
    """
    _check_rendered_name(name, policy)
    if not isinstance(value, str) or not _COOKIE_OCTETS.fullmatch(value):
        raise ValueError(
            f"cookie {name!r}: the value must be RFC 6265 cookie-octets (visible ASCII "
            "without space, '\"', ',', ';' or '\\'); encode it, e.g. as base64url"
        )
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise TypeError(f"max_age must be whole seconds (int), not {max_age!r}")
    return f"{name}={value}; Max-Age={max_age if max_age > 0 else 0}{policy._attributes}"


def render_clear_cookie(name: str, policy: CookiePolicy) -> str:
    """One ``Set-Cookie`` header value that makes the browser delete ``name``.

    An empty value with ``Max-Age=0`` and otherwise the same attributes as
    :func:`render_set_cookie`: a browser deletes a cookie only when name,
    ``Domain`` and ``Path`` all match, and refuses ``__Host-`` names without
    ``Secure``, so the attributes cannot be omitted.
    """
    _check_rendered_name(name, policy)
    return f"{name}=; Max-Age=0{policy._attributes}"


# -- reading -------------------------------------------------------------------


def find_cookie(header: str, key: str) -> CookieValue:
    """The value of the one pair that starts with ``key`` (a token name plus ``=``),
    as :func:`read_auth_cookies` reports it (:attr:`CookieFault.OVERSIZE` for a
    header longer than :data:`MAX_COOKIE_HEADER_BYTES`). The flow's access path
    calls it directly, with the policy's key: no frame in between.

    Equivalent to splitting the header on ';' as the module docstring says,
    but driven by C-level ``str.find``, so that the cost depends on how often
    ``key`` occurs rather than on how many pairs there are: a header of 16 KiB
    of semicolons is one failed ``find``.
    """
    if len(header) > MAX_COOKIE_HEADER_BYTES:
        return CookieFault.OVERSIZE
    # Fast path for the usual header: the key occurs once, right after "; " or
    # at the start. Same answer as the general loop below, a third of its cost.
    # partition and ``in`` rather than find(key, start) and startswith: in
    # CPython 3.11 each call with positions parses an argument tuple, which
    # cost more than the copies (a header is at most 16 KiB).
    before, sep, rest = header.partition(key)
    if not sep:
        return None
    if (not before or before[-2:] == "; ") and key not in rest:
        value = rest.partition(";")[0]
        if value and value[-1] not in _OWS and value[0] != '"':
            return value
    pos = len(before)
    step = len(key)
    found: str | None = None
    lo = 0  # always the start of a ';'-segment
    while pos >= 0:
        # An occurrence starts a pair only if nothing but spaces or tabs lies
        # between it and the start of its segment. Only the first occurrence
        # in a segment can, so after looking at it the scan jumps to the next
        # segment: every character is visited a bounded number of times, which
        # keeps the loop linear even for "a=a=a=..." with a one-letter name.
        semi = header.rfind(";", lo, pos)
        start = semi + 1 if semi >= 0 else lo
        end = header.find(";", pos + step)
        if start == pos or not header[start:pos].strip(_OWS):
            if found is not None:
                return CookieFault.AMBIGUOUS
            found = header[pos + step : end] if end >= 0 else header[pos + step :]
        if end < 0:
            break
        lo = end + 1
        pos = header.find(key, lo)
    if found is None:
        return None
    found = found.rstrip(_OWS)
    if len(found) >= 2 and found[0] == '"' and found[-1] == '"':
        return found[1:-1]
    return found


def read_auth_cookies(header: str, policy: CookiePolicy) -> tuple[CookieValue, CookieValue]:
    """Read the two auth cookies from a raw ``Cookie`` request header.

    Returns ``(access, refresh)``; each is the cookie's value, ``None`` if it
    was not sent, :attr:`CookieFault.AMBIGUOUS` if its name appeared more than
    once, or :attr:`CookieFault.OVERSIZE` (for both) if the header is longer
    than :data:`MAX_COOKIE_HEADER_BYTES`. Never raises on any header text.

    Parsing follows the rules in this module's docstring; other cookies are
    not parsed at all. Pass ``""`` when the request has no ``Cookie`` header.
    """
    return find_cookie(header, policy._access_key), find_cookie(header, policy._refresh_key)


def read_refresh_cookie(header: str, policy: CookiePolicy) -> CookieValue:
    """The refresh cookie alone, as :func:`read_auth_cookies` would report it."""
    return find_cookie(header, policy._refresh_key)


CANDIDATE_SCAN_LIMIT: Final = 4 * MAX_COOKIE_HEADER_BYTES
"""How much of a Cookie header a logout or login searches for copies of an auth cookie."""


def auth_cookie_candidates(header: str, name: str) -> list[str]:
    """Every value sent under ``name`` in the first 64 KiB of the header.

    For logouts and explicit logins only. :func:`read_auth_cookies` refuses a
    duplicated or oversized auth cookie, which is right for authentication.
    A logout must not be defeated that way (a sibling subdomain can plant
    copies, or bloat the header): every candidate is tried, and whatever
    session any of them names ends. The scan is bounded (the first 64 KiB)
    and linear, like :func:`find_cookie`; the caller opens each distinct value once.
    """
    header = header[:CANDIDATE_SCAN_LIMIT]
    key = name + "="
    step = len(key)
    found: list[str] = []
    lo = 0  # always the start of a ';'-segment
    pos = header.find(key)
    while pos >= 0:
        semi = header.rfind(";", lo, pos)
        start = semi + 1 if semi >= 0 else lo
        end = header.find(";", pos + step)
        if start == pos or not header[start:pos].strip(_OWS):
            value = (header[pos + step : end] if end >= 0 else header[pos + step :]).rstrip(_OWS)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            found.append(value)
        if end < 0:
            break
        lo = end + 1
        pos = header.find(key, lo)
    return found


def read_auth_cookies_from_mapping(
    cookies: Mapping[str, str], policy: CookiePolicy
) -> tuple[str | None, str | None]:
    """Read the two auth cookies from cookies the host's framework already parsed.

    Returns ``(access, refresh)`` like :func:`read_auth_cookies`, values as the
    framework gave them. A mapping cannot show a name twice, so the result is
    never :attr:`CookieFault.AMBIGUOUS`: prefer :func:`read_auth_cookies` with
    the raw header when the framework exposes it.
    """
    return cookies.get(policy.access_name), cookies.get(policy.refresh_name)


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a raw ``Cookie`` request header into ``{name: value}``, for hosts.

    Follows the rules in this module's docstring. When a name appears more
    than once, the first occurrence wins: browsers send cookies with longer
    (more specific) paths first (RFC 6265 section 5.4), and that is the one
    the application at that path set. Use :func:`read_auth_cookies` for the
    auth cookies, which refuses duplicates instead.

    Raises :class:`CookieHeaderTooLarge` (a :class:`ValueError`) if the header
    is longer than :data:`MAX_COOKIE_HEADER_BYTES`; never raises otherwise.
    Time is linear in the header's length, but unlike :func:`read_auth_cookies`
    it visits every pair: keep it off the per-request path.
    """
    if len(header) > MAX_COOKIE_HEADER_BYTES:
        raise CookieHeaderTooLarge(len(header))
    cookies: dict[str, str] = {}
    is_token = _TOKEN_CHARS.issuperset
    # Written for the worst case, a header of thousands of tiny pieces: the
    # cheapest tests come first, and stripping the name on the left and the
    # value on the right is the same as stripping the piece on both ends,
    # since spaces inside a pair only ever make the name a non-token.
    for piece in header.split(";"):
        if "=" not in piece:
            continue
        name, _, value = piece.partition("=")
        name = name.lstrip(_OWS)
        if not name or name in cookies or not is_token(name):
            continue
        value = value.rstrip(_OWS)
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies
