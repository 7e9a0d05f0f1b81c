"""tokenflow in a FastAPI application: one middleware, one dependency.

Run it (plain HTTP on localhost, hence the development cookie policy)::

    pip install 'tokenflow[examples]'
    TOKENFLOW_DEV=1 uvicorn examples.fastapi_app:app

Then ``POST /auth/login`` with ``username=alice&password=wonderland-passphrase``
(form or JSON), ``GET /me``, ``POST /auth/logout``.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from tokenflow import CookiePolicy, Flow, FlowConfig, KeyRing
from tokenflow.asgi import Auth, TokenflowMiddleware, auth_of
from tokenflow.stores import SQLiteStore

# Stand-ins for your user database and password hashes: replace them with
# your own UserDirectory and PasswordVerifier ports.
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory


def make_flow(database: str = "sessions.db") -> Flow:
    """The flow: keys from TOKENFLOW_KEYS (``python -m tokenflow keygen``), sessions in SQLite."""
    users = FakeUserDirectory()
    users.add_user("alice", {"name": "Alice"})
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "wonderland-passphrase", user_id="alice")
    keys = os.environ.get("TOKENFLOW_KEYS")
    dev = os.environ.get("TOKENFLOW_DEV") == "1"  # plain http://localhost only
    config = FlowConfig(cookies=CookiePolicy.local_development() if dev else CookiePolicy())
    return Flow(
        KeyRing.parse(keys) if keys else KeyRing.generate(),
        SQLiteStore(database),
        users,
        passwords=passwords,
        config=config,
    )


# The dependencies are ``async def`` on purpose: they only read the scope, and
# FastAPI runs a plain ``def`` dependency in a worker thread, a hop that costs
# more than everything the middleware does on a signed-in request.
async def current_auth(request: Request) -> Auth:
    """Who the request is from; anonymous requests get an Auth too."""
    return auth_of(request.scope)


async def current_user(auth: Annotated[Auth, Depends(current_auth)]) -> str:
    """The signed-in user's id; 401 (or 503 while the store is down) otherwise."""
    if auth.user_id is None:
        raise HTTPException(status_code=auth.denial_status)
    return auth.user_id


User = Annotated[str, Depends(current_user)]


def create_app(flow: Flow) -> FastAPI:
    """The application; every route sees the identity the middleware found."""
    app = FastAPI()

    @app.get("/")
    def home(auth: Annotated[Auth, Depends(current_auth)]) -> dict[str, object]:
        # A public route: anonymous visitors are served too.
        return {"signed_in": auth.authenticated, "user": auth.user_id}

    @app.get("/me")
    def me(user: User) -> dict[str, str]:
        return {"user": user}

    @app.post("/notes")
    def add_note(user: User) -> dict[str, str]:
        # Cross-site form posts never get here: the middleware answers 403.
        return {"saved_for": user}

    # The login, logout and sessions endpoints live under /auth. The
    # middleware answers 401 itself on /me and /notes, before any routing,
    # in whatever spelling the path comes (//me, /%6De...); the User
    # dependency keeps each route safe on its own as well.
    app.add_middleware(TokenflowMiddleware, flow=flow, required=["/me", "/notes"])
    return app


app = create_app(make_flow(os.environ.get("TOKENFLOW_DB", "sessions.db")))
