-- Steps (SPEC §4.7): an action that runs after others of its rule and
-- reads what they returned.
--
-- A step is stored `waiting` with its event and names the deliveries it
-- needs (need_ids, JSON [id]) and their actions (needs, JSON [name]). A
-- delivery some step needs has has_steps set: its end settles them, in the
-- same transaction. A skipped delivery says why (reason); blocked_by names
-- the need whose end skipped it, so that retrying that need by hand makes
-- it wait again. step_trace keeps the step's `when` as evaluated.
ALTER TABLE deliveries ADD COLUMN needs TEXT;
ALTER TABLE deliveries ADD COLUMN need_ids TEXT;
ALTER TABLE deliveries ADD COLUMN has_steps INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN reason TEXT;
ALTER TABLE deliveries ADD COLUMN blocked_by TEXT;
ALTER TABLE deliveries ADD COLUMN step_trace TEXT;
-- The output of a successful attempt of an action some step needs
-- (JSON, up to 1 MiB).
ALTER TABLE attempts ADD COLUMN output TEXT;

-- `waiting` joins the states the status column accepts. SQLite cannot
-- alter a CHECK constraint; widening one changes no stored row, which its
-- documentation allows to do by editing the schema text (the migration
-- then bumps schema_version so every connection reads it again). Last in
-- this file: ADD COLUMN above edits the same text by offset.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''dead'', ''skipped''))', '''dead'', ''skipped'', ''waiting''))')
 WHERE type = 'table' AND name = 'deliveries';
PRAGMA writable_schema = OFF;
