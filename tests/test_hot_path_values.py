"""The values the access path builds in drafts (``tokenflow._model.draft_of``) are
the same frozen values the ordinary constructors make: equal, of the same type,
with the same repr, and just as immutable."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tokenflow import (
    Flow,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Requirement,
)
from tokenflow._model import draft_of, route_request
from tokenflow.asgi import Auth, TokenflowMiddleware, auth_of
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory

PASSWORD = "a long test passphrase"


@pytest.mark.parametrize(
    "fields",
    [
        ("GET", None, None, None, None, None),
        ("GET", "a=b; tf_access=xyz", None, None, None, None),
        ("POST", "c=d", "same-origin", "https://app.example", "app.example", None),
        ("HEAD", "", "cross-site", None, "app.example", Requirement(aal=2)),
    ],
)
def test_a_route_request_is_the_request_the_constructor_makes(fields: tuple[Any, ...]) -> None:
    method, cookie_header, sec_fetch_site, origin, host, requirement = fields
    built = route_request(method, cookie_header, sec_fetch_site, origin, host, requirement)
    expected = Request(
        method=method,
        cookie_header=cookie_header,
        sec_fetch_site=sec_fetch_site,
        origin=origin,
        host=host,
        requirement=requirement,
    )
    assert type(built) is Request
    assert built == expected
    assert repr(built) == repr(expected)
    for each in dataclasses.fields(Request):
        assert getattr(built, each.name) == getattr(expected, each.name), each.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.method = "POST"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.credentials = None  # type: ignore[misc]
    assert dataclasses.replace(built, method="POST").method == "POST"
    assert built.method == method


def _signed_in() -> tuple[Flow, str]:
    users = FakeUserDirectory()
    users.add_user("user-0")
    passwords = FakePasswordVerifier()
    passwords.set_password("user-0", PASSWORD, user_id="user-0")
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords)
    login = flow.login(Request(method="POST", credentials=PasswordCredentials("user-0", PASSWORD)))
    assert isinstance(login, Reissue)
    access = login.set_cookies[0].split(";", 1)[0]
    return flow, access


def _is_the_process_of(decision: object, claims: dict[str, Any]) -> None:
    assert type(decision) is Process
    assert decision == Process(claims)
    assert repr(decision) == repr(Process(claims))
    assert decision.events == ()
    assert decision.user_id == "user-0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.events = ()  # type: ignore[misc]


def test_the_process_of_a_valid_access_token_is_the_process_the_constructor_makes() -> None:
    flow, access = _signed_in()
    for _ in range(2):  # opened, then remembered
        decision = flow.decide(Request(cookie_header=access))
        assert isinstance(decision, Process)
        _is_the_process_of(decision, dict(decision.claims))


def test_the_auth_of_the_access_path_is_the_auth_the_constructor_makes() -> None:
    flow, access = _signed_in()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((auth_of(scope), scope["state"]["tokenflow"]))

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    middleware = TokenflowMiddleware(app, flow)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"cookie", access.encode())],
        "state": {},
    }
    asyncio.run(middleware(scope, receive, send))
    auth, in_state = seen[0]
    assert in_state is auth
    assert type(auth) is Auth
    _is_the_process_of(auth.decision, dict(auth.claims))
    assert auth == Auth(auth.decision)
    assert repr(auth) == repr(Auth(auth.decision))
    assert auth.authenticated
    with pytest.raises(dataclasses.FrozenInstanceError):
        auth.decision = auth.decision  # type: ignore[misc]


def test_a_draft_has_the_layout_of_its_class_and_nothing_of_its_behaviour() -> None:
    draft = draft_of(Request)
    assert draft.__slots__ == Request.__slots__  # type: ignore[attr-defined]
    assert draft.__mro__[1] is Request.__mro__[1]
    assert "__setattr__" not in draft.__dict__
    assert not issubclass(draft, Request)
