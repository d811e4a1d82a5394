"""The PostgreSQL schema, as the steps that build it. Never edit a released step: add one."""

from __future__ import annotations

from store import notify_sql, records_sql
from store.migrations import Migration

INITIAL = """
-- Readings are partitioned by sensor time, a month per partition (the store creates them ahead
-- and on demand); retention drops whole partitions.
CREATE TABLE readings (
    device_id text NOT NULL,
    parameter text NOT NULL,
    ts_ms bigint NOT NULL,            -- sensor time, UTC epoch ms
    value double precision NOT NULL,
    flag text NOT NULL,
    recv_ms bigint NOT NULL,          -- receive time, UTC epoch ms
    seq bigint,
    site_id text NOT NULL,
    PRIMARY KEY (device_id, parameter, ts_ms)
) PARTITION BY RANGE (ts_ms);
-- Which devices have reported for a site: a site's readings are found through the primary key
-- of its devices, which spares every insert a second index.
CREATE TABLE device_sites (
    site_id text NOT NULL,
    device_id text NOT NULL,
    PRIMARY KEY (site_id, device_id)
);
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    recv_ms bigint NOT NULL,
    source text NOT NULL,
    topic text NOT NULL,
    device_id text,
    reason text NOT NULL,
    raw bytea NOT NULL
);
CREATE TABLE device_status (
    device_id text PRIMARY KEY,
    recv_ms bigint NOT NULL,
    ts_ms bigint,
    state text NOT NULL,
    detail text NOT NULL
);
CREATE TABLE device_last_seen (
    device_id text PRIMARY KEY,
    recv_ms bigint NOT NULL
);
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    site_id text NOT NULL,
    device_id text,
    rule_id text NOT NULL,
    family text NOT NULL,
    severity text NOT NULL,
    parameter text,
    status text NOT NULL,
    message text NOT NULL,
    first_ms bigint NOT NULL,
    last_ms bigint NOT NULL,
    first_value double precision,
    last_value double precision,
    worst_value double precision,
    worst_ms bigint,
    count integer NOT NULL,
    limit_json text NOT NULL,
    evidence_json text NOT NULL,
    opened_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    resolved_ms bigint
);
-- One open alert per (subject, rule): the database enforces what the engine promises.
CREATE UNIQUE INDEX one_open_alert
    ON alerts (site_id, coalesce(device_id, ''), rule_id) WHERE status <> 'resolved';
CREATE INDEX alerts_by_time ON alerts (updated_ms);
CREATE TABLE alert_audit (
    id bigserial PRIMARY KEY,
    alert_id bigint NOT NULL REFERENCES alerts (id),
    at_ms bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    comment text NOT NULL
);
CREATE INDEX audit_by_alert ON alert_audit (alert_id);
CREATE TABLE deliveries (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    alert_id bigint NOT NULL,
    action text NOT NULL,
    ok boolean NOT NULL,
    attempts integer NOT NULL,
    error text NOT NULL,
    at_ms bigint NOT NULL
);
CREATE TABLE users (
    name text PRIMARY KEY,
    password_hash text NOT NULL,
    role text NOT NULL,
    jurisdictions text NOT NULL,
    created_ms bigint NOT NULL
);
-- API tokens (machines) and login sessions (people): only a SHA-256 of the token is kept.
CREATE TABLE tokens (
    token_hash text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    role text NOT NULL,
    jurisdictions text NOT NULL,
    label text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint
);
CREATE TABLE engine_state (
    namespace text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""

WASTE_LEDGER = """
CREATE TABLE waste_events (
    id bigserial PRIMARY KEY,
    device_id text NOT NULL,
    site_id text NOT NULL,
    bag_id text NOT NULL,
    event text NOT NULL,
    ts_ms bigint NOT NULL,            -- scanner time, UTC epoch ms
    recv_ms bigint NOT NULL,
    category text,
    weight_kg double precision,
    department text,
    manifest_id text,
    carrier text,
    UNIQUE (device_id, bag_id, event, ts_ms)
);
CREATE INDEX waste_events_by_bag ON waste_events (site_id, bag_id);
-- One row per (site, bag), derived from all of the bag's events after every batch.
CREATE TABLE waste_bags (
    site_id text NOT NULL,
    bag_id text NOT NULL,
    category text,
    department text,
    collected_ms bigint,
    collected_kg double precision,
    stored_ms bigint,
    stored_kg double precision,
    handed_ms bigint,
    handed_kg double precision,
    handed_recv_ms bigint,
    manifest_id text,
    carrier text,
    categories text NOT NULL,         -- every category the chain states, comma-separated
    duplicates integer NOT NULL,
    events integer NOT NULL,
    produced_ms bigint NOT NULL,      -- first time the bag appears in the chain
    weight_kg double precision,       -- the hospital's weight (collection, else storage)
    PRIMARY KEY (site_id, bag_id)
);
CREATE INDEX waste_bags_by_time ON waste_bags (site_id, produced_ms);
CREATE INDEX waste_bags_by_manifest ON waste_bags (site_id, manifest_id);
CREATE INDEX waste_bags_by_id ON waste_bags (bag_id);
CREATE INDEX waste_bags_held ON waste_bags (site_id) WHERE handed_ms IS NULL;
CREATE INDEX waste_bags_incomplete ON waste_bags (handed_recv_ms)
    WHERE collected_ms IS NULL OR stored_ms IS NULL;
"""

RETENTION = """
-- Hourly aggregates of the raw readings retention removed, kept for good.
CREATE TABLE readings_hourly (
    device_id text NOT NULL,
    parameter text NOT NULL,
    hour_ms bigint NOT NULL,          -- start of the UTC hour
    n bigint NOT NULL,
    total double precision NOT NULL,
    lo double precision NOT NULL,
    hi double precision NOT NULL,
    valid_n bigint NOT NULL,          -- the readings flagged N
    valid_total double precision NOT NULL,
    valid_lo double precision,
    valid_hi double precision,
    PRIMARY KEY (device_id, parameter, hour_ms)
);
-- Readings of a partition retention dropped that are evidence of an alert.
CREATE TABLE readings_kept (
    device_id text NOT NULL,
    parameter text NOT NULL,
    ts_ms bigint NOT NULL,
    value double precision NOT NULL,
    flag text NOT NULL,
    recv_ms bigint NOT NULL,
    seq bigint,
    site_id text NOT NULL,
    PRIMARY KEY (device_id, parameter, ts_ms)
);
-- What queries read: the partitions and the kept evidence never hold the same reading.
CREATE VIEW readings_all AS
    SELECT device_id, parameter, ts_ms, value, flag, recv_ms, seq, site_id FROM readings
    UNION ALL
    SELECT device_id, parameter, ts_ms, value, flag, recv_ms, seq, site_id FROM readings_kept;
"""

ACCOUNTS_AND_DEAD_LETTERS = """
-- Disabled people: their logins and sessions are refused until enabled again.
CREATE TABLE disabled_users (
    name text PRIMARY KEY,
    at_ms bigint NOT NULL
);
-- Counts per reason of dead letters that retention deleted, so totals never shrink.
CREATE TABLE dead_letter_tallies (
    reason text PRIMARY KEY,
    count bigint NOT NULL
);
"""

TIMESCALEDB = """
-- Where the TimescaleDB extension is available, readings go into a hypertable (chunks of 30 days
-- of sensor time) instead of monthly partitions; the store finds out which from the table's kind
-- and runs the same queries on either. Only a database without readings is converted: moving an
-- existing one is a dump and restore. Where the extension is absent, or not loadable (it needs
-- shared_preload_libraries), nothing changes.
DO $timescaledb$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
            OR EXISTS (SELECT 1 FROM readings) THEN
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'timescaledb not loadable (%), readings stay in monthly partitions', SQLERRM;
        RETURN;
    END;
    DROP VIEW readings_all;
    DROP TABLE readings;
    CREATE TABLE readings (
        device_id text NOT NULL,
        parameter text NOT NULL,
        ts_ms bigint NOT NULL,
        value double precision NOT NULL,
        flag text NOT NULL,
        recv_ms bigint NOT NULL,
        seq bigint,
        site_id text NOT NULL,
        PRIMARY KEY (device_id, parameter, ts_ms)
    );
    PERFORM create_hypertable('readings', 'ts_ms', chunk_time_interval => 2592000000);
    CREATE VIEW readings_all AS
        SELECT device_id, parameter, ts_ms, value, flag, recv_ms, seq, site_id FROM readings
        UNION ALL
        SELECT device_id, parameter, ts_ms, value, flag, recv_ms, seq, site_id
        FROM readings_kept;
END
$timescaledb$;
"""

NOTIFICATIONS = """
-- The deliveries of every notification channel, not only webhooks: the webhook deliveries move
-- over and their table goes.
CREATE TABLE notice_deliveries (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    target text NOT NULL,
    alert_id bigint NOT NULL,
    action text NOT NULL,
    ok boolean NOT NULL,
    attempts integer NOT NULL,
    error text NOT NULL,
    at_ms bigint NOT NULL
);
INSERT INTO notice_deliveries (channel, target, alert_id, action, ok, attempts, error, at_ms)
    SELECT 'webhook', target, alert_id, action, ok, attempts, error, at_ms FROM deliveries
    ORDER BY id;
DROP TABLE deliveries;
CREATE INDEX notice_deliveries_by_channel ON notice_deliveries (channel, id);
-- A notice key claimed before sending: one message per person per level per alert episode,
-- across restarts and processes.
CREATE TABLE notice_claims (
    key text PRIMARY KEY,
    claimed_ms bigint NOT NULL
);
"""


ALERT_FEED = """
-- The alert feed (store/feed.py): what each committed ingest batch brought to each partition,
-- numbered per partition in commit order. The head row is locked by the committing transaction
-- to take the next number, so a number is never seen before the ones below it are committed.
CREATE TABLE feed_heads (
    part integer PRIMARY KEY,
    pos bigint NOT NULL
);
CREATE TABLE feed_entries (
    part integer NOT NULL,
    pos bigint NOT NULL,
    body text NOT NULL,               -- JSON: readings, waste events, dead letters
    committed_ms bigint NOT NULL,
    PRIMARY KEY (part, pos)
);
-- Where each partition's alert worker is; `epoch` grows at every take-over, and a write of an
-- older epoch is refused (a worker that lost its lease cannot write).
CREATE TABLE feed_cursors (
    part integer PRIMARY KEY,
    pos bigint NOT NULL,
    epoch bigint NOT NULL
);
"""

ALERT_ACTIONS = """
-- Inspector actions the API records and the alert worker holding the alert's partition applies.
CREATE TABLE alert_actions (
    id bigserial PRIMARY KEY,
    part integer NOT NULL,
    alert_id bigint NOT NULL,
    action text NOT NULL,             -- acknowledged | resolved | commented
    actor text NOT NULL,
    comment text NOT NULL,
    at_ms bigint NOT NULL,
    done_ms bigint,                   -- NULL: not applied yet
    error text                        -- why it was refused; NULL when applied
);
CREATE INDEX alert_actions_pending ON alert_actions (part, id) WHERE done_ms IS NULL;
"""

DISINFECTION_LINES = """
CREATE TABLE line_events (
    device_id text NOT NULL,
    site_id text NOT NULL,
    line_id text NOT NULL,
    event text NOT NULL,              -- cycle_start, cycle_end, batch_packed
    ref_id text NOT NULL,             -- the cycle id or the batch id
    ts_ms bigint NOT NULL,            -- controller time, UTC epoch ms
    recv_ms bigint NOT NULL,
    method text,
    sets integer,
    production_date text,
    UNIQUE (device_id, event, ref_id, ts_ms)
);
CREATE INDEX line_events_by_time ON line_events (device_id, ts_ms);
CREATE INDEX line_events_by_ref ON line_events (device_id, ref_id);
"""

FEED_NUMBERED_BY_READERS = """
-- Ingest no longer numbers feed entries (the head row it locked until commit queued every
-- writer of a partition behind the last): an entry is inserted unnumbered, in `seq` order, and
-- the alert worker numbers the committed ones per partition (store.postgres.feed). `feed_heads`
-- keeps the last number given.
ALTER TABLE feed_entries DROP CONSTRAINT feed_entries_pkey;
ALTER TABLE feed_entries ALTER COLUMN pos DROP NOT NULL;  -- NULL: not numbered yet
ALTER TABLE feed_entries ADD COLUMN seq bigserial PRIMARY KEY;
CREATE UNIQUE INDEX feed_entries_by_pos ON feed_entries (part, pos);
CREATE INDEX feed_entries_to_number ON feed_entries (part, seq) WHERE pos IS NULL;
"""

MIGRATIONS = (
    Migration(1, "readings, alerts, accounts and engine state", INITIAL),
    Migration(2, "the medical-waste ledger", WASTE_LEDGER),
    Migration(3, "retention: hourly aggregates, kept evidence", RETENTION),
    Migration(4, "disabled users, dead-letter tallies", ACCOUNTS_AND_DEAD_LETTERS),
    Migration(5, "readings as a TimescaleDB hypertable where available", TIMESCALEDB),
    Migration(6, "notifications: deliveries by channel, claimed notice keys", NOTIFICATIONS),
    Migration(7, "the alert feed: entries in commit order, cursors", ALERT_FEED),
    Migration(8, "inspector actions for the alert workers", ALERT_ACTIONS),
    Migration(9, "disinfection-line cycle and batch events", DISINFECTION_LINES),
    Migration(10, notify_sql.MIGRATION_NAME, notify_sql.POSTGRES_SCHEMA),
    Migration(11, "the alert feed numbered by its readers", FEED_NUMBERED_BY_READERS),
    *(Migration(12 + i, name, sql) for i, (name, sql) in enumerate(records_sql.POSTGRES_STEPS)),
)
