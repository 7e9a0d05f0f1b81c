"""WSGI middleware: tokenflow in front of any WSGI application, no framework needed.

::

    from tokenflow.wsgi import TokenflowMiddleware   # or tokenflow.web.wsgi

    app.wsgi_app = TokenflowMiddleware(app.wsgi_app, flow, required=["/account"])

The same behaviour as :mod:`tokenflow.asgi`, for a sync :class:`~tokenflow.Flow`:
the :class:`~tokenflow.wsgi.Auth` is in ``environ["tokenflow"]``; the
decision's ``Set-Cookie`` headers (with ``Cache-Control: no-store``) are
added to whatever the application passes to ``start_response``, whatever
its body iterable; 403 and 429 are answered by the middleware, and so are
401 and 503 on the paths ``required`` names; the login, logout and sessions
endpoints of :class:`~tokenflow.wsgi.Endpoints` are served here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Protocol, TypeAlias

from .._drivers import AsyncFlow, Flow
from .._errors import ConfigError
from .._http import TrustedProxies
from .._model import Decision, Process, Request
from ._shared import (
    Auth,
    Decide,
    Endpoints,
    Failed,
    Incoming,
    Login,
    Logout,
    PassThrough,
    ReadBody,
    RefreshDevice,
    RegisterDevice,
    Required,
    Response,
    SessionsOf,
    Steps,
    endpoint,
    for_route,
    reason_phrase,
    required_predicate,
    routes_with_device_binding,
)

__all__ = ["Auth", "Endpoints", "TokenflowMiddleware", "WSGIApp", "auth_of"]

Environ: TypeAlias = MutableMapping[str, Any]
Headers: TypeAlias = list[tuple[str, str]]


class StartResponse(Protocol):
    """The ``start_response`` callable of PEP 3333."""

    def __call__(
        self, status: str, headers: Headers, exc_info: Any = None, /
    ) -> Callable[[bytes], object]: ...


WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
"""A WSGI application."""


def auth_of(environ: Environ) -> Auth:
    """The :class:`Auth` the middleware put in ``environ``.

    Raises :class:`LookupError` when the request did not pass through
    :class:`TokenflowMiddleware` (a wiring mistake, not an anonymous user).
    """
    auth = environ.get("tokenflow")
    if not isinstance(auth, Auth):
        raise LookupError(
            "no tokenflow Auth in this environ: wrap the application in TokenflowMiddleware"
        )
    return auth


class TokenflowMiddleware:
    """Authenticates every request of a WSGI application (see the module doc).

    ``flow`` is a sync :class:`~tokenflow.Flow`. ``required``, ``endpoints``,
    ``proxies`` and ``on_decision`` as in :class:`tokenflow.asgi.TokenflowMiddleware`.
    """

    __slots__ = ("_app", "_endpoints", "_flow", "_on_decision", "_proxies", "_required", "_routes")

    def __init__(
        self,
        app: WSGIApp,
        flow: Flow,
        *,
        required: Required = None,
        endpoints: Endpoints | None = None,
        proxies: TrustedProxies | None = None,
        on_decision: Callable[[Decision], object] | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigError("TokenflowMiddleware wraps a WSGI application (a callable)")
        if on_decision is not None and not callable(on_decision):
            raise ConfigError("on_decision must be a callable taking a Decision")
        if isinstance(flow, AsyncFlow):
            raise ConfigError(
                "the WSGI middleware calls its flow synchronously: give it a Flow with sync "
                "ports, not an AsyncFlow"
            )
        if not isinstance(flow, Flow):
            raise ConfigError("TokenflowMiddleware needs a tokenflow Flow")
        endpoints = Endpoints() if endpoints is None else endpoints
        if not isinstance(endpoints, Endpoints):
            raise ConfigError("endpoints must be a tokenflow.wsgi.Endpoints")
        if proxies is not None and not isinstance(proxies, TrustedProxies):
            raise ConfigError("proxies must be a tokenflow.TrustedProxies")
        self._app = app
        self._flow = flow
        self._required = required_predicate(required)
        self._endpoints = endpoints
        self._routes = routes_with_device_binding(endpoints, flow.config.device_binding)
        self._proxies = proxies
        self._on_decision = on_decision

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request.from_wsgi(environ, proxies=self._proxies)
        path = _path(environ)
        kind = self._routes.get(path)
        if kind is not None:
            return _respond(start_response, self._endpoint(kind, request, environ))
        decision = self._flow.decide(request)
        if self._on_decision is not None and type(decision) is not Process:
            self._on_decision(decision)
        outcome = for_route(decision, self._required(path))
        if isinstance(outcome, Response):
            return _respond(start_response, outcome)
        environ["tokenflow"] = outcome.auth
        return self._app(environ, _cookie_starter(start_response, outcome))

    def _endpoint(self, kind: str, request: Request, environ: Environ) -> Response:
        flow = self._flow
        incoming = Incoming(
            str(environ.get("REQUEST_METHOD", "GET")),
            str(environ.get("CONTENT_TYPE", "")),
            str(environ.get("HTTP_ACCEPT", "")),
            str(environ.get("QUERY_STRING", "")),
            environ.get("HTTP_SECURE_SESSION_RESPONSE"),
            environ.get("HTTP_SEC_SECURE_SESSION_ID"),
        )
        steps: Steps = endpoint(kind, request, incoming, self._endpoints)
        answer: Any = None
        while True:
            try:
                operation = steps.send(answer)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(operation, ReadBody):
                answer = _read_body(environ, operation.limit)
            elif isinstance(operation, (Decide, Login, Logout)):
                if isinstance(operation, Decide):
                    answer = flow.decide(operation.request)
                elif isinstance(operation, Login):
                    answer = flow.login(operation.request)
                else:
                    answer = flow.logout(operation.request)
                if self._on_decision is not None and type(answer) is not Process:
                    self._on_decision(answer)
            elif isinstance(operation, (RegisterDevice, RefreshDevice)):
                if isinstance(operation, RegisterDevice):
                    answer = flow.register_device(operation.request)
                else:
                    answer = flow.refresh_device(operation.request)
                if self._on_decision is not None:
                    self._on_decision(answer)
            else:
                try:
                    if isinstance(operation, SessionsOf):
                        answer = flow.sessions_of(operation.user_id)
                    else:
                        answer = flow.revoke_session(operation.session_id)
                except Exception as exc:
                    answer = Failed(exc)


def _path(environ: Environ) -> str:
    # PATH_INFO is relative to where the application is mounted (SCRIPT_NAME);
    # endpoints and required prefixes are matched against it.
    path = environ.get("PATH_INFO", "")
    return path if isinstance(path, str) and path else "/"


def _read_body(environ: Environ, limit: int) -> bytes | None:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length_text = environ.get("CONTENT_LENGTH") or ""
    try:
        length = int(length_text) if length_text else None
    except ValueError:
        return None
    if length is not None:
        if length < 0 or length > limit:
            return None
        return bytes(stream.read(length))
    # No length (chunked): read one byte past the limit to tell "too long".
    body = bytes(stream.read(limit + 1))
    return None if len(body) > limit else body


def _cookie_starter(start_response: StartResponse, outcome: PassThrough) -> StartResponse:
    if not outcome.set_cookies:
        return start_response
    extra = [("Set-Cookie", value) for value in outcome.set_cookies]

    def start_with_cookies(
        status: str, headers: Headers, exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        # New tokens (or clearing cookies) must never sit in a shared cache.
        kept = [(n, v) for n, v in headers if n.lower() != "cache-control"]
        kept.extend(extra)
        kept.append(("Cache-Control", "no-store"))
        return start_response(status, kept, exc_info)

    return start_with_cookies


def _respond(start_response: StartResponse, response: Response) -> Iterable[bytes]:
    status = f"{response.status} {reason_phrase(response.status)}"
    start_response(status, list(response.headers))
    return [response.body]
