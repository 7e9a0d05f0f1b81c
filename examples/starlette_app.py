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

``/account`` requires a signed-in user (the middleware answers 401 itself);
``/`` is public and greets whoever is signed in. ``/sign-in`` has a "Sign in
with" button per provider configured for the authorization-code flow; to try
it against a local OpenID provider, set ``TOKENFLOW_OIDC_ISSUER``,
``TOKENFLOW_OIDC_CLIENT_ID``, ``TOKENFLOW_OIDC_CLIENT_SECRET`` and
``TOKENFLOW_OIDC_REDIRECT_URI`` (``http://127.0.0.1:8000/auth/oidc/provider/callback``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from typing import Any

from examples import environment
from examples.environment import login_page
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from tokenflow import Flow
from tokenflow.asgi import Auth, Endpoints, TokenflowMiddleware


def make_flow(env: Mapping[str, str] = os.environ, *, provider: Any = None) -> Flow:
    """The flow of :mod:`examples.environment`; ``provider`` (a
    :func:`tokenflow.oidc.code_flow` client) adds "Sign in with" as ``provider``,
    and a first sign-in with it creates the user (a stand-in for sign-up)."""
    return environment.make_flow(env, provider=provider)


async def home(request: Request) -> PlainTextResponse:
    auth: Auth = request.state.tokenflow
    return PlainTextResponse(f"hello, {auth.user_id or 'stranger'}")


def login_route(flow: Flow) -> Any:
    """``/login``: the form, where a failed form login comes back (?error=login_failed),
    and a "Sign in with" link per configured provider."""

    async def login(request: Request) -> HTMLResponse:
        return HTMLResponse(
            login_page(
                request.query_params.get("error"),
                next_path="/account",
                providers=flow.code_providers,
            )
        )

    return login


async def account(request: Request) -> JSONResponse:
    # Under a required prefix: only signed-in users get here.
    auth: Auth = request.state.tokenflow
    return JSONResponse({"user": auth.user_id, "session": auth.session_id})


def sign_in_page(flow: Flow) -> Any:
    """``/sign-in``: a "Sign in with" button per provider, and a sign-out button."""
    buttons = "".join(
        f'<a class="sign-in" id="sign-in-{html.escape(name)}" '
        f'href="/auth/oidc/{html.escape(name)}/start?next=/account">'
        f"Sign in with {html.escape(name)}</a>"
        for name in sorted(flow.code_providers)
    )

    async def sign_in(request: Request) -> HTMLResponse:
        auth: Auth = request.state.tokenflow
        who = html.escape(auth.user_id or "nobody")
        return HTMLResponse(
            f"<!doctype html><title>Sign in</title><p id=who>{who}</p>{buttons}"
            '<form method=post action="/auth/logout"><button id=sign-out>Sign out</button></form>'
        )

    return sign_in


def create_app(flow: Flow) -> Starlette:
    """The application, with /account required and a form login page at /login."""
    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login_route(flow)),
            Route("/account", account),
            Route("/sign-in", sign_in_page(flow)),
        ],
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
