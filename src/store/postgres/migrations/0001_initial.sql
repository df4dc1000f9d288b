-- The PostgreSQL schema: the same tables and columns as SQLite's after its
-- fourth migration (src/store/migrations), so both stores answer alike.
-- Ids are `prefix_` and a lowercase ULID: time-sortable under byte order,
-- hence COLLATE "C" (and cheaper comparisons than a locale's).

CREATE TABLE events (
    id              TEXT COLLATE "C" PRIMARY KEY,
    source          TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    query           TEXT NOT NULL,
    headers         TEXT NOT NULL,   -- JSON [[name, value], ...]
    body            BYTEA NOT NULL,
    payload         TEXT NOT NULL,   -- JSON, or '' when the payload is the body
    facts           TEXT NOT NULL,   -- JSON [string]
    trace           TEXT NOT NULL,   -- JSON, per rule
    matched         TEXT NOT NULL,   -- JSON [rule]
    matched_any     BOOLEAN NOT NULL,
    dedup_key       TEXT
);
-- `GET /api/events?source=S` newest first.
CREATE INDEX events_by_source ON events (source, id);

CREATE TABLE deliveries (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    event_id            TEXT COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    rule                TEXT NOT NULL,
    action              TEXT NOT NULL,
    action_type         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'retrying', 'dead', 'skipped')),
    serialize_key       TEXT,
    -- Attempts in the current budget (what the retry policy counts).
    attempts            INTEGER NOT NULL DEFAULT 0,
    -- Attempts over the delivery's life.
    attempts_total      INTEGER NOT NULL DEFAULT 0,
    manual_retries      INTEGER NOT NULL DEFAULT 0,
    retried_by          TEXT,            -- request id of the latest manual retry
    replayed_by         TEXT,            -- request id of the replay that made it
    next_attempt_at_ms  BIGINT NOT NULL,
    lease_until_ms      BIGINT,
    -- The instance holding the lease, and the claim's fencing token.
    owner               TEXT,
    lease_token         BIGINT NOT NULL DEFAULT 0,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
-- Claims: one index per waiting state, in due order, holding only the rows
-- of that state, so a claim reads the due rows and stops at its limit.
CREATE INDEX deliveries_pending_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX deliveries_retrying_due ON deliveries (next_attempt_at_ms) WHERE status = 'retrying';
-- Expired leases (and `next_due`'s earliest lease end).
CREATE INDEX deliveries_leased ON deliveries (lease_until_ms) WHERE status = 'running';
-- serialize_by: "is an earlier delivery of this key unfinished?" is one
-- probe of this index, whose rows are the unfinished keyed ones only.
CREATE INDEX deliveries_unfinished_by_key ON deliveries (serialize_key, id)
    WHERE serialize_key IS NOT NULL AND status IN ('pending', 'running', 'retrying');
-- An event's deliveries; pruning's cascade.
CREATE INDEX deliveries_by_event ON deliveries (event_id);
-- `GET /api/deliveries?status=S` newest first; queue depth.
CREATE INDEX deliveries_by_status ON deliveries (status, id);

CREATE TABLE attempts (
    id             TEXT COLLATE "C" PRIMARY KEY,
    delivery_id    TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    -- Unique within the delivery, never reset; budget_number counts within
    -- its budget, round is the manual retry it belongs to.
    number         INTEGER NOT NULL,
    budget_number  INTEGER NOT NULL,
    round          INTEGER NOT NULL,
    requested_by   TEXT,
    started_at_ms  BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    status_code    INTEGER,
    exit_code      INTEGER,
    error          TEXT,
    response       BYTEA,
    UNIQUE (delivery_id, number)
);

-- Dedup keys per source: the primary key is what makes two concurrent
-- copies on two instances store one event (INSERT … ON CONFLICT).
CREATE TABLE dedup (
    source        TEXT NOT NULL,
    key           TEXT NOT NULL,
    event_id      TEXT COLLATE "C" NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX dedup_by_age ON dedup (created_at_ms);
