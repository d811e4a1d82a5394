"""The tables that took over from the key-value `engine_state` everything but the alert stage's
checkpoint, with the SQL both backends share (`?` placeholders; store.postgres converts them):
site and device edits, public page links, counters, mailed reports, tank records, and the
InfluxDB backend's last-seen times (into `device_last_seen`). Each gets a schema step per
backend that moves its rows out of `engine_state`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from domain.tanks import TankEvent, TankEventKind
from store.base import MailedReport

# Each step: (name, SQLite, PostgreSQL). The SQLite text runs again safely (another process may
# have applied it meanwhile); the tables differ only in their types.
_EDITS = """
-- Site and device edits made through the API: each the registry file's JSON document of it.
CREATE TABLE IF NOT EXISTS site_edits (site_id {text} PRIMARY KEY, doc {text} NOT NULL);
CREATE TABLE IF NOT EXISTS device_edits (device_id {text} PRIMARY KEY, doc {text} NOT NULL);
INSERT INTO site_edits (site_id, doc)
    SELECT key, value FROM engine_state WHERE namespace = 'registry.sites'
    ON CONFLICT (site_id) DO NOTHING;
INSERT INTO device_edits (device_id, doc)
    SELECT key, value FROM engine_state WHERE namespace = 'registry.devices'
    ON CONFLICT (device_id) DO NOTHING;
DELETE FROM engine_state WHERE namespace IN ('registry.sites', 'registry.devices');
"""

_LINKS = """
-- The public id each site's public page answers to (api.public_page).
CREATE TABLE IF NOT EXISTS public_links (
    site_id {text} PRIMARY KEY,
    public_id {text} NOT NULL UNIQUE
);
INSERT INTO public_links (site_id, public_id)
    SELECT key, value FROM engine_state WHERE namespace = 'public.links'
    ON CONFLICT DO NOTHING;
DELETE FROM engine_state WHERE namespace = 'public.links';
"""

_COUNTERS = """
-- Counters kept across restarts (/healthz's readings_stored).
CREATE TABLE IF NOT EXISTS counters (name {text} PRIMARY KEY, value {int} NOT NULL);
INSERT INTO counters (name, value)
    SELECT key, CAST(value AS {int}) FROM engine_state WHERE namespace = 'ops.counters'
    ON CONFLICT (name) DO NOTHING;
DELETE FROM engine_state WHERE namespace = 'ops.counters';
"""

# The state's keys were JURISDICTION/PERIOD/LAST-DAY, the day an ISO date (10 characters).
_MAILED = """
-- Scheduled reports mailed already, once each.
CREATE TABLE IF NOT EXISTS mailed_reports (
    jurisdiction {text} NOT NULL,
    period {text} NOT NULL,  -- week | month
    last_day {text} NOT NULL,  -- ISO date
    mailed_ms {int} NOT NULL,
    PRIMARY KEY (jurisdiction, period, last_day)
);
INSERT INTO mailed_reports (jurisdiction, period, last_day, mailed_ms)
    SELECT substr(key, 1, length(key) - 12 - length(period)), period, substr(key, length(key) - 9),
        CAST(value AS {int})
    FROM (SELECT key, value, CASE WHEN key LIKE '%/week/__________' THEN 'week'
                                  ELSE 'month' END AS period
          FROM engine_state WHERE namespace = 'reports.mailed'
              AND (key LIKE '%/week/__________' OR key LIKE '%/month/__________')) AS mailed
    WHERE true  -- SQLite: an upsert's SELECT needs a WHERE
    ON CONFLICT DO NOTHING;
DELETE FROM engine_state WHERE namespace = 'reports.mailed';
"""

_TANK_COLUMNS = """
    device_id {text} NOT NULL,
    site_id {text} NOT NULL,
    event {text} NOT NULL,  -- tank_cleaned | tank_disinfected
    tank_id {text} NOT NULL,
    ts_ms {int} NOT NULL,  -- when the job was done, UTC epoch ms
    recv_ms {int} NOT NULL,
    operator {text} NOT NULL,
    contractor {text},
    disinfectant {text},
    report_id {text},
    PRIMARY KEY (site_id, tank_id, event, ts_ms)"""  # a record delivered again is kept once
TANK_FIELDS = (
    "device_id, site_id, event, tank_id, ts_ms, recv_ms, operator, contractor, disinfectant,"
    " report_id"
)
_TANKS = (
    "-- The tank cleaning and disinfection register (store.tank_log), a row per record.\n"
    f"CREATE TABLE IF NOT EXISTS tank_records ({_TANK_COLUMNS}\n);\n"
    f"INSERT INTO tank_records ({TANK_FIELDS})\n    SELECT {{tank_values}}\n"
    "    ON CONFLICT DO NOTHING;\n"
    "DELETE FROM engine_state WHERE namespace = 'tanks.records';\n"
)
_SQLITE_TANK_VALUES = ", ".join(
    f"json_extract(r.value, '$.{f.strip()}')" for f in TANK_FIELDS.split(",")
) + (" FROM engine_state s, json_each(s.value) r WHERE s.namespace = 'tanks.records'")
_POSTGRES_TANK_VALUES = (
    ", ".join(
        f"(r ->> '{f}')::bigint" if f in ("ts_ms", "recv_ms") else f"r ->> '{f}'"
        for f in (f.strip() for f in TANK_FIELDS.split(","))
    )
    + " FROM engine_state s, json_array_elements(s.value::json) AS r"
    " WHERE s.namespace = 'tanks.records'"
)

_INFLUX_LAST_SEEN = """
-- The InfluxDB backend's last-seen times, kept beside the relational data (store.influx).
INSERT INTO device_last_seen (device_id, recv_ms)
    SELECT key, CAST(value AS {int}) FROM engine_state WHERE namespace = 'store.influx.last_seen'
    ON CONFLICT (device_id) DO UPDATE SET recv_ms = {greatest}(device_last_seen.recv_ms,
        excluded.recv_ms);
DELETE FROM engine_state WHERE namespace = 'store.influx.last_seen';
"""

_STEPS = (
    ("site and device edits out of the engine state", _EDITS),
    ("public page links out of the engine state", _LINKS),
    ("counters out of the engine state", _COUNTERS),
    ("mailed reports out of the engine state", _MAILED),
    ("tank records out of the engine state", _TANKS),
    ("InfluxDB last-seen times out of the engine state", _INFLUX_LAST_SEEN),
)


def _sqlite(sql: str) -> str:
    return sql.format(text="TEXT", int="INTEGER", greatest="max", tank_values=_SQLITE_TANK_VALUES)


def _postgres(sql: str) -> str:
    return sql.format(
        text="text", int="bigint", greatest="greatest", tank_values=_POSTGRES_TANK_VALUES
    ).replace("IF NOT EXISTS ", "")


SQLITE_STEPS = tuple((name, _sqlite(sql)) for name, sql in _STEPS)
POSTGRES_STEPS = tuple((name, _postgres(sql)) for name, sql in _STEPS)

# -- queries ------------------------------------------------------------------------------------

SAVE_SITE_EDIT = (
    "INSERT INTO site_edits (site_id, doc) VALUES (?, ?)"
    " ON CONFLICT (site_id) DO UPDATE SET doc = excluded.doc"
)
SAVE_DEVICE_EDIT = (
    "INSERT INTO device_edits (device_id, doc) VALUES (?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET doc = excluded.doc"
)
SITE_EDITS = "SELECT site_id, doc FROM site_edits ORDER BY site_id"
DEVICE_EDITS = "SELECT device_id, doc FROM device_edits ORDER BY device_id"
SAVE_PUBLIC_LINK = (
    "INSERT INTO public_links (site_id, public_id) VALUES (?, ?)"
    " ON CONFLICT (site_id) DO UPDATE SET public_id = excluded.public_id"
)
PUBLIC_LINKS = "SELECT site_id, public_id FROM public_links"
COUNTER = "SELECT value FROM counters WHERE name = ?"
SAVE_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
MAILED_REPORTS = (
    "SELECT jurisdiction, period, last_day, mailed_ms FROM mailed_reports"
    " ORDER BY jurisdiction, period, last_day"
)
RECORD_MAILED = (
    "INSERT INTO mailed_reports (jurisdiction, period, last_day, mailed_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
ADD_TANK_RECORD = (
    f"INSERT INTO tank_records ({TANK_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
# A tank's records beyond its newest `keep` (newest by time, then kind, as they sort).
TRIM_TANK = (
    "DELETE FROM tank_records WHERE site_id = ? AND tank_id = ? AND (ts_ms, event) NOT IN"
    " (SELECT ts_ms, event FROM tank_records WHERE site_id = ? AND tank_id = ?"
    " ORDER BY ts_ms DESC, event DESC LIMIT ?)"
)
RECORD_LAST_SEEN = (
    "INSERT INTO device_last_seen (device_id, recv_ms) VALUES (?, ?) ON CONFLICT (device_id)"
    " DO UPDATE SET recv_ms = {greatest}(device_last_seen.recv_ms, excluded.recv_ms)"
)


def tank_query(site_id: str | None) -> tuple[str, tuple[str, ...]]:
    where = "" if site_id is None else " WHERE site_id = ?"
    return (
        f"SELECT {TANK_FIELDS} FROM tank_records{where} ORDER BY site_id, tank_id, ts_ms, event",
        () if site_id is None else (site_id,),
    )


def tank_values(e: TankEvent) -> tuple:
    return (e.device_id, e.site_id, str(e.event), e.tank_id, e.ts_ms, e.recv_ms, e.operator,
            e.contractor, e.disinfectant, e.report_id)  # fmt: skip


def tank_event(row: Sequence) -> TankEvent:
    device, site, event, tank, ts, recv, operator, contractor, disinfectant, report = row
    return TankEvent(
        device, site, TankEventKind(event), tank, ts, recv, operator, contractor, disinfectant,
        report,
    )  # fmt: skip


def trim_args(site_id: str, tank_id: str, keep: int) -> tuple[str, str, str, str, int]:
    return (site_id, tank_id, site_id, tank_id, keep)


def mailed_values(m: MailedReport) -> tuple[str, str, str, int]:
    return (m.jurisdiction, m.period, m.last_day, m.mailed_ms)


def add_tank_records(
    execute: Callable[[str, Sequence[Any]], Any], events: Sequence[TankEvent], keep: int
) -> list[TankEvent]:
    """TankStore.add_tank_records inside the caller's transaction: `execute` runs one of this
    module's statements (placeholders converted where the backend needs it), returning its
    cursor. The records that were new; each touched tank trimmed to its newest `keep`."""
    fresh = [e for e in events if execute(ADD_TANK_RECORD, tank_values(e)).rowcount]
    for site_id, tank_id in sorted({(e.site_id, e.tank_id) for e in fresh}):
        execute(TRIM_TANK, trim_args(site_id, tank_id, keep))
    return fresh
