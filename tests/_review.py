"""A flow over a memory store for Ada: the setting of the hostile edge-case tests.

Shared by the subject files those cases live in (flow, login and logout, CSRF).
"""

from __future__ import annotations

from typing import Any

from tokenflow import Flow, FlowConfig, KeyRing, PasswordCredentials, Reissue
from tokenflow.stores import MemoryStore
from tokenflow.testing import (
    Browser,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)

__all__ = ["ADA_LOGIN", "ReviewWorld", "tokens_of"]

ADA_LOGIN = PasswordCredentials("ada@example.com", "analytical engine")


class ReviewWorld:
    """A flow over a memory store for Ada, for hostile edge cases."""

    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.ring = KeyRing.generate()
        self.store = MemoryStore()
        self.users = FakeUserDirectory()
        self.users.add_user("ada", {"roles": ["admin"]})
        self.passwords = FakePasswordVerifier()
        self.passwords.set_password(ADA_LOGIN.username, ADA_LOGIN.password, user_id="ada")
        self.google = FakeExternalTokenVerifier("google")
        self.flow = Flow(
            self.ring,
            self.store,
            self.users,
            passwords=self.passwords,
            external={"google": self.google},
            config=FlowConfig(**config),
            clock=self.clock,
        )

    def login(self) -> Browser:
        browser = Browser(self.clock)
        decision = self.flow.decide(browser.request("POST", credentials=ADA_LOGIN))
        assert isinstance(decision, Reissue)
        browser.receive(decision.set_cookies)
        return browser


def tokens_of(browser: Browser) -> list[str]:
    """Every cookie value the browser holds."""
    return list(browser.cookies().values())
