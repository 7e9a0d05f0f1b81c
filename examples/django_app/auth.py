"""tokenflow for Django: a middleware, a view decorator, login and logout views.

Django routes requests itself, so this example calls the flow directly: the
middleware asks ``flow.decide`` on every request and puts the decision on
``request.tokenflow``; the login and logout views call ``flow.login`` and
``flow.logout``. Each decision says what to answer, by its type. With
``TOKENFLOW_OIDC_*`` set (``examples/environment.py``), ``provider_start`` and
``provider_callback`` offer "Sign in with provider" through
``flow.start_provider_login`` and ``flow.login``.

Run it from the repository root (plain HTTP on localhost, hence
``TOKENFLOW_DEV=1``; short lifetimes so that you can watch them)::

    pip install 'tokenflow[examples]'
    TOKENFLOW_DEV=1 TOKENFLOW_ACCESS_TTL=10 TOKENFLOW_IDLE_TTL=60 \\
        gunicorn examples.django_app.wsgi

Then try, in a browser at http://127.0.0.1:8000/:

1. ``/me``: 401. ``/login``: the login form.
2. A wrong password: back on ``/login`` with "Wrong username or password."
3. ``alice`` / ``wonderland-passphrase``: a 303 to ``/me`` with two cookies.
4. Wait 10 s and reload ``/me``: still signed in (a silent refresh). Leave it
   60 s: the session ends, 401.

Lifetimes and the store come from the environment (``examples/environment.py``),
read once, at the first request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import replace
from http.cookies import Morsel
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.http import require_GET, require_POST
from examples.environment import PROVIDER, login_page, make_flow

from tokenflow import (
    AuthorizationCodeCredentials,
    Decision,
    Flow,
    Forbidden,
    LoggedOut,
    PasswordCredentials,
    Process,
    ProviderRedirect,
    Reissue,
    Request,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)


@functools.cache
def flow() -> Flow:
    """The process's one flow, built on first use from the environment."""
    return make_flow()


class _RawCookie(Morsel[str]):
    """A Set-Cookie value rendered by tokenflow, passed through Django untouched."""

    def __init__(self, line: str) -> None:
        super().__init__()
        name, _, rest = line.partition("=")
        self.set(name, rest.split(";", 1)[0], rest.split(";", 1)[0])
        self._line = line

    def OutputString(self, attrs: Any = None) -> str:
        return self._line


def send_cookies(response: HttpResponse, decision: Decision) -> HttpResponse:
    """Add the decision's Set-Cookie values (and no-store when there are any)."""
    if decision.set_cookies:
        for line in decision.set_cookies:
            cookie = _RawCookie(line)
            response.cookies[cookie.key] = cookie
        response["Cache-Control"] = "no-store"
    return response


def _refusal(decision: Decision) -> HttpResponse | None:
    if isinstance(decision, Forbidden):
        return JsonResponse({"error": "cross_origin_request_refused"}, status=403)
    if isinstance(decision, TooManyRequests):
        response = JsonResponse({"error": "too_many_requests"}, status=429)
        response["Retry-After"] = str(decision.retry_after)
        return response
    return None


class TokenflowMiddleware:
    """Decides every request; ``request.tokenflow`` holds the decision."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # path_info is what Django routes (request.path adds the script name).
        if request.path_info in ("/auth/login", "/auth/logout") or request.path_info.startswith(
            "/auth/oidc/"
        ):
            # The login, logout and sign-in views run their own operations.
            request.tokenflow = None  # type: ignore[attr-defined]
            return self.get_response(request)
        decision = flow().decide(Request.from_wsgi(request.META))
        refused = _refusal(decision)
        if refused is not None:
            return refused
        request.tokenflow = decision  # type: ignore[attr-defined]
        return send_cookies(self.get_response(request), decision)


def user_of(request: HttpRequest) -> str | None:
    """The signed-in user's id, or None."""
    decision = getattr(request, "tokenflow", None)
    return decision.user_id if isinstance(decision, (Process, Reissue)) else None


def login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Serve the view to signed-in users only: 401, or 503 while the store is down."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if user_of(request) is None:
            down = isinstance(getattr(request, "tokenflow", None), Unavailable)
            return JsonResponse({"error": "unauthorized"}, status=503 if down else 401)
        return view(request, *args, **kwargs)

    return guarded


def _credentials(request: HttpRequest) -> PasswordCredentials | None:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body[:16384])
        except ValueError:
            return None
        fields = data if isinstance(data, dict) else {}
    else:
        fields = request.POST
    username, password = fields.get("username"), fields.get("password")
    if isinstance(username, str) and isinstance(password, str):
        return PasswordCredentials(username, password)
    return None


@require_GET
def login_form(request: HttpRequest) -> HttpResponse:
    """The login form, and where a failed form login comes back (``?error=login_failed``)."""
    return HttpResponse(
        login_page(request.GET.get("error"), next_path="/me", providers=flow().code_providers)
    )


def _failed(request: HttpRequest) -> HttpResponse:
    # A form goes back to the login page; a script gets 401.
    if request.content_type == "application/json":
        return JsonResponse({"error": "login_failed"}, status=401)
    return HttpResponseRedirect("/login?error=login_failed", status=303)


@require_POST
def login(request: HttpRequest) -> HttpResponse:
    """Log in (form or JSON): verified even if a session cookie is present."""
    attempt = Request.from_wsgi(request.META)
    # The origin first, before the body is read: without credentials the
    # flow runs only its cross-origin check (Forbidden, or Unauthorized).
    refused = _refusal(flow().login(attempt))
    if refused is not None:
        return refused
    credentials = _credentials(request)
    if credentials is None:
        return _failed(request)
    decision = flow().login(replace(attempt, credentials=credentials))
    if isinstance(decision, Reissue):
        # A fixed target: a user-supplied "next" needs an open-redirect check
        # (django.utils.http.url_has_allowed_host_and_scheme).
        return send_cookies(HttpResponseRedirect("/me", status=303), decision)
    refused = _refusal(decision)
    if refused is not None:
        return refused
    if isinstance(decision, Unavailable):
        return JsonResponse({"error": "unavailable"}, status=503)
    return _failed(request)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Log out: the session is revoked and both cookies cleared."""
    decision = flow().logout(Request.from_wsgi(request.META))
    if isinstance(decision, LoggedOut):
        return send_cookies(HttpResponseRedirect("/", status=303), decision)
    refused = _refusal(decision)
    return refused if refused is not None else JsonResponse({"error": "unavailable"}, status=503)


# -- "Sign in with" the provider TOKENFLOW_OIDC_* names (examples/environment.py) --------


@require_GET
def provider_start(request: HttpRequest) -> HttpResponse:
    """A 302 to the provider (PKCE, state, nonce), with the sealed transaction cookie."""
    decision = flow().start_provider_login(
        Request.from_wsgi(request.META), PROVIDER, next_path="/me"
    )
    if isinstance(decision, ProviderRedirect):
        return send_cookies(HttpResponseRedirect(decision.location, status=302), decision)
    if isinstance(decision, Unavailable):
        return JsonResponse({"error": "unavailable"}, status=503)
    return JsonResponse({"error": "no_such_provider"}, status=404)


@require_GET
def provider_callback(request: HttpRequest) -> HttpResponse:
    """The provider's redirect back: the flow checks the state, redeems the code once and
    logs in; the transaction cookie is cleared whatever the outcome."""
    parameters = request.GET
    credentials = AuthorizationCodeCredentials(
        PROVIDER,
        code=parameters.get("code"),
        state=parameters.get("state"),
        issuer=parameters.get("iss"),
        error=parameters.get("error"),
    )
    decision = flow().login(replace(Request.from_wsgi(request.META), credentials=credentials))
    if isinstance(decision, Reissue):
        # "/me" is what provider_start asked for: the transaction's next is a fixed path.
        return send_cookies(HttpResponseRedirect("/me", status=303), decision)
    refused = _refusal(decision)
    if refused is None:
        refused = (
            JsonResponse({"error": "unavailable"}, status=503)
            if isinstance(decision, Unavailable)
            else HttpResponseRedirect("/login?error=login_failed", status=303)
        )
    if isinstance(decision, Unauthorized):
        return send_cookies(refused, decision)
    for line in flow().transaction_clearing(credentials):
        cookie = _RawCookie(line)
        refused.cookies[cookie.key] = cookie
    return refused
