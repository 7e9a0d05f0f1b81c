-- tokenflow session store for PostgreSQL: migration from schema version 1 to 2.
--
-- A psycopg.sql template like postgres_schema.sql: print
-- tokenflow.stores.postgres.migration_sql(table) for the text with your
-- table's name, and run it with psql or your migration tool, outside a
-- transaction block (DROP INDEX CONCURRENTLY cannot run inside one).
--
-- Safe on a live database, with application servers of either version
-- running: neither statement rewrites the table or blocks reads and writes
-- of sessions. Version 1 servers work without the dropped index (only their
-- purge gets slower); version 2 servers never used it. Idempotent.

-- The expiry index made every rotation a non-HOT update (idle_expires_at,
-- which it covers, changes at every rotation). CONCURRENTLY: no lock that
-- blocks rotations while it is dropped.
DROP INDEX CONCURRENTLY IF EXISTS {expiry_index};

-- Room on each page for new row versions. Takes effect for pages filled
-- from now on; to repack existing pages as well, rewrite the table at a
-- quiet time (VACUUM FULL locks it; pg_repack does not).
ALTER TABLE {table} SET (fillfactor = 70);

COMMENT ON TABLE {table} IS 'tokenflow refresh sessions, schema version 2';
