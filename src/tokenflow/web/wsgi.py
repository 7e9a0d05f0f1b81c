"""WSGI middleware: tokenflow in front of any WSGI application, no framework needed.

::

    from tokenflow.wsgi import TokenflowMiddleware   # or tokenflow.web.wsgi

    app.wsgi_app = TokenflowMiddleware(app.wsgi_app, flow, required=["/account"])

The same behaviour as :mod:`tokenflow.asgi`, for a sync :class:`~tokenflow.Flow`:
the :class:`~tokenflow.wsgi.Auth` is in ``environ["tokenflow"]``; the
decision's ``Set-Cookie`` headers (with ``Cache-Control: no-store``) are
added to whatever the application passes to ``start_response``, whatever
its body iterable; 403 and 429 are answered by the middleware, and so are
401 and 503 on the paths ``required`` names (matched on ``PATH_INFO``, in
every spelling a router might read), and a session that falls short of
the :class:`~tokenflow.Requirement` its path is mapped to in
``requirements`` (a 303 to the step-up page for a browser navigation, else
401 with the RFC 9470 challenge); the login, logout and sessions endpoints
of :class:`~tokenflow.wsgi.Endpoints` are served here. If the
application raises before its response starts, on a request whose decision
carries cookies, the middleware answers 500 with those cookies (passing
``exc_info`` to ``start_response``, and writing the traceback to
``wsgi.errors``). Request bodies are read as PEP 3333 allows: at most
``CONTENT_LENGTH`` bytes, and without it only from a server that sets
``wsgi.input_terminated``.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import replace
from typing import Any, Final, Protocol, TypeAlias

from .._drivers import AsyncFlow, Flow
from .._errors import ConfigError
from .._http import TrustedProxies
from .._model import Decision, Process, Request, StepUpRequired, TooManyRequests, Unavailable
from ._shared import (
    Auth,
    ConfirmEnrolment,
    Decide,
    Endpoints,
    FactorCall,
    Failed,
    Incoming,
    Login,
    Logout,
    PasskeyCall,
    PassThrough,
    ReadBody,
    RefreshDevice,
    RegisterDevice,
    Require,
    Required,
    Requirements,
    Response,
    SessionsOf,
    StartProviderLogin,
    Steps,
    StepUp,
    TransactionClearing,
    endpoint,
    for_route,
    is_navigation,
    reason_phrase,
    required_predicate,
    requirement_lookup,
    routes_of,
    server_error,
    step_up_response,
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
    ``proxies``, ``on_decision`` and ``requirements`` as in
    :class:`tokenflow.asgi.TokenflowMiddleware`.
    """

    __slots__ = (
        "_app",
        "_endpoints",
        "_flow",
        "_on_decision",
        "_proxies",
        "_required",
        "_requirement",
        "_routes",
    )

    def __init__(
        self,
        app: WSGIApp,
        flow: Flow,
        *,
        required: Required = None,
        endpoints: Endpoints | None = None,
        proxies: TrustedProxies | None = None,
        on_decision: Callable[[Decision], object] | None = None,
        requirements: Requirements = None,
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
            raise ConfigError("proxies must be a tokenflow.web.TrustedProxies")
        self._app = app
        self._flow = flow
        self._endpoints = endpoints
        self._routes = routes_of(endpoints, flow)
        self._required = required_predicate(required, self._routes)
        self._requirement = requirement_lookup(requirements)
        self._proxies = proxies
        self._on_decision = on_decision

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request.from_wsgi(environ, proxies=self._proxies)
        path = _path(environ)
        kind = self._routes.get(path)
        if kind is not None:
            return _respond(start_response, self._endpoint(kind, request, environ))
        requirement = None if self._requirement is None else self._requirement(path)
        if requirement is not None:
            request = replace(request, requirement=requirement)
        decision = self._flow.decide(request)
        if self._on_decision is not None and type(decision) is not Process:
            self._on_decision(decision)
        if type(decision) is StepUpRequired:
            navigation = is_navigation(
                str(environ.get("REQUEST_METHOD", "GET")),
                environ.get("HTTP_SEC_FETCH_MODE"),
                str(environ.get("HTTP_ACCEPT", "")),
            )
            target = str(environ.get("SCRIPT_NAME", "")) + path
            if environ.get("QUERY_STRING"):
                target += "?" + str(environ["QUERY_STRING"])
            return _respond(
                start_response, step_up_response(decision, navigation, self._endpoints, target)
            )
        outcome = for_route(decision, requirement is not None or self._required(path))
        if isinstance(outcome, Response):
            return _respond(start_response, outcome)
        environ["tokenflow"] = outcome.auth
        if not outcome.set_cookies:
            return self._app(environ, start_response)
        return _guarded(self._app, environ, start_response, outcome)

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
        trusted = frozenset(flow.config.trusted_origins)
        steps: Steps = endpoint(kind, request, incoming, self._endpoints, trusted)
        answer: Any = None
        while True:
            try:
                operation = steps.send(answer)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(operation, ReadBody):
                answer = _read_body(environ, operation.limit)
            elif isinstance(operation, (Decide, Login, Logout, StepUp)):
                if isinstance(operation, Decide):
                    answer = flow.decide(operation.request)
                elif isinstance(operation, Login):
                    answer = flow.login(operation.request)
                elif isinstance(operation, StepUp):
                    answer = flow.step_up(operation.request)
                else:
                    answer = flow.logout(operation.request)
                if self._on_decision is not None and type(answer) is not Process:
                    self._on_decision(answer)
            elif isinstance(operation, PasskeyCall):
                try:
                    method = getattr(flow.passkeys, operation.method)
                    answer = method(*operation.args, **operation.kwargs)
                except Exception as exc:
                    answer = Failed(exc)
            elif isinstance(operation, Require):
                answer = flow.require(operation.decision, operation.requirement)
                if self._on_decision is not None and answer is not operation.decision:
                    self._on_decision(answer)
            elif isinstance(operation, (FactorCall, ConfirmEnrolment)):
                answer = self._factor_call(operation)
            elif isinstance(operation, StartProviderLogin):
                answer = flow.start_provider_login(
                    operation.request, operation.provider, next_path=operation.next_path
                )
                if self._on_decision is not None:
                    self._on_decision(answer)
            elif isinstance(operation, TransactionClearing):
                answer = flow.transaction_clearing(operation.credentials)
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

    def _factor_call(self, operation: FactorCall | ConfirmEnrolment) -> Any:
        """An enrolment endpoint's call on the second factors (a Failed if it raises)."""
        flow = self._flow
        factors = flow.second_factors
        try:
            if isinstance(operation, FactorCall):
                kwargs = dict(operation.kwargs)
                if operation.timed:
                    kwargs["now"] = flow.clock()
                return getattr(factors, operation.method)(*operation.args, **kwargs)
            user_id, code = operation.user_id, operation.code
            answer = flow.second_factor_attempt(
                user_id,
                lambda now: factors.confirm_totp(user_id, code, now=now),
                client_address=operation.client_address,
            )
        except Exception as exc:
            return Failed(exc)
        if self._on_decision is not None and isinstance(answer, (TooManyRequests, Unavailable)):
            self._on_decision(answer)
        return answer


def _path(environ: Environ) -> str:
    # PATH_INFO is relative to where the application is mounted (SCRIPT_NAME);
    # endpoints and required prefixes are matched against it. It carries the
    # path's bytes as latin-1 (PEP 3333): routers read them as UTF-8.
    path = environ.get("PATH_INFO", "")
    if not isinstance(path, str) or not path:
        return "/"
    if not path.isascii():
        try:
            return path.encode("latin-1").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return path
    return path


_DIGITS: Final = re.compile(r"[0-9]{1,18}")


def _read_body(environ: Environ, limit: int) -> bytes | None:
    """The body, at most ``limit`` bytes; None when it is longer or its length
    is not a number.

    Never past ``CONTENT_LENGTH`` (PEP 3333): the stream may be the socket
    itself, and a read beyond the body would wait for bytes that never come.
    Without a length, the body is read only when the server says the stream
    ends with it (``wsgi.input_terminated``); otherwise it is empty.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        # ASCII digits only: int() also takes "+5", " 5", "5_0" and fullwidth digits.
        if not isinstance(length_text, str) or not _DIGITS.fullmatch(length_text):
            return None
        length = int(length_text)
        if length > limit:
            return None
        return bytes(stream.read(length)) if length else b""
    if not environ.get("wsgi.input_terminated"):
        return b""
    # A terminated stream without a length (chunked): one byte past the limit
    # tells "too long".
    body = bytes(stream.read(limit + 1))
    return None if len(body) > limit else body


class _CookieStarter:
    """The ``start_response`` the application gets: adds the decision's
    cookies, and remembers whether the application started a response."""

    __slots__ = ("_extra", "_start_response", "started")

    def __init__(self, start_response: StartResponse, set_cookies: tuple[str, ...]) -> None:
        self._start_response = start_response
        self._extra = [("Set-Cookie", value) for value in set_cookies]
        self.started = False

    def __call__(
        self, status: str, headers: Headers, exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        # New tokens (or clearing cookies) must never sit in a shared cache.
        kept = [(n, v) for n, v in headers if n.lower() != "cache-control"]
        kept.extend(self._extra)
        kept.append(("Cache-Control", "no-store"))
        write = self._start_response(status, kept, exc_info)
        self.started = True
        return write


def _guarded(
    app: WSGIApp, environ: Environ, start_response: StartResponse, outcome: PassThrough
) -> Iterable[bytes]:
    """Calls the application; if it raises before its first body bytes, the
    answer is a 500 that still carries the decision's cookies."""
    starter = _CookieStarter(start_response, outcome.set_cookies)
    try:
        body = app(environ, starter)
    except Exception:
        return _server_error(environ, start_response, outcome.set_cookies)
    return _Body(body, environ, start_response, outcome.set_cookies)


def _server_error(
    environ: Environ, start_response: StartResponse, set_cookies: tuple[str, ...]
) -> list[bytes]:
    """The 500 for the exception being handled: ``exc_info`` tells the server
    to replace any headers not yet sent (and to re-raise if they were)."""
    exc_info = sys.exc_info()
    errors = environ.get("wsgi.errors")
    if errors is not None:
        # A broken error stream must not keep the answer from going out.
        with contextlib.suppress(Exception):
            traceback.print_exception(*exc_info, file=errors)
    response = server_error(set_cookies)
    status = f"{response.status} {reason_phrase(response.status)}"
    start_response(status, list(response.headers), exc_info)
    return [response.body]


class _Body:
    """The application's body; an error before its first non-empty chunk is
    still answered with the cookies (PEP 3333 headers go out with it)."""

    __slots__ = ("_body", "_cookies", "_environ", "_sent", "_start_response")

    def __init__(
        self,
        body: Iterable[bytes],
        environ: Environ,
        start_response: StartResponse,
        set_cookies: tuple[str, ...],
    ) -> None:
        self._body = body
        self._environ = environ
        self._start_response = start_response
        self._cookies = set_cookies
        self._sent = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                if chunk:
                    self._sent = True
                yield chunk
        except Exception:
            if self._sent:
                raise
            yield from _server_error(self._environ, self._start_response, self._cookies)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _respond(start_response: StartResponse, response: Response) -> Iterable[bytes]:
    status = f"{response.status} {reason_phrase(response.status)}"
    start_response(status, list(response.headers))
    return [response.body]
