"""tokenflow in a FastAPI application: one middleware, one dependency.

Run it from the repository root (plain HTTP on localhost, hence ``TOKENFLOW_DEV=1``;
short lifetimes so that you can watch them)::

    pip install 'tokenflow[examples]'
    TOKENFLOW_DEV=1 TOKENFLOW_ACCESS_TTL=10 TOKENFLOW_IDLE_TTL=60 \\
        uvicorn examples.fastapi_app:app

Then try, in a browser at http://127.0.0.1:8000/:

1. ``/me``: 401. ``/login``: the login form.
2. A wrong password: back on ``/login`` with "Wrong username or password."
3. ``alice`` / ``wonderland-passphrase``: a 303 to ``/me`` with two cookies.
4. Wait 10 s and reload ``/me``: still signed in (a silent refresh). Leave it
   60 s: the session ends, 401.

Scripts log in with JSON instead: ``POST /auth/login`` with
``{"username": ..., "password": ...}`` answers 200 (or 401), then ``GET /me``
and ``POST /auth/logout``. Lifetimes and the store come from the environment:
see ``examples/environment.py``.
With ``TOKENFLOW_OIDC_*`` set there, ``/login`` also offers "Sign in with provider"
(the middleware serves ``/auth/oidc/provider/start`` and ``/callback``).
"""

from __future__ import annotations

from typing import Annotated

from examples.environment import login_page, make_flow
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from tokenflow import Flow
from tokenflow.asgi import Auth, Endpoints, TokenflowMiddleware, auth_of


# The dependencies are ``async def`` on purpose: they only read the scope, and
# FastAPI runs a plain ``def`` dependency in a worker thread, a hop that costs
# more than everything the middleware does on a signed-in request.
async def current_auth(request: Request) -> Auth:
    """Who the request is from; anonymous requests get an Auth too."""
    return auth_of(request.scope)


async def current_user(request: Request) -> str:
    """The signed-in user's id; 401 (or 503 while the store is down) otherwise."""
    # Reads the scope itself instead of depending on current_auth: each level
    # of dependencies costs FastAPI about as much as the middleware's whole
    # work on a signed-in request.
    auth = auth_of(request.scope)
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

    @app.get("/login", response_class=HTMLResponse)
    def login(error: str | None = None) -> str:
        # The login form, and where a failed form login comes back (?error=login_failed).
        return login_page(error, next_path="/me", providers=flow.code_providers)

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
    app.add_middleware(
        TokenflowMiddleware,
        flow=flow,
        required=["/me", "/notes"],
        endpoints=Endpoints(login_page="/login"),
    )
    return app


app = create_app(make_flow())
