"""ASGI middleware: tokenflow in front of any ASGI application, no framework needed.

::

    from tokenflow.asgi import TokenflowMiddleware   # or tokenflow.web.asgi

    app = TokenflowMiddleware(app, flow, required=["/account"])

For every HTTP request the middleware builds a :class:`~tokenflow.Request`
from the scope (:meth:`~tokenflow.Request.from_asgi`), asks the flow for a
decision, and then:

* puts an :class:`~tokenflow.asgi.Auth` in ``scope["tokenflow"]`` and in
  ``scope["state"]["tokenflow"]`` (``request.state.tokenflow`` in Starlette
  and FastAPI) and calls the application;
* appends the decision's ``Set-Cookie`` headers (new tokens after a refresh,
  clearing cookies after a 401) to whatever response the application starts,
  streamed or not, with ``Cache-Control: no-store``;
* answers 403 (cross-site request), and 429 (with ``Retry-After``) itself;
* on a path that ``required`` names, answers 401 or 503 itself; on any other
  path an anonymous request reaches the application, which decides per route
  (``Auth.authenticated``, ``Auth.denial_status``); when the session store is
  down such a request passes through as anonymous and no cookie is touched.
  Paths are those the application routes: ``scope["path"]`` without
  ``scope["root_path"]``, as Starlette computes it; any spelling of a
  required path (``//account``, ``/./account``, ``/%61ccount``...) is
  required too;
* if the application raises before it starts its response, on a request
  whose decision carries cookies (a refresh), answers 500 itself with those
  cookies, then re-raises: the browser keeps its rotated session;
* on a path that ``requirements`` maps to a :class:`~tokenflow.Requirement`,
  answers a session that falls short itself: a browser navigation goes to
  ``Endpoints.step_up_page`` (303, with ``next``), anything else gets 401
  with the RFC 9470 ``WWW-Authenticate: Bearer
  error="insufficient_user_authentication"`` challenge;
* serves the login, logout and sessions endpoints of
  :class:`~tokenflow.asgi.Endpoints` (and the second-factor and step-up
  ones when the flow has second factors).

Takes an :class:`~tokenflow.AsyncFlow`, or a :class:`~tokenflow.Flow` whose
store calls then run in a worker thread: the middleware calls the flow's
public :meth:`~tokenflow.Flow.begin` on the event loop (the access path, which
needs no store) and hands only :meth:`~tokenflow.Flow.finish` to
``asyncio.to_thread``. Lifespan and websocket scopes pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import Any, TypeAlias

from .._drivers import AsyncFlow, Flow, PendingDecision
from .._errors import ConfigError
from .._http import TrustedProxies, read_asgi_route
from .._model import (
    Decision,
    Process,
    Request,
    StepUpRequired,
    TooManyRequests,
    Unavailable,
    draft_of,
    route_request,
)
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
    Revoke,
    SessionsOf,
    StartProviderLogin,
    Steps,
    StepUp,
    TransactionClearing,
    endpoint,
    for_route,
    is_navigation,
    required_predicate,
    requirement_lookup,
    routes_of,
    server_error,
    step_up_response,
)

__all__ = ["ASGIApp", "Auth", "Endpoints", "TokenflowMiddleware", "auth_of"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

_NO_STORE = (b"cache-control", b"no-store")
_AuthDraft: Any = draft_of(Auth)


def auth_of(scope: Scope) -> Auth:
    """The :class:`Auth` the middleware put in ``scope``.

    Raises :class:`LookupError` when the request did not pass through
    :class:`TokenflowMiddleware` (a wiring mistake, not an anonymous user).
    """
    try:
        auth = scope["tokenflow"]
    except KeyError:
        raise LookupError(
            "no tokenflow Auth in this scope: wrap the application in TokenflowMiddleware"
        ) from None
    if not isinstance(auth, Auth):
        raise LookupError("scope['tokenflow'] is not a tokenflow Auth")
    return auth


class TokenflowMiddleware:
    """Authenticates every HTTP request of an ASGI application (see the module doc).

    ``flow`` is an :class:`~tokenflow.AsyncFlow` or a :class:`~tokenflow.Flow`.
    ``required`` names the paths that need a signed-in user (a predicate on
    the path, or path prefixes); elsewhere anonymous requests pass through.
    ``requirements`` maps path prefixes to what they require of the session
    (:data:`tokenflow.web.Requirements`); such paths also require a user.
    ``endpoints`` places the built-in endpoints (``Endpoints(login=None, ...)``
    turns one off). ``proxies`` declares the reverse proxies whose forwarded
    headers are believed (none by default). ``on_decision`` is called with
    every decision the middleware makes, before it answers, except the plain
    valid-access ``Process`` (which carries no events): log
    ``decision.events`` there, including those of the requests the middleware
    answers itself (403, 429, 503, logins and logouts). It runs on the event
    loop: keep it quick.
    """

    __slots__ = (
        "_app",
        "_async",
        "_begin",
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
        app: ASGIApp,
        flow: AsyncFlow | Flow,
        *,
        required: Required = None,
        endpoints: Endpoints | None = None,
        proxies: TrustedProxies | None = None,
        on_decision: Callable[[Decision], object] | None = None,
        requirements: Requirements = None,
    ) -> None:
        if not callable(app):
            raise ConfigError("TokenflowMiddleware wraps an ASGI application (a callable)")
        if on_decision is not None and not callable(on_decision):
            raise ConfigError("on_decision must be a callable taking a Decision")
        if not isinstance(flow, (AsyncFlow, Flow)):
            raise ConfigError("TokenflowMiddleware needs a tokenflow AsyncFlow or Flow")
        endpoints = Endpoints() if endpoints is None else endpoints
        if not isinstance(endpoints, Endpoints):
            raise ConfigError("endpoints must be a tokenflow.asgi.Endpoints")
        if proxies is not None and not isinstance(proxies, TrustedProxies):
            raise ConfigError("proxies must be a tokenflow.web.TrustedProxies")
        self._app = app
        self._flow = flow
        self._begin = flow.begin
        self._async = isinstance(flow, AsyncFlow)
        self._endpoints = endpoints
        self._routes = routes_of(endpoints, flow)
        self._required = required_predicate(required, self._routes)
        self._requirement = requirement_lookup(requirements)
        self._proxies = proxies
        self._on_decision = on_decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope["path"]
        if scope.get("root_path"):
            path = _route_path(scope)
        kind = self._routes.get(path)
        if kind is not None:
            request = Request.from_asgi(scope, proxies=self._proxies)
            response = await self._endpoint(kind, request, scope, receive)
            await _send_response(send, response)
            return
        if self._proxies is None:
            request = read_asgi_route(scope, route_request)
        else:
            request = Request.from_asgi(scope, proxies=self._proxies)
        requirement = None if self._requirement is None else self._requirement(path)
        if requirement is not None:
            request = replace(request, requirement=requirement)
        # Step 1 (a valid access token) needs no port, for either kind of
        # flow: it is answered here, on the loop, with nothing to append, and
        # the application's own send and response go through untouched.
        first = self._begin(request)
        if type(first) is Process:
            # Auth(first), built in a draft (see tokenflow._model.draft_of):
            # the one object every request of a signed-in user makes here.
            auth = _AuthDraft()
            auth.decision = first
            auth.__class__ = Auth
            scope["tokenflow"] = auth
            state = scope.get("state")
            if state is None:
                scope["state"] = {"tokenflow": auth}
            else:
                state["tokenflow"] = auth
            await self._app(scope, receive, send)
            return
        decision = await self._finish(first)
        if self._on_decision is not None:
            self._on_decision(decision)
        if type(decision) is StepUpRequired:
            navigation = is_navigation(
                scope.get("method", "GET"),
                _header(scope, b"sec-fetch-mode"),
                _header(scope, b"accept") or "",
            )
            target = scope["path"]
            if scope.get("query_string"):
                target += "?" + bytes(scope["query_string"]).decode("latin-1")
            await _send_response(
                send, step_up_response(decision, navigation, self._endpoints, target)
            )
            return
        outcome = for_route(decision, requirement is not None or self._required(path))
        if isinstance(outcome, Response):
            await _send_response(send, outcome)
            return
        if not outcome.set_cookies:
            await self._app(_with_auth(scope, outcome), receive, send)
            return
        sender = _CookieSender(send, outcome.set_cookies)
        try:
            await self._app(_with_auth(scope, outcome), receive, sender)
        except Exception:
            if not sender.started:
                # Answered here, or the server's own 500 would drop the
                # cookies. If the client is gone, the app's error matters more.
                with contextlib.suppress(Exception):
                    await _send_response(send, server_error(outcome.set_cookies))
            raise

    async def _decide(self, request: Request) -> Decision:
        return await self._finish(self._flow.begin(request))

    async def _finish(self, first: Decision | PendingDecision) -> Decision:
        """The rest of a decision: a sync Flow's store calls run in a worker thread."""
        if type(first) is not PendingDecision:
            return first  # type: ignore[return-value]
        flow = self._flow
        if isinstance(flow, AsyncFlow):
            return await flow.finish(first)
        return await asyncio.to_thread(flow.finish, first)

    async def _call(self, name: str, *args: Any) -> Any:
        if name == "start_provider_login":
            request, provider, next_path = args
            flow = self._flow
            if isinstance(flow, AsyncFlow):
                return await flow.start_provider_login(request, provider, next_path=next_path)
            return await asyncio.to_thread(
                lambda: flow.start_provider_login(request, provider, next_path=next_path)
            )
        method = getattr(self._flow, name)
        if self._async:
            return await method(*args)
        return await asyncio.to_thread(method, *args)

    async def _passkey_call(self, operation: PasskeyCall) -> Any:
        """A passkey operation: the repository and ledger may block, so off the loop."""
        method = getattr(self._flow.passkeys, operation.method)
        if inspect.iscoroutinefunction(method):
            return await method(*operation.args, **operation.kwargs)
        return await asyncio.to_thread(method, *operation.args, **operation.kwargs)

    async def _second_factor_call(self, operation: Require | FactorCall | ConfirmEnrolment) -> Any:
        """The enrolment endpoints' operations: the second factors' store may
        block, so a sync one runs off the loop."""
        flow = self._flow
        if isinstance(operation, Require):
            gated = flow.require(operation.decision, operation.requirement)
            if self._on_decision is not None and gated is not operation.decision:
                self._on_decision(gated)
            return gated
        factors = flow.second_factors
        try:
            if isinstance(operation, FactorCall):
                kwargs = dict(operation.kwargs)
                if operation.timed:
                    kwargs["now"] = flow.clock()
                method = getattr(factors, operation.method)
                if inspect.iscoroutinefunction(method):
                    return await method(*operation.args, **kwargs)
                return await asyncio.to_thread(method, *operation.args, **kwargs)
            user_id, code = operation.user_id, operation.code
            address = operation.client_address
            answer: Any
            if isinstance(flow, AsyncFlow):
                answer = await flow.second_factor_attempt(
                    user_id,
                    lambda now: factors.confirm_totp(user_id, code, now=now),
                    client_address=address,
                )
            else:
                answer = await asyncio.to_thread(
                    lambda: flow.second_factor_attempt(
                        user_id,
                        lambda now: factors.confirm_totp(user_id, code, now=now),
                        client_address=address,
                    )
                )
        except Exception as exc:
            return Failed(exc)
        if self._on_decision is not None and isinstance(answer, (TooManyRequests, Unavailable)):
            self._on_decision(answer)
        return answer

    async def _endpoint(
        self, kind: str, request: Request, scope: Scope, receive: Receive
    ) -> Response:
        trusted = frozenset(self._flow.config.trusted_origins)
        steps: Steps = endpoint(kind, request, _incoming(scope), self._endpoints, trusted)
        answer: Any = None
        while True:
            try:
                operation = steps.send(answer)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(operation, ReadBody):
                answer = await _read_body(receive, operation.limit)
            elif isinstance(operation, (Decide, Login, Logout, StepUp)):
                if isinstance(operation, Decide):
                    answer = await self._decide(operation.request)
                else:
                    name = (
                        "login"
                        if isinstance(operation, Login)
                        else "step_up"
                        if isinstance(operation, StepUp)
                        else "logout"
                    )
                    answer = await self._call(name, operation.request)
                if self._on_decision is not None and type(answer) is not Process:
                    self._on_decision(answer)
            elif isinstance(operation, PasskeyCall):
                try:
                    answer = await self._passkey_call(operation)
                except Exception as exc:
                    answer = Failed(exc)
            elif isinstance(operation, (Require, FactorCall, ConfirmEnrolment)):
                answer = await self._second_factor_call(operation)
            elif isinstance(operation, StartProviderLogin):
                answer = await self._call(
                    "start_provider_login",
                    operation.request,
                    operation.provider,
                    operation.next_path,
                )
                if self._on_decision is not None:
                    self._on_decision(answer)
            elif isinstance(operation, TransactionClearing):
                answer = self._flow.transaction_clearing(operation.credentials)
            elif isinstance(operation, (RegisterDevice, RefreshDevice)):
                name = (
                    "register_device" if isinstance(operation, RegisterDevice) else "refresh_device"
                )
                answer = await self._call(name, operation.request)
                if self._on_decision is not None:
                    self._on_decision(answer)
            else:
                name, arg = (
                    ("sessions_of", operation.user_id)
                    if isinstance(operation, SessionsOf)
                    else ("revoke_session", operation.session_id)
                )
                assert isinstance(operation, (SessionsOf, Revoke))
                try:
                    answer = await self._call(name, arg)
                except Exception as exc:
                    answer = Failed(exc)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case), or None."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _incoming(scope: Scope) -> Any:
    content_type = accept = ""
    proof: str | None = None
    session_id: str | None = None
    for name, value in scope.get("headers", ()):
        lowered = bytes(name).lower()
        if lowered == b"content-type":
            content_type = bytes(value).decode("latin-1")
        elif lowered == b"accept":
            accept = bytes(value).decode("latin-1")
        elif lowered == b"secure-session-response":
            proof = bytes(value).decode("latin-1")
        elif lowered == b"sec-secure-session-id":
            session_id = bytes(value).decode("latin-1")
    query = scope.get("query_string", b"")
    return Incoming(
        scope.get("method", "GET"),
        content_type,
        accept,
        bytes(query).decode("latin-1"),
        proof,
        session_id,
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_auth(scope: Scope, outcome: PassThrough) -> Scope:
    # In place, as ASGI allows: the server makes a scope for each request, and
    # hands each one a shallow copy of the lifespan "state" dict.
    scope["tokenflow"] = outcome.auth
    state = scope.get("state")
    if state is None:
        scope["state"] = {"tokenflow": outcome.auth}
    else:
        state["tokenflow"] = outcome.auth
    return scope


def _route_path(scope: Scope) -> str:
    """The path the application routes: without ``root_path``, the way
    Starlette's ``get_route_path`` reads it (a mount's root is ``/``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    if not rest:
        return "/"
    return rest if rest[0] == "/" else path


class _CookieSender:
    """The ``send`` the application gets: adds the decision's cookies to its
    response start, and remembers whether it started one."""

    __slots__ = ("_extra", "_send", "started")

    def __init__(self, send: Send, set_cookies: tuple[str, ...]) -> None:
        self._send = send
        self._extra = [(b"set-cookie", value.encode("latin-1")) for value in set_cookies]
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            # New tokens (or clearing cookies) must never sit in a shared
            # cache: the application's own Cache-Control gives way to no-store.
            headers = [
                (name, value)
                for name, value in message.get("headers", ())
                if bytes(name).lower() != b"cache-control"
            ]
            headers.extend(self._extra)
            headers.append(_NO_STORE)
            message = {**message, "headers": headers}
        await self._send(message)


async def _send_response(send: Send, response: Response) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
