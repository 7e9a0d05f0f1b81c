"""``python -m tokenflow sessions`` and ``keys`` against real stores and servers.

Reading commands must never write: each read-only test snapshots what the
store holds (files' bytes, every Redis key and value, every PostgreSQL row
with its row version) before and after. The Redis one leaves a stale index
entry in place, which the application's ``sessions_of`` would prune.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tokenflow import KeyRing
from tokenflow.__main__ import main
from tokenflow.stores import NewSession, SessionInfo, SQLiteStore
from tokenflow.stores.admin import AdminError, open_admin, redact_url
from tokenflow.tokens import Purpose, TokenCodec

NOW = time.time()
"""Session times are relative to the import: an hour of slack covers a slow run."""
HOUR = 3600.0


def _info(sid: str, user: str, *, created: float, bound: bool = False, **meta: str) -> SessionInfo:
    return SessionInfo(
        session_id=sid,
        user_id=user,
        created_at=created,
        refreshed_at=created + 1,
        idle_expires_at=NOW + HOUR,
        absolute_expires_at=NOW + 2 * HOUR,
        metadata=meta,
        device_key='{"kty":"EC"}' if bound else None,
    )


def _fill(store: Any) -> None:
    """Three live sessions of ada (one bound), one of bob, one dead one of carol."""
    for info in (
        _info("s-ada-1", "ada", created=NOW - 300, user_agent="Firefox on Linux"),
        _info("s-ada-2", "ada", created=NOW - 200, bound=True),
        _info("s-ada-3", "ada", created=NOW - 100),
        _info("s-bob-1", "bob", created=NOW - 50),
    ):
        store.create(NewSession(info, verifier=hashlib.sha256(info.session_id.encode()).digest()))
    dead = SessionInfo(
        session_id="s-carol-1",
        user_id="carol",
        created_at=NOW - 2 * HOUR,
        refreshed_at=NOW - 2 * HOUR,
        idle_expires_at=NOW - 10,
        absolute_expires_at=NOW + HOUR,
    )
    store.create(NewSession(dead, verifier=b"\x01" * 32))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _check_listing_and_stats(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = _run(capsys, "sessions", "list", "--store", url, "--user", "ada", "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert [s["session_id"] for s in listed] == ["s-ada-1", "s-ada-2", "s-ada-3"]
    assert [s["device_bound"] for s in listed] == [False, True, False]
    assert listed[0]["metadata"] == {"user_agent": "Firefox on Linux"}
    assert listed[0]["last_used_at"] == pytest.approx(NOW - 299)
    code, out, err = _run(capsys, "sessions", "list", "--store", url, "--user", "ada")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SESSION", "CREATED", "LAST", "USE", "BOUND", "DEVICE"]
    assert lines[1].startswith("s-ada-1")
    assert lines[1].endswith("no    Firefox on Linux")
    assert " yes " in lines[2]
    code, out, _ = _run(capsys, "sessions", "list", "--store", url, "--user", "carol")
    assert (code, out) == (0, "no live sessions of user 'carol'\n")
    code, out, err = _run(capsys, "sessions", "stats", "--store", url, "--json", "--top", "1")
    assert (code, err) == (0, "")
    stats = json.loads(out)
    assert stats["live_sessions"] == 4
    assert stats["users"] == 2
    assert stats["top_users"] == [{"user_id": "ada", "sessions": 3}]
    assert stats["oldest"]["session_id"] == "s-ada-1"
    code, out, _ = _run(capsys, "sessions", "stats", "--store", url)
    assert code == 0
    assert "live sessions: 4" in out
    assert "oldest: s-ada-1 of user 'ada'" in out


def _check_revocations(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = _run(capsys, "sessions", "revoke", "--store", url, "s-bob-1", "--yes")
    assert (code, out, err) == (0, "revoked\n", "")
    code, out, _ = _run(capsys, "sessions", "revoke", "--store", url, "s-bob-1", "--yes", "--json")
    assert json.loads(out) == {"session_id": "s-bob-1", "revoked": False}
    code, out, _ = _run(capsys, "sessions", "revoke-user", "--store", url, "ada", "--yes", "--json")
    assert (code, json.loads(out)) == (0, {"user_id": "ada", "revoked": 3})
    code, out, _ = _run(capsys, "sessions", "stats", "--store", url, "--json")
    assert json.loads(out)["live_sessions"] == 0


# -- SQLite -------------------------------------------------------------------------


def _files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """The database file's bytes and mtime, and the WAL's: any committed write shows.

    A reader of a WAL-mode file may create the ``-wal`` and ``-shm`` companions
    (the shared-memory index every reader maps); they hold no data until a
    writer appends frames, so an empty ``-wal`` counts as absent.
    """
    files = {}
    for p in sorted(directory.iterdir()):
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and p.stat().st_size == 0):
            continue
        files[p.name] = (p.read_bytes(), p.stat().st_mtime_ns)
    return files


def _sqlite_path(url: str) -> Path:
    return Path(unquote(url.removeprefix("sqlite:///")))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # Characters a URL and SQLite's URI form treat specially, written percent-encoded.
    path = tmp_path / "db %?#" / "sessions.sqlite3"
    path.parent.mkdir()
    with SQLiteStore(path) as store:
        _fill(store)
    # Fold the WAL into the file, so that the snapshot sees every byte a reader could touch.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return f"sqlite:///{quote(str(path))}"


def test_sqlite_reading_commands_never_write(
    capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    directory = _sqlite_path(sqlite_url).parent
    before = _files(directory)
    _check_listing_and_stats(capsys, sqlite_url)
    assert _files(directory) == before


def test_sqlite_revocations(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    _check_revocations(capsys, sqlite_url)


def test_sqlite_relative_url(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sqlite_path(sqlite_url)
    monkeypatch.chdir(path.parent.parent)
    url = "sqlite:///db%20%25%3F%23/sessions.sqlite3"
    code, out, _ = _run(capsys, "sessions", "stats", "--store", url)
    assert code == 0
    assert "live sessions: 4" in out


def test_sqlite_missing_file_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/absent.sqlite3"
    code, out, err = _run(capsys, "sessions", "stats", "--store", url)
    assert (code, out) == (2, "")
    assert err == f"tokenflow sessions: no SQLite database at {tmp_path}/absent.sqlite3\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("version", "words"), [(1, "version 1"), (7, "version 7")])
def test_sqlite_other_schema_version_is_refused_and_left_alone(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, version: int, words: str
) -> None:
    path = _sqlite_path(sqlite_url)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    before = _files(path.parent)
    for argv in (("list", "--user", "ada"), ("stats",), ("revoke-user", "ada", "--yes")):
        action, *rest = argv
        code, out, err = _run(capsys, "sessions", action, "--store", sqlite_url, *rest)
        assert (code, out) == (2, "")
        assert words in err
        assert "this release reads version 2" in err
        assert err.count("\n") == 1
    # Not migrated (the store's constructor would have), nothing deleted.
    assert _files(path.parent) == before


def test_sqlite_file_of_something_else(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database" * 100)
    code, _, err = _run(capsys, "sessions", "stats", "--store", f"sqlite:///{other}")
    assert code == 2
    assert "holds no tokenflow sessions table" in err
    code, _, err = _run(capsys, "sessions", "stats", "--store", f"sqlite:///{text}")
    assert code == 2
    assert "is not a usable SQLite database" in err


# -- confirmation -------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_destructive_commands_refuse_without_a_terminal(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped "y" is not a confirmation
    for argv in (("revoke", "s-ada-1"), ("revoke-user", "ada")):
        action, target = argv
        code, out, err = _run(capsys, "sessions", action, "--store", sqlite_url, target)
        assert (code, out) == (2, "")
        assert err == (
            "tokenflow sessions: no terminal to confirm on; pass --yes to revoke without asking\n"
        )
    code, out, _ = _run(capsys, "sessions", "stats", "--store", sqlite_url, "--json")
    assert json.loads(out)["live_sessions"] == 4


@pytest.mark.parametrize(("answer", "revoked"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_destructive_commands_ask_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    revoked: bool,
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    monkeypatch.setattr("sys.stderr", _Terminal())
    code = main(["sessions", "revoke-user", "--store", sqlite_url, "ada"])
    assert code == (0 if revoked else 1)
    assert "revoke every session of user 'ada' in sqlite:///" in (
        prompt := __import__("sys").stderr.getvalue()
    )
    assert prompt.rstrip().endswith("nothing revoked") != revoked
    capsys.readouterr()
    code, out, _ = _run(capsys, "sessions", "stats", "--store", sqlite_url, "--json")
    assert json.loads(out)["live_sessions"] == (1 if revoked else 4)


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://host/db", "unknown store URL scheme mysql://"),
        ("sessions.sqlite3", "unknown store URL scheme a URL without a scheme"),
        ("sqlite://host/x.db", "a SQLite URL is sqlite:///relative/path"),
        ("sqlite:///x.db?mode=rw", "a SQLite URL is sqlite:///relative/path"),
        ("sqlite:///", "names no file"),
        ("redis://", "names no host"),
        ("redis://127.0.0.1:99999", "is not a valid URL"),
        ("redis://h/0?prefix=a&prefix=b", "prefix is given twice"),
        ("postgresql://u@h/db?table=1bad", "invalid table name"),
        ("redis://127.0.0.1:6379/0\n", "spaces or control characters"),
        ("", "a store URL is needed"),
    ],
)
def test_wrong_urls_are_one_line(url: str, message: str) -> None:
    with pytest.raises(AdminError) as caught:
        open_admin(url)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_passwords_never_appear_in_messages(capsys: pytest.CaptureFixture[str]) -> None:
    assert redact_url("redis://user:s3cret@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert redact_url("sqlite:///x") == "sqlite:///x"
    for url in (
        "redis://:s3cret@127.0.0.1:1/0",
        "postgresql://postgres:s3cret@127.0.0.1:1/test",
        "redis+cluster://:s3cret@127.0.0.1:1",
    ):
        code, out, err = _run(capsys, "sessions", "stats", "--store", url)
        assert (code, out) == (2, "")
        assert "cannot reach" in err
        assert ":***@127.0.0.1:1" in err
        assert "s3cret" not in err
        assert err.count("\n") == 1


# -- Redis --------------------------------------------------------------------------


def _redis_snapshot(client: Any, prefix: str) -> dict[bytes, Any]:
    snapshot: dict[bytes, Any] = {}
    for key in sorted(client.scan_iter(match=f"{prefix}:*", count=1000)):
        kind = client.type(key)
        value = (
            client.hgetall(key) if kind == b"hash" else client.zrange(key, 0, -1, withscores=True)
        )
        snapshot[key] = (kind, value, client.pttl(key) > 0)
    return snapshot


@pytest.fixture
def filled_redis(redis_client: Any, redis_url: str, unique_name: Callable[[str], str]) -> Any:
    from conftest import drop_redis_keys
    from tokenflow.stores.redis import RedisStore

    prefix = unique_name("cli")
    _fill(RedisStore(redis_client, prefix=prefix))
    # A stale index entry: the session key is gone (as if expired by TTL).
    redis_client.zadd(f"{prefix}:u:ada", {"s-ada-gone": NOW - 400})
    yield f"{redis_url}?prefix={prefix}", prefix
    drop_redis_keys(redis_client, prefix)


def test_redis_reading_commands_never_write(
    capsys: pytest.CaptureFixture[str], redis_client: Any, filled_redis: tuple[str, str]
) -> None:
    url, prefix = filled_redis
    before = _redis_snapshot(redis_client, prefix)
    assert b"s-ada-gone" in dict(before[f"{prefix}:u:ada".encode()][1])
    _check_listing_and_stats(capsys, url)
    assert _redis_snapshot(redis_client, prefix) == before


def test_redis_revocations(
    capsys: pytest.CaptureFixture[str], filled_redis: tuple[str, str]
) -> None:
    _check_revocations(capsys, filled_redis[0])


def test_redis_keys_of_another_layout(
    capsys: pytest.CaptureFixture[str], redis_client: Any, unique_name: Callable[[str], str]
) -> None:
    from conftest import drop_redis_keys

    prefix = unique_name("cli")
    redis_client.set(f"{prefix}:u:ada", "a string, not a sorted set")
    redis_client.hset(f"{prefix}:s:x", mapping={"uid": "ada", "ca": "yesterday"})
    url = f"{os.environ.get('TOKENFLOW_REDIS_URL', 'redis://127.0.0.1:6379/0')}?prefix={prefix}"
    try:
        code, out, err = _run(capsys, "sessions", "list", "--store", url, "--user", "ada")
        assert (code, out) == (2, "")
        assert "are not tokenflow sessions of this release" in err
        assert err.count("\n") == 1
        code, out, err = _run(capsys, "sessions", "stats", "--store", url)
        assert (code, out) == (2, "")
        assert "is not in this release's layout" in err
        assert err.count("\n") == 1
    finally:
        drop_redis_keys(redis_client, prefix)


def test_redis_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    redis = pytest.importorskip("redis")
    from redis.cluster import ClusterNode, RedisCluster

    seed = os.environ.get("TOKENFLOW_REDIS_CLUSTER", "127.0.0.1:7000")
    host, _, port = seed.rpartition(":")
    try:
        client = RedisCluster(startup_nodes=[ClusterNode(host, int(port))], socket_timeout=30)
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        message = f"no Redis Cluster answers at {seed} ({exc}): .ci/services/redis-cluster.sh start"
        if os.environ.get("TOKENFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    prefix = f"tokenflow_test_cli_cluster_{os.getpid()}"
    try:
        from tokenflow.stores.redis import RedisStore

        _fill(RedisStore(client, prefix=prefix))
        url = f"redis+cluster://{seed}?prefix={prefix}"
        # The sessions spread over every master: stats must scan them all.
        masters = {client.get_node_from_key(f"{prefix}:s:s-ada-{n}").name for n in (1, 2, 3)}
        masters |= {client.get_node_from_key(f"{prefix}:s:s-bob-1").name}
        assert len(masters) >= 2
        _check_listing_and_stats(capsys, url)
        _check_revocations(capsys, url)
    finally:
        for node in client.get_primaries():
            for key in client.scan_iter(match=f"{prefix}:*", target_nodes=node):
                client.delete(key)
        client.close()


# -- PostgreSQL ---------------------------------------------------------------------


def _postgres_url(conninfo: str, table: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(conninfo)
    user = parts.get("user", "postgres")
    return (
        f"postgresql://{user}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/"
        f"{parts.get('dbname', 'test')}?table={table}"
    )


def _rows(conninfo: str, table: str) -> list[tuple[Any, ...]]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo) as conn:
        query = sql.SQL("SELECT xmin::text, ctid::text, * FROM {} ORDER BY session_id")
        return conn.execute(query.format(sql.Identifier(table))).fetchall()


@pytest.fixture
def filled_postgres(postgres_conninfo: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    from tokenflow.stores.postgres import PostgresStore, apply_schema

    table = unique_name("cli")
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        apply_schema(conn, table=table)
        _fill(PostgresStore(conn, table=table))
    yield table
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_postgres_reading_commands_never_write(
    capsys: pytest.CaptureFixture[str], postgres_conninfo: str, filled_postgres: str
) -> None:
    before = _rows(postgres_conninfo, filled_postgres)
    _check_listing_and_stats(capsys, _postgres_url(postgres_conninfo, filled_postgres))
    assert _rows(postgres_conninfo, filled_postgres) == before


def test_postgres_reading_connection_is_read_only(
    postgres_conninfo: str, filled_postgres: str
) -> None:
    # Defence in depth: even a write slipped into a reading path is refused by the server.
    import psycopg

    admin = open_admin(_postgres_url(postgres_conninfo, filled_postgres))
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            admin._conn.execute(f"DELETE FROM {filled_postgres}")  # type: ignore[attr-defined]  # noqa: S608
    finally:
        admin.close()
    assert len(_rows(postgres_conninfo, filled_postgres)) == 5


def test_postgres_revocations(
    capsys: pytest.CaptureFixture[str], postgres_conninfo: str, filled_postgres: str
) -> None:
    _check_revocations(capsys, _postgres_url(postgres_conninfo, filled_postgres))


def test_postgres_missing_table_and_other_version(
    capsys: pytest.CaptureFixture[str], postgres_conninfo: str, filled_postgres: str
) -> None:
    import psycopg
    from psycopg import sql

    url = _postgres_url(postgres_conninfo, filled_postgres + "_absent")
    code, out, err = _run(capsys, "sessions", "stats", "--store", url)
    assert (code, out) == (2, "")
    assert f"has no table '{filled_postgres}_absent'" in err
    assert err.count("\n") == 1
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        comment = sql.SQL("COMMENT ON TABLE {} IS 'tokenflow refresh sessions, schema version 3'")
        conn.execute(comment.format(sql.Identifier(filled_postgres)))
    before = _rows(postgres_conninfo, filled_postgres)
    url = _postgres_url(postgres_conninfo, filled_postgres)
    for argv in (("stats",), ("revoke-user", "ada", "--yes")):
        action, *rest = argv
        code, out, err = _run(capsys, "sessions", action, "--store", url, *rest)
        assert (code, out) == (2, "")
        assert "schema version 3, but this release reads version 2" in err
    assert _rows(postgres_conninfo, filled_postgres) == before


# -- keys check ---------------------------------------------------------------------


@pytest.fixture
def rings(monkeypatch: pytest.MonkeyPatch) -> tuple[KeyRing, KeyRing]:
    old = KeyRing.generate()
    new = old.rotated()
    monkeypatch.setenv("TOKENFLOW_KEYS", new.serialize())
    return old, new


def _token_file(tmp_path: Path, token: str) -> str:
    path = tmp_path / "token.txt"
    path.write_text(token + "\n")
    return str(path)


def test_keys_check_lists_ids_and_never_key_material(
    capsys: pytest.CaptureFixture[str], rings: tuple[KeyRing, KeyRing]
) -> None:
    _, new = rings
    code, out, err = _run(capsys, "keys", "check")
    assert (code, err) == (0, "")
    kids = [key.kid for key in new]
    assert out.splitlines()[0] == f"keys: {', '.join(kids)}"
    assert out.splitlines()[1].startswith(f"active: {new.active.kid} ")
    code, out, _ = _run(capsys, "keys", "check", "--json")
    assert json.loads(out) == {"keys": kids, "active": new.active.kid}
    serialized = new.serialize()
    for entry in serialized.split(","):
        material = entry.rsplit(":", 1)[-1]
        assert len(material) >= 40
        assert material not in out


@pytest.mark.parametrize("purpose", [Purpose.ACCESS, Purpose.REFRESH])
def test_keys_check_names_the_key_a_token_opens_under(
    capsys: pytest.CaptureFixture[str],
    rings: tuple[KeyRing, KeyRing],
    tmp_path: Path,
    purpose: Purpose,
) -> None:
    old, _new = rings
    now = int(time.time())  # not NOW: the module may have been imported minutes ago
    claims = {"sub": "ada-secret-subject", "iat": now, "exp": now + 120, "x": "hush"}
    token = TokenCodec(old).seal(purpose, claims)  # sealed by the now-retired key
    code, out, err = _run(capsys, "keys", "check", "--token", _token_file(tmp_path, token))
    assert (code, err) == (0, "")
    name = purpose.name.lower()
    assert out.splitlines()[-1] == f"token: {name} token sealed under key {old.active.kid}: valid"
    code, out, _ = _run(capsys, "keys", "check", "--json", "--token", _token_file(tmp_path, token))
    assert json.loads(out)["token"] == {
        "opens": True,
        "key": old.active.kid,
        "purpose": name,
        "state": "valid",
    }
    assert "ada-secret-subject" not in out
    assert "hush" not in out


def test_keys_check_expired_tampered_and_foreign_tokens(
    capsys: pytest.CaptureFixture[str],
    rings: tuple[KeyRing, KeyRing],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, new = rings
    codec = TokenCodec(new)
    expired = codec.seal(Purpose.ACCESS, {"sub": "a", "iat": 1_000, "exp": 1_100})
    code, out, _ = _run(capsys, "keys", "check", "--token", _token_file(tmp_path, expired))
    assert code == 1
    assert out.splitlines()[-1] == f"token: access token sealed under key {new.active.kid}: expired"
    now = int(time.time())
    good = codec.seal(Purpose.ACCESS, {"sub": "a", "iat": now, "exp": now + 60})
    flipped = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
    foreign = TokenCodec(KeyRing.generate()).seal(
        Purpose.ACCESS, {"sub": "a", "iat": now, "exp": now + 60}
    )
    for token in (flipped, foreign, "not-a-token", "é" * 8):
        monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
        code, out, err = _run(capsys, "keys", "check", "--token", "-")
        assert (code, err) == (1, "")
        assert out.splitlines()[-1] == "token: does not open under any key of this ring"


def test_keys_check_misuse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TOKENFLOW_KEYS", raising=False)
    code, out, err = _run(capsys, "keys", "check")
    assert (code, out) == (2, "")
    assert err == (
        "tokenflow keys: the environment variable TOKENFLOW_KEYS holds no key ring; "
        "set it, or name a file with --ring-file\n"
    )
    bad = tmp_path / "ring"
    bad.write_text("k1:tooshort")
    code, _, err = _run(capsys, "keys", "check", "--ring-file", str(bad))
    assert code == 2
    assert err.startswith(f"tokenflow keys: {bad}: ")
    assert err.count("\n") == 1
    assert "tooshort" not in err
    code, _, err = _run(capsys, "keys", "check", "--ring-file", str(tmp_path / "absent"))
    assert code == 2
    assert "No such file or directory" in err
    monkeypatch.setenv("TOKENFLOW_KEYS", KeyRing.generate().serialize())
    monkeypatch.setattr("sys.stdin", _Terminal(""))
    code, _, err = _run(capsys, "keys", "check", "--token", "-")
    assert code == 2
    assert "pipe it in" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = _run(capsys, "keys", "check", "--token", "-")
    assert (code, err) == (2, "tokenflow keys: no token given (an empty line)\n")
