"""The device_key column reaches existing databases: SQLite schema 1 -> 2, PostgreSQL ADD COLUMN."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tokenflow.stores import Rotation, RotationOutcome
from tokenflow.stores.sqlite import SQLiteStore, migrate

T0 = 1_700_000_000.0

# The layout of schema version 1, as the previous release created it.
_V1 = """
CREATE TABLE tokenflow_sessions (
    session_id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, created_at REAL NOT NULL,
    refreshed_at REAL NOT NULL, idle_expires_at REAL NOT NULL, absolute_expires_at REAL NOT NULL,
    generation INTEGER NOT NULL, metadata TEXT NOT NULL, current BLOB NOT NULL, previous BLOB,
    rotated_at REAL, salt BLOB
) WITHOUT ROWID
"""


def test_sqlite_version_1_file_is_migrated_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute(_V1)
    raw.execute(
        "INSERT INTO tokenflow_sessions VALUES "
        "('old', 'u', ?, ?, ?, ?, 0, '{}', ?, NULL, NULL, NULL)",
        (T0, T0, T0 + 1800, T0 + 86400, b"v" * 32),
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()

    assert migrate(path) == 2
    with SQLiteStore(path) as store:
        (info,) = store.sessions_of("u", now=T0)
        assert info.session_id == "old"
        assert info.device_key is None
        bound = store.bind_device("old", '{"k":1}', now=T0 + 1)
        assert bound is not None
        assert bound.device_key == '{"k":1}'
        refused = store.rotate(Rotation("old", b"v" * 32, b"w" * 32, b"s" * 16, T0 + 2, 1800, 5))
        assert refused.outcome is RotationOutcome.DEVICE_BOUND
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone() == (2,)
    check.close()
    # Migrating again changes nothing.
    assert migrate(path) == 2


def test_sqlite_migrate_needs_an_existing_file(tmp_path: Path) -> None:
    from tokenflow import ConfigError

    with pytest.raises(ConfigError):
        migrate(tmp_path / "missing.db")


def test_postgres_table_of_the_previous_release_gains_the_column(
    postgres_conninfo: str, unique_name: Callable[[str], str]
) -> None:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    from tokenflow.stores.postgres import PostgresStore, apply_schema

    conninfo = postgres_conninfo
    table = unique_name("dbscmig")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_schema(conn, table=table)
        # Undo the new column: the table as the previous release left it, with a session.
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN device_key").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (session_id, user_id, created_at, refreshed_at, idle_expires_at,"
                " absolute_expires_at, current_verifier) VALUES ('legacy', 'u', %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(table)),
            (T0, T0, T0 + 1800, T0 + 86400, b"v" * 32),
        )
        try:
            apply_schema(conn, table=table)  # the migration: idempotent, live-safe
            store = PostgresStore(conn, table=table)
            (info,) = store.sessions_of("u", now=T0)
            assert info.device_key is None
            bound = store.bind_device("legacy", '{"k":1}', now=T0 + 1)
            assert bound is not None
            assert bound.device_key == '{"k":1}'
            assert store.device_key_of("legacy", now=T0 + 1) == '{"k":1}'
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
