-- Pruning and the admin lists without full scans.
--
-- Expired dedup keys are deleted in small batches by age: without this
-- index each batch would scan the whole table.
CREATE INDEX dedup_by_age ON dedup (created_at_ms);

-- `GET /api/deliveries?status=S` pages newest first within one status:
-- (status, id) walks exactly the rows of one page, where deliveries_due
-- (status, next_attempt_at_ms) would read every delivery of the status and sort.
CREATE INDEX deliveries_by_status ON deliveries (status, id);

-- Events are pruned by id range (ids are time-sortable), through the primary
-- key; deliveries and attempts go with them through deliveries_by_event and
-- attempts_by_delivery, so no index on received_at_ms is needed.
