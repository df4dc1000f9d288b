-- Steps (SPEC §4.7), as SQLite's migration 0005: a step is stored
-- `waiting` and names the deliveries it needs (need_ids, JSON [id]) and
-- their actions (needs, JSON [name]); a delivery some step needs has
-- has_steps set, and its end settles them in the same transaction. A
-- skipped delivery says why (reason), blocked_by names the need whose end
-- skipped it, step_trace keeps a step's `when` as evaluated, and
-- attempts.output the output of a successful attempt a step may read.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('waiting', 'pending', 'running', 'succeeded', 'retrying', 'dead', 'skipped'));
ALTER TABLE deliveries
    ADD COLUMN needs TEXT,
    ADD COLUMN need_ids TEXT,
    ADD COLUMN has_steps BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN reason TEXT,
    ADD COLUMN blocked_by TEXT,
    ADD COLUMN step_trace TEXT;
ALTER TABLE attempts ADD COLUMN output TEXT;
