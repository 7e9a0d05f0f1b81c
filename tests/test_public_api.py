"""The public surface: a short top level, and one public home per name.

docs/architecture.md ("The public surface") states the rule; these tests
hold the code to it, so a name cannot drift back to the top level or gain a
second home unnoticed.
"""

from __future__ import annotations

import enum
import importlib
import typing

import pytest

import tokenflow
import tokenflow.events
import tokenflow.observers
import tokenflow.ports
import tokenflow.tokens
import tokenflow.web
from tokenflow import Decision

TOP_LEVEL = {
    # the flow
    "Flow",
    "AsyncFlow",
    # what it is built with
    "FlowConfig",
    "KeyRing",
    "Key",
    "CookiePolicy",
    "SameSite",
    "ThrottlePolicy",
    "ThrottleRule",
    "DeviceBinding",
    "Identity",
    # the request
    "Request",
    "Credentials",
    "PasswordCredentials",
    "ExternalTokenCredentials",
    "PasskeyCredentials",
    "AuthorizationCodeCredentials",
    "ButtonCredentials",
    "SecondFactorCredentials",
    "Requirement",
    # the decisions
    "Decision",
    "Process",
    "Reissue",
    "Unauthorized",
    "LoggedOut",
    "Forbidden",
    "TooManyRequests",
    "Unavailable",
    "DeviceRegistered",
    "DeviceProofRequired",
    "ProviderRedirect",
    "SecondFactorRequired",
    "StepUpRequired",
    # errors
    "TokenflowError",
    "ConfigError",
}

HOMES = ("tokenflow.events", "tokenflow.ports", "tokenflow.tokens", "tokenflow.observers")
"""The core's topical modules. ``tokenflow.ports`` re-exports ``Identity``: a
user directory returns it, and a first program builds one."""


def test_the_top_level_is_what_a_first_program_types() -> None:
    assert set(tokenflow.__all__) == TOP_LEVEL
    assert len(tokenflow.__all__) == len(TOP_LEVEL)


def test_no_name_lives_in_two_homes() -> None:
    seen: dict[str, str] = dict.fromkeys(tokenflow.__all__, "tokenflow")
    for module_name in (*HOMES, "tokenflow.web"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if (module_name, name) == ("tokenflow.ports", "Identity"):
                continue
            assert name not in seen, f"{name} is public in {seen[name]} and {module_name}"
            seen[name] = module_name


def test_every_public_name_resolves() -> None:
    for module_name in ("tokenflow", *HOMES, "tokenflow.web"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_every_event_and_every_reason_is_in_events() -> None:
    events = set(typing.get_args(tokenflow.events.Event))
    assert events
    assert all(getattr(tokenflow.events, event.__name__) is event for event in events)
    reasons = {
        getattr(tokenflow.events, name)
        for name in tokenflow.events.__all__
        if isinstance(getattr(tokenflow.events, name), type)
        and issubclass(getattr(tokenflow.events, name), enum.Enum)
    }
    for event in events:
        hints = typing.get_type_hints(event)
        for hint in hints.values():
            if (
                isinstance(hint, type)
                and issubclass(hint, enum.Enum)
                and hint.__name__ != "Purpose"
            ):
                assert hint in reasons, f"{event.__name__} carries {hint.__name__}, not in events"
    assert tokenflow.events.UnauthorizedReason in reasons


def test_every_decision_is_at_the_top_level() -> None:
    for decision in typing.get_args(Decision):
        assert getattr(tokenflow, decision.__name__) is decision


@pytest.mark.parametrize("name", ["LoggedIn", "TokenCodec", "FlowObserver", "SessionInfo"])
def test_moved_names_are_gone_from_the_top_level(name: str) -> None:
    with pytest.raises(AttributeError):
        getattr(tokenflow, name)
