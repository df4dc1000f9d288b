-- Attempt history that survives manual retries. Before this, a manual retry
-- reset `deliveries.attempts` and the next attempt was numbered 1 again, so a
-- delivery could show two attempts "#1".
--
-- deliveries.attempts stays the count within the current budget (what the
-- retry policy counts); attempts_total counts over the delivery's life.
ALTER TABLE deliveries ADD COLUMN attempts_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN manual_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN retried_by TEXT;   -- request id of the latest manual retry
ALTER TABLE deliveries ADD COLUMN replayed_by TEXT;  -- request id of the replay that made it

-- attempts.number becomes unique within a delivery and never resets;
-- budget_number is the number within its budget (the old meaning of number).
ALTER TABLE attempts ADD COLUMN budget_number INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN requested_by TEXT;

-- Existing attempts: numbered again by start time; the old number is kept as
-- the budget number, and each budget number 1 after the first marks a manual
-- retry (which request asked was not recorded then).
CREATE TEMP TABLE renumbered (id TEXT PRIMARY KEY, n INTEGER NOT NULL, starts INTEGER NOT NULL);
INSERT INTO renumbered
    SELECT id,
           row_number() OVER w,
           sum(number = 1) OVER w
    FROM attempts
    WINDOW w AS (PARTITION BY delivery_id ORDER BY started_at_ms, id);
UPDATE attempts
   SET budget_number = number,
       number = r.n,
       round = max(r.starts - 1, 0)
  FROM renumbered AS r
 WHERE r.id = attempts.id;
DROP TABLE renumbered;

-- A delivery retried by hand whose new budget has not started yet has
-- attempts = 0 with attempts on record: that retry counts too.
UPDATE deliveries
   SET attempts_total = (SELECT count(*) FROM attempts a WHERE a.delivery_id = deliveries.id),
       manual_retries = coalesce((SELECT max(a.round) FROM attempts a WHERE a.delivery_id = deliveries.id), 0)
                        + (attempts = 0 AND EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = deliveries.id));

CREATE UNIQUE INDEX attempts_number ON attempts (delivery_id, number);
