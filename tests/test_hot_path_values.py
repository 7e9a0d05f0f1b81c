"""The values the access path builds in drafts (``tokenflow._model.draft_of``) are
the same frozen values the ordinary constructors make: equal, of the same type,
with the same repr and hash, and just as immutable."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tokenflow import Process, Request, Requirement
from tokenflow._model import draft_of, process_of, route_request
from tokenflow.asgi import Auth
from tokenflow.web._shared import auth_of_process

CLAIMS: dict[str, Any] = {"sub": "user-1", "sid": "s-1", "iat": 1, "exp": 2, "amr": ["pwd"]}


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


def test_a_process_of_claims_is_the_process_the_constructor_makes() -> None:
    built = process_of(CLAIMS)
    assert type(built) is Process
    assert built == Process(CLAIMS)
    assert repr(built) == repr(Process(CLAIMS))
    assert built.events == ()
    assert built.claims is CLAIMS
    assert built.user_id == "user-1"
    assert built.session_id == "s-1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.events = ()  # type: ignore[misc]


def test_the_auth_of_a_process_is_the_auth_the_constructor_makes() -> None:
    decision = Process(CLAIMS)
    built = auth_of_process(decision)
    assert type(built) is Auth
    assert built == Auth(decision)
    assert built.decision is decision
    assert built.authenticated
    assert built.user_id == "user-1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.decision = decision  # type: ignore[misc]


def test_a_draft_has_the_layout_of_its_class_and_nothing_of_its_behaviour() -> None:
    draft = draft_of(Request)
    assert draft.__slots__ == Request.__slots__  # type: ignore[attr-defined]
    assert draft.__mro__[1] is Request.__mro__[1]
    assert "__setattr__" not in draft.__dict__
    assert not issubclass(draft, Request)
