"""tokenflow in a Starlette application: the middleware and ``request.state.tokenflow``.

Run it::

    TOKENFLOW_DEV=1 uvicorn examples.starlette_app:app

``/account`` requires a signed-in user (the middleware answers 401 itself);
``/`` is public and greets whoever is signed in.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tokenflow import CookiePolicy, Flow, FlowConfig, KeyRing
from tokenflow.asgi import Auth, Endpoints, TokenflowMiddleware
from tokenflow.stores import SQLiteStore

# Stand-ins for your user database and password hashes.
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory


def make_flow(database: str = "sessions.db") -> Flow:
    """The flow: keys from TOKENFLOW_KEYS, sessions in SQLite."""
    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "wonderland-passphrase", user_id="alice")
    keys = os.environ.get("TOKENFLOW_KEYS")
    dev = os.environ.get("TOKENFLOW_DEV") == "1"
    config = FlowConfig(cookies=CookiePolicy.local_development() if dev else CookiePolicy())
    return Flow(
        KeyRing.parse(keys) if keys else KeyRing.generate(),
        SQLiteStore(database),
        users,
        passwords=passwords,
        config=config,
    )


async def home(request: Request) -> PlainTextResponse:
    auth: Auth = request.state.tokenflow
    return PlainTextResponse(f"hello, {auth.user_id or 'stranger'}")


async def account(request: Request) -> JSONResponse:
    # Under a required prefix: only signed-in users get here.
    auth: Auth = request.state.tokenflow
    return JSONResponse({"user": auth.user_id, "session": auth.session_id})


def create_app(flow: Flow) -> Starlette:
    """The application, with /account required and a form login page at /login."""
    return Starlette(
        routes=[Route("/", home), Route("/account", account)],
        middleware=[
            Middleware(
                TokenflowMiddleware,
                flow=flow,
                required=["/account"],
                endpoints=Endpoints(login_page="/login", after_login="/account"),
            )
        ],
    )


app = create_app(make_flow(os.environ.get("TOKENFLOW_DB", "sessions.db")))
