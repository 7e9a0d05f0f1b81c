"""What every example reads from its environment, and the login page they share.

Each variable is optional; unset, the example runs as the library's defaults
would (production lifetimes, sessions in ``sessions.db``):

==========================  ===========================  =================================
variable                    default                      what it sets
==========================  ===========================  =================================
``TOKENFLOW_KEYS``          a new key ring at each start the key ring (``python -m tokenflow
                            (sessions end on restart)    keygen`` prints one)
``TOKENFLOW_DEV``           unset                        ``1``: cookies for plain
                                                         ``http://localhost`` (no ``Secure``,
                                                         no ``__Host-`` names); never in
                                                         production
``TOKENFLOW_ACCESS_TTL``    ``120``                      access token lifetime, seconds
``TOKENFLOW_IDLE_TTL``      ``1800``                     a session ends after this many
                                                         seconds without a refresh
``TOKENFLOW_ABSOLUTE_TTL``  ``43200``                    a session ends this long after its
                                                         login, whatever happens
``TOKENFLOW_STORE``         ``sessions.db``              where sessions live: ``memory``
                                                         (this process only), a SQLite file,
                                                         ``redis://host:6379/0``, or
                                                         ``postgresql://user@host/db``
``TOKENFLOW_OIDC_ISSUER``   unset                        an OpenID provider's issuer URL:
                                                         "Sign in with provider" on the
                                                         login page (the ``oidc`` extra)
``TOKENFLOW_OIDC_CLIENT_ID``  unset                      this site's client id there
``TOKENFLOW_OIDC_CLIENT_SECRET`` unset                   its client secret
``TOKENFLOW_OIDC_REDIRECT_URI``  unset                   ``<site>/auth/oidc/provider/callback``,
                                                         as registered at the provider
==========================  ===========================  =================================

``TOKENFLOW_ACCESS_TTL=10 TOKENFLOW_IDLE_TTL=60`` lets you watch a silent
refresh after 10 s and an idle session end after a minute. A value that is
not a whole number of seconds, or lifetimes that do not fit together, stop
the example at start with a :class:`tokenflow.ConfigError` that says which.

The users are stand-ins for your user table and password hashes: one user,
``alice`` / ``wonderland-passphrase``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from tokenflow import ConfigError, CookiePolicy, Flow, FlowConfig, KeyRing
from tokenflow.stores import MemoryStore, SQLiteStore
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory

USERNAME = "alice"
PASSWORD = "wonderland-passphrase"  # noqa: S105 - the examples' published demo password

LIFETIMES = {
    "TOKENFLOW_ACCESS_TTL": "access_ttl",
    "TOKENFLOW_IDLE_TTL": "refresh_idle_ttl",
    "TOKENFLOW_ABSOLUTE_TTL": "refresh_absolute_ttl",
}
"""Environment variable -> :class:`tokenflow.FlowConfig` field."""


def _seconds(name: str, raw: str) -> int:
    # ASCII digits only: int() would also take " 10", "1_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise ConfigError(f"{name} must be a whole number of seconds, such as 120; got {raw!r}")
    return int(raw)


def flow_config(env: Mapping[str, str] = os.environ) -> FlowConfig:
    """The lifetimes and the cookie policy, from the environment."""
    lifetimes = {
        field: _seconds(name, env[name]) for name, field in LIFETIMES.items() if name in env
    }
    dev = env.get("TOKENFLOW_DEV") == "1"
    policy = CookiePolicy.local_development() if dev else CookiePolicy()
    return FlowConfig(cookies=policy, **lifetimes)


def session_store(env: Mapping[str, str] = os.environ) -> Any:
    """The session store ``TOKENFLOW_STORE`` names (a SQLite file by default)."""
    where = env.get("TOKENFLOW_STORE", "sessions.db")
    if where == "memory":
        return MemoryStore()
    if where.startswith(("redis://", "rediss://", "unix://")):
        import redis

        from tokenflow.stores.redis import RedisStore

        return RedisStore(redis.Redis.from_url(where), prefix="tokenflow-example")
    if where.startswith(("postgres://", "postgresql://")):
        import psycopg

        from tokenflow.stores.postgres import PostgresStore, apply_schema

        with psycopg.connect(where, autocommit=True) as conn:
            apply_schema(conn)
        return PostgresStore(where)
    if not where or "://" in where:
        raise ConfigError(
            "TOKENFLOW_STORE must be 'memory', a SQLite file name, a redis:// URL or a "
            "postgresql:// URL"
        )
    return SQLiteStore(where)


def demo_users(*, allow_signup: bool = False) -> tuple[FakeUserDirectory, FakePasswordVerifier]:
    """Stand-ins for your user table and password hashes: replace them with your
    own :class:`~tokenflow.ports.UserDirectory` and :class:`~tokenflow.ports.PasswordVerifier`.
    ``allow_signup``: a first sign-in with a provider creates the user."""
    users = FakeUserDirectory(allow_signup=allow_signup)
    users.add_user(USERNAME, {"name": "Alice"})
    passwords = FakePasswordVerifier()
    passwords.set_password(USERNAME, PASSWORD, user_id=USERNAME)
    return users, passwords


PROVIDER = "provider"
"""The name "Sign in with" registers the configured OpenID provider under: its
endpoints are ``/auth/oidc/provider/start`` and ``/auth/oidc/provider/callback``."""


def provider_from_env(env: Mapping[str, str] = os.environ) -> Any:
    """A sign-in client for the OpenID provider ``TOKENFLOW_OIDC_ISSUER`` names, or None.

    ``TOKENFLOW_OIDC_CLIENT_ID``, ``TOKENFLOW_OIDC_CLIENT_SECRET`` and
    ``TOKENFLOW_OIDC_REDIRECT_URI`` (``<site>/auth/oidc/provider/callback``) are
    the client's registration at that provider. Plain HTTP only for a provider
    and a site on 127.0.0.1 (a local test provider).
    """
    issuer = env.get("TOKENFLOW_OIDC_ISSUER")
    if not issuer:
        return None
    from tokenflow import oidc  # the oidc extra, only when a provider is configured

    client_id = env["TOKENFLOW_OIDC_CLIENT_ID"]
    loopback = issuer.startswith("http://127.0.0.1")
    source = oidc.HttpKeySetSource(allow_loopback_http=loopback)
    return oidc.code_flow(
        oidc.oidc(issuer, client_ids=[client_id], source=source),
        client_id=client_id,
        client_secret=env["TOKENFLOW_OIDC_CLIENT_SECRET"],
        redirect_uri=env["TOKENFLOW_OIDC_REDIRECT_URI"],
        source=source,
        allow_loopback_http=loopback,
    )


def make_flow(env: Mapping[str, str] = os.environ, *, provider: Any = None) -> Flow:
    """The flow every example runs: keys, store and lifetimes from the environment.

    ``provider`` (a :func:`tokenflow.oidc.code_flow` client; by default the one
    :func:`provider_from_env` builds, if any) is registered as ``"provider"``
    for "Sign in with", and its first sign-in creates the user (a stand-in
    for your sign-up)."""
    if provider is None:
        provider = provider_from_env(env)
    keys = env.get("TOKENFLOW_KEYS")
    users, passwords = demo_users(allow_signup=provider is not None)
    return Flow(
        KeyRing.parse(keys) if keys else KeyRing.generate(),
        session_store(env),
        users,
        passwords=passwords,
        config=flow_config(env),
        external={PROVIDER: provider} if provider is not None else None,
    )


ERRORS = {"login_failed": "Wrong username or password."}
"""The messages the login page shows for ``?error=...``. Any other value shows a
generic line: the page never echoes what the URL says."""


def login_page(
    error: str | None,
    next_path: str = "/",
    action: str = "/auth/login",
    providers: Iterable[str] = (),
) -> str:
    """The login form, with a line for a failed login (``?error=login_failed``),
    and a "Sign in with" link per provider (``flow.code_providers``).

    ``next_path`` is only ever one of the example's own paths; it is escaped
    all the same.
    """
    links = "".join(
        f'<p><a class="sign-in-with" href="/auth/oidc/{quote(name)}/start?next='
        f'{quote(next_path, safe="/")}">Sign in with {html.escape(name)}</a></p>\n'
        for name in sorted(providers)
    )
    message = ""
    if error is not None:
        text = ERRORS.get(error, "The login did not go through: try again.")
        message = f'<p class="error" role="alert">{html.escape(text)}</p>\n'
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>Log in</title></head>\n"
        "<body>\n<h1>Log in</h1>\n"
        f"{message}"
        f'<form method="post" action="{html.escape(action)}">\n'
        '<label>Username <input name="username" autocomplete="username" required></label>\n'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>\n'
        f'<input type="hidden" name="next" value="{html.escape(next_path)}">\n'
        "<button>Log in</button>\n</form>\n"
        f"{links}"
        f"<p>Try {USERNAME} / {PASSWORD}.</p>\n</body></html>\n"
    )
