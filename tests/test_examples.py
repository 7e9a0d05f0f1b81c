"""The framework examples run, through each framework's own test client.

Each test skips when its framework is not installed, and fails instead when
``TOKENFLOW_REQUIRE_EXAMPLES=1`` (CI installs the ``examples`` extra).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOGIN = {"username": "alice", "password": "wonderland-passphrase"}
WRONG = {"username": "alice", "password": "not-her-password"}
LIFETIMES = ("TOKENFLOW_ACCESS_TTL", "TOKENFLOW_IDLE_TTL", "TOKENFLOW_ABSOLUTE_TTL")
FAILED = "Wrong username or password."


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An example's environment: sessions in a temporary SQLite file, plain-HTTP cookies."""
    return {"TOKENFLOW_STORE": str(tmp_path / "s.db"), "TOKENFLOW_DEV": "1", **extra}


SAME_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def need(module: str) -> ModuleType:
    """Import a framework, or skip (fail under TOKENFLOW_REQUIRE_EXAMPLES=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("TOKENFLOW_REQUIRE_EXAMPLES") == "1":
            raise
        pytest.skip(f"{module} is not installed (pip install 'tokenflow[examples]')")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Imports an example module with its sessions in a temporary database."""
    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "import.db"))
    monkeypatch.setenv("TOKENFLOW_DEV", "1")
    for name in ("TOKENFLOW_KEYS", *LIFETIMES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(ROOT))

    def load(name: str) -> Any:
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_fastapi(example: Any, tmp_path: Path) -> None:
    need("fastapi")
    need("httpx")
    from fastapi.testclient import TestClient

    module = example("examples.fastapi_app")
    client = TestClient(module.create_app(module.make_flow(env(tmp_path))))
    assert client.get("/").json() == {"signed_in": False, "user": None}
    # A failed form login goes back to the login page, which says so.
    bad = client.post("/auth/login", data=WRONG, headers=SAME_ORIGIN, follow_redirects=False)
    assert (bad.status_code, bad.headers["location"]) == (303, "/login?error=login_failed")
    page = client.get(bad.headers["location"])
    assert page.status_code == 200
    assert FAILED in page.text
    assert 'action="/auth/login"' in page.text
    assert client.cookies.get("tf_access") is None
    form = client.post(
        "/auth/login", data={**LOGIN, "next": "/me"}, headers=SAME_ORIGIN, follow_redirects=False
    )
    assert (form.status_code, form.headers["location"]) == (303, "/me")
    client.cookies.clear()
    assert client.get("/me").status_code == 401
    reply = client.post("/auth/login", json=LOGIN, headers=SAME_ORIGIN)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    assert client.get("/me").json() == {"user": "alice"}
    assert client.post("/notes", headers=SAME_ORIGIN).json() == {"saved_for": "alice"}
    assert client.post("/notes", headers=CROSS_SITE).status_code == 403
    out = client.post("/auth/logout", headers={**SAME_ORIGIN, "Accept": "application/json"})
    assert out.json() == {"logged_out": True}
    assert client.get("/me").status_code == 401


def test_starlette(example: Any, tmp_path: Path) -> None:
    need("starlette")
    need("httpx")
    from starlette.testclient import TestClient

    module = example("examples.starlette_app")
    client = TestClient(module.create_app(module.make_flow(env(tmp_path))), follow_redirects=False)
    assert client.get("/").text == "hello, stranger"
    assert client.get("/account").status_code == 401
    bad = client.post("/auth/login", data={**LOGIN, "password": "no"}, headers=SAME_ORIGIN)
    assert (bad.status_code, bad.headers["location"]) == (303, "/login?error=login_failed")
    page = client.get(bad.headers["location"])
    assert page.status_code == 200
    assert FAILED in page.text
    assert 'name="next" value="/account"' in page.text
    reply = client.post(
        "/auth/login", data={**LOGIN, "next": "https://evil.example/"}, headers=SAME_ORIGIN
    )
    assert (reply.status_code, reply.headers["location"]) == (303, "/account")
    assert client.get("/account").json()["user"] == "alice"
    assert client.get("/").text == "hello, alice"
    sessions = client.get("/auth/sessions").json()["sessions"]
    assert [s["current"] for s in sessions] == [True]


def test_flask(example: Any, tmp_path: Path) -> None:
    need("flask")
    module = example("examples.flask_app")
    client = module.create_app(module.make_flow(env(tmp_path))).test_client()
    assert client.get("/").text == "hello, stranger"
    assert client.get("/me").status_code == 401
    bad = client.post("/auth/login", data=WRONG, headers=SAME_ORIGIN)
    assert (bad.status_code, bad.headers["Location"]) == (303, "/login?error=login_failed")
    page = client.get(bad.headers["Location"])
    assert page.status_code == 200
    assert FAILED in page.text
    reply = client.post("/auth/login", data={**LOGIN, "next": "/me"}, headers=SAME_ORIGIN)
    assert (reply.status_code, reply.headers["Location"]) == (303, "/me")
    assert client.get("/me").json == {"user": "alice"}
    assert client.post("/notes", headers=CROSS_SITE).status_code == 403
    assert client.post("/notes", headers=SAME_ORIGIN).json == {"saved_for": "alice"}
    client.post("/auth/logout", headers=SAME_ORIGIN)
    assert client.get("/me").status_code == 401


def test_django(example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("django")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    monkeypatch.setenv("TOKENFLOW_STORE", str(tmp_path / "s.db"))
    import django
    from django.conf import settings
    from django.test import Client

    if not settings.configured:
        django.setup()
    auth = example("examples.django_app.auth")
    auth.flow.cache_clear()
    client = Client(headers=SAME_ORIGIN)
    assert client.get("/").content == b"hello, stranger"
    assert client.get("/me").status_code == 401
    bad = client.post("/auth/login", WRONG)
    assert (bad.status_code, bad["Location"]) == (303, "/login?error=login_failed")
    page = client.get(bad["Location"])
    assert page.status_code == 200
    assert FAILED in page.content.decode()
    assert "tf_access" not in client.cookies
    scripted = client.post("/auth/login", WRONG, content_type="application/json")
    assert (scripted.status_code, scripted.json()) == (401, {"error": "login_failed"})
    reply = client.post("/auth/login", LOGIN)
    assert (reply.status_code, reply["Location"]) == (303, "/me")
    assert reply["Cache-Control"] == "no-store"
    assert client.get("/me").json() == {"user": "alice"}
    attacker = Client(headers=CROSS_SITE)
    # The origin first: a cross-site login is 403 whatever its body lacks.
    assert attacker.post("/auth/login", {"username": "alice"}).status_code == 403
    assert attacker.post("/auth/login", {}).status_code == 403
    attacker.cookies = client.cookies
    assert attacker.post("/notes").status_code == 403
    assert client.post("/notes").json() == {"saved_for": "alice"}
    assert client.post("/auth/logout").status_code == 303
    assert client.get("/me").status_code == 401


# -- what the examples read from the environment --------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.environment", None)
    return importlib.import_module("examples.environment")


def test_lifetimes_and_cookies_come_from_the_environment(environment: Any) -> None:
    config = environment.flow_config(
        {"TOKENFLOW_ACCESS_TTL": "10", "TOKENFLOW_IDLE_TTL": "60", "TOKENFLOW_ABSOLUTE_TTL": "600"}
    )
    assert (config.access_ttl, config.refresh_idle_ttl, config.refresh_absolute_ttl) == (
        10,
        60,
        600,
    )
    assert config.cookies.secure  # production cookies unless TOKENFLOW_DEV=1
    assert not environment.flow_config({"TOKENFLOW_DEV": "1"}).cookies.secure
    defaults = environment.flow_config({})
    assert (defaults.access_ttl, defaults.refresh_idle_ttl) == (120, 1800)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKENFLOW_ACCESS_TTL", "ten"),
        ("TOKENFLOW_ACCESS_TTL", " 10"),
        ("TOKENFLOW_ACCESS_TTL", "1_0"),
        ("TOKENFLOW_ACCESS_TTL", "\u0661\u0660"),  # Arabic-Indic digits: int() takes them
        ("TOKENFLOW_IDLE_TTL", "-5"),
        ("TOKENFLOW_IDLE_TTL", "1e3"),
        ("TOKENFLOW_ABSOLUTE_TTL", ""),
    ],
)
def test_a_lifetime_that_is_not_whole_seconds_stops_the_start(
    environment: Any, name: str, value: str
) -> None:
    from tokenflow import ConfigError

    with pytest.raises(ConfigError, match=name):
        environment.flow_config({name: value})


def test_lifetimes_that_do_not_fit_together_stop_the_start(environment: Any) -> None:
    from tokenflow import ConfigError

    with pytest.raises(ConfigError):
        environment.flow_config({"TOKENFLOW_IDLE_TTL": "7200", "TOKENFLOW_ABSOLUTE_TTL": "3600"})


def test_the_store_comes_from_the_environment(environment: Any, tmp_path: Path) -> None:
    from tokenflow import ConfigError
    from tokenflow.stores import MemoryStore, SQLiteStore

    assert isinstance(environment.session_store({"TOKENFLOW_STORE": "memory"}), MemoryStore)
    sqlite = environment.session_store({"TOKENFLOW_STORE": str(tmp_path / "x.db")})
    assert isinstance(sqlite, SQLiteStore)
    sqlite.close()
    assert (tmp_path / "x.db").exists()
    for bad in ("", "mysql://localhost/db", "http://example.com/"):
        with pytest.raises(ConfigError, match="TOKENFLOW_STORE"):
            environment.session_store({"TOKENFLOW_STORE": bad})


def test_the_store_can_be_redis(environment: Any) -> None:
    redis = pytest.importorskip("redis")
    url = os.environ.get("TOKENFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis answers at {url}")
    from tokenflow.stores.redis import RedisStore

    flow = environment.make_flow({"TOKENFLOW_STORE": url})
    assert isinstance(flow.store, RedisStore)


def test_the_store_can_be_postgres(environment: Any) -> None:
    psycopg = pytest.importorskip("psycopg")
    dsn = os.environ.get("TOKENFLOW_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    if not dsn.startswith(("postgres://", "postgresql://")):
        pytest.skip("TOKENFLOW_POSTGRES_DSN is not a URL")
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.Error:
        pytest.skip(f"no PostgreSQL answers at {dsn}")
    from tokenflow.stores.postgres import PostgresStore

    store = environment.session_store({"TOKENFLOW_STORE": dsn})
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()


def test_a_short_lifetime_shows_in_the_cookies(example: Any, tmp_path: Path) -> None:
    need("starlette")
    need("httpx")
    from starlette.testclient import TestClient

    module = example("examples.starlette_app")
    flow = module.make_flow(env(tmp_path, TOKENFLOW_ACCESS_TTL="10", TOKENFLOW_IDLE_TTL="60"))
    client = TestClient(module.create_app(flow), follow_redirects=False)
    reply = client.post("/auth/login", data=LOGIN, headers=SAME_ORIGIN)
    ages = sorted(
        part.strip()
        for header in reply.headers.get_list("set-cookie")
        for part in header.split(";")
        if part.strip().startswith("Max-Age")
    )
    assert ages == ["Max-Age=10", "Max-Age=60"]


def test_the_login_page_never_echoes_the_url(environment: Any) -> None:
    page = environment.login_page("<script>alert(1)</script>")
    assert "<script>" not in page
    assert "alert(1)" not in page
    assert "The login did not go through" in page
    assert environment.login_page(None).count('class="error"') == 0
    assert FAILED in environment.login_page("login_failed")
    assert 'value="&quot;&gt;"' in environment.login_page(None, next_path='">')


EXAMPLES = ["fastapi_app.py", "starlette_app.py", "flask_app.py", "django_app/auth.py"]


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_says_how_to_run_it_and_what_to_try(path: str) -> None:
    text = (ROOT / "examples" / path).read_text(encoding="utf-8")
    docstring = text.split('"""')[1]
    assert "Run it" in docstring
    assert "TOKENFLOW_ACCESS_TTL=10" in docstring
    assert "Then try" in docstring
    assert "/login" in docstring
    assert "Wrong username or password." in docstring
    assert "examples/environment.py" in docstring
    assert "make_flow" in text


def test_every_variable_is_documented(environment: Any) -> None:
    documented = environment.__doc__
    web = (ROOT / "docs" / "web.md").read_text(encoding="utf-8")
    source = (ROOT / "examples" / "environment.py").read_text(encoding="utf-8")
    read = set(re.findall(r'"(TOKENFLOW_[A-Z_]+)"', source))
    assert read == {
        "TOKENFLOW_KEYS",
        "TOKENFLOW_DEV",
        "TOKENFLOW_STORE",
        *LIFETIMES,
        "TOKENFLOW_OIDC_ISSUER",
        "TOKENFLOW_OIDC_CLIENT_ID",
        "TOKENFLOW_OIDC_CLIENT_SECRET",
        "TOKENFLOW_OIDC_REDIRECT_URI",
    }
    for name in read:
        assert f"``{name}``" in documented, name
        assert f"`{name}`" in web, name


# -- "Sign in with" a provider, through each example's own test client ------------------

SITE = "http://127.0.0.1:8000"


def _provider_env(tmp_path: Path, server: Any) -> dict[str, str]:
    """The example's environment, with a code-flow client registered at ``server``."""
    from tokenflow.testing.oidc import FakeClient

    redirect = f"{SITE}/auth/oidc/provider/callback"
    server.register(FakeClient("example", (redirect,), "client_secret_basic", "example-secret"))
    return env(
        tmp_path,
        TOKENFLOW_OIDC_ISSUER=server.issuer,
        TOKENFLOW_OIDC_CLIENT_ID="example",
        TOKENFLOW_OIDC_CLIENT_SECRET="example-secret",
        TOKENFLOW_OIDC_REDIRECT_URI=redirect,
    )


def _consent(location: str) -> str:
    """Follow the start redirect to the provider, which consents and sends the browser back."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(NoRedirect).open(location, timeout=5)
    back = str(answer.value.headers["location"])
    assert back.startswith(f"{SITE}/auth/oidc/provider/callback?")
    return back[len(SITE) :]


@pytest.mark.parametrize("name", ["starlette", "fastapi", "flask", "django"])
def test_sign_in_with_a_provider(
    name: str, example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("httpx")
    from tokenflow.testing.oidc import FakeAuthorizationServer

    with FakeAuthorizationServer() as server:
        settings = _provider_env(tmp_path, server)
        me = "/account" if name == "starlette" else "/me"
        if name == "django":
            need("django")
            for variable, value in settings.items():
                monkeypatch.setenv(variable, value)
            monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
            import django
            from django.conf import settings as django_settings
            from django.test import Client

            if not django_settings.configured:
                django.setup()
            # The flow the URL conf's views use, built again with the provider.
            importlib.import_module("examples.django_app.urls").auth.flow.cache_clear()
            django_client = Client()

            class Text:
                def __init__(self, response: Any) -> None:
                    self.status_code = response.status_code
                    self.headers = response.headers
                    self.text = response.content.decode()

            def get(path: str, headers: dict[str, str] | None = None) -> Any:
                return Text(
                    django_client.get(
                        path, SERVER_NAME="127.0.0.1", SERVER_PORT="8000", headers=headers or {}
                    )
                )

        elif name == "flask":
            need("flask")
            client = (
                example("examples.flask_app")
                .create_app(example("examples.flask_app").make_flow(settings))
                .test_client()
            )

            def get(path: str, headers: dict[str, str] | None = None) -> Any:
                return client.get(path, base_url=SITE, headers=headers or {})

        else:
            need(name)
            from starlette.testclient import TestClient

            module = example(f"examples.{name}_app")
            app = module.create_app(module.make_flow(settings))
            http = TestClient(app, base_url=SITE, follow_redirects=False)

            def get(path: str, headers: dict[str, str] | None = None) -> Any:
                return http.get(path, headers=headers or {})

        _sign_in(get, me)


def _sign_in(get: Any, me: str) -> None:
    """Through an example: its login page's link, the provider, the callback, the page."""
    page = get("/login")
    assert "Sign in with provider" in page.text
    start = get(f"/auth/oidc/provider/start?next={me}")
    assert start.status_code == 302
    assert "code_challenge_method=S256" in start.headers["location"]
    callback = _consent(start.headers["location"])
    # The provider's redirect back is a cross-site navigation.
    done = get(callback, {"Sec-Fetch-Site": "cross-site"})
    assert (done.status_code, done.headers["location"]) in ((302, me), (303, me))
    answer = get(me)
    assert answer.status_code == 200
    assert "provider:" in answer.text
