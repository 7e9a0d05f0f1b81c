-- tokenflow session store for PostgreSQL (12 or later), schema version 2.
--
-- A psycopg.sql template: the names in braces below (table, user_index) are
-- filled with quoted identifiers by tokenflow.stores.postgres.schema_sql(),
-- and literal braces are doubled. apply_schema() runs it; to hand it to a
-- migration tool instead, print schema_sql(table). A table created by
-- version 1 is brought to version 2 by migration_sql(table) (see
-- postgres_migrate_v2.sql), which runs on a live database.
--
-- Idempotent: every statement is IF NOT EXISTS, so running it again (or from
-- several application servers at once; apply_schema() serialises them with an
-- advisory lock) changes nothing.
--
-- Later versions add columns as nullable (ALTER TABLE ... ADD COLUMN, which
-- rewrites nothing), so that existing rows stay valid and servers running
-- the previous version keep working during a rolling upgrade.

CREATE TABLE IF NOT EXISTS {table} (
    -- COLLATE "C": ids compare byte by byte, which for UTF-8 is code point
    -- order (Python's str order), and the b-trees skip locale-aware collation.
    session_id          text COLLATE "C" PRIMARY KEY,
    user_id             text COLLATE "C" NOT NULL,
    -- Seconds since the epoch as IEEE doubles: the very values the core
    -- computes with, so the rotation rule in SQL decides exactly as
    -- tokenflow.stores.apply_rotation does in Python. The store never
    -- writes NaN (a NaN expiry is stored as -Infinity, expired alike).
    created_at          double precision NOT NULL,
    refreshed_at        double precision NOT NULL,
    idle_expires_at     double precision NOT NULL,
    absolute_expires_at double precision NOT NULL,
    generation          bigint NOT NULL DEFAULT 0,
    -- A JSON object; one whose strings hold U+0000 (which jsonb cannot
    -- hold) is kept as a JSON string of the object's JSON text.
    metadata            jsonb NOT NULL DEFAULT '{{}}',
    -- Verifiers are SHA-256 digests of refresh secrets, never the secrets:
    -- a copy of this table opens no session.
    current_verifier    bytea NOT NULL,
    previous_verifier   bytea,
    rotated_at          double precision,
    salt                bytea,
    -- The last rotation is recorded whole or not at all.
    CONSTRAINT rotation_recorded CHECK (
        (previous_verifier IS NULL) = (rotated_at IS NULL)
        AND (rotated_at IS NULL) = (salt IS NULL)
    )
)
-- Every rotation writes a new version of its row. With room left on the
-- page, and no index on a column the rotation changes, that version is a
-- heap-only tuple (HOT): no index is touched, and the old version is pruned
-- from the page without waiting for VACUUM. 70% leaves room for a new
-- version of about every other row of the page even while a concurrent
-- transaction keeps the last versions from being pruned.
WITH (fillfactor = 70);

COMMENT ON TABLE {table} IS 'tokenflow refresh sessions, schema version 2';

-- Device-bound sessions: the public key a session is bound to (canonical JWK
-- JSON), NULL while unbound. Added by ALTER so that running this file again
-- migrates a table made by an earlier release: a nullable column without a
-- default is a catalog-only change, safe on a live database, and code of the
-- earlier release keeps working beside it (it never names the column).
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS device_key text;

-- The only secondary index, and it holds only columns that never change
-- after create (a rotation changes the verifiers, the salt, refreshed_at,
-- rotated_at, idle_expires_at and generation, none of them indexed), so that
-- rotations stay HOT updates.
--
-- sessions_of and revoke_user. The trailing columns deliver rows already in
-- "oldest first" order, so listing a user's sessions never sorts.
CREATE INDEX IF NOT EXISTS {user_index} ON {table} (user_id, created_at, session_id);

-- purge has no index on purpose: one on either expiry (idle_expires_at
-- changes at every rotation) would make every rotation a non-HOT update
-- that adds index entries. purge scans the table instead, in batches,
-- stopping at each batch; it runs every few minutes, rotations all the time.
