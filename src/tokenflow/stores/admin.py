"""Operating a session store from outside the application: list, count, revoke.

:func:`open_admin` opens a store named by a URL and returns a
:class:`SessionAdmin`, the seam ``python -m tokenflow sessions`` is built on:

- ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path.sqlite3``
- ``redis://[user:password@]host[:port][/db][?prefix=tokenflow]`` (``rediss://`` for TLS)
- ``redis+cluster://host:port[?prefix=tokenflow]``: a Redis Cluster, by any one of its nodes
- ``postgresql://user@host/db[?table=tokenflow_sessions]`` (``postgres://`` too)

**Reading never writes.** :meth:`SessionAdmin.sessions_of` and
:meth:`SessionAdmin.stats` open SQLite files read-only (``mode=ro``: no file,
schema, journal mode or migration is created), run PostgreSQL statements in
read-only transactions (the server refuses any write), and issue only read
commands to Redis (the application's ``sessions_of`` prunes stale index
entries; this one leaves them). :meth:`~SessionAdmin.revoke` and
:meth:`~SessionAdmin.revoke_user` write through the store classes, so they
delete exactly as the application would.

**Versions are checked first.** Every command refuses a SQLite file or a
PostgreSQL table of another schema version than this release's, before
reading or writing anything, with :class:`AdminError`; so does a missing file
or table. An unreachable server, a wrong URL and a key of the wrong type in
Redis raise :class:`AdminError` too, with a one-line message that never holds
the URL's password.

Counting walks every session (``stats`` is a table scan in SQL and a SCAN of
the key space in Redis): an operator's command, not a request path.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .._errors import TokenflowError
from .._sessions import SessionInfo

if TYPE_CHECKING:
    import psycopg
    import redis

__all__ = ["AdminError", "SessionAdmin", "SessionStats", "open_admin", "redact_url"]


class AdminError(TokenflowError):
    """A store could not be opened or used: wrong URL, unreachable server, other schema.

    The message is one line, meant for an operator, and holds no password.
    """


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Live sessions at one moment.

    ``top_users`` is ``(user id, live sessions)``, most sessions first (ties
    by user id), at most the number asked for; ``oldest`` is the live session
    created first, or None when there is none.
    """

    live_sessions: int
    users: int
    top_users: tuple[tuple[str, int], ...]
    oldest: SessionInfo | None


class SessionAdmin(Protocol):
    """Administrative access to one session store (see the module docs)."""

    @property
    def name(self) -> str:
        """The store's URL, with any password replaced by ``***``."""
        ...

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first. Never writes."""
        ...

    def stats(self, *, now: float, top: int) -> SessionStats:
        """Counts of the live sessions at ``now``. Never writes."""
        ...

    def revoke(self, session_id: str) -> bool:
        """Delete one session; True if it existed."""
        ...

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; how many there were."""
        ...

    def close(self) -> None:
        """Release connections. Calling it again does nothing."""
        ...


def redact_url(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _tally(infos: Iterator[SessionInfo], top: int) -> SessionStats:
    """Stats of the live sessions among ``infos`` (already filtered by liveness)."""
    per_user: Counter[str] = Counter()
    oldest: SessionInfo | None = None
    for info in infos:
        per_user[info.user_id] += 1
        if oldest is None or (info.created_at, info.session_id) < (
            oldest.created_at,
            oldest.session_id,
        ):
            oldest = info
    ranked = heapq.nsmallest(top, per_user.items(), key=lambda item: (-item[1], item[0]))
    return SessionStats(
        live_sessions=sum(per_user.values()),
        users=len(per_user),
        top_users=tuple(ranked),
        oldest=oldest,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _options(query: str, allowed: str, url: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Split the query into tokenflow's option (``allowed``) and the rest."""
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == allowed:
            if key in ours:
                raise AdminError(f"{redact_url(url)}: {key} is given twice")
            ours[key] = value
        else:
            rest.append((key, value))
    return ours, rest


# -- SQLite -------------------------------------------------------------------------


class _SQLiteAdmin:
    def __init__(self, url: str, path: str) -> None:
        from . import sqlite as backend

        self._backend = backend
        self.name = url
        self._path = os.path.abspath(path)
        if not os.path.isfile(self._path):
            raise AdminError(f"no SQLite database at {self._path}")
        self._check_version()

    def _read(self) -> sqlite3.Connection:
        # mode=ro: SQLite itself refuses every write, creates nothing, migrates nothing.
        uri = "file:" + quote(self._path) + "?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise AdminError(f"cannot open {self._path}: {_one_line(exc)}") from None

    def _check_version(self) -> None:
        conn = self._read()
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            (tables,) = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                "AND name = 'tokenflow_sessions'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise AdminError(
                f"{self._path} is not a usable SQLite database: {_one_line(exc)}"
            ) from None
        finally:
            conn.close()
        if not tables:
            raise AdminError(f"{self._path} holds no tokenflow sessions table")
        expected = self._backend.SCHEMA_VERSION
        if version != expected:
            raise AdminError(
                f"{self._path} has tokenflow schema version {version}, but this release reads "
                f"version {expected}; run this release's migration first, or a matching tokenflow"
            )

    def _rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = self._read()
        try:
            return conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise AdminError(f"cannot read {self._path}: {_one_line(exc)}") from None
        finally:
            conn.close()

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        rows = self._rows(self._backend._LIST_LIVE, (user_id, now, now))
        return [self._backend._info_of(row) for row in rows]

    def stats(self, *, now: float, top: int) -> SessionStats:
        query = (
            f"SELECT {self._backend._INFO_COLUMNS} FROM tokenflow_sessions "  # noqa: S608
            "WHERE idle_expires_at > ? AND absolute_expires_at > ?"
        )
        rows = self._rows(query, (now, now))
        return _tally((self._backend._info_of(row) for row in rows), top)

    def _write(self) -> Any:
        try:
            return self._backend.SQLiteStore(self._path)
        except (sqlite3.Error, TokenflowError) as exc:
            raise AdminError(f"cannot open {self._path} for writing: {_one_line(exc)}") from None

    def revoke(self, session_id: str) -> bool:
        with self._write() as store:
            return bool(store.revoke(session_id))

    def revoke_user(self, user_id: str) -> int:
        with self._write() as store:
            return int(store.revoke_user(user_id))

    def close(self) -> None:
        return


# -- Redis --------------------------------------------------------------------------


class _RedisAdmin:
    def __init__(self, url: str, client_url: str, prefix: str, *, cluster: bool) -> None:
        try:
            import redis
            import redis.cluster
        except ImportError:
            raise AdminError(
                "the Redis client is missing; install it with: pip install 'tokenflow[redis]'"
            ) from None
        from . import redis as backend

        self._backend = backend
        self._redis = redis
        self.name = url
        self._prefix = prefix
        timeouts = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0}
        try:
            client: Any
            if cluster:
                client = redis.cluster.RedisCluster.from_url(client_url, **timeouts)
            else:
                client = redis.Redis.from_url(client_url, **timeouts)
                client.ping()
        except (
            redis.RedisError,
            redis.exceptions.RedisClusterException,
            ValueError,
            OSError,
        ) as exc:
            raise AdminError(f"cannot reach {redact_url(url)}: {_one_line(exc)}") from None
        self._client: redis.Redis | redis.cluster.RedisCluster = client
        try:
            self._store = backend.RedisStore(client, prefix=prefix)
        except TokenflowError as exc:
            client.close()
            raise AdminError(f"{redact_url(url)}: {_one_line(exc)}") from None
        self._layout = backend._Layout(prefix, 0)

    def _call(self, body: Any) -> Any:
        try:
            return body()
        except self._redis.ResponseError as exc:
            # WRONGTYPE and friends: the prefix names keys tokenflow did not write.
            raise AdminError(
                f"{redact_url(self.name)}: keys under prefix {self._prefix!r} are not tokenflow "
                f"sessions of this release ({_one_line(exc)})"
            ) from None
        except (
            self._redis.RedisError,
            self._redis.exceptions.RedisClusterException,
            OSError,
        ) as exc:
            raise AdminError(f"cannot reach {redact_url(self.name)}: {_one_line(exc)}") from None
        except (ValueError, UnicodeDecodeError, IndexError) as exc:
            raise AdminError(
                f"{redact_url(self.name)}: a session under prefix {self._prefix!r} is not in "
                f"this release's layout ({_one_line(exc)})"
            ) from None

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        def body() -> list[SessionInfo]:
            index = self._layout.user_key(user_id)
            members: list[bytes] = self._client.zrange(index, 0, -1)  # type: ignore[assignment]
            if not members:
                return []
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                pipe.hmget(self._layout.session_key(member), list(self._backend._INFO_FIELDS))
            live, _stale = self._layout.listing(members, pipe.execute(), user_id, now)
            return live

        result: list[SessionInfo] = self._call(body)
        return result

    def _scan(self, now: float) -> Iterator[SessionInfo]:
        prefix = self._layout.session_prefix
        pattern = _glob_escape(prefix) + b"*"
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000, _type="HASH"):
            batch.append(key)
            if len(batch) == 500:
                yield from self._infos(batch, now)
                batch = []
        if batch:
            yield from self._infos(batch, now)

    def _infos(self, keys: list[bytes], now: float) -> Iterator[SessionInfo]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, list(self._backend._INFO_FIELDS))
        prefix_length = len(self._layout.session_prefix)
        for key, row in zip(keys, pipe.execute(), strict=True):
            if row[0] is None:
                continue  # expired between SCAN and HMGET
            info = self._backend._info_of(key[prefix_length:].decode("utf-8"), row)
            if info.is_live(now):
                yield info

    def stats(self, *, now: float, top: int) -> SessionStats:
        result: SessionStats = self._call(lambda: _tally(self._scan(now), top))
        return result

    def revoke(self, session_id: str) -> bool:
        return bool(self._call(lambda: self._store.revoke(session_id)))

    def revoke_user(self, user_id: str) -> int:
        return int(self._call(lambda: self._store.revoke_user(user_id)))

    def close(self) -> None:
        self._client.close()


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out.append(0x5C)
        out.append(byte)
    return bytes(out)


# -- PostgreSQL ---------------------------------------------------------------------


class _PostgresAdmin:
    def __init__(self, url: str, conninfo: str, table: str) -> None:
        try:
            import psycopg
            import psycopg.rows
            from psycopg import sql
        except ImportError:
            raise AdminError(
                "the PostgreSQL driver is missing; install it with: "
                "pip install 'tokenflow[postgres]'"
            ) from None
        from . import postgres as backend

        self._backend = backend
        self._psycopg = psycopg
        self._sql = sql
        self.name = url
        self._conninfo = conninfo
        try:
            self._ident = backend._names(table)[0]
        except TokenflowError as exc:
            raise AdminError(f"{redact_url(url)}: {_one_line(exc)}") from None
        self._table = table
        # Every statement of this connection runs in a read-only transaction:
        # the server itself refuses a write from the read-only commands.
        self._conn = self._connect(read_only=True)
        self._check_version()

    def _connect(self, *, read_only: bool) -> psycopg.Connection[Any]:
        import psycopg

        try:
            conn: psycopg.Connection[Any] = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=5,
                options="-c default_transaction_read_only=on" if read_only else None,
            )
            return conn
        except (psycopg.Error, ValueError) as exc:
            raise AdminError(
                f"cannot reach {redact_url(self.name)}: {_one_line(exc).split(': ', 1)[-1]}"
            ) from None

    def _fetch(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            with self._conn.cursor(row_factory=self._psycopg.rows.tuple_row) as cur:
                cur.execute(query, params, binary=True)
                return cur.fetchall()
        except self._psycopg.OperationalError as exc:
            raise AdminError(f"cannot reach {redact_url(self.name)}: {_one_line(exc)}") from None
        except self._psycopg.Error as exc:
            raise AdminError(f"{redact_url(self.name)}: {_one_line(exc)}") from None

    def _check_version(self) -> None:
        rows = self._fetch(
            "SELECT obj_description(to_regclass(%s), 'pg_class'), to_regclass(%s) IS NOT NULL",
            (self._table, self._table),
        )
        comment, exists = rows[0]
        if not exists:
            raise AdminError(
                f"{redact_url(self.name)} has no table {self._table!r}; "
                "create it with tokenflow.stores.postgres.apply_schema"
            )
        expected = "tokenflow refresh sessions, schema version 2"
        if comment != expected:
            found = comment.rpartition(" ")[2] if isinstance(comment, str) else "unknown"
            raise AdminError(
                f"table {self._table!r} has tokenflow schema version {found}, but this release "
                "reads version 2; apply this release's schema or migration first"
            )

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        store = self._backend.PostgresStore(self._conn, table=self._table)
        try:
            return store.sessions_of(user_id, now=now)
        except self._psycopg.OperationalError as exc:
            raise AdminError(f"cannot reach {redact_url(self.name)}: {_one_line(exc)}") from None
        except self._psycopg.Error as exc:
            raise AdminError(f"{redact_url(self.name)}: {_one_line(exc)}") from None

    def stats(self, *, now: float, top: int) -> SessionStats:
        sql = self._sql
        columns = sql.SQL(", ").join(map(sql.Identifier, self._backend._INFO_COLUMNS))
        query = sql.SQL(
            "SELECT {cols} FROM {t} WHERE %(now)s < idle_expires_at "
            "AND %(now)s < absolute_expires_at "
            "AND idle_expires_at <> 'NaN' AND absolute_expires_at <> 'NaN'"
        ).format(cols=columns, t=self._ident)
        rows = self._fetch(query, {"now": float(now)})
        return _tally((self._backend._info_of(row) for row in rows), top)

    def _write(self, body: Any) -> Any:
        conn = self._connect(read_only=False)
        store = self._backend.PostgresStore(conn, table=self._table)
        try:
            return body(store)
        except self._psycopg.OperationalError as exc:
            raise AdminError(f"cannot reach {redact_url(self.name)}: {_one_line(exc)}") from None
        except self._psycopg.Error as exc:
            raise AdminError(f"{redact_url(self.name)}: {_one_line(exc)}") from None
        finally:
            conn.close()

    def revoke(self, session_id: str) -> bool:
        return bool(self._write(lambda store: store.revoke(session_id)))

    def revoke_user(self, user_id: str) -> int:
        return int(self._write(lambda store: store.revoke_user(user_id)))

    def close(self) -> None:
        self._conn.close()


# -- URLs ---------------------------------------------------------------------------


def open_admin(url: str) -> SessionAdmin:
    """Open the store that ``url`` names (see the module docs); :class:`AdminError` if not.

    Checks the schema version (SQLite, PostgreSQL) and that the server
    answers before returning. Close the result when done.
    """
    if not isinstance(url, str) or not url:
        raise AdminError("a store URL is needed, e.g. sqlite:///sessions.sqlite3")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise AdminError("the store URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port out of range)
    except ValueError as exc:
        raise AdminError(f"{redact_url(url)} is not a valid URL: {_one_line(exc)}") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or parts.query or parts.fragment:
            raise AdminError(
                "a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path, "
                "with nothing between the slashes and no query"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or len(path) < 2:
            raise AdminError(f"{url} names no file: use sqlite:///path/to/sessions.sqlite3")
        return _SQLiteAdmin(url, path[1:])
    if scheme in ("redis", "rediss", "redis+cluster"):
        ours, rest = _options(parts.query, "prefix", url)
        if not parts.hostname:
            raise AdminError(f"{redact_url(url)} names no host")
        client_scheme = "redis" if scheme == "redis+cluster" else scheme
        client_url = urlunsplit(parts._replace(scheme=client_scheme, query=urlencode(rest)))
        return _RedisAdmin(
            url, client_url, ours.get("prefix", "tokenflow"), cluster=scheme == "redis+cluster"
        )
    if scheme in ("postgresql", "postgres"):
        ours, rest = _options(parts.query, "table", url)
        conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
        return _PostgresAdmin(url, conninfo, ours.get("table", "tokenflow_sessions"))
    known = "sqlite:///, redis://, rediss://, redis+cluster://, postgresql://"
    shown = f"{scheme}://" if scheme else "a URL without a scheme"
    raise AdminError(f"unknown store URL scheme {shown}; use one of {known}")
