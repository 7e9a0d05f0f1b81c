"""tokenflow in a Starlette application: the middleware and ``request.state.tokenflow``.

Run it from the repository root (plain HTTP on localhost, hence ``TOKENFLOW_DEV=1``;
short lifetimes so that you can watch them)::

    pip install 'tokenflow[examples]'
    TOKENFLOW_DEV=1 TOKENFLOW_ACCESS_TTL=10 TOKENFLOW_IDLE_TTL=60 \\
        uvicorn examples.starlette_app:app

Then try, in a browser at http://127.0.0.1:8000/:

1. ``/account``: 401, nobody is signed in. ``/login``: the login form.
2. A wrong password: back on ``/login`` with "Wrong username or password."
3. ``alice`` / ``wonderland-passphrase``: a 303 to ``/account`` with two
   cookies; ``/`` now greets alice.
4. Wait 10 s and reload ``/account``: still signed in (a silent refresh: the
   refresh token rotated). Leave it 60 s: the session ends, 401.

Lifetimes and the store come from the environment: see ``examples/environment.py``
(``TOKENFLOW_STORE=memory``, ``redis://...``, ``postgresql://...``, a SQLite file).
"""

from __future__ import annotations

from examples.environment import login_page, make_flow
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from tokenflow import Flow
from tokenflow.asgi import Auth, Endpoints, TokenflowMiddleware


async def home(request: Request) -> PlainTextResponse:
    auth: Auth = request.state.tokenflow
    return PlainTextResponse(f"hello, {auth.user_id or 'stranger'}")


async def login(request: Request) -> HTMLResponse:
    # The login form, and where a failed form login comes back (?error=login_failed).
    return HTMLResponse(login_page(request.query_params.get("error"), next_path="/account"))


async def account(request: Request) -> JSONResponse:
    # Under a required prefix: only signed-in users get here.
    auth: Auth = request.state.tokenflow
    return JSONResponse({"user": auth.user_id, "session": auth.session_id})


def create_app(flow: Flow) -> Starlette:
    """The application, with /account required and a form login page at /login."""
    return Starlette(
        routes=[Route("/", home), Route("/login", login), Route("/account", account)],
        middleware=[
            Middleware(
                TokenflowMiddleware,
                flow=flow,
                required=["/account"],
                endpoints=Endpoints(login_page="/login", after_login="/account"),
            )
        ],
    )


app = create_app(make_flow())
