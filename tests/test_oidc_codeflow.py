"""Sign in with a provider: the OpenID Connect authorization-code flow, end to end
against the loopback fake authorization server, and every misbehaviour of its table."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from tokenflow import (
    AsyncFlow,
    AuthorizationCodeCredentials,
    Flow,
    KeyRing,
    ProviderRedirect,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
    oidc,
)
from tokenflow._transactions import (
    Transaction,
    open_transaction,
    safe_next,
    seal_transaction,
    transaction_cookie_name,
)
from tokenflow.events import LoggedIn, LoginFailed, LoginFailedReason
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import AsyncFakeUserDirectory, FakeUserDirectory
from tokenflow.testing.oidc import FakeAuthorizationServer, FakeClient, Misbehaviour

CLIENT_ID = "tokenflow-app"
SECRET = "s3cret-value-for-tests"
REDIRECT = "http://127.0.0.1:8000/auth/oidc/fake/callback"
HOST = "127.0.0.1:8000"


@pytest.fixture
def server() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer() as fake:
        fake.register(FakeClient(CLIENT_ID, (REDIRECT,), "client_secret_basic", SECRET))
        yield fake


def client_of(server: FakeAuthorizationServer, **options: Any) -> Any:
    asynchronous = options.pop("asynchronous", False)
    source = (
        oidc.AsyncHttpKeySetSource(timeout=1.0, allow_loopback_http=True)
        if asynchronous
        else oidc.HttpKeySetSource(timeout=1.0, allow_loopback_http=True)
    )
    preset = oidc.async_oidc if asynchronous else oidc.oidc
    verifier = preset(server.issuer, client_ids=[CLIENT_ID], source=source)
    options.setdefault("client_secret", SECRET)
    return oidc.code_flow(
        verifier,
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT,
        source=source,
        allow_loopback_http=True,
        **options,
    )


def make_flow(server: FakeAuthorizationServer, **options: Any) -> tuple[Flow, MemoryStore]:
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        FakeUserDirectory(allow_signup=True),
        external={"fake": client_of(server, **options)},
    )
    return flow, store


@dataclass
class Callback:
    """Where the provider sent the browser back, and the browser's cookies."""

    cookie_header: str
    credentials: AuthorizationCodeCredentials

    def request(self, **changes: Any) -> Request:
        fields: dict[str, Any] = {
            "method": "GET",
            "cookie_header": self.cookie_header,
            "credentials": self.credentials,
            "sec_fetch_site": "cross-site",
            "host": HOST,
        }
        return Request(**{**fields, **changes})


def cookie_pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]


def consent(location: str) -> AuthorizationCodeCredentials:
    """The browser at the provider: it consents and comes back to the callback."""
    answer = httpx.get(location, follow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    query = {k: v[0] for k, v in parse_qs(back.query, keep_blank_values=True).items()}
    return AuthorizationCodeCredentials(
        "fake", query.get("code"), query.get("state"), query.get("iss"), query.get("error")
    )


def start(flow: Flow, next_path: str = "/dashboard") -> tuple[ProviderRedirect, Callback]:
    redirect = flow.start_provider_login(Request("GET", host=HOST), "fake", next_path=next_path)
    assert isinstance(redirect, ProviderRedirect)
    cookies = "; ".join(cookie_pair(c) for c in redirect.set_cookies)
    return redirect, Callback(cookies, consent(redirect.location))


# -- the happy path ------------------------------------------------------------------


def test_a_whole_sign_in_mints_a_session_and_returns_to_next(
    server: FakeAuthorizationServer,
) -> None:
    flow, store = make_flow(server)
    redirect, callback = start(flow)
    query = parse_qs(urlsplit(redirect.location).query)
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == [REDIRECT]
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"][0].split()[0] == "openid"
    assert len(query["state"][0]) == len(query["nonce"][0]) == 43
    assert query["state"] != query["nonce"]
    [transaction_cookie] = redirect.set_cookies
    assert "HttpOnly" in transaction_cookie
    assert "SameSite=Lax" in transaction_cookie
    assert "Max-Age=600" in transaction_cookie
    decision = flow.login(callback.request())
    assert isinstance(decision, Reissue), decision
    assert decision.user_id == f"fake:{server.subject}"
    assert ("Location", "/dashboard") in decision.headers
    logged_in = LoggedIn(decision.user_id, decision.session_id, "fake")
    assert logged_in in decision.events
    # The transaction cookie is cleared along with the new session's cookies.
    name = cookie_pair(transaction_cookie).split("=")[0]
    assert f"{name}=; Max-Age=0" in " ".join(decision.set_cookies)
    assert len(store.sessions_of(decision.user_id, now=time.time())) == 1
    assert server.hits["/token"] == 1
    assert server.refusals == []


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "private_key_jwt"])
def test_every_client_authentication_method_signs_in(
    server: FakeAuthorizationServer, method: str
) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "client-key"})
    public = RSAKey.import_key(key.as_dict(private=False))
    server.register(
        FakeClient(
            CLIENT_ID,
            (REDIRECT,),
            method,
            None if method == "private_key_jwt" else SECRET,
            public if method == "private_key_jwt" else None,
        )
    )
    options: dict[str, Any] = {"client_auth": oidc.ClientAuth(method)}
    if method == "private_key_jwt":
        options.update(private_key=key, client_secret=None)
    flow, _store = make_flow(server, **options)
    _redirect, callback = start(flow)
    assert isinstance(flow.login(callback.request()), Reissue)


def test_a_wrong_client_secret_signs_nobody_in(server: FakeAuthorizationServer) -> None:
    flow, store = make_flow(server, client_secret="not-the-secret")
    _redirect, callback = start(flow)
    decision = flow.login(callback.request())
    assert isinstance(decision, Unauthorized)
    assert server.refusals == ["token: client authentication failed"]
    assert store.sessions_of(f"fake:{server.subject}", now=time.time()) == []


def test_async_flow_signs_in_the_same_way(server: FakeAuthorizationServer) -> None:
    async def run() -> None:
        store = AsyncMemoryStore()
        flow = AsyncFlow(
            KeyRing.generate(),
            store,
            AsyncFakeUserDirectory(FakeUserDirectory(allow_signup=True)),
            external={"fake": client_of(server, asynchronous=True)},
        )
        redirect = await flow.start_provider_login(Request("GET"), "fake", next_path="/x")
        assert isinstance(redirect, ProviderRedirect)
        cookies = "; ".join(cookie_pair(c) for c in redirect.set_cookies)
        credentials = await asyncio.to_thread(consent, redirect.location)
        decision = await flow.login(Request("GET", cookie_header=cookies, credentials=credentials))
        assert isinstance(decision, Reissue), decision
        assert ("Location", "/x") in decision.headers

    asyncio.run(run())


def test_several_tabs_sign_in_at_once_without_clobbering(
    server: FakeAuthorizationServer,
) -> None:
    flow, _store = make_flow(server)
    tabs = [start(flow, f"/tab{i}") for i in range(3)]
    jar = "; ".join(callback.cookie_header for _redirect, callback in tabs)
    # They come back in another order than they left, with every cookie sent.
    for index in (2, 0, 1):
        credentials = tabs[index][1].credentials
        decision = flow.login(Request("GET", cookie_header=jar, credentials=credentials))
        assert isinstance(decision, Reissue), decision
        assert ("Location", f"/tab{index}") in decision.headers


# -- what attackers send ------------------------------------------------------------------


def failed_with(decision: object, reason: LoginFailedReason) -> bool:
    return isinstance(decision, Unauthorized) and any(
        isinstance(e, LoginFailed) and e.reason is reason for e in decision.events
    )


def test_login_csrf_a_code_from_another_browser_is_refused(
    server: FakeAuthorizationServer,
) -> None:
    """The attacker starts a sign-in with their own account and hands the victim
    the callback URL: the victim's browser holds no transaction for that state."""
    flow, store = make_flow(server)
    _redirect, attacker = start(flow)
    victim = Request("GET", cookie_header="", credentials=attacker.credentials)
    decision = flow.login(victim)
    assert failed_with(decision, LoginFailedReason.BAD_TRANSACTION)
    assert server.hits.get("/token", 0) == 0
    assert store.sessions_of(f"fake:{server.subject}", now=time.time()) == []
    # And the victim's own transaction does not vouch for the attacker's state.
    _redirect, own = start(flow)
    decision = flow.login(
        Request("GET", cookie_header=own.cookie_header, credentials=attacker.credentials)
    )
    assert failed_with(decision, LoginFailedReason.BAD_TRANSACTION)
    assert server.hits.get("/token", 0) == 0


def test_a_replayed_callback_redeems_nothing(server: FakeAuthorizationServer) -> None:
    flow, store = make_flow(server)
    _redirect, callback = start(flow)
    assert isinstance(flow.login(callback.request()), Reissue)
    # The same URL and the same cookie again (the back button, or a thief).
    decision = flow.login(callback.request())
    assert isinstance(decision, Unauthorized)
    assert "token: code replayed" in server.refusals
    assert len(store.sessions_of(f"fake:{server.subject}", now=time.time())) == 1


def test_a_transaction_of_another_provider_is_refused(server: FakeAuthorizationServer) -> None:
    """Mix-up at the relying party: a callback arriving at another provider's
    endpoint with this provider's state and code is refused before any exchange."""
    store = MemoryStore()
    flow = Flow(
        KeyRing.generate(),
        store,
        FakeUserDirectory(allow_signup=True),
        external={"fake": client_of(server), "other": client_of(server)},
    )
    _redirect, callback = start(flow)
    other = replace(callback.credentials, provider="other")
    decision = flow.login(callback.request(credentials=other))
    assert failed_with(decision, LoginFailedReason.BAD_TRANSACTION)
    assert server.hits.get("/token", 0) == 0
    # A provider that is not configured at all is refused by the cross-origin check.
    unknown = replace(callback.credentials, provider="unknown")
    assert flow.login(callback.request(credentials=unknown)).status == 403


def test_a_cross_site_post_to_the_callback_is_forbidden(server: FakeAuthorizationServer) -> None:
    flow, _store = make_flow(server)
    _redirect, callback = start(flow)
    decision = flow.login(callback.request(method="POST"))
    assert decision.status == 403
    assert server.hits.get("/token", 0) == 0


def test_an_expired_transaction_is_refused(server: FakeAuthorizationServer) -> None:
    flow, _store = make_flow(server)
    _redirect, callback = start(flow)
    decision = flow.login(callback.request(), now=time.time() + 601)
    assert failed_with(decision, LoginFailedReason.BAD_TRANSACTION)
    assert server.hits.get("/token", 0) == 0


def test_next_never_leaves_the_site(server: FakeAuthorizationServer) -> None:
    for hostile in ("https://evil.example/", "//evil.example", "/\\evil.example", "/a b", ""):
        flow, _store = make_flow(server)
        _redirect, callback = start(flow, hostile)
        decision = flow.login(callback.request())
        assert isinstance(decision, Reissue)
        assert ("Location", "/") in decision.headers


# -- the misbehaviour table: nothing is ever granted -----------------------------------

EXPECTED = {
    Misbehaviour.WRONG_STATE: LoginFailedReason.BAD_TRANSACTION,
    Misbehaviour.MISSING_STATE: LoginFailedReason.BAD_TRANSACTION,
    Misbehaviour.ERROR: LoginFailedReason.PROVIDER_ERROR,
    Misbehaviour.WRONG_ISS_PARAMETER: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.MISSING_ISS_PARAMETER: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.WRONG_ISSUER: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.OTHER_NONCE: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.NO_NONCE: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.OTHER_AUDIENCE: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.BAD_SIGNATURE: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.UNKNOWN_KEY: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.ALG_NONE: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.EXPIRED: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.MISSING_SUB: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.MISSING_IAT: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.NO_ID_TOKEN: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.INVALID_GRANT: LoginFailedReason.BAD_EXTERNAL_TOKEN,
    Misbehaviour.TOKEN_500: None,
    Misbehaviour.TOKEN_HANG: None,
    Misbehaviour.TOKEN_REDIRECT: None,
    Misbehaviour.TOKEN_HUGE: None,
    Misbehaviour.TOKEN_NOT_JSON: None,
    Misbehaviour.HTTP_TOKEN_ENDPOINT: None,
    Misbehaviour.DISCOVERY_OTHER_ISSUER: None,
}
"""Each misbehaviour's answer: a failed login with that reason, or None for 503."""

NEVER_EXCHANGED = {
    Misbehaviour.WRONG_STATE,
    Misbehaviour.MISSING_STATE,
    Misbehaviour.ERROR,
    Misbehaviour.WRONG_ISS_PARAMETER,
    Misbehaviour.MISSING_ISS_PARAMETER,
    Misbehaviour.HTTP_TOKEN_ENDPOINT,
    Misbehaviour.DISCOVERY_OTHER_ISSUER,
}
"""Misbehaviours where the code must never reach a token endpoint."""


def test_the_table_covers_every_misbehaviour() -> None:
    assert set(EXPECTED) == set(Misbehaviour) - {Misbehaviour.NONE}


@pytest.mark.parametrize("misbehaviour", list(EXPECTED), ids=lambda m: m.value)
def test_every_misbehaviour_fails_closed_and_mints_nothing(
    server: FakeAuthorizationServer, misbehaviour: Misbehaviour
) -> None:
    flow, store = make_flow(server)
    if misbehaviour in (Misbehaviour.HTTP_TOKEN_ENDPOINT, Misbehaviour.DISCOVERY_OTHER_ISSUER):
        server.misbehaviour = misbehaviour
        decision = flow.start_provider_login(Request("GET"), "fake")
        assert isinstance(decision, Unavailable)
        assert decision.set_cookies == ()
        assert server.hits.get("/authorize", 0) == 0
        return
    redirect = flow.start_provider_login(Request("GET"), "fake")
    assert isinstance(redirect, ProviderRedirect)
    server.misbehaviour = misbehaviour
    cookies = "; ".join(cookie_pair(c) for c in redirect.set_cookies)
    callback = Callback(cookies, consent(redirect.location))
    decision = flow.login(callback.request())
    assert not isinstance(decision, Reissue)
    assert not decision.set_cookies or all("Max-Age=0" in c for c in decision.set_cookies)
    assert store.sessions_of(f"fake:{server.subject}", now=time.time()) == []
    reason = EXPECTED[misbehaviour]
    if reason is None:
        assert isinstance(decision, Unavailable), decision
    else:
        assert failed_with(decision, reason), decision
    if misbehaviour in NEVER_EXCHANGED:
        assert server.hits.get("/token", 0) == 0


# -- the sealed transaction -----------------------------------------------------------


def test_a_transaction_opens_only_under_its_own_cookie_name_and_key() -> None:
    ring = KeyRing.generate()
    random = __import__("os").urandom
    transaction = Transaction.new("fake", "/next", 1_000_000, random)
    name = transaction_cookie_name(transaction.state)
    assert name is not None
    sealed = seal_transaction(ring, transaction, name, random)
    assert open_transaction(ring, sealed, name, 1_000_001) == transaction
    other = transaction_cookie_name("B" * 43)
    assert other is not None
    assert open_transaction(ring, sealed, other, 1_000_001) is None
    assert open_transaction(KeyRing.generate(), sealed, name, 1_000_001) is None
    assert open_transaction(ring, sealed, name, 1_000_000 + 600) is None
    assert open_transaction(ring, sealed, name, 999_999) is None
    # Clock skew between servers: allowed up to the leeway, not beyond.
    assert open_transaction(ring, sealed, name, 999_995, leeway=5) == transaction
    assert open_transaction(ring, sealed, name, 999_994, leeway=5) is None
    kid, _, body = sealed.partition(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    assert open_transaction(ring, f"{kid}.{flipped}", name, 1_000_001) is None
    assert "state" not in repr(transaction) or transaction.state not in repr(transaction)


def test_safe_next_keeps_only_same_site_paths() -> None:
    assert safe_next("/a/b?c=d") == "/a/b?c=d"
    for hostile in ("//x", "/\\x", "/a\\b", "https://x", "x", "/\x00", "/a b", None, 5, "/" * 513):
        assert safe_next(hostile) == "/"


# -- Sign in with Apple's shape: form_post and a generated client secret ---------------


def apple_style(server: FakeAuthorizationServer) -> Flow:
    team_key = ECKey.generate_key("P-256", parameters={"kid": "APPLEKEY1"})
    server.register(
        FakeClient(
            CLIENT_ID,
            (REDIRECT,),
            "apple_client_secret",
            None,
            ECKey.import_key(team_key.as_dict(private=False)),
        )
    )
    secret = oidc.AppleClientSecret(team_id="TEAM123", key_id="APPLEKEY1", private_key=team_key)
    flow, _store = make_flow(
        server,
        client_secret=secret,
        client_auth=oidc.ClientAuth.CLIENT_SECRET_POST,
        response_mode="form_post",
    )
    return flow


def posted_back(location: str) -> AuthorizationCodeCredentials:
    """The browser at a form_post provider: the fields of the page that posts back."""
    page = httpx.get(location, follow_redirects=False, timeout=5)
    assert page.status_code == 200
    assert f'action="{REDIRECT}"' in page.text
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
    return AuthorizationCodeCredentials(
        "fake", fields.get("code"), fields.get("state"), fields.get("iss"), fields.get("error")
    )


def test_form_post_sign_in_with_an_apple_client_secret(server: FakeAuthorizationServer) -> None:
    flow = apple_style(server)
    assert flow.form_post_providers == frozenset({"fake"})
    redirect = flow.start_provider_login(Request("GET"), "fake", next_path="/x")
    assert isinstance(redirect, ProviderRedirect)
    assert parse_qs(urlsplit(redirect.location).query)["response_mode"] == ["form_post"]
    # A cross-site POST carries only SameSite=None cookies.
    [cookie] = redirect.set_cookies
    assert "SameSite=None" in cookie
    assert "Secure" in cookie
    credentials = posted_back(redirect.location)
    cookies = cookie_pair(cookie)
    decision = flow.login(
        Request(
            "POST",
            cookie_header=cookies,
            credentials=credentials,
            sec_fetch_site="cross-site",
            origin=server.issuer,
            host=HOST,
        )
    )
    assert isinstance(decision, Reissue), decision
    assert server.refusals == []


def test_a_form_post_provider_is_admitted_by_post_only(server: FakeAuthorizationServer) -> None:
    flow = apple_style(server)
    redirect = flow.start_provider_login(Request("GET"), "fake")
    assert isinstance(redirect, ProviderRedirect)
    credentials = posted_back(redirect.location)
    cookies = cookie_pair(redirect.set_cookies[0])
    # The same answer as a cross-site GET: not the admitted method, so CSRF rules apply.
    decision = flow.login(
        Request(
            "GET",
            cookie_header=cookies,
            credentials=credentials,
            sec_fetch_site="cross-site",
            host=HOST,
        )
    )
    assert decision.status == 403
    assert server.hits.get("/token", 0) == 0


def test_an_apple_client_secret_is_remade_before_it_expires() -> None:
    key = ECKey.generate_key("P-256")
    secret = oidc.AppleClientSecret(team_id="T", key_id="K", private_key=key)
    first = secret.value("app", 1_000_000)
    assert secret.value("app", 1_000_000 + 3000) == first
    assert secret.value("app", 1_000_000 + 3301) != first
    assert "BEGIN" not in repr(secret)
    assert repr(secret) == "AppleClientSecret(team_id='T', key_id='K')"
