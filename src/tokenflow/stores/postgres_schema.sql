-- tokenflow session store for PostgreSQL (12 or later), schema version 1.
--
-- A psycopg.sql template: the names in braces below (table, user_index,
-- expiry_index) are filled with quoted identifiers by
-- tokenflow.stores.postgres.schema_sql(), and literal braces are doubled.
-- apply_schema() runs it; to hand it to a migration tool instead, print
-- schema_sql(table).
--
-- Idempotent: every statement is IF NOT EXISTS, so running it again (or from
-- several application servers at once; apply_schema() serialises them with an
-- advisory lock) changes nothing.

CREATE TABLE IF NOT EXISTS {table} (
    -- COLLATE "C": ids compare byte by byte, which for UTF-8 is code point
    -- order (Python's str order), and the b-trees skip locale-aware collation.
    session_id          text COLLATE "C" PRIMARY KEY,
    user_id             text COLLATE "C" NOT NULL,
    -- Seconds since the epoch as IEEE doubles: the very values the core
    -- computes with, so the rotation rule in SQL decides exactly as
    -- tokenflow.stores.apply_rotation does in Python.
    created_at          double precision NOT NULL,
    refreshed_at        double precision NOT NULL,
    idle_expires_at     double precision NOT NULL,
    absolute_expires_at double precision NOT NULL,
    generation          bigint NOT NULL DEFAULT 0,
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
);

COMMENT ON TABLE {table} IS 'tokenflow refresh sessions, schema version 1';

-- Device-bound sessions: the public key a session is bound to (canonical JWK
-- JSON), NULL while unbound. Added by ALTER so that running this file again
-- migrates a table made by an earlier release: a nullable column without a
-- default is a catalog-only change, safe on a live database, and code of the
-- earlier release keeps working beside it (it never names the column).
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS device_key text;

-- sessions_of and revoke_user. The trailing columns deliver rows already in
-- "oldest first" order, so listing a user's sessions never sorts.
CREATE INDEX IF NOT EXISTS {user_index} ON {table} (user_id, created_at, session_id);

-- purge: a session is dead once the earlier of its two expiries has passed.
-- The purge statement repeats this expression verbatim so that the planner
-- uses the index. Cost: idle_expires_at changes at every rotation, so no
-- rotation is a HOT update (every index gets a new entry). A deployment that
-- rotates at very high rates can drop this index and purge by sequential scan.
CREATE INDEX IF NOT EXISTS {expiry_index}
    ON {table} (LEAST(idle_expires_at, absolute_expires_at));
