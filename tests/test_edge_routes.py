"""Route protection on the path the application routes, in every spelling.

For each framework example, each spelling of a protected path is put to the
framework's own router: whenever the router would run the protected view for
an anonymous request, the middleware (for Django, the example's
``@login_required``) must have answered 401 first. Requests are handed to
the applications the way a server hands them (a decoded ``path`` and
``raw_path``, a latin-1 ``PATH_INFO``): a test client would normalise some
spellings away before the application sees them. Real servers (uvicorn with
``--root-path``, gunicorn) are driven over raw sockets at the end.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import posixpath
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow.web._shared import path_readings, required_predicate

ROOT = Path(__file__).resolve().parent.parent
MIDDLEWARE_401 = {"error": "unauthorized"}


def need(module: str) -> ModuleType:
    """Import a framework, or skip (fail under TOKENFLOW_REQUIRE_EXAMPLES=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("TOKENFLOW_REQUIRE_EXAMPLES") == "1":
            raise
        pytest.skip(f"{module} is not installed (pip install 'tokenflow[examples]')")


def spellings(path: str) -> list[str]:
    """Request targets that some router, proxy or server reads as ``path``."""
    name = path.lstrip("/")
    head, tail = name[0], name[1:]
    escaped = f"%{ord(head):02x}{tail}"
    return [
        path,
        "/" + path,
        "//" + path,
        "/." + path,
        "/./" + name,
        "/x/.." + path,
        "/x/../" + name,
        "/x//.." + path,
        path + "/",
        path + "//",
        path + "/.",
        path + "/x/..",
        "/" + escaped,
        "/" + escaped.upper(),
        "/%25" + escaped[1:],
        "/%2e" + path,
        "/x/%2e%2e" + path,
        "/x/%2E%2E/" + name,
        path + ";x",
        path + ";x/",
        "/..;" + path,
        path.upper(),
        "/" + head.upper() + tail,
        "/\\" + name,
        "\\" + name,
        path + "%2f",
        "/%2f" + name,
        path + "?x=1",
        path + "#frag",
    ]


def test_spellings_all_read_as_the_required_path() -> None:
    # The predicate the middlewares use: every spelling above is required.
    for prefix in ("/account", "/me", "/notes"):
        required = required_predicate([prefix])
        for target in spellings(prefix):
            path = unquote(target.partition("?")[0].partition("#")[0])
            assert required(path), (prefix, target)


# -- ASGI: Starlette and FastAPI -----------------------------------------------------


def asgi_scope(method: str, target: str, root_path: str = "") -> dict[str, Any]:
    """The scope uvicorn builds for ``target`` (its --root-path prefixed)."""
    raw, _, query = target.encode("latin-1").partition(b"?")
    raw = raw.partition(b"#")[0]
    path = root_path + unquote(raw.decode("ascii", "replace"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "root_path": root_path,
        "path": path,
        "raw_path": root_path.encode() + raw,
        "query_string": query,
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


def asgi_run(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def starlette_route(app: Any, scope: dict[str, Any]) -> str | None:
    """The path template of the route Starlette's router would run, or None."""
    from starlette.routing import Match, Mount

    routes = app.routes
    scope = dict(scope)
    while True:
        for route in routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                if isinstance(route, Mount):
                    routes = route.routes
                    break
                return str(route.path)
        else:
            return None


def check_asgi(
    app: Any, router_app: Any, protected: set[str], method: str, targets: list[str], root=""
) -> int:
    """Asserts the rule for each target; returns how many reached a protected view."""
    reached = 0
    for target in targets:
        scope = asgi_scope(method, target, root)
        route = starlette_route(router_app, scope)
        status, body = asgi_run(app, asgi_scope(method, target, root))
        if route in protected:
            reached += 1
            assert (status, json.loads(body)) == (401, MIDDLEWARE_401), (target, status, body)
    return reached


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "import.db"))
    monkeypatch.setenv("TOKENFLOW_DEV", "1")
    monkeypatch.syspath_prepend(str(ROOT))

    def load(name: str) -> Any:
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_starlette_example_in_every_spelling(example: Any, tmp_path: Path) -> None:
    need("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    module = example("examples.starlette_app")
    app = module.create_app(
        module.make_flow({"TOKENFLOW_STORE": str(tmp_path / "s.db"), "TOKENFLOW_DEV": "1"})
    )
    protected = {"/account"}
    targets = spellings("/account")
    reached = check_asgi(app, app, protected, "GET", targets)
    # Served under `uvicorn --root-path /app`: the app routes without it.
    reached += check_asgi(app, app, protected, "GET", targets, root="/app")
    # Inside a Mount: the example's middleware sees the mount in root_path.
    outer = Starlette(routes=[Mount("/sub", app=app)])
    reached += check_asgi(outer, outer, protected, "GET", ["/sub" + t for t in targets])
    assert reached >= 3 * 3  # the plain path, and the spellings uvicorn decodes to it


def test_fastapi_example_in_every_spelling(example: Any, tmp_path: Path) -> None:
    need("fastapi")
    module = example("examples.fastapi_app")
    app = module.create_app(
        module.make_flow({"TOKENFLOW_STORE": str(tmp_path / "s.db"), "TOKENFLOW_DEV": "1"})
    )
    app.build_middleware_stack()
    reached = 0
    for method, path in (("GET", "/me"), ("POST", "/notes")):
        for root in ("", "/api"):
            reached += check_asgi(app, app.router, {path}, method, spellings(path), root)
    assert reached >= 4 * 3


# -- WSGI: Flask and Django ----------------------------------------------------------


def wsgi_environ(method: str, target: str, script_name: str = "") -> dict[str, Any]:
    """The environ a WSGI server builds for ``target``: PATH_INFO decoded, as latin-1."""
    import io

    raw, _, query = target.partition("?")
    raw = raw.partition("#")[0]
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": unquote_to_bytes(raw).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def wsgi_run(app: Any, environ: dict[str, Any]) -> tuple[int, bytes]:
    started: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(started[-1].split()[0]), body


def test_flask_example_in_every_spelling(example: Any, tmp_path: Path) -> None:
    need("flask")
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    module = example("examples.flask_app")
    app = module.create_app(
        module.make_flow({"TOKENFLOW_STORE": str(tmp_path / "s.db"), "TOKENFLOW_DEV": "1"})
    )
    reached = 0
    for method, path, view in (("GET", "/me", "me"), ("POST", "/notes", "add_note")):
        for script in ("", "/app"):
            for target in spellings(path):
                environ = wsgi_environ(method, target, script)
                try:
                    endpoint, _ = app.url_map.bind_to_environ(dict(environ)).match()
                except (RequestRedirect, HTTPException):
                    endpoint = None
                status, body = wsgi_run(app, environ)
                if endpoint == view:
                    reached += 1
                    assert (status, json.loads(body)) == (401, MIDDLEWARE_401), (target, body)
    # Werkzeug merges repeated slashes: //me and ///me run the view too.
    assert reached >= 2 * 2 * 3


@pytest.fixture
def django_example(example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    need("django")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    import django
    from django.conf import settings
    from django.urls import clear_url_caches

    if not settings.configured:
        django.setup()
    forget_django_example()
    auth = example("examples.django_app.auth")
    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "s.db"))
    monkeypatch.setenv("TOKENFLOW_DEV", "1")
    auth.flow.cache_clear()
    yield auth
    auth.flow.cache_clear()
    forget_django_example()
    clear_url_caches()


def forget_django_example() -> None:
    """Drop the example's modules: the URL module holds the views and the
    auth module it was first imported with, and a later test importing a
    fresh auth module must not meet a stale one through the URLs."""
    for name in ("urls", "views", "auth"):
        sys.modules.pop(f"examples.django_app.{name}", None)


@pytest.mark.parametrize("force_script_name", [None, "/app"])
def test_django_example_in_every_spelling(
    django_example: Any, monkeypatch: pytest.MonkeyPatch, force_script_name: str | None
) -> None:
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.urls import Resolver404, clear_url_caches, resolve

    monkeypatch.setattr(settings, "FORCE_SCRIPT_NAME", force_script_name)
    clear_url_caches()
    views = importlib.import_module("examples.django_app.views")
    handler = WSGIHandler()
    ran: list[str] = []
    reached = 0
    for method, path, view in (("GET", "/me", views.me), ("POST", "/notes", views.notes)):
        for target in spellings(path):
            environ = wsgi_environ(method, target, "/srv")
            info = environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
            try:
                routed = resolve(info).func
            except Resolver404:
                routed = None
            status, body = wsgi_run(handler, environ)
            if routed is view:
                reached += 1
                # The example's @login_required answers before the view body.
                assert (status, json.loads(body)) == (401, MIDDLEWARE_401), (target, body)
                ran.append(target)
    assert reached >= 2


# -- real servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """One GET with the request target sent byte for byte (no client normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(
                "latin-1"
            )
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[list[str], int], None]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], port: int) -> None:
        env = {
            **os.environ,
            "TOKENFLOW_STORE": str(tmp_path / "served.db"),
            "TOKENFLOW_DEV": "1",
            "PYTHONPATH": str(ROOT),
        }
        process = subprocess.Popen(  # noqa: S603 - a fixed command line
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode() if process.stderr else "")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def is_view(status: int, body: bytes) -> bool:
    """Whether a protected view answered (200, or its own guard's 401)."""
    if status == 200:
        return True
    if status == 401:
        try:
            return json.loads(body) != MIDDLEWARE_401
        except ValueError:
            return True
    return False


def test_uvicorn_with_a_root_path(serve: Any) -> None:
    need("uvicorn")
    need("starlette")
    port = free_port()
    serve(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.starlette_app:app",
            "--root-path",
            "/app",
            "--port",
            str(port),
            "--no-access-log",
        ],
        port,
    )
    answered = {}
    for target in ["/account", "/app/account", *spellings("/account")]:
        answered[target] = raw_get(port, target)
        assert not is_view(*answered[target]), (target, answered[target])
    # The middleware, not a 404, answered the path the app routes.
    assert answered["/account"][0] == 401


def test_gunicorn_serving_flask(serve: Any) -> None:
    need("gunicorn")
    need("flask")
    port = free_port()
    serve(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "examples.flask_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        port,
    )
    answered = {}
    for target in [*spellings("/me"), "/app/me"]:
        answered[target] = raw_get(port, target)
        assert not is_view(*answered[target]), (target, answered[target])
    # gunicorn hands //me to Flask as PATH_INFO //me, which Werkzeug routes to /me.
    assert answered["//me"] == (401, b'{"error":"unauthorized"}')


def test_readings_are_bounded() -> None:
    # A path too long, or percent-encoded deeper than any stack decodes, is
    # not normalised: it is required.
    assert path_readings("/a" * 1100) is None
    assert required_predicate(["/account"])("//x" * 700)
    assert not required_predicate(["/account"])("/x" * 5000)  # normal form: as it is
    assert path_readings("/%25252561ccount") is None
    assert required_predicate(["/account"])("/%25252561ccount")
    assert required_predicate(["/account"])("/%252561ccount")
    # Paths in normal form are matched as they are.
    assert not required_predicate(["/account"])("/accounts")
    assert not required_predicate(["/account"])("/public/account")
    assert required_predicate(["/account"])("/account/x")


# -- the predicate against an independent reading -------------------------------------

PATH_PARTS = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "/./",
        "/../",
        "account",
        "ACCOUNT",
        "acc",
        "ount",
        "x",
        "%2e",
        "%2E",
        "%61",
        "%2f",
        "%25",
        ";",
        ";v=1",
        "\\",
        "-",
        "~",
        "A",
    ]
)


def reference_reading(path: str) -> str:
    """How a router that decodes twice, lower-cases and resolves dots reads ``path``."""
    text = unquote(unquote(path)).replace("\\", "/").lower()
    text = "/".join(segment.split(";")[0] for segment in text.split("/"))
    resolved = posixpath.normpath("/" + text.lstrip("/"))
    return "/" + resolved.lstrip("/")


@settings(max_examples=400, deadline=None)
@given(st.lists(PATH_PARTS, min_size=1, max_size=8).map("".join))
def test_every_path_a_router_reads_as_required_is_required(path: str) -> None:
    reading = reference_reading(path)
    if reading == "/account" or reading.startswith("/account/"):
        assert required_predicate(["/account"])(path), (path, reading)


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"(/[a-z0-9\-_~][a-z0-9\-_~.]{0,8}){1,5}/?", fullmatch=True))
def test_a_path_in_normal_form_is_matched_as_it_is(path: str) -> None:
    required = required_predicate(["/account"])
    expected = path.rstrip("/") == "/account" or path.startswith("/account/")
    assert required(path) is expected
