-- Bodies of a few kilobytes are the bulk of every event. PostgreSQL's
-- default compression (pglz) cost the server more CPU per event than the
-- rest of the insert (bench: pg-nomatch); lz4 compresses JSON about as well
-- at a fraction of the CPU. A server built without lz4 (or older than 14)
-- stores bodies uncompressed instead, out of line, which is cheaper still
-- in CPU and dearer in disk.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    ALTER TABLE events ALTER COLUMN body SET STORAGE EXTERNAL;
END $$;
