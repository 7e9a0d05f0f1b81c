"""PostgreSQL session stores (psycopg 3): durable sessions shared by every application server.

The table (see ``postgres_schema.sql`` beside this module, applied by
:func:`apply_schema`) has one row per session: the four times as ``double
precision`` seconds, the generation, ``jsonb`` metadata, and the current and
previous verifiers and the last rotation's salt as ``bytea``. Verifiers are
SHA-256 digests of refresh secrets, never the secrets.

**Rotation is one round trip in the common case.** A refresh presenting
the current verifier of a live session is one plain ``UPDATE ... WHERE
session_id = ... AND current_verifier = ... AND <live> RETURNING``: a
single-row write by primary key, the cheapest durable write there is. When
it updates nothing (a replay inside the grace window, reuse, expiry, an
unknown session, or a rotation that lost a race), a second statement decides:
a data-modifying CTE where ``cur`` reads the row ``FOR UPDATE`` and computes
the outcome with :func:`~tokenflow.stores.apply_rotation`'s rule,
``rotated`` updates the row when the outcome is ROTATED, ``deleted`` deletes
it on EXPIRED and reuse, and the final SELECT reports the outcome and the
session. Run in autocommit mode, each statement is its own transaction.

Why it is atomic under concurrency, at PostgreSQL's default READ COMMITTED
isolation: an UPDATE waiting for a row lock re-checks its WHERE clause on the
*newest* version of the row once it gets the lock (PostgreSQL's EvalPlanQual
recheck). Of several rotations presenting the same verifier, the first
updates the row; each other one then finds its verifier no longer current and
updates nothing, so it runs the second statement, whose snapshot is taken
after the winner committed. There, ``FOR UPDATE`` makes concurrent deciders
of one session queue on the row lock, and the CASE that computes the outcome
is evaluated on the newest version: a loser sees the winner's successor as
current, its own verifier as the predecessor, and answers GRACE with the
winner's salt. The UPDATE and DELETE join ``cur``, so they can only run after
``cur`` holds the lock, and act on the same newest version. A waiter whose
row was deleted by the winner finds no row: UNKNOWN_SESSION, exactly what
the serial order would give. Under REPEATABLE READ or SERIALIZABLE (if the
server, database or role defaults to them) the waiter gets a serialization
failure instead; the store retries it a few times, and the retry, in a new
transaction, sees the winner's row.

**Indexes and HOT updates.** Besides the primary key, the table has one
index, ``(user_id, created_at, session_id)``, for :meth:`~PostgresStore.sessions_of`
(rows come out already in order) and :meth:`~PostgresStore.revoke_user`. No
index covers a column a rotation changes (the verifiers, the salt and the
times of the last rotation, ``idle_expires_at``, ``generation``), and the
table leaves 30% of each page free (``fillfactor = 70``): a rotation is a
heap-only-tuple update, which writes no index entry and whose old version is
pruned from the page without VACUUM, so index bloat does not grow with
traffic. :meth:`~PostgresStore.purge` has no index for that reason: it scans
the table in batches, every few minutes. :func:`migration_sql` brings a table
made by the previous schema version there, on a live database.

**Values.** A NaN expiry is stored as ``-Infinity`` (expired at every ``now``,
as NaN is under the reference rule), and every liveness test also treats a
NaN found in the table as expired: PostgreSQL orders NaN above every number.
Metadata is a ``jsonb`` object; one whose strings hold U+0000, which no
PostgreSQL text can hold, is stored as a ``jsonb`` string of its JSON text.

Comparisons use ``double precision``, IEEE doubles like Python floats, and
the one addition (``now + idle_seconds``) is the same IEEE addition, so the
SQL decides exactly as the Python rule (PostgreSQL raises, rather than
answering infinity, if that addition overflows from finite operands: only
for a ``now`` near the largest double). Results are fetched in binary, so no
``extra_float_digits`` setting can round the times.

Connections: pass a :class:`psycopg_pool.ConnectionPool` (best: configure it
with ``kwargs={"autocommit": True}`` for one round trip per operation), a
:class:`psycopg.Connection` opened with ``autocommit=True`` (serialises all
threads on it), or a conninfo string (the store opens and owns a small
autocommit pool). In a pool without autocommit every operation is still
correct, wrapped in BEGIN/COMMIT by the pool: three round trips instead of one.

Expired sessions are deleted when rotated; run :meth:`PostgresStore.purge`
periodically (every few minutes) for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import TupleRow, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._backends.postgres import AsyncConnections, Connections, split_table
from .._sessions import NewSession, Rotation, RotationOutcome, RotationResult, SessionInfo
from ._values import check_metadata, stored_times

__all__ = [
    "AsyncPostgresStore",
    "PostgresStore",
    "apply_schema",
    "apply_schema_async",
    "migration_sql",
    "schema_sql",
]

_T = TypeVar("_T")

DEFAULT_TABLE: Final = "tokenflow_sessions"

# Serialisation failures (only under REPEATABLE READ or SERIALIZABLE) are
# retried: the failed attempt rolled back entirely, and the retry's fresh
# snapshot shows the winner's committed row.
_ATTEMPTS = 4

# An unquoted-style name, or schema.name. Index names are derived from the
# table name and PostgreSQL silently truncates identifiers past 63 bytes,
# which could make two tables' index names collide: hence the length limit.
# An arbitrary, fixed advisory-lock key ("tokenflow" in ASCII, truncated to
# 63 bits): servers starting together create the schema one after the other
# (concurrent CREATE ... IF NOT EXISTS can fail on the catalog's unique keys).
_SCHEMA_LOCK_KEY: Final = 0x746F6B656E666C6F

_INFO_COLUMNS = (
    "session_id",
    "user_id",
    "created_at",
    "refreshed_at",
    "idle_expires_at",
    "absolute_expires_at",
    "generation",
    "metadata",
    "device_key",
)

_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def _names(table: str) -> tuple[sql.Identifier, sql.Identifier, sql.Identifier]:
    """``(table, user index, version 1 expiry index)`` identifiers; ConfigError on a bad name."""
    schema, base = split_table(table)
    ident = sql.Identifier(schema, base) if schema else sql.Identifier(base)
    # Indexes always live in their table's schema: CREATE INDEX takes an
    # unqualified name. The version 1 expiry index, dropped by the migration,
    # is named with its schema, so that DROP INDEX finds it whatever the search path.
    expiry = (schema, f"{base}_by_expiry") if schema else (f"{base}_by_expiry",)
    return ident, sql.Identifier(f"{base}_by_user"), sql.Identifier(*expiry)


def _template(name: str) -> sql.SQL:
    return sql.SQL(resources.files("tokenflow.stores").joinpath(name).read_text("utf-8"))


def _schema(table: str) -> sql.Composed:
    ident, user_index, _ = _names(table)
    return _template("postgres_schema.sql").format(table=ident, user_index=user_index)


def schema_sql(table: str = DEFAULT_TABLE, conn: psycopg.Connection[Any] | None = None) -> str:
    """The schema's SQL text for ``table``, for migration tools or ``psql``.

    ``conn`` is only used to render identifiers with the server's quoting
    rules; any psycopg 3.2+ renders them without one.
    """
    return _schema(table).as_string(conn)


def migration_sql(table: str = DEFAULT_TABLE, conn: psycopg.Connection[Any] | None = None) -> str:
    """The SQL that brings a ``table`` created by schema version 1 to version 2.

    Version 2 drops the expiry index and sets a fillfactor, so that rotations
    are heap-only-tuple updates (see the module docs). The statements run on
    a live database, with servers of either version running, and are
    idempotent; run them outside a transaction block (``DROP INDEX
    CONCURRENTLY`` refuses to run inside one), e.g. with ``psql -f``.
    A table created by version 2 needs nothing.
    """
    ident, _, expiry_index = _names(table)
    template = _template("postgres_migrate_v2.sql")
    return template.format(table=ident, expiry_index=expiry_index).as_string(conn)


def _lock_and_schema(table: str) -> tuple[sql.Composed, sql.Composed]:
    return sql.SQL("SELECT pg_advisory_xact_lock({})").format(_SCHEMA_LOCK_KEY), _schema(table)


def apply_schema(conn: psycopg.Connection[Any], *, table: str = DEFAULT_TABLE) -> None:
    """Create the sessions table and its indexes if they do not exist (idempotent).

    Runs in a transaction (a savepoint if ``conn`` is already in one) under an
    advisory lock, so that application servers starting together do not trip
    over each other.
    """
    lock, schema = _lock_and_schema(table)
    with conn.transaction():
        conn.execute(lock)
        conn.execute(schema)


async def apply_schema_async(
    conn: psycopg.AsyncConnection[Any], *, table: str = DEFAULT_TABLE
) -> None:
    """The async variant of :func:`apply_schema`."""
    lock, schema = _lock_and_schema(table)
    async with conn.transaction():
        await conn.execute(lock)
        await conn.execute(schema)


class _Statements:
    """The SQL of every operation, composed once per table, and the pure
    parameter/row conversions: shared by the sync and async stores."""

    def __init__(self, table: str) -> None:
        ident, _, _ = _names(table)
        self.table = table
        info_columns = sql.SQL(", ").join(map(sql.Identifier, _INFO_COLUMNS))
        self.insert = sql.SQL("INSERT INTO {t} ({cols}, current_verifier) VALUES ({vals})").format(
            t=ident,
            cols=info_columns,
            vals=sql.SQL(", ").join([sql.Placeholder()] * (len(_INFO_COLUMNS) + 1)),
        )
        # Liveness as SessionInfo.is_live decides it. PostgreSQL orders NaN
        # above every number (Python's `now < nan` is false), so a NaN expiry
        # is tested for explicitly: stores never write one (create stores it
        # as -inf), but a row written by other means is still judged right.
        live = (
            "%(now)s < idle_expires_at AND %(now)s < absolute_expires_at"
            " AND idle_expires_at <> 'NaN' AND absolute_expires_at <> 'NaN'"
        )
        # The common case first: the presented verifier is current and the
        # session live. One plain UPDATE of one row by primary key, the
        # cheapest durable write there is. It changes no indexed column, so
        # it is a heap-only-tuple update when the page has room (the table's
        # fillfactor leaves some). Under concurrency a second rotation
        # presenting the same verifier waits for the row lock, re-checks the
        # WHERE clause on the winner's version (EvalPlanQual), finds its
        # verifier no longer current and updates nothing: it then runs
        # `rotate`, below, in a new statement that sees the winner's row.
        self.rotate_current = sql.SQL(
            """
            UPDATE {t} SET
                current_verifier = %(successor)s,
                previous_verifier = current_verifier,
                rotated_at = %(now)s,
                salt = %(salt)s,
                refreshed_at = %(now)s,
                -- Sliding renewal never passes the absolute lifetime; the CASE
                -- is Python's min(now + idle, absolute), operand order included.
                idle_expires_at = CASE
                    WHEN absolute_expires_at < %(now)s + %(idle)s THEN absolute_expires_at
                    ELSE %(now)s + %(idle)s
                END,
                generation = generation + 1
            WHERE session_id = %(sid)s AND current_verifier = %(presented)s AND {live}
                -- A device-bound session rotates only for the key its proof
                -- was verified with; anything else is the CTE's DEVICE_BOUND.
                AND (device_key IS NULL OR device_key = %(device_key)s::text)
            RETURNING {cols}
            """
        ).format(t=ident, cols=info_columns, live=sql.SQL(live))
        # Every other outcome, in the order apply_rotation checks it:
        # liveness first, then the current verifier, then the predecessor. A
        # NULL previous_verifier makes its comparisons NULL (not true), so a
        # session never rotated answers REUSED_UNKNOWN, like the Python rule.
        # bytea equality is not constant-time; verifiers are SHA-256 digests
        # of 256-bit random secrets, so timing tells nothing exploitable.
        self.rotate = sql.SQL(
            """
            WITH cur AS MATERIALIZED (
                SELECT {cols}, current_verifier, salt,
                    CASE
                        WHEN NOT ({live})
                            THEN 'expired'
                        WHEN device_key IS NOT NULL
                            AND device_key IS DISTINCT FROM %(device_key)s::text
                            THEN 'device_bound'
                        WHEN current_verifier = %(presented)s
                            THEN 'rotated'
                        WHEN previous_verifier = %(presented)s
                            AND %(grace)s > 0 AND %(now)s - rotated_at < %(grace)s
                            THEN 'grace'
                        WHEN previous_verifier = %(presented)s
                            THEN 'reused_previous'
                        ELSE 'reused_unknown'
                    END AS outcome
                FROM {t}
                WHERE session_id = %(sid)s
                FOR UPDATE
            ),
            rotated AS (
                UPDATE {t} AS s SET
                    current_verifier = %(successor)s,
                    previous_verifier = cur.current_verifier,
                    rotated_at = %(now)s,
                    salt = %(salt)s,
                    refreshed_at = %(now)s,
                    idle_expires_at = CASE
                        WHEN cur.absolute_expires_at < %(now)s + %(idle)s
                            THEN cur.absolute_expires_at
                        ELSE %(now)s + %(idle)s
                    END,
                    generation = cur.generation + 1
                FROM cur
                WHERE s.session_id = cur.session_id AND cur.outcome = 'rotated'
                RETURNING s.refreshed_at, s.idle_expires_at, s.generation
            ),
            deleted AS (
                DELETE FROM {t} AS s USING cur
                WHERE s.session_id = cur.session_id
                    AND cur.outcome IN ('expired', 'reused_previous', 'reused_unknown')
            )
            SELECT cur.outcome, cur.session_id, cur.user_id, cur.created_at,
                COALESCE(rotated.refreshed_at, cur.refreshed_at),
                COALESCE(rotated.idle_expires_at, cur.idle_expires_at),
                cur.absolute_expires_at,
                COALESCE(rotated.generation, cur.generation),
                cur.metadata, cur.salt, rotated.generation IS NOT NULL, cur.device_key
            FROM cur LEFT JOIN rotated ON true
            """
        ).format(t=ident, cols=info_columns, live=sql.SQL(live))
        # Device binding in one statement: `cur` locks the live row (reading
        # its newest version), `upd` sets the key only if none is set, and the
        # answer is the key the row has after the statement: the first one.
        self.bind_device = sql.SQL(
            """
            WITH cur AS MATERIALIZED (
                SELECT {cols} FROM {t}
                WHERE session_id = %(sid)s AND {live}
                FOR UPDATE
            ),
            upd AS (
                UPDATE {t} AS s SET device_key = %(key)s::text
                FROM cur
                WHERE s.session_id = cur.session_id AND cur.device_key IS NULL
            )
            SELECT session_id, user_id, created_at, refreshed_at, idle_expires_at,
                absolute_expires_at, generation, metadata, COALESCE(device_key, %(key)s::text)
            FROM cur
            """
        ).format(t=ident, cols=info_columns, live=sql.SQL(live))
        self.device_key_of = sql.SQL(
            """
            SELECT device_key FROM {t}
            WHERE session_id = %(sid)s AND {live}
            """
        ).format(t=ident, live=sql.SQL(live))
        self.revoke = sql.SQL("DELETE FROM {t} WHERE session_id = %s").format(t=ident)
        self.revoke_user = sql.SQL("DELETE FROM {t} WHERE user_id = %s").format(t=ident)
        self.sessions_of = sql.SQL(
            """
            SELECT {cols} FROM {t}
            WHERE user_id = %(user)s AND {live}
            ORDER BY created_at, session_id
            """
        ).format(t=ident, cols=info_columns, live=sql.SQL(live))
        # SKIP LOCKED: never wait behind a rotation holding a row (it deletes
        # the row itself if it finds it expired). No index serves this
        # condition: an index on either expiry would need a new entry at every
        # rotation, and rotations are far more frequent than purges (see the
        # module docs). The scan stops as soon as it has a batch.
        self.purge = sql.SQL(
            """
            DELETE FROM {t} WHERE session_id IN (
                SELECT session_id FROM {t}
                WHERE NOT ({live})
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            )
            """
        ).format(t=ident, live=sql.SQL(live))

    @staticmethod
    def insert_params(session: NewSession) -> tuple[Any, ...]:
        info = session.info
        # A NaN expiry is stored as -inf (expired alike); NaN elsewhere is refused.
        times = stored_times(info)
        check_metadata(info.metadata)
        return (
            info.session_id,
            info.user_id,
            *times,
            int(info.generation),
            _metadata_param(info.metadata),
            info.device_key,
            session.verifier,
        )

    @staticmethod
    def rotate_params(rotation: Rotation) -> dict[str, Any]:
        # float(): the parameters must be float8, whatever numeric type the
        # caller used, so that the SQL arithmetic is the Python arithmetic.
        return {
            "sid": rotation.session_id,
            "presented": rotation.presented,
            "successor": rotation.successor,
            "salt": rotation.salt,
            "now": float(rotation.now),
            "idle": float(rotation.idle_seconds),
            "grace": float(rotation.grace_seconds),
            "device_key": rotation.device_key,
        }

    @staticmethod
    def rotated(row: TupleRow) -> RotationResult:
        return RotationResult(RotationOutcome.ROTATED, _info_of(row))

    @staticmethod
    def rotation_result(row: TupleRow | None) -> RotationResult:
        if row is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        outcome = RotationOutcome(row[0])
        if outcome is RotationOutcome.ROTATED:
            if not row[10]:
                # Cannot happen while the row is locked by `cur`; refuse to
                # report a rotation that was not written.
                raise RuntimeError("rotation decided but not written")
            return RotationResult(outcome, _info_of([*row[1:9], row[11]]))
        if outcome is RotationOutcome.GRACE:
            return RotationResult(outcome, _info_of([*row[1:9], row[11]]), bytes(row[9]))
        if outcome is RotationOutcome.REUSED_UNKNOWN:
            return RotationResult(outcome, generation=int(row[7]))
        return RotationResult(outcome)


def _info_of(row: Sequence[Any]) -> SessionInfo:
    """A SessionInfo from the values of ``_INFO_COLUMNS``, in that order."""
    metadata: dict[str, str] | str = row[7]
    if isinstance(metadata, str):
        # Metadata jsonb cannot hold, kept as its JSON text (see _metadata_param).
        metadata = json.loads(metadata)
        assert isinstance(metadata, dict)
    return SessionInfo(
        session_id=row[0],
        user_id=row[1],
        created_at=row[2],
        refreshed_at=row[3],
        idle_expires_at=row[4],
        absolute_expires_at=row[5],
        generation=row[6],
        metadata=MappingProxyType(metadata) if metadata else _NO_METADATA,
        device_key=row[8] if len(row) > 8 else None,
    )


def _metadata_param(metadata: Mapping[str, str]) -> Jsonb:
    """The ``jsonb`` value of the metadata column.

    A JSON object, except when a key or value holds U+0000, which no
    PostgreSQL text or jsonb value can hold: the object's JSON text (where it
    is the escape ``\\u0000``) is then stored as a jsonb *string*. Metadata is
    always an object, so the two cannot be confused, and no column type
    change (a table rewrite) is needed to round-trip every string.
    """
    plain = dict(metadata)
    if any("\x00" in key or "\x00" in value for key, value in plain.items()):
        return Jsonb(json.dumps(plain, separators=(",", ":"), sort_keys=True))
    return Jsonb(plain)


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be a positive integer")


class PostgresStore:
    """A :class:`~tokenflow.ports.SessionStore` in a PostgreSQL table.

    ``target`` is a :class:`psycopg_pool.ConnectionPool` (recommended; give
    it ``kwargs={"autocommit": True}``), a :class:`psycopg.Connection` opened
    with ``autocommit=True``, or a conninfo string, for which the store opens
    a pool of up to 10 connections and closes it in :meth:`close`. Pools and
    connections passed in are never closed by the store.

    ``table`` names the table (``name`` or ``schema.name``); create it with
    :func:`apply_schema`. Rotation is one statement in one round trip; see the
    module docs for why it is atomic. Call :meth:`purge` periodically.
    """

    def __init__(
        self,
        target: str | psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        table: str = DEFAULT_TABLE,
    ) -> None:
        self._sql = _Statements(table)
        self._db = Connections(target, "PostgresStore")
        self._connection = self._db.connection

    def __repr__(self) -> str:
        # The pool and conninfo are left out: a conninfo may hold a password.
        return f"PostgresStore(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The sessions table's name."""
        return self._sql.table

    def close(self) -> None:
        """Close the pool the store opened for a conninfo string (nothing else)."""
        self._db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, body: Callable[[psycopg.Cursor[TupleRow]], _T]) -> _T:
        for attempt in range(_ATTEMPTS):
            try:
                with self._connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                    return body(cur)
            except psycopg.errors.SerializationFailure:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        params = self._sql.insert_params(session)

        def body(cur: psycopg.Cursor[TupleRow]) -> None:
            cur.execute(self._sql.insert, params)

        try:
            self._run(body)
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError("session id already exists") from exc

    def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the rotation rule atomically: one round trip in the common case."""
        params = self._sql.rotate_params(rotation)

        def body(cur: psycopg.Cursor[TupleRow]) -> RotationResult:
            cur.execute(self._sql.rotate_current, params, binary=True)
            row = cur.fetchone()
            if row is not None:
                return self._sql.rotated(row)
            # Not the common case (see _Statements.rotate_current): a second
            # statement, whose own snapshot decides every other outcome.
            cur.execute(self._sql.rotate, params, binary=True)
            return self._sql.rotation_result(cur.fetchone())

        return self._run(body)

    def revoke(self, session_id: str) -> bool:
        """Delete one session; True if it existed."""

        def body(cur: psycopg.Cursor[TupleRow]) -> bool:
            cur.execute(self._sql.revoke, (session_id,))
            return cur.rowcount > 0

        return self._run(body)

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        """Bind a live, unbound session to a device key: one statement; the session after it."""
        params = {"sid": session_id, "key": device_key, "now": float(now)}

        def body(cur: psycopg.Cursor[TupleRow]) -> SessionInfo | None:
            cur.execute(self._sql.bind_device, params, binary=True)
            row = cur.fetchone()
            return None if row is None else _info_of(row)

        return self._run(body)

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        params = {"sid": session_id, "now": float(now)}

        def body(cur: psycopg.Cursor[TupleRow]) -> str | None:
            cur.execute(self._sql.device_key_of, params)
            row = cur.fetchone()
            return None if row is None else row[0]

        return self._run(body)

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number deleted."""

        def body(cur: psycopg.Cursor[TupleRow]) -> int:
            cur.execute(self._sql.revoke_user, (user_id,))
            return cur.rowcount

        return self._run(body)

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first (ties by session id)."""
        params = {"user": user_id, "now": float(now)}

        def body(cur: psycopg.Cursor[TupleRow]) -> list[SessionInfo]:
            cur.execute(self._sql.sessions_of, params, binary=True)
            return [_info_of(row) for row in cur.fetchall()]

        return self._run(body)

    def purge(self, *, now: float, batch_size: int = 10_000) -> int:
        """Delete every session that is no longer live at ``now``; the number deleted.

        Deletes in batches of ``batch_size`` rows, each its own statement (and,
        in autocommit mode, its own transaction), so that a large backlog never
        holds many row locks or one long transaction. Rows locked by a
        rotation in progress are skipped; that rotation deletes them itself.
        """
        _check_batch(batch_size)
        total = 0
        while True:

            def body(cur: psycopg.Cursor[TupleRow]) -> int:
                cur.execute(self._sql.purge, {"now": float(now), "limit": batch_size})
                return cur.rowcount

            deleted = self._run(body)
            total += deleted
            if deleted < batch_size:
                return total


class AsyncPostgresStore:
    """The async variant of :class:`PostgresStore`, with the same table and semantics.

    ``target`` is a :class:`psycopg_pool.AsyncConnectionPool` (recommended,
    with ``kwargs={"autocommit": True}``), a :class:`psycopg.AsyncConnection`
    opened with ``autocommit=True``, or a conninfo string (the store opens its
    own pool on first use; close it with :meth:`aclose` or ``async with``).
    """

    def __init__(
        self,
        target: str | psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        table: str = DEFAULT_TABLE,
    ) -> None:
        self._sql = _Statements(table)
        self._db = AsyncConnections(target, "AsyncPostgresStore")
        self._connection = self._db.connection

    def __repr__(self) -> str:
        return f"AsyncPostgresStore(table={self._sql.table!r})"

    @property
    def table(self) -> str:
        """The sessions table's name."""
        return self._sql.table

    async def aclose(self) -> None:
        """Close the pool the store opened for a conninfo string (nothing else)."""
        await self._db.aclose()

    async def __aenter__(self) -> AsyncPostgresStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, body: Callable[[psycopg.AsyncCursor[TupleRow]], Awaitable[_T]]) -> _T:
        for attempt in range(_ATTEMPTS):
            try:
                async with (
                    self._connection() as conn,
                    conn.cursor(row_factory=tuple_row) as cur,
                ):
                    return await body(cur)
            except psycopg.errors.SerializationFailure:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def create(self, session: NewSession) -> None:
        """Store a new session; a duplicate id raises ``ValueError``."""
        params = self._sql.insert_params(session)

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> None:
            await cur.execute(self._sql.insert, params)

        try:
            await self._run(body)
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError("session id already exists") from exc

    async def rotate(self, rotation: Rotation) -> RotationResult:
        """Apply the rotation rule atomically: one round trip in the common case."""
        params = self._sql.rotate_params(rotation)

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> RotationResult:
            await cur.execute(self._sql.rotate_current, params, binary=True)
            row = await cur.fetchone()
            if row is not None:
                return self._sql.rotated(row)
            await cur.execute(self._sql.rotate, params, binary=True)
            return self._sql.rotation_result(await cur.fetchone())

        return await self._run(body)

    async def revoke(self, session_id: str) -> bool:
        """Delete one session; True if it existed."""

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> bool:
            await cur.execute(self._sql.revoke, (session_id,))
            return cur.rowcount > 0

        return await self._run(body)

    async def bind_device(
        self, session_id: str, device_key: str, *, now: float
    ) -> SessionInfo | None:
        """Bind a live, unbound session to a device key: one statement; the session after it."""
        params = {"sid": session_id, "key": device_key, "now": float(now)}

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> SessionInfo | None:
            await cur.execute(self._sql.bind_device, params, binary=True)
            row = await cur.fetchone()
            return None if row is None else _info_of(row)

        return await self._run(body)

    async def device_key_of(self, session_id: str, *, now: float) -> str | None:
        """The device key of a live session, or None."""
        params = {"sid": session_id, "now": float(now)}

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> str | None:
            await cur.execute(self._sql.device_key_of, params)
            row = await cur.fetchone()
            return None if row is None else row[0]

        return await self._run(body)

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; the number deleted."""

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> int:
            await cur.execute(self._sql.revoke_user, (user_id,))
            return cur.rowcount

        return await self._run(body)

    async def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        """The user's live sessions at ``now``, oldest first (ties by session id)."""
        params = {"user": user_id, "now": float(now)}

        async def body(cur: psycopg.AsyncCursor[TupleRow]) -> list[SessionInfo]:
            await cur.execute(self._sql.sessions_of, params, binary=True)
            return [_info_of(row) for row in await cur.fetchall()]

        return await self._run(body)

    async def purge(self, *, now: float, batch_size: int = 10_000) -> int:
        """Delete every session that is no longer live at ``now``, in batches; the number."""
        _check_batch(batch_size)
        total = 0
        while True:

            async def body(cur: psycopg.AsyncCursor[TupleRow]) -> int:
                await cur.execute(self._sql.purge, {"now": float(now), "limit": batch_size})
                return cur.rowcount

            deleted = await self._run(body)
            total += deleted
            if deleted < batch_size:
                return total
