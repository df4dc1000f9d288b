-- Events: one accepted webhook request each. Ids are time-sortable, so
-- ORDER BY id DESC is newest first.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    query           TEXT NOT NULL,
    headers         TEXT NOT NULL,   -- JSON [[name, value], ...]
    body            BLOB NOT NULL,
    payload         TEXT NOT NULL,   -- JSON
    facts           TEXT NOT NULL,   -- JSON [string]
    trace           TEXT NOT NULL,   -- JSON, per rule
    matched         TEXT NOT NULL,   -- JSON [rule]
    matched_any     INTEGER NOT NULL,
    dedup_key       TEXT
) STRICT;
CREATE INDEX events_by_source ON events (source, id);

CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    rule                TEXT NOT NULL,
    action              TEXT NOT NULL,
    action_type         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'retrying', 'dead', 'skipped')),
    serialize_key       TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    lease_until_ms      INTEGER,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at_ms);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_key ON deliveries (serialize_key, id) WHERE serialize_key IS NOT NULL;

CREATE TABLE attempts (
    id            TEXT PRIMARY KEY,
    delivery_id   TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    status_code   INTEGER,
    exit_code     INTEGER,
    error         TEXT,
    response      BLOB
) STRICT;
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, started_at_ms);

-- Dedup keys per source; a key older than the window no longer counts.
CREATE TABLE dedup (
    source        TEXT NOT NULL,
    key           TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) STRICT;
