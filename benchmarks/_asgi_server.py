"""The ASGI applications the ``web`` group serves under uvicorn.

Chosen by environment variables, so that ``uvicorn benchmarks._asgi_server:app``
serves the bare endpoint or the same endpoint behind the middleware:

* ``TF_BENCH_MODE``: ``bare`` or ``guarded``;
* ``TF_BENCH_KEYS``: the key ring (``KeyRing.serialize()``), shared with the
  parent process, which mints the cookies the load generator sends;
* ``TF_BENCH_DB``: the SQLite file holding the sessions (refresh path).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tokenflow import Flow, KeyRing
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.stores import SQLiteStore
from tokenflow.testing import FakeUserDirectory

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint: a two-byte answer, the least an application can do."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"ok"})


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The same endpoint, reading the identity the middleware put in the scope."""
    if scope["type"] != "http":
        return
    status = 200 if auth_of(scope).authenticated else 401
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"ok"})


def users(count: int) -> FakeUserDirectory:
    """The benchmark's users: ``user-0`` to ``user-{count-1}``."""
    directory = FakeUserDirectory()
    for n in range(count):
        directory.add_user(f"user-{n}")
    return directory


def _build() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    mode = os.environ.get("TF_BENCH_MODE", "bare")
    if mode == "bare":
        return bare
    flow = Flow(
        KeyRing.parse(os.environ["TF_BENCH_KEYS"]),
        SQLiteStore(os.environ["TF_BENCH_DB"]),
        users(int(os.environ.get("TF_BENCH_USERS", "64"))),
    )
    return TokenflowMiddleware(endpoint, flow, required=["/"])


app = _build()
