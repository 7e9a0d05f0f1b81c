"""The ASGI applications the ``web`` group serves under uvicorn.

Chosen by environment variables, so that ``uvicorn benchmarks._asgi_server:app``
serves one variant per process, every variant answering the same two bytes:

* ``TF_BENCH_MODE``: one of :data:`MODES`;
* ``TF_BENCH_KEYS``: tokenflow's key ring (``KeyRing.serialize()``), shared with
  the parent process, which mints the cookies the load generator sends;
* ``TF_BENCH_SECRET``: the peers' secret (hex), for Starlette's signed session
  cookie, the PyJWT cookie, authx and the AES-GCM floor;
* ``TF_BENCH_DB``: the SQLite file holding tokenflow's sessions (refresh path);
* ``TF_BENCH_USERS``: how many users (``user-0`` ...) the user directory holds.

Each peer is written the way its own documentation, or the tutorials most
users copy, write it; each endpoint reads the identity its middleware found
and answers 401 without one, so a run whose answers are all 200 proves that
every request was authenticated.

Two variants are yardsticks rather than peers: ``aesgcm_floor``, the least a
sealed-cookie middleware can do (find one cookie, AES-GCM-open it, parse its
JSON, check its expiry), and ``fastapi_dependency``, a FastAPI route behind a
dependency that does nothing, which is what FastAPI itself charges for any
dependency.
"""

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from tokenflow import Flow, KeyRing, Request
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.stores import SQLiteStore
from tokenflow.testing import FakeUserDirectory

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MODES: Final = (
    "bare",
    "tokenflow",
    "starlette_session",
    "pyjwt_cookie",
    "fastapi_bare",
    "fastapi_tokenflow",
    "fastapi_authx",
    "aesgcm_floor",
    "fastapi_dependency",
    "hand_wired",
)
"""Every variant: the access-path peers, then the refresh path wired by hand."""
JWT_COOKIE: Final = "access_token"
"""The cookie the PyJWT tutorial middleware reads."""
AUTHX_COOKIE: Final = "access_token_cookie"
"""authx's default access-token cookie name."""
SESSION_COOKIE: Final = "session"
"""Starlette's default session cookie name."""
FLOOR_COOKIE: Final = "floor"
"""The AES-GCM floor's cookie: base64url(12-byte nonce + AES-256-GCM of JSON claims)."""

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def _answer(send: Send, status: int, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = _HEADERS if extra is None else [*_HEADERS, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint: a two-byte answer, the least an application can do."""
    if scope["type"] == "http":
        await _answer(send, 200)


async def tokenflow_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint reading the identity TokenflowMiddleware put in the scope."""
    if scope["type"] == "http":
        await _answer(send, 200 if auth_of(scope).authenticated else 401)


async def session_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint reading the user Starlette's SessionMiddleware decoded."""
    if scope["type"] == "http":
        await _answer(send, 200 if scope["session"].get("user") else 401)


async def state_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint reading the user the PyJWT middleware left in the request state."""
    if scope["type"] == "http":
        await _answer(send, 200 if scope["state"].get("user") else 401)


def users(count: int) -> FakeUserDirectory:
    """The benchmark's users: ``user-0`` to ``user-{count-1}``."""
    directory = FakeUserDirectory()
    for n in range(count):
        directory.add_user(f"user-{n}")
    return directory


def _flow() -> Flow:
    return Flow(
        KeyRing.parse(os.environ["TF_BENCH_KEYS"]),
        SQLiteStore(os.environ["TF_BENCH_DB"]),
        users(int(os.environ.get("TF_BENCH_USERS", "64"))),
    )


def _secret() -> bytes:
    return bytes.fromhex(os.environ["TF_BENCH_SECRET"])


def _starlette_session() -> App:
    from starlette.middleware.sessions import SessionMiddleware

    return SessionMiddleware(session_endpoint, secret_key=_secret().hex())


def _pyjwt_cookie() -> App:
    # The middleware as the common FastAPI/Starlette tutorials write it:
    # BaseHTTPMiddleware, the cookie from request.cookies, jwt.decode, 401 on failure.
    import jwt
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import PlainTextResponse, Response

    secret = _secret()

    async def dispatch(request: StarletteRequest, call_next: RequestResponseEndpoint) -> Response:
        token = request.cookies.get(JWT_COOKIE)
        if token is None:
            return PlainTextResponse("no", status_code=401)
        try:
            payload = jwt.decode(token, secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return PlainTextResponse("no", status_code=401)
        request.state.user = payload["sub"]
        return await call_next(request)

    return BaseHTTPMiddleware(state_endpoint, dispatch=dispatch)


def seal_floor(secret: bytes, claims: dict[str, Any]) -> str:
    """A cookie value the AES-GCM floor opens (the parent mints it with the same secret)."""
    import base64

    import orjson
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = nonce + AESGCM(secret).encrypt(nonce, orjson.dumps(claims), None)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def _aesgcm_floor() -> App:
    # The least a sealed-cookie middleware does, with no checks beyond the
    # cipher's and the expiry: first "floor=" in the first Cookie header, no
    # duplicate or size checks, no purpose, key id or claim validation.
    import binascii
    import time

    import orjson
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(_secret())
    key = FLOOR_COOKIE + "="
    to_standard = bytes.maketrans(b"-_", b"+/")

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        for name, value in scope["headers"]:
            if name == b"cookie":
                header = value.decode("latin-1")
                start = header.find(key)
                if start >= 0:
                    start += len(key)
                    end = header.find(";", start)
                    token = header[start:] if end < 0 else header[start:end]
                    try:
                        padded = token.encode().translate(to_standard) + b"=" * (-len(token) % 4)
                        raw = binascii.a2b_base64(padded)
                        claims = orjson.loads(cipher.decrypt(raw[:12], raw[12:], None))
                    except Exception:  # any failure is a 401
                        break
                    if claims["exp"] > time.time():
                        scope["state"] = {"user": claims["sub"]}
                        await state_endpoint(scope, receive, send)
                        return
                break
        await _answer(send, 401)

    return middleware


def _fastapi(mode: str) -> App:
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi import Request as FastAPIRequest
    from fastapi.responses import PlainTextResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    if mode == "fastapi_bare":

        @app.get("/", response_class=PlainTextResponse)
        async def home() -> str:
            return "ok"

    elif mode == "fastapi_tokenflow":
        # The dependency as tokenflow's FastAPI example writes it, async so
        # that FastAPI runs it on the loop instead of in its thread pool.
        async def current_user(request: FastAPIRequest) -> str:
            auth = auth_of(request.scope)
            if auth.user_id is None:
                raise HTTPException(status_code=auth.denial_status)
            return auth.user_id

        @app.get("/", response_class=PlainTextResponse)
        async def home_tf(user: str = Depends(current_user)) -> str:
            return "ok"

        app.add_middleware(TokenflowMiddleware, flow=_flow(), required=["/"])
    elif mode == "fastapi_dependency":
        # What FastAPI charges for any dependency: one that does nothing.
        async def nobody(request: FastAPIRequest) -> str:
            return "user-0"

        @app.get("/", response_class=PlainTextResponse)
        async def home_dependency(user: str = Depends(nobody)) -> str:
            return "ok"

    else:
        from authx import AuthX, AuthXConfig

        auth: AuthX[Any] = AuthX(
            config=AuthXConfig(
                JWT_SECRET_KEY=_secret().hex(),
                JWT_ALGORITHM="HS256",
                JWT_TOKEN_LOCATION=["cookies"],
            )
        )
        auth.handle_errors(app)

        @app.get(
            "/",
            response_class=PlainTextResponse,
            dependencies=[Depends(auth.access_token_required)],
        )
        async def home_authx() -> str:
            return "ok"

    return app


def _hand_wired() -> App:
    """The refresh path wired by hand: ``flow.decide`` called on the event loop."""
    flow = _flow()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        decision = flow.decide(Request.from_asgi(scope))
        cookies = [(b"set-cookie", value.encode()) for value in decision.set_cookies]
        await _answer(send, decision.status, cookies)

    return app


def build(mode: str) -> App:
    """The application of one variant (see :data:`MODES`)."""
    if mode == "bare":
        return bare
    if mode == "tokenflow":
        return TokenflowMiddleware(tokenflow_endpoint, _flow(), required=["/"])
    if mode == "starlette_session":
        return _starlette_session()
    if mode == "pyjwt_cookie":
        return _pyjwt_cookie()
    if mode.startswith("fastapi_"):
        return _fastapi(mode)
    if mode == "aesgcm_floor":
        return _aesgcm_floor()
    if mode == "hand_wired":
        return _hand_wired()
    raise ValueError(f"TF_BENCH_MODE must be one of {', '.join(MODES)}, not {mode!r}")


app = build(os.environ.get("TF_BENCH_MODE", "bare"))
