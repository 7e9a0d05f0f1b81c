"""tokenflow in a Flask application: the WSGI middleware, a decorator and ``g``.

Run it::

    TOKENFLOW_DEV=1 flask --app examples.flask_app run
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, g, request

from tokenflow import CookiePolicy, Flow, FlowConfig, KeyRing
from tokenflow.stores import SQLiteStore

# Stand-ins for your user database and password hashes.
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory
from tokenflow.wsgi import TokenflowMiddleware, auth_of

F = TypeVar("F", bound=Callable[..., Any])


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
        app.wsgi_app, flow, required=["/me", "/notes"]
    )
    return app


app = create_app(make_flow(os.environ.get("TOKENFLOW_DB", "sessions.db")))
