"""Auth cookies: policy validation, Set-Cookie rendering, Cookie header reading."""

from __future__ import annotations

import dataclasses
import random
import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tokenflow._cookies import (
    MAX_COOKIE_HEADER_BYTES,
    CookieFault,
    CookieHeaderTooLarge,
    CookiePolicy,
    CookieValue,
    SameSite,
    parse_cookie_header,
    read_auth_cookies,
    read_auth_cookies_from_mapping,
    render_clear_cookie,
    render_set_cookie,
)
from tokenflow._errors import ConfigError

ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
POLICY = CookiePolicy()
LOCAL = CookiePolicy.local_development()
B64URL = string.ascii_letters + string.digits + "-_"

# What a browser sends on a typical request: analytics, preferences, both tokens.
BROWSER_HEADER = (
    "_ga=GA1.1.1234567890.1700000000; theme=dark; "
    f"{ACCESS}=AQZrN3FtMngAAAA-access_token; {REFRESH}=AQZrN3FtMngBBBB_refresh_token; "
    "_gid=GA1.2.98765.1700000000; prefs=eyJsYW5nIjoiZW4ifQ"
)


def oracle(header: str, name: str) -> CookieValue:
    """The reading rules of the module docstring, written the obvious way."""
    if len(header) > MAX_COOKIE_HEADER_BYTES:
        return CookieFault.OVERSIZE
    values = []
    for piece in header.split(";"):
        key, sep, value = piece.strip(" \t").partition("=")
        if sep and key == name:
            if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
                value = value[1:-1]
            values.append(value)
    if len(values) > 1:
        return CookieFault.AMBIGUOUS
    return values[0] if values else None


# -- policy ----------------------------------------------------------------------


def test_default_policy_is_secure_with_host_prefixed_names() -> None:
    assert POLICY.names == (ACCESS, REFRESH)
    assert POLICY.secure
    assert POLICY.same_site is SameSite.LAX
    assert POLICY.domain is None
    assert POLICY.path == "/"


def test_local_development_drops_secure_and_uses_plain_names() -> None:
    assert LOCAL.names == ("tf_access", "tf_refresh")
    assert not LOCAL.secure
    assert CookiePolicy(insecure_http_for_local_development=True) == LOCAL


def test_unset_names_follow_the_mode_but_explicit_names_are_kept() -> None:
    assert CookiePolicy(refresh_name="__Secure-r").names == (ACCESS, "__Secure-r")
    assert CookiePolicy(access_name="sid").names == ("sid", REFRESH)
    local = CookiePolicy(insecure_http_for_local_development=True, access_name="dev_a")
    assert local.names == ("dev_a", "tf_refresh")


def test_plain_names_are_allowed_explicitly_and_keep_secure() -> None:
    policy = CookiePolicy(access_name="a", refresh_name="r", domain="example.com")
    assert render_set_cookie("a", "v", max_age=1, policy=policy) == (
        "a=v; Max-Age=1; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
    )


def test_secure_prefix_names_may_have_a_domain_and_path() -> None:
    policy = CookiePolicy(
        access_name="__Secure-a", refresh_name="__Secure-r", domain="example.com", path="/app"
    )
    assert render_clear_cookie("__Secure-r", policy) == (
        "__Secure-r=; Max-Age=0; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
    )


def test_policy_is_a_frozen_hashable_value() -> None:
    assert CookiePolicy() == POLICY
    assert hash(CookiePolicy()) == hash(POLICY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.path = "/x"  # type: ignore[misc]
    assert dataclasses.replace(POLICY, same_site=SameSite.STRICT).same_site is SameSite.STRICT


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"access_name": "tf access"}, "letters, digits"),
        ({"access_name": "tf;access"}, "letters, digits"),
        ({"refresh_name": "tf=refresh"}, "letters, digits"),
        ({"refresh_name": ""}, "letters, digits"),
        ({"access_name": "jéton"}, "non-ASCII"),
        ({"access_name": '"quoted"'}, "quotes"),
        ({"access_name": 7}, "letters, digits"),
        ({"access_name": "same", "refresh_name": "same"}, "different names"),
        ({"domain": "example.com"}, "set domain=None"),
        ({"path": "/api"}, "set path='/'"),
        ({"access_name": "__host-a", "path": "/api"}, "set path='/'"),
        ({"insecure_http_for_local_development": True, "access_name": ACCESS}, "plain name"),
        ({"insecure_http_for_local_development": True, "refresh_name": "__Secure-r"}, "plain"),
        ({"insecure_http_for_local_development": True, "access_name": "__HOST-a"}, "plain"),
        ({"insecure_http_for_local_development": True, "access_name": "__Http-a"}, "plain"),
        (
            {"insecure_http_for_local_development": True, "same_site": SameSite.NONE},
            "use SameSite.LAX",
        ),
        ({"same_site": "Lax"}, "SameSite.LAX"),
        ({"insecure_http_for_local_development": 1}, "True or False"),
        ({"access_name": "a", "refresh_name": "r", "domain": ".example.com"}, "leading '.'"),
        ({"access_name": "a", "refresh_name": "r", "domain": "example.com;x"}, "host name"),
        ({"access_name": "a", "refresh_name": "r", "domain": "ex ample.com"}, "host name"),
        ({"access_name": "a", "refresh_name": "r", "domain": ""}, "host name"),
        ({"access_name": "a", "refresh_name": "r", "path": "app"}, "start it with '/'"),
        ({"access_name": "a", "refresh_name": "r", "path": "/a;b"}, "without ';'"),
        ({"access_name": "a", "refresh_name": "r", "path": "/a b"}, "visible ASCII"),
    ],
)
def test_impossible_policies_raise_config_error_saying_how_to_fix(
    kwargs: dict[str, object], fix: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(fix)):
        CookiePolicy(**kwargs)  # type: ignore[arg-type]


def test_samesite_none_is_allowed_with_secure() -> None:
    assert CookiePolicy(same_site=SameSite.NONE).same_site is SameSite.NONE


def test_switching_an_explicit_secure_policy_to_insecure_names_the_fix() -> None:
    # replace() passes the resolved __Host- names explicitly: refuse, pointing the way.
    with pytest.raises(ConfigError, match="local_development"):
        dataclasses.replace(POLICY, insecure_http_for_local_development=True)


# -- rendering -------------------------------------------------------------------


def test_render_default_policy_exact() -> None:
    assert render_set_cookie(ACCESS, "tok-en_1", max_age=120, policy=POLICY) == (
        "__Host-tf_access=tok-en_1; Max-Age=120; Path=/; Secure; HttpOnly; SameSite=Lax"
    )
    assert render_set_cookie(REFRESH, "r", max_age=1800, policy=POLICY) == (
        "__Host-tf_refresh=r; Max-Age=1800; Path=/; Secure; HttpOnly; SameSite=Lax"
    )


def test_render_local_development_exact() -> None:
    assert render_set_cookie("tf_access", "tok", max_age=120, policy=LOCAL) == (
        "tf_access=tok; Max-Age=120; Path=/; HttpOnly; SameSite=Lax"
    )
    assert render_clear_cookie("tf_refresh", LOCAL) == (
        "tf_refresh=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    )


@pytest.mark.parametrize(
    ("same_site", "text"),
    [(SameSite.LAX, "Lax"), (SameSite.STRICT, "Strict"), (SameSite.NONE, "None")],
)
def test_render_same_site_spelling(same_site: SameSite, text: str) -> None:
    policy = CookiePolicy(same_site=same_site)
    assert render_set_cookie(ACCESS, "v", max_age=5, policy=policy).endswith(
        f"; Secure; HttpOnly; SameSite={text}"
    )


def test_negative_max_age_is_clamped_to_zero() -> None:
    assert render_set_cookie(ACCESS, "v", max_age=-30, policy=POLICY).startswith(
        "__Host-tf_access=v; Max-Age=0; "
    )


@pytest.mark.parametrize(
    "policy", [POLICY, LOCAL, CookiePolicy(access_name="a", refresh_name="r", domain="x.io")]
)
def test_clearing_cookie_has_same_attributes_and_max_age_zero(policy: CookiePolicy) -> None:
    for name in policy.names:
        cleared = render_clear_cookie(name, policy)
        stored = render_set_cookie(name, "value", max_age=77, policy=policy)
        assert cleared.startswith(f"{name}=; Max-Age=0; ")
        assert cleared.split("; ")[2:] == stored.split("; ")[2:]
        assert "HttpOnly" in cleared.split("; ")


@pytest.mark.parametrize(
    "value", ['"quoted"', "a b", "a;b", "a,b", "a\\b", "jéton", "a\x00b", "line\r\nSet-Cookie: x"]
)
def test_render_refuses_values_that_are_not_cookie_octets(value: str) -> None:
    with pytest.raises(ValueError, match="cookie-octets"):
        render_set_cookie(ACCESS, value, max_age=1, policy=POLICY)


@pytest.mark.parametrize("max_age", [1.5, True, "60", None])
def test_render_refuses_non_integer_max_age(max_age: object) -> None:
    with pytest.raises(TypeError, match="whole seconds"):
        render_set_cookie(ACCESS, "v", max_age=max_age, policy=POLICY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "policy"),
    [("bad name", POLICY), ("a;b", POLICY), ("__Host-x", LOCAL), ("__Secure-x", LOCAL)],
)
def test_render_refuses_names_browsers_would_drop(name: str, policy: CookiePolicy) -> None:
    with pytest.raises(ValueError, match="cookie name"):
        render_set_cookie(name, "v", max_age=1, policy=policy)
    with pytest.raises(ValueError, match="cookie name"):
        render_clear_cookie(name, policy)


# -- reading: examples -----------------------------------------------------------


def test_reads_both_tokens_from_a_browser_header() -> None:
    assert read_auth_cookies(BROWSER_HEADER, POLICY) == (
        "AQZrN3FtMngAAAA-access_token",
        "AQZrN3FtMngBBBB_refresh_token",
    )


@pytest.mark.parametrize("header", ["", "theme=dark", ";", "   ", f"x={ACCESS}"])
def test_absent_cookies_read_as_none(header: str) -> None:
    assert read_auth_cookies(header, POLICY) == (None, None)


def test_access_only() -> None:
    assert read_auth_cookies(f"{ACCESS}=a", POLICY) == ("a", None)


def test_local_development_names() -> None:
    header = f"tf_access=a; {ACCESS}=other; tf_refresh=r"
    assert read_auth_cookies(header, LOCAL) == ("a", "r")


@pytest.mark.parametrize(
    "header",
    [
        f"{ACCESS}=a; {ACCESS}=b",
        f"{ACCESS}=same; {ACCESS}=same",
        f'{ACCESS}=a;{ACCESS}="a"',
        f"{ACCESS}=a; theme=dark; \t{ACCESS}=",
        f"{ACCESS}=; {ACCESS}=",
    ],
)
def test_a_repeated_name_is_ambiguous(header: str) -> None:
    access, refresh = read_auth_cookies(header, POLICY)
    assert access is CookieFault.AMBIGUOUS
    assert refresh is None


def test_ambiguity_is_per_name() -> None:
    header = f"{REFRESH}=r1; {ACCESS}=a; {REFRESH}=r2"
    assert read_auth_cookies(header, POLICY) == ("a", CookieFault.AMBIGUOUS)


def test_malformed_pairs_are_skipped_without_hiding_later_ones() -> None:
    header = (
        'junk; =nameless; ;; a b=c; "quoted name"=x; \\; ===; x=";'
        f"{ACCESS}=tok; {{bad}}=1; {REFRESH}=ref"
    )
    assert read_auth_cookies(header, POLICY) == ("tok", "ref")
    assert parse_cookie_header(header) == {"x": '"', ACCESS: "tok", REFRESH: "ref"}


@pytest.mark.parametrize(
    "impostor",
    [
        "__host-tf_access",
        "__HOST-TF_ACCESS",
        "__Host-tf_access2",
        "x__Host-tf_access",
        "__Host-tf_acces",
        "__Host-tf_access ",
        "__Host-tf_access\t",
        "\v__Host-tf_access",
        "__Host-tf_access\x00",
        "Host-tf_access",
    ],
)
def test_names_match_exactly(impostor: str) -> None:
    assert read_auth_cookies(f"{impostor}=evil", POLICY) == (None, None)
    # ...and an impostor next to the real cookie does not make it ambiguous.
    assert read_auth_cookies(f"{impostor}=evil; {ACCESS}=good", POLICY) == ("good", None)
    assert read_auth_cookies(f"{ACCESS}=good; {impostor}=evil", POLICY) == ("good", None)


def test_name_inside_another_cookies_value_is_not_a_pair() -> None:
    header = f"x={ACCESS}=evil; y=a{ACCESS}=evil; {ACCESS}=good{ACCESS}=tail"
    assert read_auth_cookies(header, POLICY) == (f"good{ACCESS}=tail", None)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (f"{ACCESS}=v", "v"),
        (f"  {ACCESS}=v  ", "v"),
        (f"\t{ACCESS}=v\t;x=1", "v"),
        (f"a=1;{ACCESS}=v;b=2", "v"),
        (f"a=1; \t {ACCESS}=v \t ; b=2", "v"),
        (f"{ACCESS}=", ""),
        (f"{ACCESS}= v", " v"),
        (f"{ACCESS}=a b", "a b"),
        (f"{ACCESS}=v=w==", "v=w=="),
        (f'{ACCESS}="v"', "v"),
        (f'{ACCESS}="v" ; x=1', "v"),
        (f'{ACCESS}=""', ""),
        (f'{ACCESS}="', '"'),
        (f'{ACCESS}="v', '"v'),
        (f'{ACCESS}=v"', 'v"'),
        (f'{ACCESS}=""v""', '"v"'),
        (f'{ACCESS}="a;b"', '"a'),
    ],
)
def test_value_whitespace_and_quotes(header: str, value: str) -> None:
    assert read_auth_cookies(header, POLICY) == (value, None)
    assert parse_cookie_header(header)[ACCESS] == value


def test_oversize_header_is_refused_without_scanning() -> None:
    at_limit = f"{ACCESS}=v; pad=" + "x" * (MAX_COOKIE_HEADER_BYTES - len(ACCESS) - 8)
    assert len(at_limit) == MAX_COOKIE_HEADER_BYTES
    assert read_auth_cookies(at_limit, POLICY) == ("v", None)
    assert parse_cookie_header(at_limit)[ACCESS] == "v"

    over = at_limit + "x"
    assert read_auth_cookies(over, POLICY) == (CookieFault.OVERSIZE, CookieFault.OVERSIZE)
    with pytest.raises(CookieHeaderTooLarge, match="16384") as raised:
        parse_cookie_header(over)
    assert isinstance(raised.value, ValueError)
    assert raised.value.size == MAX_COOKIE_HEADER_BYTES + 1


@pytest.mark.parametrize(
    "header",
    [
        '"' * MAX_COOKIE_HEADER_BYTES,
        "\\" * MAX_COOKIE_HEADER_BYTES,
        ";" * MAX_COOKIE_HEADER_BYTES,
        "=" * MAX_COOKIE_HEADER_BYTES,
        " " * MAX_COOKIE_HEADER_BYTES,
        (f"{ACCESS}=" * MAX_COOKIE_HEADER_BYTES)[:MAX_COOKIE_HEADER_BYTES],
        (f"x{ACCESS}=;" * MAX_COOKIE_HEADER_BYTES)[:MAX_COOKIE_HEADER_BYTES],
        " " * (MAX_COOKIE_HEADER_BYTES - 20) + f"{ACCESS}=1",
    ],
)
def test_pathological_headers_match_the_rules(header: str) -> None:
    assert read_auth_cookies(header, POLICY) == (oracle(header, ACCESS), oracle(header, REFRESH))


def test_mapping_input() -> None:
    cookies = {ACCESS: "a", "theme": "dark", "__host-tf_refresh": "nope"}
    assert read_auth_cookies_from_mapping(cookies, POLICY) == ("a", None)
    assert read_auth_cookies_from_mapping({}, POLICY) == (None, None)
    assert read_auth_cookies_from_mapping({"tf_refresh": "r"}, LOCAL) == (None, "r")
    assert read_auth_cookies_from_mapping(parse_cookie_header(BROWSER_HEADER), POLICY) == (
        read_auth_cookies(BROWSER_HEADER, POLICY)
    )


def test_parse_cookie_header_first_occurrence_wins() -> None:
    assert parse_cookie_header('a=1; b="2"; a=3; c=; b=4') == {"a": "1", "b": "2", "c": ""}


def test_parse_cookie_header_keeps_header_order_and_case() -> None:
    parsed = parse_cookie_header(BROWSER_HEADER + "; Theme=light")
    assert list(parsed) == ["_ga", "theme", ACCESS, REFRESH, "_gid", "prefs", "Theme"]
    assert parsed["theme"] == "dark"
    assert parsed["Theme"] == "light"


# -- reading: properties ---------------------------------------------------------

# Text biased toward what matters: separators, quotes, whitespace and the names.
_FRAGMENTS = st.sampled_from(
    [";", "; ", "=", '"', " ", "\t", "\\", ",", ACCESS, REFRESH, "__host-tf_access", "x", "é"]
)
_HEADERS = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=4)), max_size=30).map("".join),
)


@given(_HEADERS)
@example(f" {ACCESS}= a ;{ACCESS}")
@example(f"{ACCESS}={ACCESS}=;{ACCESS}")
@example(f"x; {ACCESS}=1 ; {REFRESH}=2; {ACCESS}x=")
def test_any_header_reads_as_the_rules_say(header: str) -> None:
    access, refresh = read_auth_cookies(header, POLICY)
    assert access == oracle(header, ACCESS)
    assert refresh == oracle(header, REFRESH)
    parsed = parse_cookie_header(header)
    for name, value in parsed.items():
        assert name
        assert set(name) <= set("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
        found = oracle(header, name)
        assert found == value or found is CookieFault.AMBIGUOUS


@given(_HEADERS, st.sampled_from([ACCESS, REFRESH]))
def test_a_value_is_reported_only_for_an_exact_pair(header: str, name: str) -> None:
    access, refresh = read_auth_cookies(header, POLICY)
    value = access if name == ACCESS else refresh
    if isinstance(value, str):
        pairs = [p.strip(" \t") for p in header.split(";")]
        assert sum(p.startswith(name + "=") for p in pairs) == 1


_TOKEN_VALUES = st.text(B64URL, max_size=400)
_OTHER_COOKIES = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=8),
    st.text(B64URL + ".!*", max_size=20),
    max_size=6,
)


@given(_TOKEN_VALUES, _TOKEN_VALUES, _OTHER_COOKIES, st.randoms(use_true_random=False))
def test_round_trip_rendered_cookies_through_a_header(
    access: str, refresh: str, others: dict[str, str], rnd: random.Random
) -> None:
    policy = rnd.choice([POLICY, LOCAL])
    pairs = [
        render_set_cookie(policy.access_name, access, max_age=120, policy=policy),
        render_set_cookie(policy.refresh_name, refresh, max_age=1800, policy=policy),
    ]
    # A browser sends back only name=value, in an order of its choosing.
    sent = [p.split(";", 1)[0] for p in pairs] + [f"{k}={v}" for k, v in others.items()]
    rnd.shuffle(sent)
    header = rnd.choice(["; ", ";"]).join(sent)
    assert read_auth_cookies(header, policy) == (access, refresh)
    parsed = parse_cookie_header(header)
    assert read_auth_cookies_from_mapping(parsed, policy) == (access, refresh)
    assert {k: parsed[k] for k in others} == others
