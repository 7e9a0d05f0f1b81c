"""tokenflow in a Flask application: the WSGI middleware, a decorator and ``g``.

Run it from the repository root (plain HTTP on localhost, hence ``TOKENFLOW_DEV=1``;
short lifetimes so that you can watch them)::

    pip install 'tokenflow[examples]'
    TOKENFLOW_DEV=1 TOKENFLOW_ACCESS_TTL=10 TOKENFLOW_IDLE_TTL=60 \\
        flask --app examples.flask_app run

Then try, in a browser at http://127.0.0.1:5000/:

1. ``/me``: 401. ``/login``: the login form.
2. A wrong password: back on ``/login`` with "Wrong username or password."
3. ``alice`` / ``wonderland-passphrase``: a 303 to ``/me`` with two cookies.
4. Wait 10 s and reload ``/me``: still signed in (a silent refresh). Leave it
   60 s: the session ends, 401.

Lifetimes and the store come from the environment: see ``examples/environment.py``.
With ``TOKENFLOW_OIDC_*`` set there, ``/login`` also offers "Sign in with provider"
(the middleware serves ``/auth/oidc/provider/start`` and ``/callback``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from examples.environment import login_page, make_flow
from flask import Flask, abort, g, request

from tokenflow import Flow
from tokenflow.wsgi import Endpoints, TokenflowMiddleware, auth_of

F = TypeVar("F", bound=Callable[..., Any])


def login_required(view: F) -> F:
    """Serve the view to signed-in users only: 401, or 503 while the store is down."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if g.auth.user_id is None:
            abort(g.auth.denial_status)
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def create_app(flow: Flow) -> Flask:
    """The application; ``g.auth`` and ``g.user`` hold the request's identity."""
    app = Flask(__name__)

    @app.before_request
    def identify() -> None:
        g.auth = auth_of(request.environ)
        g.user = g.auth.user_id

    @app.get("/")
    def home() -> str:
        return f"hello, {g.user or 'stranger'}"

    @app.get("/login")
    def login() -> str:
        # The login form, and where a failed form login comes back (?error=login_failed).
        return login_page(request.args.get("error"), next_path="/me", providers=flow.code_providers)

    @app.get("/me")
    @login_required
    def me() -> dict[str, str]:
        return {"user": g.user}

    @app.post("/notes")
    @login_required
    def add_note() -> dict[str, str]:
        return {"saved_for": g.user}

    # The middleware answers 401 itself on /me and /notes, whatever the
    # spelling of the path (Werkzeug routes //me to /me); @login_required
    # keeps each view safe on its own as well.
    app.wsgi_app = TokenflowMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, flow, required=["/me", "/notes"], endpoints=Endpoints(login_page="/login")
    )
    return app


app = create_app(make_flow())
