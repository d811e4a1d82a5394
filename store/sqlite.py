"""SQLite backend (WAL): readings, dead letters, device status, alerts with audit, accounts, and
the rest of the Store's roles (store.base).
Connections as store.sqlite_db: one writer behind a lock, a reader per thread."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from domain import strict_json
from domain.model import Alert, AlertFamily, AlertStatus, DeadLetter, Reading, Severity
from domain.tanks import TankEvent
from domain.timeutil import now_ms
from store import notify_sql, records_sql
from store.base import (
    TOKEN_ID_CHARS,
    AlertChange,
    AlertQuery,
    AuditEntry,
    AuditEvent,
    Bucket,
    Delivery,
    DeviceStatus,
    MailedReport,
    Principal,
    ReadingQuery,
    StoreUnavailable,
    TokenInfo,
    UserInfo,
)
from store.migrations import Migration
from store.retention import (
    HOUR_MS,
    HOURLY_COLS,
    HOURLY_MERGE,
    HOURLY_SELECT,
    RetentionReport,
    RetentionSettings,
    downsample_sql,
    is_evidence,
)
from store.sqlite_db import SqliteDatabase, attach_readonly, readonly_uri

log = logging.getLogger("landun.store")

_READING_COLS = "device_id, parameter, ts_ms, value, flag, recv_ms, seq, site_id"
_READING_COLUMNS = """
    device_id TEXT NOT NULL,
    parameter TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,          -- sensor time, UTC epoch ms
    value REAL NOT NULL,
    flag TEXT NOT NULL,
    recv_ms INTEGER NOT NULL,        -- receive time, UTC epoch ms
    seq INTEGER,
    site_id TEXT NOT NULL,"""
SERIES_KEY = "device_id, parameter, ts_ms"
# Where releases before 2026-12 put a reading first (moved on by compaction), in this file.
INBOXES = ("readings_inbox0", "readings_inbox1")
LEGACY_INBOXES = ("readings_inbox", "readings_recent")  # in this file until 2026-11
# The readings file of releases before 2026-12, beside this one: its tables and their keys,
# moved into this file on open (`_absorb_readings_file`).
OLD_FILE_TABLES = {
    "readings_hourly": ("readings_hourly", "device_id, parameter, hour_ms", HOURLY_COLS),
    "readings": ("readings", SERIES_KEY, _READING_COLS),
    "readings_runs": ("readings", f"run, {SERIES_KEY}", _READING_COLS),
    "readings_recent": ("readings", SERIES_KEY, _READING_COLS),
}
ABSORB_BATCH_ROWS = 50_000  # a transaction's rows when moving that file: a bounded WAL


def _table(key: str) -> str:
    return f"({_READING_COLUMNS}\n    PRIMARY KEY ({key})\n) WITHOUT ROWID"


def readings_path(path: Path) -> Path:
    """The file beside the main database in which releases before 2026-12 kept readings."""
    return path.with_name(f"{path.stem}-readings{path.suffix}")


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store at `path` on which `readings_all` names the readings,
    as on PostgreSQL: tools and tests run the same SQL on either."""
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=10)
    conn.execute("CREATE TEMP VIEW readings_all AS SELECT * FROM main.readings")
    return conn


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {INBOXES[0]} {_table("ts_ms, device_id, parameter")};
CREATE TABLE IF NOT EXISTS {INBOXES[1]} {_table("ts_ms, device_id, parameter")};
CREATE TABLE IF NOT EXISTS inbox_state (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    active INTEGER NOT NULL CHECK (active IN (0, 1)),  -- the inbox ingest appends to
    -- Counts switches. While it stays the same, the other inbox gets no new rows: a move
    -- empties that inbox only if no other compactor emptied it and switched meanwhile.
    generation INTEGER NOT NULL DEFAULT 0,
    -- The newest sensor time that has left an inbox for the readings file (NULL: not known).
    -- A newer reading cannot be there, so ingest skips looking: most readings are the newest.
    moved_ts_ms INTEGER
);
INSERT OR IGNORE INTO inbox_state (one, active) VALUES (1, 0);
-- Which devices have reported for a site: a site's readings are found through the primary key
-- (device, parameter, time) of its devices, which spares every insert a second index.
DROP INDEX IF EXISTS readings_by_site;
CREATE TABLE IF NOT EXISTS device_sites (
    site_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (site_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    recv_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    device_id TEXT,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (recv_ms);
-- Counts per reason of dead letters that retention deleted.
CREATE TABLE IF NOT EXISTS dead_letter_tallies (
    reason TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS device_status (
    device_id TEXT PRIMARY KEY,
    recv_ms INTEGER NOT NULL,
    ts_ms INTEGER,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_last_seen (
    device_id TEXT PRIMARY KEY,
    recv_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    site_id TEXT NOT NULL,
    device_id TEXT,
    rule_id TEXT NOT NULL,
    family TEXT NOT NULL,
    severity TEXT NOT NULL,
    parameter TEXT,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    first_value REAL,
    last_value REAL,
    worst_value REAL,
    worst_ms INTEGER,
    count INTEGER NOT NULL,
    limit_json TEXT NOT NULL,
    evidence_json TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    resolved_ms INTEGER
);
-- One open alert per (subject, rule): the database enforces what the engine promises.
CREATE UNIQUE INDEX IF NOT EXISTS one_open_alert
    ON alerts (site_id, ifnull(device_id, ''), rule_id) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (updated_ms);
CREATE TABLE IF NOT EXISTS alert_audit (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    comment TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_alert ON alert_audit (alert_id);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    alert_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    jurisdictions TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
-- API tokens (machines) and login sessions (people): only a SHA-256 of the token is kept.
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    jurisdictions TEXT NOT NULL,
    label TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_name ON tokens (name, kind);
-- A table of its own rather than a column of users, so databases from earlier releases get it.
CREATE TABLE IF NOT EXISTS disabled_users (
    name TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_state (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""

NOTIFICATIONS = """
-- The deliveries of every notification channel, not only webhooks: the webhook deliveries move
-- over and their table goes. Safe to run again (a file that lost its schema_migrations gets an
-- empty legacy table from step 1, copied over and dropped).
CREATE TABLE IF NOT EXISTS notice_deliveries (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    alert_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
INSERT INTO notice_deliveries (channel, target, alert_id, action, ok, attempts, error, at_ms)
    SELECT 'webhook', target, alert_id, action, ok, attempts, error, at_ms FROM deliveries
    ORDER BY id;
DROP TABLE deliveries;
CREATE INDEX IF NOT EXISTS notice_deliveries_by_channel ON notice_deliveries (channel, id);
-- A notice key claimed before sending: one message per person per level per alert episode,
-- across restarts and processes.
CREATE TABLE IF NOT EXISTS notice_claims (
    key TEXT PRIMARY KEY,
    claimed_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""

READINGS_HOURLY = """
-- Hourly aggregates of the raw readings retention removed, kept for good (store.retention).
CREATE TABLE IF NOT EXISTS readings_hourly (
    device_id TEXT NOT NULL,
    parameter TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,        -- start of the UTC hour
    n INTEGER NOT NULL,
    total REAL NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    valid_n INTEGER NOT NULL,        -- the readings flagged N
    valid_total REAL NOT NULL,
    valid_lo REAL,
    valid_hi REAL,
    PRIMARY KEY (device_id, parameter, hour_ms)
) WITHOUT ROWID;
"""
# Readings in one table keyed by series: a week of one series is a short range scan, and the key
# refuses a second (device, parameter, sensor time). A city's load is far below what it takes
# (README, Benchmarks); larger loads go to PostgreSQL. The inboxes of earlier releases move in
# and go; a `readings` table of a release before 2026-11 already is this table. Each source
# gets an empty twin first: every statement then runs on a file of any earlier release, and
# again when another process applied the step meanwhile.
ONE_READINGS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS readings {_table(SERIES_KEY)};\n{READINGS_HOURLY}"
    "DROP VIEW IF EXISTS readings_all;\n"
    + "".join(
        f"CREATE TABLE IF NOT EXISTS {t} {_table(SERIES_KEY)};\n"
        f"INSERT OR IGNORE INTO readings ({_READING_COLS}) SELECT {_READING_COLS} FROM {t};\n"
        f"DROP TABLE {t};\n"
        for t in (*INBOXES, *LEGACY_INBOXES)
    )
    + "DROP TABLE IF EXISTS inbox_state;\n"
)

MIGRATIONS = (
    Migration(1, "inboxes, alerts, accounts, engine state (as of 2026-12)", SCHEMA),
    Migration(2, "notifications: deliveries by channel, claimed notice keys", NOTIFICATIONS),
    Migration(3, notify_sql.MIGRATION_NAME, notify_sql.SQLITE_SCHEMA),
    Migration(4, "readings: one table keyed by series; the inboxes go", ONE_READINGS_TABLE),
    *(Migration(5 + i, name, sql) for i, (name, sql) in enumerate(records_sql.SQLITE_STEPS)),
)

_ALERT_COLS = (
    "site_id, device_id, rule_id, family, severity, parameter, status, message, first_ms, last_ms,"
    " first_value, last_value, worst_value, worst_ms, count, limit_json, evidence_json, opened_ms,"
    " updated_ms, resolved_ms"
)
_ALERT_COLS_A = ", ".join(f"a.{c.strip()}" for c in _ALERT_COLS.split(","))
_ALERT_SETS = ", ".join(f"{c.strip()} = ?" for c in _ALERT_COLS.split(","))


def _alert_from_row(row: sqlite3.Row | tuple) -> Alert:
    (aid, site, dev, rule, fam, sev, param, status, msg, first, last, fv, lv, wv, wms, count,
     limit_json, ev_json, opened, updated, resolved) = row  # fmt: skip
    return Alert(
        id=aid,
        site_id=site,
        device_id=dev,
        rule_id=rule,
        family=AlertFamily(fam),
        severity=Severity(sev),
        parameter=param,
        status=AlertStatus(status),
        message=msg,
        first_ms=first,
        last_ms=last,
        first_value=fv,
        last_value=lv,
        worst_value=wv,
        worst_ms=wms,
        count=count,
        limit=json.loads(limit_json),
        evidence=json.loads(ev_json),
        opened_ms=opened,
        updated_ms=updated,
        resolved_ms=resolved,
    )


def _alert_values(a: Alert) -> tuple:
    return (
        a.site_id, a.device_id, a.rule_id, str(a.family), str(a.severity), a.parameter,
        str(a.status), a.message, a.first_ms, a.last_ms, a.first_value, a.last_value,
        a.worst_value, a.worst_ms, a.count, strict_json.dumps(a.limit),
        strict_json.dumps(a.evidence), a.opened_ms, a.updated_ms, a.resolved_ms,
    )  # fmt: skip


# The newest reading of each of a device's parameters by key lookups: the parameters one after
# the other (a skip scan), then each one's newest time. A GROUP BY would read all its readings.
_LATEST = """
WITH RECURSIVE p (parameter) AS (
    SELECT min(parameter) FROM readings WHERE device_id = ?1
    UNION ALL
    SELECT (SELECT min(parameter) FROM readings WHERE device_id = ?1 AND parameter > p.parameter)
    FROM p WHERE p.parameter IS NOT NULL
)
SELECT r.device_id, r.site_id, r.parameter, r.ts_ms, r.value, r.flag, r.recv_ms, r.seq
FROM p JOIN readings r ON r.device_id = ?1 AND r.parameter = p.parameter
    AND r.ts_ms = (SELECT max(ts_ms) FROM readings WHERE device_id = ?1 AND parameter = p.parameter)
"""


class SqliteStore(SqliteDatabase):
    def __init__(self, path: Path | str, busy_timeout_ms: int = 5000) -> None:
        super().__init__(path, "store", MIGRATIONS, busy_timeout_ms)
        self._closing = False
        self._absorb_readings_file()

    def _absorb_readings_file(self) -> None:
        """Releases before 2026-12 kept most readings in a second file (`readings_path`): copy
        its tables into this file, `ABSORB_BATCH_ROWS` rows a transaction, then delete it. A
        copy cut short is started again on the next open; what it already copied is ignored."""
        old = readings_path(self.path)
        if not old.exists():
            return
        log.warning("moving the readings of %s into %s (once)", old, self.path)
        with self._lock:
            attach_readonly(self._writer, old, "old")
        try:
            rows = self._writer.execute("SELECT name FROM old.sqlite_master WHERE type = 'table'")
            tables = {name for (name,) in rows}
            for source, (target, key, cols) in OLD_FILE_TABLES.items():
                if source in tables:
                    self._copy_in_batches(source, target, key, cols, ABSORB_BATCH_ROWS)
        finally:
            with self._lock:
                self._writer.execute("DETACH DATABASE old")
        # On disk for good before the only other copy goes (synchronous=NORMAL syncs at
        # checkpoints).
        self._writer.execute("PRAGMA wal_checkpoint(FULL)")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)

    def _copy_in_batches(
        self, source: str, target: str, key: str, cols: str, batch_rows: int
    ) -> None:
        """Copy `old.source` into `target` in order of `key`, `batch_rows` rows a transaction."""
        marks = ",".join("?" * len(key.split(",")))
        after: tuple = ()
        while True:
            past = f"({key}) > ({marks})" if after else "true"
            with self._tx() as conn:
                end = conn.execute(
                    f"SELECT {key} FROM old.{source} WHERE {past} ORDER BY {key} LIMIT 1 OFFSET ?",
                    (*after, batch_rows - 1),
                ).fetchone()
                upto = "" if end is None else f" AND ({key}) <= ({marks})"
                conn.execute(
                    f"INSERT OR IGNORE INTO {target} ({cols}) SELECT {cols} FROM old.{source}"
                    f" WHERE {past}{upto}",
                    (*after, *(end or ())),
                )
            if end is None:
                return
            after = tuple(end)

    # -- ingest -------------------------------------------------------------------------------

    def write_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter] = (),
        statuses: Sequence[DeviceStatus] = (),
    ) -> int:
        last_seen: dict[str, int] = {}
        sites: set[tuple[str, str]] = set()
        for r in readings:
            sites.add((r.site_id, r.device_id))
            if r.recv_ms > last_seen.get(r.device_id, 0):
                last_seen[r.device_id] = r.recv_ms
        try:
            with self._tx() as conn:
                before = conn.total_changes
                conn.executemany(
                    f"INSERT OR IGNORE INTO readings ({_READING_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (r.device_id, r.parameter, r.ts_ms, r.value, r.flag, r.recv_ms, r.seq,
                         r.site_id)
                        for r in readings
                    ],
                )  # fmt: skip
                stored = conn.total_changes - before
                if dead_letters:
                    conn.executemany(
                        "INSERT INTO dead_letters (recv_ms, source, topic, device_id, reason, raw)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        [(d.recv_ms, d.source, d.topic, d.device_id, d.reason, d.raw)
                         for d in dead_letters],
                    )  # fmt: skip
                if statuses:
                    conn.executemany(
                        "INSERT OR REPLACE INTO device_status"
                        " (device_id, recv_ms, ts_ms, state, detail) VALUES (?, ?, ?, ?, ?)",
                        [(s.device_id, s.recv_ms, s.ts_ms, s.state, strict_json.dumps(s.detail))
                         for s in statuses],
                    )  # fmt: skip
                if last_seen:
                    conn.executemany(
                        "INSERT INTO device_last_seen (device_id, recv_ms) VALUES (?, ?)"
                        " ON CONFLICT (device_id)"
                        " DO UPDATE SET recv_ms = max(recv_ms, excluded.recv_ms)",
                        list(last_seen.items()),
                    )
                if sites:
                    conn.executemany(
                        "INSERT OR IGNORE INTO device_sites (site_id, device_id) VALUES (?, ?)",
                        sites,
                    )
        except sqlite3.OperationalError as exc:
            # Locked past the busy timeout, disk full, I/O error: the batch is not committed.
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        return stored

    def close(self) -> None:
        self._closing = True  # retention stops between batches
        super().close()

    def apply_retention(
        self, now_ms: int, settings: RetentionSettings, batch_rows: int = 10_000
    ) -> RetentionReport:
        """Roll up and delete the readings older than the cutoff, series by series, at most
        `batch_rows` a transaction, keeping those that are an alert's evidence."""
        cutoff = settings.cutoff_ms(now_ms)
        removed = kept = hours = 0
        series = self._next_series(("", ""))
        while not self._closing and series is not None:
            start = None
            while start is None or start < cutoff:
                start, step = self._retire(series, start or 0, cutoff, batch_rows)
                removed, kept, hours = removed + step[0], kept + step[1], hours + step[2]
            series = self._next_series(series)
        return RetentionReport(removed, kept, hours)

    def _next_series(self, after: tuple[str, str]) -> tuple[str, str] | None:
        row = (
            self._reader()
            .execute(
                "SELECT device_id, parameter FROM readings"
                " WHERE (device_id, parameter) > (?, ?)"
                " ORDER BY device_id, parameter LIMIT 1",
                after,
            )
            .fetchone()
        )
        return None if row is None else (row[0], row[1])

    def _retire(
        self, series: tuple[str, str], start: int, cutoff: int, batch_rows: int
    ) -> tuple[int, tuple[int, int, int]]:
        """One batch: the series' readings from `start` on, before the cutoff, at most
        `batch_rows`; returns where the next batch starts, and (removed, kept, hours)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT ts_ms FROM readings WHERE device_id = ? AND parameter = ? AND ts_ms >= ?"
                " AND ts_ms < ? ORDER BY ts_ms LIMIT 1 OFFSET ?",
                (*series, start, cutoff, batch_rows),
            ).fetchone()
            end = cutoff if row is None else row[0]
            args = (*series, start, end)
            batch = "device_id = ? AND parameter = ? AND ts_ms >= ? AND ts_ms < ?"
            hours = conn.execute(
                f"INSERT INTO readings_hourly ({HOURLY_COLS}) {HOURLY_SELECT} FROM readings r"
                f" WHERE {batch} AND NOT {is_evidence('alerts', 'r')} GROUP BY 1, 2, 3"
                + HOURLY_MERGE.format(least="min", greatest="max"),
                args,
            ).rowcount
            kept = conn.execute(
                f"SELECT count(*) FROM readings r WHERE {batch} AND {is_evidence('alerts', 'r')}",
                args,
            ).fetchone()[0]
            removed = conn.execute(
                f"DELETE FROM readings WHERE {batch} AND NOT {is_evidence('alerts', 'readings')}",
                args,
            ).rowcount
        return end, (removed, kept, hours)

    def query_readings(self, q: ReadingQuery) -> list[Reading]:
        where: list[str] = []
        args: list[str | int] = []
        if q.device_id is not None:
            where.append("device_id = ?")
            args.append(q.device_id)
        if q.site_id is not None:
            where.append(
                "device_id IN (SELECT device_id FROM device_sites WHERE site_id = ?)"
                " AND site_id = ?"
            )
            args.extend((q.site_id, q.site_id))
        if q.parameters:
            where.append(f"parameter IN ({','.join('?' * len(q.parameters))})")
            args.extend(q.parameters)
        if q.start_ms is not None:
            where.append("ts_ms >= ?")
            args.append(q.start_ms)
        if q.end_ms is not None:
            where.append("ts_ms < ?")
            args.append(q.end_ms)
        sql = "SELECT device_id, site_id, parameter, ts_ms, value, flag, recv_ms, seq FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_ms DESC" if q.descending else " ORDER BY ts_ms"
        sql += " LIMIT ?"
        args.append(q.limit)
        return [Reading(*row) for row in self._reader().execute(sql, args)]

    def dead_letters(self, limit: int = 100, since_ms: int | None = None) -> list[DeadLetter]:
        rows = self._reader().execute(
            "SELECT topic, device_id, recv_ms, reason, raw, source FROM dead_letters"
            " WHERE recv_ms >= ? ORDER BY id DESC LIMIT ?",
            (since_ms or 0, limit),
        )
        return [DeadLetter(*row) for row in rows]

    def dead_letter_counts(self) -> dict[str, int]:
        rows = self._reader().execute(
            "SELECT reason, sum(n) FROM (SELECT reason, count(*) AS n FROM dead_letters"
            " GROUP BY reason UNION ALL SELECT reason, count FROM dead_letter_tallies)"
            " GROUP BY reason"
        )
        return dict(rows.fetchall())

    def prune_dead_letters(self, raw_before_ms: int, rows_before_ms: int) -> tuple[int, int]:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO dead_letter_tallies (reason, count) SELECT reason, count(*)"
                " FROM dead_letters WHERE recv_ms < ? GROUP BY reason"
                " ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
                (rows_before_ms,),
            )
            deleted = conn.execute(
                "DELETE FROM dead_letters WHERE recv_ms < ?", (rows_before_ms,)
            ).rowcount
            cleared = conn.execute(
                "UPDATE dead_letters SET raw = x'' WHERE recv_ms < ? AND length(raw) > 0",
                (raw_before_ms,),
            ).rowcount
        return cleared, deleted

    def device_statuses(self) -> dict[str, DeviceStatus]:
        rows = self._reader().execute(
            "SELECT device_id, recv_ms, ts_ms, state, detail FROM device_status"
        )
        return {r[0]: DeviceStatus(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows}

    def last_seen(self) -> dict[str, int]:
        return dict(self._reader().execute("SELECT device_id, recv_ms FROM device_last_seen"))

    def record_last_seen(self, seen: Mapping[str, int]) -> None:
        with self._tx() as conn:
            conn.executemany(
                records_sql.RECORD_LAST_SEEN.format(greatest="max"), sorted(seen.items())
            )

    # -- alerts -------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        rows = self._reader().execute(
            f"SELECT id, {_ALERT_COLS} FROM alerts WHERE status != 'resolved'"
        )
        return [_alert_from_row(r) for r in rows]

    def save_alerts(
        self,
        changes: Sequence[AlertChange],
        state_namespace: str = "",
        state: dict[str, str | None] | None = None,
    ) -> None:
        stamp = now_ms()
        with self._tx() as conn:
            for ch in changes:
                self._write_alert(conn, ch, stamp)
            if state:
                self._write_state(conn, state_namespace, state)

    def _write_alert(self, conn: sqlite3.Connection, ch: AlertChange, stamp: int) -> None:
        a = ch.alert
        a.updated_ms = stamp
        if a.id is None:
            cur = conn.execute(
                f"INSERT INTO alerts ({_ALERT_COLS}) VALUES ({','.join('?' * 20)})",
                _alert_values(a),
            )
            a.id = cur.lastrowid
        else:
            conn.execute(f"UPDATE alerts SET {_ALERT_SETS} WHERE id = ?", (*_alert_values(a), a.id))
        if ch.action is not None:
            conn.execute(
                "INSERT INTO alert_audit (alert_id, at_ms, actor, action, comment)"
                " VALUES (?, ?, ?, ?, ?)",
                (a.id, stamp, ch.actor, ch.action, ch.comment),
            )

    def get_alert(self, alert_id: int) -> Alert | None:
        row = (
            self._reader()
            .execute(f"SELECT id, {_ALERT_COLS} FROM alerts WHERE id = ?", (alert_id,))
            .fetchone()
        )
        return _alert_from_row(row) if row else None

    def list_alerts(self, q: AlertQuery) -> list[Alert]:
        where: list[str] = []
        args: list[str | int] = []
        if q.site_ids:
            where.append(f"site_id IN ({','.join('?' * len(q.site_ids))})")
            args.extend(q.site_ids)
        for col, val in (
            ("device_id", q.device_id),
            ("rule_id", q.rule_id),
            ("family", q.family),
            ("severity", q.severity),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if q.statuses:
            where.append(f"status IN ({','.join('?' * len(q.statuses))})")
            args.extend(q.statuses)
        if q.since_ms is not None:
            where.append("last_ms >= ?")
            args.append(q.since_ms)
        if q.until_ms is not None:
            where.append("first_ms < ?")
            args.append(q.until_ms)
        sql = f"SELECT id, {_ALERT_COLS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_ms DESC, id DESC LIMIT ?"
        args.append(q.limit)
        return [_alert_from_row(r) for r in self._reader().execute(sql, args)]

    def latest_readings(self, device_id: str) -> list[Reading]:
        rows = self._reader().execute(_LATEST, (device_id,))
        return [Reading(*r) for r in rows]

    def reading_stats(
        self,
        device_id: str,
        parameter: str,
        start_ms: int,
        end_ms: int,
        low: float | None,
        high: float | None,
    ) -> tuple[int, int, int]:
        lo = float("-inf") if low is None else low
        hi = float("inf") if high is None else high
        row = (
            self._reader()
            .execute(
                "SELECT count(*), ifnull(sum(flag = 'N'), 0),"
                " ifnull(sum(flag = 'N' AND (value < ? OR value > ?)), 0)"
                " FROM readings WHERE device_id = ? AND parameter = ? AND ts_ms >= ?"
                " AND ts_ms < ?",
                (lo, hi, device_id, parameter, start_ms, end_ms),
            )
            .fetchone()
        )
        return row[0], row[1], row[2]

    def last_audit_id(self) -> int:
        return self._reader().execute("SELECT ifnull(max(id), 0) FROM alert_audit").fetchone()[0]

    def audit_events(
        self, after_id: int, site_ids: Sequence[str] | None = None, limit: int = 500
    ) -> list[AuditEvent]:
        where = "t.id > ?"
        args: list = [after_id]
        if site_ids is not None:
            where += f" AND a.site_id IN ({','.join('?' * len(site_ids))})"
            args.extend(site_ids)
        rows = self._reader().execute(
            f"SELECT t.id, t.action, t.actor, t.comment, t.at_ms, a.id, {_ALERT_COLS_A}"
            f" FROM alert_audit t JOIN alerts a ON a.id = t.alert_id"
            f" WHERE {where} ORDER BY t.id LIMIT ?",
            (*args, limit),
        )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], _alert_from_row(r[5:])) for r in rows]

    def audit_trail(self, alert_id: int) -> list[AuditEntry]:
        rows = self._reader().execute(
            "SELECT alert_id, at_ms, actor, action, comment FROM alert_audit"
            " WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        )
        return [AuditEntry(*r) for r in rows]

    def downsample(
        self,
        device_id: str,
        parameters: Sequence[str],
        start_ms: int,
        end_ms: int,
        every_ms: int,
        valid_only: bool = True,
    ) -> list[Bucket]:
        marks = ",".join("?" * len(parameters))
        if every_ms % HOUR_MS == 0:  # whole hours: the aggregates of removed readings count too
            args = (every_ms, every_ms, device_id, *parameters, start_ms, end_ms)
            sql = downsample_sql("readings", "readings_hourly", marks, valid_only, "?")
            return [Bucket(*r) for r in self._reader().execute(sql, args + args)]
        flag = " AND flag = 'N'" if valid_only else ""
        rows = self._reader().execute(
            f"SELECT (ts_ms / ?) * ? AS b, parameter, avg(value), min(value), max(value), count(*)"
            f" FROM readings WHERE device_id = ? AND parameter IN ({marks})"
            f" AND ts_ms >= ? AND ts_ms < ?{flag} GROUP BY b, parameter ORDER BY b, parameter",
            (every_ms, every_ms, device_id, *parameters, start_ms, end_ms),
        )
        return [Bucket(*r) for r in rows]

    # -- deliveries -----------------------------------------------------------------------------

    def record_delivery(
        self,
        target: str,
        alert_id: int,
        action: str,
        ok: bool,
        attempts: int,
        error: str,
        at_ms: int,
        channel: str = "webhook",
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO notice_deliveries"
                " (target, alert_id, action, ok, attempts, error, at_ms, channel)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (target, alert_id, action, int(ok), attempts, error, at_ms, channel),
            )

    def deliveries(self, limit: int = 100, channel: str | None = None) -> list[Delivery]:
        where = "" if channel is None else " WHERE channel = ?"
        rows = self._reader().execute(
            "SELECT target, alert_id, action, ok, attempts, error, at_ms, channel"
            f" FROM notice_deliveries{where} ORDER BY id DESC LIMIT ?",
            (limit,) if channel is None else (channel, limit),
        )
        return [Delivery(t, a, ac, bool(ok), n, e, at, c) for t, a, ac, ok, n, e, at, c in rows]

    def claim_notice(self, key: str, at_ms: int) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO notice_claims (key, claimed_ms) VALUES (?, ?)", (key, at_ms)
            )
            return cur.rowcount == 1

    def release_notice(self, key: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM notice_claims WHERE key = ?", (key,))

    # -- users and tokens -----------------------------------------------------------------------

    def add_user(
        self, name: str, password_hash: str, role: str, jurisdictions: Sequence[str]
    ) -> None:
        with self._tx() as conn:
            old = conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
            if old is not None and old[0] != password_hash:
                self._end_sessions(conn, name)
            conn.execute(
                "INSERT OR REPLACE INTO users"
                " (name, password_hash, role, jurisdictions, created_ms) VALUES (?, ?, ?, ?, ?)",
                (name, password_hash, role, json.dumps(list(jurisdictions)), now_ms()),
            )
            conn.execute("DELETE FROM disabled_users WHERE name = ?", (name,))

    @staticmethod
    def _end_sessions(conn: sqlite3.Connection, name: str) -> None:
        conn.execute("DELETE FROM tokens WHERE name = ? AND kind = 'user'", (name,))

    def get_user(self, name: str) -> tuple[Principal, str] | None:
        row = (
            self._reader()
            .execute(
                "SELECT name, role, jurisdictions, password_hash FROM users WHERE name = ?"
                " AND name NOT IN (SELECT name FROM disabled_users)",
                (name,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Principal(row[0], row[1], tuple(json.loads(row[2]))), row[3]

    def list_users(self) -> list[UserInfo]:
        rows = self._reader().execute(
            "SELECT u.name, u.role, u.jurisdictions, d.name IS NOT NULL, u.created_ms"
            " FROM users u LEFT JOIN disabled_users d ON d.name = u.name ORDER BY u.name"
        )
        return [
            UserInfo(Principal(name, role, tuple(json.loads(scope))), bool(off), created)
            for name, role, scope, off, created in rows
        ]

    def set_user_disabled(self, name: str, disabled: bool) -> bool:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                return False
            if disabled:
                conn.execute(
                    "INSERT OR IGNORE INTO disabled_users (name, at_ms) VALUES (?, ?)",
                    (name, now_ms()),
                )
                self._end_sessions(conn, name)
            else:
                conn.execute("DELETE FROM disabled_users WHERE name = ?", (name,))
        return True

    def delete_user(self, name: str) -> bool:
        with self._tx() as conn:
            gone = conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM disabled_users WHERE name = ?", (name,))
            self._end_sessions(conn, name)
        return bool(gone)

    def add_token(
        self, token_hash: str, principal: Principal, expires_ms: int | None, label: str = ""
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO tokens (token_hash, name, kind, role, jurisdictions, label,"
                " created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token_hash,
                    principal.name,
                    principal.kind,
                    principal.role,
                    json.dumps(list(principal.jurisdictions)),
                    label,
                    now_ms(),
                    expires_ms,
                ),
            )

    def principal_for_token(self, token_hash: str, now_ms: int) -> Principal | None:
        # A login session takes its user's role and scope now, not those it was issued with.
        row = (
            self._reader()
            .execute(
                "SELECT t.name, t.kind, coalesce(u.role, t.role),"
                " coalesce(u.jurisdictions, t.jurisdictions), u.name IS NOT NULL"
                " FROM tokens t LEFT JOIN users u ON t.kind = 'user' AND u.name = t.name"
                " WHERE t.token_hash = ? AND (t.expires_ms IS NULL OR t.expires_ms > ?)"
                " AND NOT (t.kind = 'user' AND t.name IN (SELECT name FROM disabled_users))",
                (token_hash, now_ms),
            )
            .fetchone()
        )
        if row is None:
            return None
        name, kind, role, scope, has_user = row
        if kind == "user" and not has_user:
            return None
        return Principal(name, role, tuple(json.loads(scope)), kind)

    def list_tokens(self, now_ms: int) -> list[TokenInfo]:
        rows = self._reader().execute(
            "SELECT substr(token_hash, 1, ?), name, kind, role, jurisdictions, label, created_ms,"
            " expires_ms FROM tokens WHERE expires_ms IS NULL OR expires_ms > ?"
            " ORDER BY created_ms DESC",
            (TOKEN_ID_CHARS, now_ms),
        )
        return [
            TokenInfo(tid, name, kind, role, tuple(json.loads(scope)), label, created, expires)
            for tid, name, kind, role, scope, label, created, expires in rows
        ]

    def revoke_token(self, token_id: str) -> bool:
        if len(token_id) != TOKEN_ID_CHARS:
            return False
        with self._tx() as conn:
            gone = conn.execute(
                "DELETE FROM tokens WHERE substr(token_hash, 1, ?) = ?", (TOKEN_ID_CHARS, token_id)
            ).rowcount
        return bool(gone)

    # -- the alert stage's checkpoint (engine state) -----------------------------------------

    def load_state(self, namespace: str) -> dict[str, str]:
        rows = self._reader().execute(
            "SELECT key, value FROM engine_state WHERE namespace = ?", (namespace,)
        )
        return dict(rows.fetchall())

    def save_state(self, namespace: str, items: dict[str, str | None]) -> None:
        with self._tx() as conn:
            self._write_state(conn, namespace, items)

    @staticmethod
    def _write_state(
        conn: sqlite3.Connection, namespace: str, items: dict[str, str | None]
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO engine_state (namespace, key, value) VALUES (?, ?, ?)",
            [(namespace, k, v) for k, v in items.items() if v is not None],
        )
        conn.executemany(
            "DELETE FROM engine_state WHERE namespace = ? AND key = ?",
            [(namespace, k) for k, v in items.items() if v is None],
        )

    # -- registry edits, public links, tanks, counters, mailed reports (store.records_sql) ---

    def site_edits(self) -> dict[str, str]:
        return dict(self._reader().execute(records_sql.SITE_EDITS))

    def save_site_edit(self, site_id: str, doc: str) -> None:
        with self._tx() as conn:
            conn.execute(records_sql.SAVE_SITE_EDIT, (site_id, doc))

    def device_edits(self) -> dict[str, str]:
        return dict(self._reader().execute(records_sql.DEVICE_EDITS))

    def save_device_edit(self, device_id: str, doc: str) -> None:
        with self._tx() as conn:
            conn.execute(records_sql.SAVE_DEVICE_EDIT, (device_id, doc))

    def public_links(self) -> dict[str, str]:
        return dict(self._reader().execute(records_sql.PUBLIC_LINKS))

    def save_public_link(self, site_id: str, public_id: str) -> None:
        with self._tx() as conn:
            conn.execute(records_sql.SAVE_PUBLIC_LINK, (site_id, public_id))

    def add_tank_records(self, events: Sequence[TankEvent], keep: int) -> list[TankEvent]:
        with self._tx() as conn:
            return records_sql.add_tank_records(conn.execute, events, keep)

    def tank_records(self, site_id: str | None = None) -> list[TankEvent]:
        sql, args = records_sql.tank_query(site_id)
        return [records_sql.tank_event(r) for r in self._reader().execute(sql, args)]

    def counter(self, name: str) -> int:
        row = self._reader().execute(records_sql.COUNTER, (name,)).fetchone()
        return 0 if row is None else row[0]

    def save_counter(self, name: str, value: int) -> None:
        with self._tx() as conn:
            conn.execute(records_sql.SAVE_COUNTER, (name, value))

    def mailed_reports(self) -> list[MailedReport]:
        return [MailedReport(*r) for r in self._reader().execute(records_sql.MAILED_REPORTS)]

    def record_mailed_report(self, report: MailedReport) -> None:
        with self._tx() as conn:
            conn.execute(records_sql.RECORD_MAILED, records_sql.mailed_values(report))

    # -- notification: contacts, preferences, escalation steps -------------------------------

    def notify_settings(self, owners: Sequence[str]) -> dict[str, str]:
        if not owners:
            return {}
        rows = self._reader().execute(notify_sql.settings_query(owners), tuple(owners))
        return dict(rows.fetchall())

    def save_notify_settings(self, owner: str, doc: str | None, actor: str, at_ms: int) -> None:
        with self._tx() as conn:
            if doc is None:
                conn.execute(notify_sql.DELETE_SETTINGS, (owner,))
            else:
                conn.execute(notify_sql.UPSERT_SETTINGS, (owner, doc, at_ms, actor))

    def claim_escalation(
        self, alert_id: int, level: int, at_ms: int, audit: Sequence[AuditEntry]
    ) -> bool:
        with self._tx() as conn:
            claimed = conn.execute(
                notify_sql.CLAIM, notify_sql.claim_args(alert_id, level, at_ms)
            ).rowcount
            if claimed:
                conn.executemany(notify_sql.INSERT_AUDIT, notify_sql.audit_rows(audit))
        return bool(claimed)

    def escalation_steps(self, alert_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        if not alert_ids:
            return {}
        rows = self._reader().execute(notify_sql.steps_query(alert_ids), tuple(alert_ids))
        return notify_sql.steps_by_alert(rows.fetchall())

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        with self._tx() as conn:
            conn.executemany(notify_sql.INSERT_AUDIT, notify_sql.audit_rows(entries))
