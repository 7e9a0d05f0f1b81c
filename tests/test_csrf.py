"""Cross-origin request protection, after Go 1.25's net/http.CrossOriginProtection."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _review import ADA_LOGIN, ReviewWorld
from tokenflow import (
    Forbidden,
    Request,
)
from tokenflow._csrf import CsrfVerdict, check_cross_origin, normalize_trusted_origins
from tokenflow._errors import ConfigError

V = CsrfVerdict
HOST = "app.example.com"
SELF = "https://app.example.com"
PARTNER = "https://partner.example.org"
TRUSTED = normalize_trusted_origins([PARTNER, "capacitor://localhost"])
EVIL = "https://evil.example.net"

# (method, Sec-Fetch-Site, Origin, Host, verdict): every branch of the algorithm.
CASES = [
    # 1. Safe methods pass whatever the headers say.
    ("GET", "cross-site", EVIL, HOST, V.SAFE_METHOD),
    ("HEAD", "cross-site", EVIL, HOST, V.SAFE_METHOD),
    ("OPTIONS", None, EVIL, HOST, V.SAFE_METHOD),
    # 2. Sec-Fetch-Site present.
    ("POST", "same-origin", None, HOST, V.SAME_ORIGIN),
    ("POST", "same-origin", EVIL, HOST, V.SAME_ORIGIN),
    ("DELETE", "none", None, HOST, V.USER_INITIATED),
    ("POST", "cross-site", PARTNER, HOST, V.TRUSTED_ORIGIN),
    ("PUT", "same-site", "capacitor://localhost", HOST, V.TRUSTED_ORIGIN),
    ("POST", "cross-site", EVIL, HOST, V.CROSS_ORIGIN),
    ("POST", "cross-site", None, HOST, V.CROSS_ORIGIN),
    ("PATCH", "same-site", "https://other.example.com", HOST, V.CROSS_ORIGIN),
    # Sec-Fetch-Site wins over Origin: a matching Host does not rescue a cross-site request.
    ("POST", "cross-site", SELF, HOST, V.CROSS_ORIGIN),
    # Unknown or miscased values are not "same-origin".
    ("POST", "Same-Origin", None, HOST, V.CROSS_ORIGIN),
    ("POST", "same-origin, cross-site", None, HOST, V.CROSS_ORIGIN),
    ("POST", "bogus", PARTNER, HOST, V.TRUSTED_ORIGIN),
    # 3. No Sec-Fetch-Site and no Origin: not a browser.
    ("POST", None, None, HOST, V.NOT_A_BROWSER),
    ("POST", "", "", HOST, V.NOT_A_BROWSER),
    ("POST", None, None, None, V.NOT_A_BROWSER),
    # 4. Older browser: Origin against Host (scheme unchecked, port checked).
    ("POST", None, SELF, HOST, V.ORIGIN_MATCHES_HOST),
    ("POST", "", SELF, HOST, V.ORIGIN_MATCHES_HOST),
    ("POST", None, "http://app.example.com", HOST, V.ORIGIN_MATCHES_HOST),
    ("POST", None, "https://app.example.com:8443", "app.example.com:8443", V.ORIGIN_MATCHES_HOST),
    ("POST", None, "http://[::1]:8080", "[::1]:8080", V.ORIGIN_MATCHES_HOST),
    ("POST", None, "https://app.example.com:8443", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, SELF, "app.example.com:443", V.ORIGIN_MISMATCH),
    ("POST", None, "https://example.com", HOST, V.ORIGIN_MISMATCH),
    # Compared exactly, as Go does: browsers send both in lowercase.
    ("POST", None, "https://APP.example.com", HOST, V.ORIGIN_MISMATCH),
    # 5. ...then the trusted origins.
    ("POST", None, PARTNER, HOST, V.TRUSTED_ORIGIN),
    ("POST", None, EVIL, HOST, V.ORIGIN_MISMATCH),
    # Trusted origins match the whole header exactly, as browsers serialize it.
    ("POST", None, "https://PARTNER.example.org", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, PARTNER + "/", HOST, V.ORIGIN_MISMATCH),
    # Garbage Origin values match nothing.
    ("POST", None, "null", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, "null", None, V.ORIGIN_MISMATCH),
    ("POST", None, "null", "", V.ORIGIN_MISMATCH),
    ("POST", None, HOST, HOST, V.ORIGIN_MISMATCH),
    ("POST", None, "https://app.example.com/path", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, "https://user@app.example.com", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, "https://", "", V.ORIGIN_MISMATCH),
    ("POST", None, "://app.example.com", HOST, V.ORIGIN_MISMATCH),
    ("POST", None, "https://app.exämple.com", "app.exämple.com", V.ORIGIN_MISMATCH),
    ("POST", None, SELF, None, V.ORIGIN_MISMATCH),
    # Methods are exact tokens, as in Go: only the uppercase safe three skip the check.
    ("get", "cross-site", EVIL, HOST, V.CROSS_ORIGIN),
    ("TRACE", None, EVIL, HOST, V.ORIGIN_MISMATCH),
    ("", "cross-site", EVIL, HOST, V.CROSS_ORIGIN),
    # Optional whitespace around values, as a server may hand them over.
    ("POST", " same-origin\t", None, HOST, V.SAME_ORIGIN),
    ("POST", None, f" {SELF} ", f"{HOST} ", V.ORIGIN_MATCHES_HOST),
]


@pytest.mark.parametrize(("method", "site", "origin", "host", "verdict"), CASES)
def test_go_algorithm(
    method: str, site: str | None, origin: str | None, host: str | None, verdict: CsrfVerdict
) -> None:
    assert check_cross_origin(method, site, origin, host, TRUSTED) is verdict


def test_allowed_property_separates_the_two_rejections() -> None:
    rejected = {member for member in CsrfVerdict if not member.allowed}
    assert rejected == {V.CROSS_ORIGIN, V.ORIGIN_MISMATCH}


def test_without_trusted_origins_cross_site_requests_are_refused() -> None:
    assert check_cross_origin("POST", "cross-site", PARTNER, HOST, frozenset()) is V.CROSS_ORIGIN
    assert check_cross_origin("POST", None, PARTNER, HOST, frozenset()) is V.ORIGIN_MISMATCH


# -- trusted origins -------------------------------------------------------------


def test_normalize_writes_origins_as_browsers_send_them() -> None:
    assert normalize_trusted_origins(
        [
            "HTTPS://Partner.Example.ORG",
            "https://partner.example.org:443",
            "http://localhost:80",
            "http://localhost:3000",
            "http://LOCALHOST:03000",
            "http://[0:0:0:0:0:0:0:1]:8080",
            "http://[::FFFF:7f00:1]",
            "http://[1:0:2:3:4:5:6:7]",
            "http://[1:0:0:2:0:0:0:3]",
            "capacitor://localhost",
            "https://xn--bcher-kva.example",
            "https://127.0.0.1:8443",
            "https://my_service.internal.",
        ]
    ) == frozenset(
        {
            "https://partner.example.org",
            "http://localhost",
            "http://localhost:3000",
            "http://[::1]:8080",
            "http://[::ffff:7f00:1]",
            "http://[1:0:2:3:4:5:6:7]",
            "http://[1:0:0:2::3]",
            "capacitor://localhost",
            "https://xn--bcher-kva.example",
            "https://127.0.0.1:8443",
            "https://my_service.internal.",
        }
    )


def test_normalize_accepts_any_iterable_and_nothing() -> None:
    assert normalize_trusted_origins(()) == frozenset()
    assert normalize_trusted_origins(o for o in [PARTNER]) == frozenset({PARTNER})


@pytest.mark.parametrize(
    ("origin", "fix"),
    [
        ("https://app.example.com/", "remove the trailing '/'"),
        ("https://app.example.com/login", "no path, query or fragment"),
        ("https://app.example.com?x=1", "no path, query or fragment"),
        ("https://app.example.com#top", "no path, query or fragment"),
        ("https://user:pw@app.example.com", "remove the user information"),
        ("app.example.com", "scheme://host[:port]"),
        ("//app.example.com", "scheme://host[:port]"),
        ("1http://app.example.com", "scheme://host[:port]"),
        ("https://", "host is missing"),
        ("https://:8443", "host is missing"),
        ("https://app..example.com", "not a valid host name"),
        ("https://-app.example.com", "not a valid host name"),
        ("https://app.example.com:", "port must be a number"),
        ("https://app.example.com:0", "port must be a number"),
        ("https://app.example.com:65536", "port must be a number"),
        ("https://app.example.com:https", "port must be a number"),
        ("https://app.example.com:" + "9" * 5000, "port must be a number"),
        ("http://::1:8080", "brackets"),
        ("http://[::1", "IPv6 address is invalid"),
        ("http://[not-ip]:80", "IPv6 address is invalid"),
        ("http://[::1]x", "scheme://host[:port]"),
        ("http://[fe80::1%25eth0]", "zone"),
        ("null", "cannot be trusted"),
        ("NULL", "cannot be trusted"),
        ("*", "wildcards"),
        ("https://*.example.com", "wildcards"),
        ("https://bücher.example", "punycode"),
        (" https://app.example.com", "whitespace"),
        ("https://app.example.com\n", "whitespace"),
        ("", "scheme://host[:port]"),
    ],
)
def test_normalize_refuses_what_is_not_an_origin(origin: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fix)):
        normalize_trusted_origins([origin])


def test_normalize_refuses_a_single_string_and_non_strings() -> None:
    with pytest.raises(ConfigError, match="wrap it in a list"):
        normalize_trusted_origins(PARTNER)
    with pytest.raises(ConfigError, match="not a string"):
        normalize_trusted_origins([b"https://app.example.com"])  # type: ignore[list-item]


# -- properties ------------------------------------------------------------------

_HEADER = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(["same-origin", "none", "cross-site", "same-site", "null", SELF, PARTNER]),
)


@given(st.sampled_from(["GET", "HEAD", "OPTIONS"]), _HEADER, _HEADER, _HEADER)
def test_safe_methods_always_pass(
    method: str, site: str | None, origin: str | None, host: str | None
) -> None:
    assert check_cross_origin(method, site, origin, host, TRUSTED) is V.SAFE_METHOD


@given(st.text(max_size=10), _HEADER, _HEADER, _HEADER)
def test_any_headers_give_a_verdict(
    method: str, site: str | None, origin: str | None, host: str | None
) -> None:
    verdict = check_cross_origin(method, site, origin, host, TRUSTED)
    assert isinstance(verdict, CsrfVerdict)
    # Once a browser names a cross-site sender, only a trusted origin gets through.
    if (
        method not in {"GET", "HEAD", "OPTIONS"}
        and site
        and site.strip(" \t")
        in {
            "cross-site",
            "same-site",
        }
    ):
        assert verdict.allowed == ((origin or "").strip(" \t") in TRUSTED)


_ORIGIN_LIKE = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[A-Za-z][a-z+]{0,5}://[A-Za-z0-9.:_\[\]%/@?#-]{0,20}", fullmatch=True),
)


@given(_ORIGIN_LIKE)
def test_normalize_raises_only_config_error(origin: str) -> None:
    try:
        normalized = normalize_trusted_origins([origin])
    except ConfigError:
        return
    # Whatever is accepted is a fixed point, and matches itself as an Origin header.
    assert normalize_trusted_origins(normalized) == normalized
    (value,) = normalized
    assert check_cross_origin("POST", "cross-site", value, None, normalized) is V.TRUSTED_ORIGIN


# ================================================================== hostile edge cases


# -- login and logout CSRF, whatever the method -----------------------------------


def test_a_cross_site_get_with_credentials_is_forbidden() -> None:
    world = ReviewWorld()
    request = Request(
        method="GET", credentials=ADA_LOGIN, sec_fetch_site="cross-site", host="app.example"
    )
    decision = world.flow.decide(request)
    assert isinstance(decision, Forbidden)
    assert world.store._sessions == {}


def test_a_cross_site_get_logout_is_forbidden_and_revokes_nothing() -> None:
    world = ReviewWorld()
    browser = world.login()
    request = Request(
        method="GET",
        cookie_header=browser.cookie_header(),
        sec_fetch_site="cross-site",
        host="app.example",
    )
    assert isinstance(world.flow.logout(request), Forbidden)
    assert len(world.flow.sessions_of("ada")) == 1
