-- serialize_by without scanning a blocked key's backlog. A keyed delivery
-- stored while an earlier one of its key is unfinished waits "on its key":
-- it stays `pending` (what the API shows) but is out of the claim index, so
-- a claim never reads it, however many wait. When a keyed delivery
-- finishes, the earliest unfinished one of its key stops waiting, in the
-- same transaction. Both writers hold the key's transaction advisory lock
-- (see claims.rs), so a delivery stored while the head finishes is never
-- left waiting behind nothing.
ALTER TABLE deliveries ADD COLUMN waiting_on_key BOOLEAN NOT NULL DEFAULT false;
DROP INDEX deliveries_pending_due;
CREATE INDEX deliveries_pending_due ON deliveries (next_attempt_at_ms)
    WHERE status = 'pending' AND NOT waiting_on_key;
