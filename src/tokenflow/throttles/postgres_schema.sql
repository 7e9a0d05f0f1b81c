-- tokenflow login throttle for PostgreSQL (12 or later).
--
-- A psycopg.sql template: {table} and {expiry_index} are filled with quoted
-- identifiers by tokenflow.throttles.postgres.schema_sql().
-- apply_schema() runs it; print schema_sql(table) to hand it to a migration
-- tool instead. Idempotent: every statement is IF NOT EXISTS.

CREATE TABLE IF NOT EXISTS {table} (
    -- A digest of a username or a client address, made by tokenflow: the
    -- table holds no username.
    key             text COLLATE "C" PRIMARY KEY,
    count           integer NOT NULL,
    -- Seconds since the epoch, as the application's clock gave them.
    last_failure_at double precision NOT NULL,
    -- last_failure_at + window: the row counts on while now < expires_at.
    expires_at      double precision NOT NULL
);

-- purge(): rows whose window has run out.
CREATE INDEX IF NOT EXISTS {expiry_index} ON {table} (expires_at);
