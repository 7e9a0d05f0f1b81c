"""tokenflow for Django: a middleware, a view decorator, login and logout views.

Django routes requests itself, so this example calls the flow directly: the
middleware asks ``flow.decide`` on every request and puts the decision on
``request.tokenflow``; the login and logout views call ``flow.login`` and
``flow.logout``. Each decision says what to answer, by its type.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import replace
from http.cookies import Morsel
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.http import require_POST

from tokenflow import (
    CookiePolicy,
    Decision,
    Flow,
    FlowConfig,
    Forbidden,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    TooManyRequests,
    Unavailable,
)
from tokenflow.stores import SQLiteStore

# Stand-ins for your user model and password hashes.
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory


@functools.cache
def flow() -> Flow:
    """The process's one flow, built on first use from the Django settings."""
    import os

    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "wonderland-passphrase", user_id="alice")
    keys = os.environ.get("TOKENFLOW_KEYS")
    policy = CookiePolicy.local_development() if settings.TOKENFLOW_DEV else CookiePolicy()
    return Flow(
        KeyRing.parse(keys) if keys else KeyRing.generate(),
        SQLiteStore(settings.TOKENFLOW_DB),
        users,
        passwords=passwords,
        config=FlowConfig(cookies=policy),
    )


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
        if request.path_info in ("/auth/login", "/auth/logout"):
            # The login and logout views run their own operations.
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
        return JsonResponse({"error": "login_failed"}, status=401)
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
    return JsonResponse({"error": "login_failed"}, status=401)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Log out: the session is revoked and both cookies cleared."""
    decision = flow().logout(Request.from_wsgi(request.META))
    if isinstance(decision, LoggedOut):
        return send_cookies(HttpResponseRedirect("/", status=303), decision)
    refused = _refusal(decision)
    return refused if refused is not None else JsonResponse({"error": "unavailable"}, status=503)
