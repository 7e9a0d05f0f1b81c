"""Any bytes in, a decision out: the sign-in transaction cookie, the callback's
parameters and ``next`` are parsed from what clients send."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import AuthorizationCodeCredentials, Flow, KeyRing, Request, Unauthorized
from tokenflow._transactions import (
    Transaction,
    open_transaction,
    safe_next,
    seal_transaction,
    transaction_cookie_name,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.testing.fakes import FakeExternalTokenVerifier
from tokenflow.web._shared import _callback_parameters

RING = KeyRing.generate()
NAME = transaction_cookie_name("S" * 43)
assert NAME is not None


@given(st.text(max_size=300))
def test_any_cookie_text_opens_to_nothing_or_a_transaction(value: str) -> None:
    assert open_transaction(RING, value, NAME, 1_000_000) is None


@given(st.integers(0, 400), st.text(min_size=1, max_size=8))
def test_a_change_anywhere_is_refused(position: int, appended: str) -> None:
    transaction = Transaction.new("p", "/", 1_000_000, os.urandom)
    name = transaction_cookie_name(transaction.state)
    assert name is not None
    sealed = seal_transaction(RING, transaction, name, os.urandom)
    index = position % len(sealed)
    replacement = "A" if sealed[index] != "A" else "B"
    flipped = sealed[:index] + replacement + sealed[index + 1 :]
    assert open_transaction(RING, flipped, name, 1_000_001) is None
    assert open_transaction(RING, sealed + appended, name, 1_000_001) is None
    assert open_transaction(RING, sealed, name, 1_000_001) == transaction


@given(st.text(max_size=100))
def test_next_is_always_a_same_site_path(value: str) -> None:
    chosen = safe_next(value)
    assert chosen.startswith("/")
    assert not chosen.startswith(("//", "/\\"))
    assert all("\x21" <= c <= "\x7e" for c in chosen)


@given(st.text(max_size=400))
def test_callback_parameters_never_raise(query: str) -> None:
    parameters = _callback_parameters(query)
    assert parameters is None or set(parameters) == {"code", "state", "iss", "error"}


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=80)),
    st.one_of(st.none(), st.text(max_size=80)),
    st.one_of(st.none(), st.text(max_size=80)),
    st.one_of(st.none(), st.text(max_size=300)),
)
def test_any_callback_is_a_decision_and_mints_nothing(
    code: str | None, state: str | None, issuer: str | None, cookie: str | None
) -> None:
    class Client(FakeExternalTokenVerifier):
        def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
            return "https://idp.example/authorize"

        def exchange_code(self, code: str, **_: object) -> None:
            raise AssertionError("no forged callback may reach the token endpoint")

    flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory(), external={"p": Client()})
    request = Request(
        "GET",
        cookie_header=cookie,
        credentials=AuthorizationCodeCredentials("p", code, state, issuer),
    )
    decision = flow.login(request)
    assert isinstance(decision, Unauthorized)
