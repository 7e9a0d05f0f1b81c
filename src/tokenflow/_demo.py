"""``python -m tokenflow demo``: the whole flow, narrated, on a SQLite store.

Every step says what happened in the words of the docs (a login opens a
session and sets two cookies; a refresh rotates; a revoked session is
revoked), then the decision type and status, the Set-Cookie headers it sends
(token values shortened) and the security events it produced. The clock is a
fake one, so "two minutes later" takes no time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ._config import FlowConfig
from ._drivers import Flow
from ._keyring import KeyRing
from ._model import (
    Decision,
    ExternalTokenCredentials,
    PasswordCredentials,
    Process,
    Reissue,
    TooManyRequests,
    Unauthorized,
)
from ._narrate import describe_event, meaning
from .stores.sqlite import SQLiteStore
from .testing import FakeClock, FakePasswordVerifier, FakeUserDirectory
from .testing.browser import Browser
from .throttles.sqlite import SQLiteThrottle

__all__ = ["run_demo"]

GOOGLE_CLIENT = "demo-app.apps.googleusercontent.com"
GOOGLE_SUBJECT = "110248495921238986420"


def _fake_google() -> tuple[Any, Any] | None:
    """A local fake of Google (keys served from memory, no network) and a verifier
    for it, or ``None`` without the ``oidc`` extra."""
    try:
        from . import oidc
        from .testing.oidc import FakeEndpoints, FakeKeySetSource, FakeProvider
    except ImportError:
        return None
    google = FakeProvider.google()
    endpoints = FakeEndpoints()
    endpoints.serve_provider(google, cache_control="public, max-age=21600")
    return google, oidc.google([GOOGLE_CLIENT], source=FakeKeySetSource(endpoints))


def _short(set_cookie: str) -> str:
    pair, sep, attributes = set_cookie.partition(";")
    name, _, value = pair.partition("=")
    shown = value if len(value) <= 24 else f"{value[:12]}…{value[-8:]} ({len(value)} chars)"
    return f"{name}={shown}{sep}{attributes}"


def _show(out: Callable[[str], None], title: str, decision: Decision) -> None:
    out(f"\n── {title}")
    out(f"   {meaning(decision)}")
    who = ""
    if isinstance(decision, (Process, Reissue)):
        who = f" user={decision.user_id} session={decision.session_id[:8]}…"
    if isinstance(decision, Unauthorized):
        who = f" reason={decision.reason.value}"
    out(f"   decision: {type(decision).__name__} {decision.status}{who}")
    for header in decision.set_cookies:
        out(f"   Set-Cookie: {_short(header)}")
    for event in decision.events:
        out(f"   event: {describe_event(event)}")


def run_demo(path: str | None = None, out: Callable[[str], None] = print) -> list[Decision]:
    """Run the walkthrough on a SQLite file (a temporary one by default).

    Returns the decisions in order, so tests can check the story it tells.
    """
    directory = None
    if path is None:
        directory = tempfile.TemporaryDirectory(prefix="tokenflow-demo-")
        path = os.path.join(directory.name, "sessions.sqlite3")
    clock = FakeClock()
    users = FakeUserDirectory()
    users.add_user("alice", {"roles": ["editor"]})
    passwords = FakePasswordVerifier()
    passwords.set_password("alice@example.com", "correct horse battery staple", user_id="alice")
    store = SQLiteStore(path)
    fake_google = _fake_google()
    flow = Flow(
        KeyRing.generate(),
        store,
        users,
        passwords=passwords,
        external={"google": fake_google[1]} if fake_google else None,
        config=FlowConfig(grace_seconds=5),
        clock=clock,
    )
    decisions: list[Decision] = []

    def step(title: str, browser: Browser, decision: Decision) -> Decision:
        browser.receive(decision.set_cookies)
        decisions.append(decision)
        _show(out, title, decision)
        return decision

    out(f"tokenflow demo: session store {path}")
    out("access tokens live 120 s, refresh sessions 30 min idle / 12 h absolute, grace 5 s")
    laptop = Browser(clock)
    login = PasswordCredentials("alice@example.com", "correct horse battery staple")
    try:
        step("1. password login", laptop, flow.decide(laptop.request("POST", credentials=login)))
        first_generation = laptop.clone()  # what a thief copies now
        step(
            "2. next request: access token valid, no store call",
            laptop,
            flow.decide(laptop.request()),
        )
        clock.advance(130)
        out("\n   … 130 s later: the access cookie has expired (Max-Age=120) …")
        second_tab = laptop.clone()
        step("3. silent refresh: the refresh token rotates", laptop, flow.decide(laptop.request()))
        step(
            "4. a second tab refreshed with the same token, inside the grace window: "
            "same successor",
            second_tab,
            flow.decide(second_tab.request()),
        )
        clock.advance(30)
        out("\n   … 30 s later, a thief replays the generation-0 refresh token …")
        thief = first_generation.clone()
        thief.jar = {k: v for k, v in thief.jar.items() if "refresh" in k}
        step(
            "5. stolen old refresh token: reuse detected, session revoked",
            thief,
            flow.decide(thief.request()),
        )
        clock.advance(130)
        step(
            "6. the laptop's session is gone too: 401, log in again",
            laptop,
            flow.decide(laptop.request()),
        )
        step("7. log in again", laptop, flow.decide(laptop.request("POST", credentials=login)))
        step(
            "8. logout: session revoked, both cookies cleared",
            laptop,
            flow.logout(laptop.request("POST")),
        )
        phone = Browser(clock)
        step(
            "9. log in on a laptop and a phone",
            laptop,
            flow.decide(laptop.request("POST", credentials=login)),
        )
        step("   (phone)", phone, flow.decide(phone.request("POST", credentials=login)))
        out(f"\n   live sessions of alice: {len(flow.sessions_of('alice'))}")
        revoked = flow.revoke_user("alice")
        out(f"\n── 10. revoke all: {revoked} sessions revoked")
        clock.advance(130)
        step("    laptop after its access token expired", laptop, flow.decide(laptop.request()))
        step("    phone after its access token expired", phone, flow.decide(phone.request()))
        out(f"\n   live sessions of alice: {len(flow.sessions_of('alice'))}")
        title = "11. sign in with Google on a tablet: an ID token from a local fake provider"
        if fake_google is None:
            out(f"\n── {title}: skipped (pip install 'tokenflow[oidc]')")
        else:
            google = fake_google[0]
            users.link("google", GOOGLE_SUBJECT, "alice")  # alice linked her Google account
            token = google.id_token(
                clock(), audience=GOOGLE_CLIENT, subject=GOOGLE_SUBJECT, email="alice@example.com"
            )
            tablet = Browser(clock)
            sign_in = ExternalTokenCredentials("google", token)
            step(title, tablet, flow.decide(tablet.request("POST", credentials=sign_in)))
            out(f"\n   live sessions of alice: {len(flow.sessions_of('alice'))}")
        # -- 12. A password guesser, slowed down by the login throttle (SQLite,
        # same file). Throttled guesses are answered 429 before any password
        # is checked; the delay doubles per failure, and a success clears it.
        out("\n── 12. a guesser tries alice's password from 198.51.100.23 (throttle on)")
        with SQLiteThrottle(path) as throttle:
            guarded = Flow(
                KeyRing.generate(), store, users, passwords=passwords, throttle=throttle,
                config=FlowConfig(grace_seconds=5), clock=clock,
            )  # fmt: skip
            guesser = Browser(clock)

            def guess(
                password: str, browser: Browser = guesser, address: str = "198.51.100.23"
            ) -> Decision:
                attempt = PasswordCredentials("alice@example.com", password)
                request = browser.request("POST", credentials=attempt)
                return guarded.decide(replace(request, client_address=address))

            for n in range(1, 8):
                step(f"    guess {n}", guesser, guess(f"password{n}"))
            for _ in range(2):
                waited = decisions[-1]
                assert isinstance(waited, TooManyRequests)
                clock.advance(waited.retry_after)
                out(f"\n   … the guesser waits the {waited.retry_after} s it was told …")
                step("    next guess: refused, and the next wait is longer", guesser,
                     guess("letmein"))  # fmt: skip
                step("    guess at once: 429 again", guesser, guess("hunter2"))
            waited = decisions[-1]
            assert isinstance(waited, TooManyRequests)
            clock.advance(waited.retry_after)
            out(f"\n   … the guesser gives up; alice waits at most {waited.retry_after} s …")
            step("    alice logs in from her own address; her username's count is cleared",
                 laptop, guess("correct horse battery staple", laptop, "203.0.113.5"))  # fmt: skip
    finally:
        store.close()
        if directory is not None:
            directory.cleanup()
    return decisions
