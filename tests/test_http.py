"""Request.from_asgi / from_wsgi / from_headers: every header the decision needs,
forwarded headers only behind a declared proxy, garbage in -> a Request out."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenflow import (
    ConfigError,
    Flow,
    Forbidden,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory
from tokenflow.web import ForwardedHeaders, TrustedProxies

PEER = ("203.0.113.9", 5000)
PROXIES = TrustedProxies(("10.0.0.0/8", "::1"))


def scope(headers: list[tuple[bytes, bytes]], *, client: Any = PEER) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": headers,
        "client": client,
    }


def test_from_asgi_reads_every_header_the_decision_needs() -> None:
    request = Request.from_asgi(
        scope(
            [
                (b"host", b"app.example"),
                (b"origin", b"https://app.example"),
                (b"sec-fetch-site", b"same-origin"),
                (b"cookie", b"a=1"),
                (b"user-agent", b"Firefox"),
            ]
        )
    )
    assert request.method == "POST"
    assert request.host == "app.example"
    assert request.origin == "https://app.example"
    assert request.sec_fetch_site == "same-origin"
    assert request.cookie_header == "a=1"
    assert request.client_address == "203.0.113.9"
    assert dict(request.metadata) == {"user_agent": "Firefox", "address": "203.0.113.9"}


def test_split_cookie_fields_are_joined_as_http2_requires() -> None:
    # RFC 9113 8.2.3: an HTTP/2 client may send one cookie field per pair.
    request = Request.from_asgi(scope([(b"cookie", b"a=1"), (b"Cookie", b"b=2")]))
    assert request.cookie_header == "a=1; b=2"


def test_header_bytes_are_latin1() -> None:
    request = Request.from_headers("GET", [(b"Host", b"caf\xe9.example")])
    assert request.host == "caf\u00e9.example"


def test_a_cross_site_form_post_is_refused_without_any_glue() -> None:
    flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory())
    request = Request.from_asgi(
        scope([(b"host", b"app.example"), (b"sec-fetch-site", b"cross-site")])
    )
    assert isinstance(flow.decide(request), Forbidden)


def test_a_doubled_origin_fails_closed() -> None:
    # One copy matches Host, the other is the attacker's: neither is picked.
    flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory())
    request = Request.from_headers(
        "POST",
        [("Host", "app.example"), ("Origin", "https://app.example"), ("Origin", "https://evil")],
    )
    assert isinstance(flow.decide(request), Forbidden)


def test_forwarded_headers_are_ignored_without_declared_proxies() -> None:
    request = Request.from_headers(
        "GET",
        {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Host": "evil.example", "Host": "app"},
        peer="10.0.0.2",
    )
    assert request.client_address == "10.0.0.2"
    assert request.host == "app"


def test_forwarded_headers_are_ignored_from_a_peer_that_is_not_a_proxy() -> None:
    request = Request.from_headers(
        "GET",
        {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Host": "evil.example", "Host": "app"},
        peer="203.0.113.7",
        proxies=PROXIES,
    )
    assert request.client_address == "203.0.113.7"
    assert request.host == "app"


def test_behind_a_proxy_the_rightmost_untrusted_address_is_the_client() -> None:
    request = Request.from_headers(
        "GET",
        {
            # The client forged the first entry; 10.1.1.1 is our second proxy.
            "X-Forwarded-For": "1.2.3.4, 198.51.100.1, 10.1.1.1",
            "X-Forwarded-Host": "app.example",
            "Host": "backend:8000",
        },
        peer="10.0.0.2",
        proxies=PROXIES,
    )
    assert request.client_address == "198.51.100.1"
    assert request.host == "app.example"


def test_rfc7239_forwarded_is_read_when_declared() -> None:
    proxies = TrustedProxies(("10.0.0.0/8",), ForwardedHeaders.FORWARDED)
    request = Request.from_headers(
        "GET",
        {
            "Forwarded": 'for=1.2.3.4, for="[2001:db8::7]:4711";host=app.example;proto=https, '
            "for=10.9.9.9",
            "X-Forwarded-For": "5.6.7.8",
            "Host": "backend",
        },
        peer="10.0.0.1",
        proxies=proxies,
    )
    assert request.client_address == "2001:db8::7"
    assert request.host == "app.example"


def test_an_unparsable_hop_names_no_client() -> None:
    request = Request.from_headers(
        "GET", {"X-Forwarded-For": "unknown, 10.0.0.3"}, peer="10.0.0.2", proxies=PROXIES
    )
    assert request.client_address is None


def test_from_wsgi_reads_the_environ() -> None:
    request = Request.from_wsgi(
        {
            "REQUEST_METHOD": "DELETE",
            "REMOTE_ADDR": "::1",
            "HTTP_HOST": "app",
            "HTTP_ORIGIN": "https://app",
            "HTTP_SEC_FETCH_SITE": "same-origin",
            "HTTP_COOKIE": "x=1",
        },
        credentials=PasswordCredentials("u", "p"),
    )
    assert (request.method, request.host, request.origin) == ("DELETE", "app", "https://app")
    assert (request.sec_fetch_site, request.cookie_header) == ("same-origin", "x=1")
    assert request.client_address == "::1"
    assert request.credentials == PasswordCredentials("u", "p")


@pytest.mark.parametrize(
    "call",
    [
        lambda: Request.from_asgi({"type": "websocket", "headers": []}),
        lambda: Request.from_asgi(scope([(b"host",)])),  # type: ignore[list-item]
        lambda: Request.from_asgi(scope([(b"host", 7)])),  # type: ignore[list-item]
        lambda: Request.from_headers("GET", 5),  # type: ignore[arg-type]
        lambda: Request.from_headers("GET", {}, peer=b"1.2.3.4"),  # type: ignore[arg-type]
        lambda: Request.from_headers("GET", {}, proxies=["10.0.0.0/8"]),  # type: ignore[arg-type]
    ],
)
def test_integrator_mistakes_raise_type_error(call: Any) -> None:
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ((), "at least one"),
        ("10.0.0.0/8", "tuple"),
        (("10.0.0.300",), "not an IP address"),
        (("proxy.local",), "not an IP address"),
    ],
)
def test_bad_proxy_configuration_is_a_config_error(networks: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrustedProxies(networks)


# -- properties ----------------------------------------------------------------

HEADER_NAMES = st.sampled_from(
    [
        b"cookie",
        b"origin",
        b"host",
        b"sec-fetch-site",
        b"user-agent",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"forwarded",
        b"Cookie",
        b"X-Other",
    ]
)
HEADERS = st.lists(st.tuples(HEADER_NAMES | st.binary(max_size=12), st.binary(max_size=80)))
CLIENTS = st.none() | st.tuples(st.text(max_size=40) | st.ip_addresses().map(str), st.integers())
_FLOW = Flow(
    KeyRing.generate(),
    MemoryStore(),
    FakeUserDirectory(),
    passwords=FakePasswordVerifier(),
    clock=FakeClock(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HEADERS, CLIENTS, st.booleans(), st.sampled_from(list(ForwardedHeaders)))
def test_any_scope_becomes_a_request_and_a_decision(
    headers: list[tuple[bytes, bytes]], client: Any, behind: bool, family: ForwardedHeaders
) -> None:
    proxies = TrustedProxies(("0.0.0.0/0", "::/0"), family) if behind else None
    request = Request.from_asgi(scope(headers, client=client), proxies=proxies)
    if request.client_address is not None:
        ipaddress.ip_address(request.client_address)
    decision = _FLOW.decide(request)
    assert not isinstance(decision, (Process, Reissue))


ADDRESSES = st.ip_addresses(v=4).filter(lambda ip: not ip.is_private).map(str)
PROXY_HOPS = st.lists(st.integers(0, 255).map(lambda n: f"10.0.3.{n}"), max_size=4)


@given(ADDRESSES, PROXY_HOPS, st.lists(st.text(max_size=20), max_size=4))
def test_forged_entries_left_of_the_client_change_nothing(
    client: str, hops: list[str], forged: list[str]
) -> None:
    chain = [part.replace(",", "") for part in forged] + [client, *hops]
    request = Request.from_headers(
        "GET", {"X-Forwarded-For": ", ".join(chain)}, peer="10.0.0.1", proxies=PROXIES
    )
    assert request.client_address == client


@given(st.text(max_size=200))
def test_any_forwarded_header_gives_an_address_or_none(text: str) -> None:
    proxies = TrustedProxies(("10.0.0.0/8",), ForwardedHeaders.FORWARDED)
    request = Request.from_headers(
        "GET", [("forwarded", text), ("host", "h")], peer="10.0.0.1", proxies=proxies
    )
    address = request.client_address
    assert address is None or address == "10.0.0.1" or address in text or ":" in address


# -- RFC 7239 Forwarded, fail closed ---------------------------------------------------

FORWARDED_PROXIES = TrustedProxies(("10.0.0.0/8",), ForwardedHeaders.FORWARDED)
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENS = st.text(alphabet=TCHARS, min_size=1, max_size=12)
QDTEXT = st.characters(
    codec="latin-1", exclude_characters='"\\', exclude_categories=("Cc",)
) | st.sampled_from("\t ")
QUOTED_TEXT = st.text(alphabet=QDTEXT | st.sampled_from('"\\'), max_size=12)
NAMES = st.sampled_from(["for", "by", "host", "proto", "For", "HOST"]) | TOKENS
OWS = st.sampled_from(["", " ", "\t", "  "])


def quote(value: str) -> str:
    escaped = "".join("\\" + c if c in '"\\' else c for c in value)
    return f'"{escaped}"'


@st.composite
def elements(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """One grammatical forwarded-element and what it means."""
    names = draw(st.lists(NAMES, max_size=4, unique_by=str.lower))
    pairs, meaning = [], {}
    for name in names:
        value = draw(TOKENS | QUOTED_TEXT)
        as_token = bool(value) and all(c in TCHARS for c in value) and draw(st.booleans())
        pairs.append(f"{name}={value if as_token else quote(value)}")
        meaning[name.lower()] = value
    separator = draw(OWS) + ";" + draw(OWS)
    return separator.join(pairs), meaning


@st.composite
def headers(draw: st.DrawFn) -> tuple[str, list[dict[str, str]]]:
    """A grammatical Forwarded header (1#forwarded-element) and its elements."""
    drawn = draw(st.lists(elements(), min_size=1, max_size=5))
    text = ""
    for i, (element, _) in enumerate(drawn):
        if i:
            text += draw(OWS) + "," + draw(OWS)
        text += element
    return draw(OWS) + text + draw(OWS), [meaning for _, meaning in drawn]


@given(headers())
def test_forwarded_grammar_round_trips(header: tuple[str, list[dict[str, str]]]) -> None:
    from tokenflow._http import _forwarded_elements

    text, meaning = header
    assert _forwarded_elements(text) == meaning[-32:]


def forwarded_through_proxy(client_text: str) -> Request:
    """What the client wrote, then the element our proxy appends (its peer)."""
    return Request.from_headers(
        "GET",
        [
            ("forwarded", client_text),
            ("forwarded", 'for=203.0.113.9;host="app.example";proto=https'),
            ("host", "backend.internal"),
        ],
        peer="10.0.0.1",
        proxies=FORWARDED_PROXIES,
    )


@given(headers())
def test_a_grammatical_client_prefix_never_hides_the_proxy_element(
    header: tuple[str, list[dict[str, str]]],
) -> None:
    request = forwarded_through_proxy(header[0])
    assert request.client_address == "203.0.113.9"
    assert request.host == "app.example"


@given(st.text(max_size=60) | st.text(alphabet='for=;,"\\ 1.2.3.4[]:host', max_size=60))
def test_whatever_the_client_writes_it_never_chooses_the_address(client_text: str) -> None:
    request = forwarded_through_proxy(client_text)
    # Either the proxy's element is read, or nothing is believed.
    assert (request.client_address, request.host) in (
        ("203.0.113.9", "app.example"),
        (None, "backend.internal"),
    )


MALFORMED = [
    'for="1.2.3.4',  # unterminated quote: would swallow the proxy's element
    'for="1.2.3.4\\"',  # the closing quote escaped
    "for",  # a pair without "="
    "for=",  # no value
    "=1.2.3.4",  # no name
    "for=1.2.3.4 x",  # stray bytes
    "for=1.2.3.4;for=5.6.7.8",  # a parameter twice in one element
    "for = 1.2.3.4",  # whitespace around "="
    "for=[2001:db8::1]",  # ":" and "[" are not token characters: must be quoted
    "for=1.2.3.4\x00",
]


@pytest.mark.parametrize("client_text", MALFORMED)
def test_a_malformed_element_makes_the_whole_header_untrusted(client_text: str) -> None:
    request = forwarded_through_proxy(client_text)
    assert request.client_address is None
    assert request.host == "backend.internal"


def test_an_unterminated_quote_cannot_take_the_proxy_element() -> None:
    # The client ends its text inside a quoted-string; the proxy's appended
    # element would then be read as part of the client's value.
    request = forwarded_through_proxy('for="198.51.100.66";host="evil.example", for="x')
    assert request.client_address is None
    assert request.host == "backend.internal"
