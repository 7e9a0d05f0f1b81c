"""Passkeys in a Starlette application: add a passkey when signed in, then sign in with it.

Run it (WebAuthn needs a secure context: https, or http on localhost)::

    TOKENFLOW_DEV=1 uvicorn examples.passkeys_starlette:app --port 8000

and open http://localhost:8000. Sign in as alice / wonderland-passphrase,
press "Add a passkey", sign out, then "Sign in with a passkey". The
middleware serves every /auth/... endpoint; this file only adds the page and
the browser helper script.

Lifetimes come from the environment like every example's (``TOKENFLOW_ACCESS_TTL``,
``TOKENFLOW_IDLE_TTL``, ``TOKENFLOW_ABSOLUTE_TTL``: see ``examples/environment.py``);
sessions, passkeys and used challenges share the SQLite file ``TOKENFLOW_STORE``
names (``passkeys.db`` by default).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from examples.environment import flow_config
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tokenflow import Flow, KeyRing
from tokenflow.asgi import Auth, TokenflowMiddleware
from tokenflow.passkeys import PasskeyConfig, Passkeys, browser_helper
from tokenflow.passkeys.sqlite import SQLiteChallengeLedger, SQLitePasskeyRepository
from tokenflow.stores import SQLiteStore

# Stand-ins for your user database and password hashes.
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory

ORIGIN = os.environ.get("PASSKEY_ORIGIN", "http://localhost:8000")

PAGE = """<!doctype html>
<meta charset="utf-8"><title>tokenflow passkeys</title>
<script src="/tokenflow-passkeys.js"></script>
<p id="who">{who}</p>
<form id="password" onsubmit="event.preventDefault(); fetch('/auth/login', {{method: 'POST',
  headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{username:
  this.username.value, password: this.password.value}})}}).then(() => location.reload())">
  <input name="username" autocomplete="username webauthn" placeholder="username">
  <input name="password" type="password" autocomplete="current-password">
  <button>Sign in with a password</button>
</form>
<button onclick="tokenflowPasskeys.signIn().then(() => location.reload())">
  Sign in with a passkey</button>
<button onclick="tokenflowPasskeys.register({{name: 'My passkey'}}).then(r => alert(r.status))">
  Add a passkey</button>
<button onclick="fetch('/auth/logout', {{method: 'POST', headers: {{accept: 'application/json'}}}})
  .then(() => location.reload())">Sign out</button>
<script>tokenflowPasskeys.autofill().then(r => r && location.reload());</script>
"""


def make_flow(database: str = "passkeys.db") -> Flow:
    """The flow: a password user, passkeys and used challenges in the same SQLite file."""
    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "wonderland-passphrase", user_id="alice")
    keys = os.environ.get("TOKENFLOW_KEYS")
    keyring = KeyRing.parse(keys) if keys else KeyRing.generate()
    passkeys = Passkeys(
        PasskeyConfig(rp_id=urlsplit(ORIGIN).hostname or "", rp_name="Example", origins=(ORIGIN,)),
        keyring,
        SQLitePasskeyRepository(database),
        SQLiteChallengeLedger(database),
        # Every user here has a password: a last passkey may be removed. Ask
        # your user table instead (passwordless users must keep one).
        other_sign_in=lambda user_id: True,
    )
    config = flow_config(os.environ)  # lifetimes and cookie policy, as every example
    return Flow(
        keyring, SQLiteStore(database), users, passwords=passwords, passkeys=passkeys, config=config
    )


async def home(request: Request) -> HTMLResponse:
    auth: Auth = request.state.tokenflow
    who = (
        f"signed in as {auth.user_id} (amr {auth.claims.get('amr')})"
        if auth.user_id
        else ("not signed in")
    )
    return HTMLResponse(PAGE.format(who=who))


async def script(request: Request) -> Response:
    return Response(browser_helper(), media_type="text/javascript")


def create_app(flow: Flow) -> Starlette:
    """The page, the helper script, and the middleware with its passkey endpoints."""
    return Starlette(
        routes=[Route("/", home), Route("/tokenflow-passkeys.js", script)],
        middleware=[Middleware(TokenflowMiddleware, flow=flow)],
    )


app = create_app(make_flow(os.environ.get("TOKENFLOW_STORE", "passkeys.db")))
