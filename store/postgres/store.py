"""PostgreSQL backend: the whole Store on one database, readings batched with COPY into a
table partitioned by month of sensor time."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter

import psycopg

from domain.model import Alert, DeadLetter, Reading
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
from store.bell import Bell
from store.feed import FeedEntry, FeedSettings
from store.postgres import feed
from store.postgres.db import SCHEMA_LOCK, PostgresDatabase, only_row
from store.postgres.lease import Leases
from store.postgres.notify import (
    FEED_CHANNEL,
    NOTIFY,
    NOTIFY_FEED,
    REGISTRY_CHANNEL,
    Listener,
)
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
from store.sqlite import _ALERT_COLS, _alert_from_row, _alert_values

_READING_FIELDS = "device_id, site_id, parameter, ts_ms, value, flag, recv_ms, seq"  # Reading's
_READING_TYPES = ("text", "text", "text", "int8", "float8", "text", "int8", "int8")  # binary COPY
_sensor_time = attrgetter("ts_ms")
_ALERT_COLS_A = ", ".join(f"a.{c.strip()}" for c in _ALERT_COLS.split(","))
_ALERT_SETS = ", ".join(f"{c.strip()} = %s" for c in _ALERT_COLS.split(","))
MONTHS_AHEAD = 1  # partitions created beyond the current month, so ingest rarely creates one
PARTITIONS, HYPERTABLE = "monthly partitions", "TimescaleDB hypertable"  # readings layouts
# pg_advisory_xact_lock key of the tank register: records are rare, one lock for all will do.
TANKS_LOCK = 0x54414E4B53  # "TANKS"


def month_start_ms(ts_ms: int) -> int:
    t = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month_ms(start_ms: int) -> int:
    t = datetime.fromtimestamp(start_ms / 1000, UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def months_between(first_ms: int, last_ms: int) -> list[int]:
    """The starts of the months from the one holding `first_ms` to the one holding `last_ms`."""
    months = [month_start_ms(first_ms)]
    while next_month_ms(months[-1]) <= last_ms:
        months.append(next_month_ms(months[-1]))
    return months


def readings_layout(db: PostgresDatabase) -> str:
    """PARTITIONS, or HYPERTABLE where the schema step for TimescaleDB converted the table."""
    (kind,) = db.only("SELECT relkind FROM pg_class WHERE oid = 'readings'::regclass")
    return PARTITIONS if kind == "p" else HYPERTABLE


def partition_name(start_ms: int) -> str:
    return "readings_" + datetime.fromtimestamp(start_ms / 1000, UTC).strftime("y%Ym%m")


class PostgresStore:
    def __init__(self, url: str, max_connections: int = 4, lock_timeout_ms: int = 5000) -> None:
        # Each pooled connection gets its own staging table for COPY.
        self.db = PostgresDatabase(url, max_connections, lock_timeout_ms, configure=_create_staging)
        self._partitions_lock = threading.Lock()
        self._known_sites: set[tuple[str, str]] = set()  # (site, device) pairs in device_sites
        self.layout = readings_layout(self.db)
        self._partitions = self._existing_partitions()
        ahead = [month_start_ms(now_ms())]
        for _ in range(MONTHS_AHEAD):
            ahead.append(next_month_ms(ahead[-1]))
        self.ensure_partitions(ahead)
        self._feed_parts: int | None = None  # None: this process does not append to the feed
        self._feed_sites: dict[str, str] = {}

    # -- partitions -------------------------------------------------------------------------

    def _existing_partitions(self) -> set[int]:
        if self.layout == HYPERTABLE:
            return set()
        rows = self.db.rows(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
        found = set()
        for (name,) in rows:
            with_month = name.removeprefix("readings_y")
            year, _, month = with_month.partition("m")
            if year.isdigit() and month.isdigit():
                found.add(int(datetime(int(year), int(month), 1, tzinfo=UTC).timestamp() * 1000))
        return found

    def ensure_partitions(self, month_starts: Iterable[int]) -> None:
        """Create the monthly partitions that do not exist yet (TimescaleDB creates chunks)."""
        if self.layout == HYPERTABLE:
            return
        with self._partitions_lock:
            missing = sorted(set(month_starts) - self._partitions)
            if not missing:
                return
            with self.db.tx() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for start in missing:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF readings"
                        f" FOR VALUES FROM ({start}) TO ({next_month_ms(start)})"
                    )
            self._partitions.update(missing)

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
        if readings:
            # Ingest bounds sensor times to a few weeks: a batch spans a month or two.
            self.ensure_partitions(months_between(min(map(_sensor_time, readings)),
                                                  max(map(_sensor_time, readings))))  # fmt: skip
        new_sites = sorted(sites - self._known_sites)
        stored = 0
        appended = False
        with self.db.tx() as conn:
            new: Sequence[Reading] = ()
            if readings:
                new = _copy_readings(conn, readings)
                stored = len(new)
            with conn.cursor() as cur:
                if dead_letters:
                    cur.executemany(
                        "INSERT INTO dead_letters (recv_ms, source, topic, device_id, reason, raw)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        [(d.recv_ms, d.source, d.topic, d.device_id, d.reason, d.raw)
                         for d in dead_letters],
                    )  # fmt: skip
                if statuses:
                    cur.executemany(
                        "INSERT INTO device_status (device_id, recv_ms, ts_ms, state, detail)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
                        " recv_ms = excluded.recv_ms, ts_ms = excluded.ts_ms,"
                        " state = excluded.state, detail = excluded.detail",
                        [(s.device_id, s.recv_ms, s.ts_ms, s.state, json.dumps(s.detail))
                         for s in statuses],
                    )  # fmt: skip
                if last_seen:
                    # One statement over arrays (a batch names thousands of devices), in key
                    # order: concurrent writers lock the same rows in the same order. Sent in
                    # binary (%b), which psycopg dumps at a third of the text arrays' cost.
                    devices = sorted(last_seen)
                    cur.execute(
                        "INSERT INTO device_last_seen (device_id, recv_ms)"
                        " SELECT * FROM unnest(%b::text[], %b::bigint[])"
                        " ON CONFLICT (device_id) DO UPDATE SET"
                        " recv_ms = greatest(device_last_seen.recv_ms, excluded.recv_ms)",
                        (devices, [last_seen[d] for d in devices]),
                    )
                if new_sites:
                    cur.execute(
                        "INSERT INTO device_sites (site_id, device_id)"
                        " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                        ([s for s, _ in new_sites], [d for _, d in new_sites]),
                    )
            if self._feed_parts is not None:
                appended = feed.append(
                    conn, self._feed_parts, new, (), dead_letters, self._feed_sites
                )
        self._known_sites.update(new_sites)  # committed: rows of device_sites are never deleted
        if appended:
            self._wake_feed()
        return stored

    # -- the alert feed (store/feed.py) -------------------------------------------------------

    def enable_feed(self, partitions: int, site_of_device: dict[str, str]) -> None:
        """Append every batch's new readings (and its dead letters of known devices) to the
        alert feed from now on: the ingest role of a deployment with separate alert workers."""
        with self.db.connection() as conn:
            feed.ensure_partitions(conn, partitions)
        self._feed_parts = partitions
        self._feed_sites = site_of_device

    def _wake_feed(self) -> None:
        """Wake the alert workers (committed already; a lost wake-up costs a poll interval).
        NOTIFY gives its transaction an id and holds a cluster-wide lock through the commit:
        not waiting for the disk there keeps that lock short, and losing the notification to a
        crash costs nothing."""
        with (
            contextlib.suppress(StoreUnavailable),
            self.db.connection() as conn,
            conn.pipeline(),  # one round trip
            conn.transaction(),
        ):
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(NOTIFY_FEED)

    def feed_partitions(self, partitions: int) -> None:
        """Check (and on first use set) the feed's partition count: the alert workers' side."""
        with self.db.connection() as conn:
            feed.ensure_partitions(conn, partitions)

    def listen(self, bell: Bell) -> Listener:
        """Ring `bell` whenever any process commits an audited alert change."""
        return Listener(self.db.url, bell)

    def watch_registry(self, bell) -> Listener:
        """Ring `bell` (anything with `ring()`) whenever any process saves a registry edit."""
        return Listener(self.db.url, bell, channel=REGISTRY_CHANNEL)

    def feed_listen(self, bell) -> Listener:
        """Ring `bell` (anything with `ring()`) when feed entries or inspector actions arrive."""
        return Listener(self.db.url, bell, channel=FEED_CHANNEL)

    def leases(self, settings: FeedSettings) -> Leases:
        """A worker's partition leases, on a connection of their own."""
        return Leases(self.db.url, settings)

    def feed_claim(self, part: int) -> tuple[int, int]:
        with self.db.connection() as conn:
            return feed.claim(conn, part)

    def feed_read(self, part: int, after: int, limit: int) -> list[FeedEntry]:
        return self.feed_read_many({part: after}, limit).get(part, [])

    def feed_read_many(self, cursors: dict[int, int], limit: int) -> dict[int, list[FeedEntry]]:
        with self.db.connection() as conn:
            return feed.read_many(conn, cursors, limit)

    def feed_history(
        self, part: int, devices: Sequence[str], since_recv_ms: int, chunk: int
    ) -> Iterator[list[Reading]]:
        """The readings a worker taking `part` over replays into its detectors (feed.history)."""
        with self.db.connection() as conn:
            yield from feed.history(conn, part, devices, since_recv_ms, chunk)

    def feed_commit(
        self,
        part: int,
        epoch: int,
        pos: int,
        writes: Sequence[feed.Write],
        actions_done: Sequence[tuple[int, str | None]] = (),
    ) -> None:
        """A worker's alert changes and engine state, the inspector actions it applied, and the
        partition's cursor moved to `pos`, in one transaction; LeaseLost if the partition is no
        longer this epoch's."""
        self.feed_commit_many([(part, epoch, pos, writes, actions_done)])

    def feed_commit_many(self, commits: Sequence[tuple]) -> None:
        """`feed_commit` for several (part, epoch, pos, writes, actions_done), one transaction."""
        with self.db.tx() as conn:
            feed.advance(conn, [(part, epoch, pos) for part, epoch, pos, _, _ in commits])
            for _, _, _, writes, actions_done in commits:
                feed.write_changes(conn, writes, self._write_alert, _write_state)
                for action_id, error in actions_done:
                    feed.finish_action(conn, action_id, error)

    def add_action(self, part: int, alert_id: int, action: str, actor: str, comment: str) -> int:
        """Record an inspector action for the worker holding the partition; its id."""
        row = self.db.only(
            "INSERT INTO alert_actions (part, alert_id, action, actor, comment, at_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (part, alert_id, action, actor, comment, now_ms()),
        )
        self._wake_feed()
        return row[0]

    def action_outcome(self, action_id: int) -> tuple[bool, str | None]:
        """(applied yet, why it was refused or None)."""
        row = self.db.one("SELECT done_ms, error FROM alert_actions WHERE id = %s", (action_id,))
        return (row is not None and row[0] is not None), (row[1] if row else None)

    def pending_actions(self, parts: Sequence[int]) -> list[feed.PendingAction]:
        with self.db.connection() as conn:
            return feed.pending_actions(conn, parts)

    def query_readings(self, q: ReadingQuery) -> list[Reading]:
        where: list[str] = []
        args: list[str | int | list[str]] = []
        if q.device_id is not None:
            where.append("device_id = %s")
            args.append(q.device_id)
        if q.site_id is not None:
            where.append(
                "device_id IN (SELECT device_id FROM device_sites WHERE site_id = %s)"
                " AND site_id = %s"
            )
            args.extend((q.site_id, q.site_id))
        if q.parameters:
            where.append("parameter = ANY(%s)")
            args.append(list(q.parameters))
        if q.start_ms is not None:
            where.append("ts_ms >= %s")
            args.append(q.start_ms)
        if q.end_ms is not None:
            where.append("ts_ms < %s")
            args.append(q.end_ms)
        sql = f"SELECT {_READING_FIELDS} FROM readings_all"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = " DESC" if q.descending else ""
        sql += f" ORDER BY ts_ms{order}, device_id{order}, parameter{order} LIMIT %s"
        args.append(q.limit)
        return [Reading(*row) for row in self.db.rows(sql, args)]

    def dead_letters(self, limit: int = 100, since_ms: int | None = None) -> list[DeadLetter]:
        rows = self.db.rows(
            "SELECT topic, device_id, recv_ms, reason, raw, source FROM dead_letters"
            " WHERE recv_ms >= %s ORDER BY id DESC LIMIT %s",
            (since_ms or 0, limit),
        )
        return [DeadLetter(t, d, rm, why, bytes(raw), src) for t, d, rm, why, raw, src in rows]

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(
            self.db.rows(
                "SELECT reason, CAST(sum(n) AS bigint) FROM (SELECT reason, count(*) AS n"
                " FROM dead_letters GROUP BY reason UNION ALL SELECT reason, count"
                " FROM dead_letter_tallies) AS parts GROUP BY reason"
            )
        )

    def prune_dead_letters(self, raw_before_ms: int, rows_before_ms: int) -> tuple[int, int]:
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO dead_letter_tallies (reason, count) SELECT reason, count(*)"
                " FROM dead_letters WHERE recv_ms < %s GROUP BY reason ON CONFLICT (reason)"
                " DO UPDATE SET count = dead_letter_tallies.count + excluded.count",
                (rows_before_ms,),
            )
            deleted = conn.execute(
                "DELETE FROM dead_letters WHERE recv_ms < %s", (rows_before_ms,)
            ).rowcount
            cleared = conn.execute(
                "UPDATE dead_letters SET raw = ''::bytea WHERE recv_ms < %s AND length(raw) > 0",
                (raw_before_ms,),
            ).rowcount
        return cleared, deleted

    def device_statuses(self) -> dict[str, DeviceStatus]:
        rows = self.db.rows("SELECT device_id, recv_ms, ts_ms, state, detail FROM device_status")
        return {r[0]: DeviceStatus(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows}

    def last_seen(self) -> dict[str, int]:
        return dict(self.db.rows("SELECT device_id, recv_ms FROM device_last_seen"))

    def record_last_seen(self, seen: Mapping[str, int]) -> None:
        sql = _pg(records_sql.RECORD_LAST_SEEN.format(greatest="greatest"))
        with self.db.tx() as conn, conn.cursor() as cur:
            cur.executemany(sql, sorted(seen.items()))  # in key order: no deadlock between two

    # -- readings aggregates ----------------------------------------------------------------

    def latest_readings(self, device_id: str) -> list[Reading]:
        rows = self.db.rows(
            f"SELECT DISTINCT ON (parameter) {_READING_FIELDS} FROM readings_all"
            " WHERE device_id = %s ORDER BY parameter, ts_ms DESC",
            (device_id,),
        )
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
        row = self.db.only(
            "SELECT count(*), count(*) FILTER (WHERE flag = 'N'),"
            " count(*) FILTER (WHERE flag = 'N' AND (value < %s OR value > %s))"
            " FROM readings_all WHERE device_id = %s AND parameter = %s AND ts_ms >= %s"
            " AND ts_ms < %s",
            (lo, hi, device_id, parameter, start_ms, end_ms),
        )
        return row[0], row[1], row[2]

    def downsample(
        self,
        device_id: str,
        parameters: Sequence[str],
        start_ms: int,
        end_ms: int,
        every_ms: int,
        valid_only: bool = True,
    ) -> list[Bucket]:
        if every_ms % HOUR_MS == 0:  # whole hours: the aggregates of removed readings count too
            args = (every_ms, every_ms, device_id, list(parameters), start_ms, end_ms)
            sql = downsample_sql("readings_all", "readings_hourly", "%s", valid_only, "%s")
            sql = sql.replace("IN (%s)", "= ANY(%s)")
            return [Bucket(*r) for r in self.db.rows(sql, args + args)]
        flag = " AND flag = 'N'" if valid_only else ""
        rows = self.db.rows(
            "SELECT (ts_ms / %s) * %s AS b, parameter, avg(value), min(value), max(value),"
            " count(*) FROM readings_all WHERE device_id = %s AND parameter = ANY(%s)"
            f" AND ts_ms >= %s AND ts_ms < %s{flag} GROUP BY b, parameter ORDER BY b, parameter",
            (every_ms, every_ms, device_id, list(parameters), start_ms, end_ms),
        )
        return [Bucket(*r) for r in rows]

    # -- retention ----------------------------------------------------------------------------

    def apply_retention(self, now_ms: int, settings: RetentionSettings) -> RetentionReport:
        """Drop each monthly partition (or TimescaleDB chunk) wholly older than the cutoff, in
        one transaction with rolling its readings up into hours and keeping those that are an
        alert's evidence."""
        cutoff = settings.cutoff_ms(now_ms)
        removed = kept = hours = 0
        with self._partitions_lock:
            for part, drop in self._old_tables(cutoff):
                with self.db.tx() as conn:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    evidence = is_evidence("alerts", "r")
                    kept += conn.execute(
                        f"INSERT INTO readings_kept ({_READING_FIELDS}) SELECT {_READING_FIELDS}"
                        f" FROM {part} r WHERE {evidence} ON CONFLICT DO NOTHING"
                    ).rowcount
                    hours += conn.execute(
                        f"INSERT INTO readings_hourly ({HOURLY_COLS}) {HOURLY_SELECT}"
                        f" FROM {part} r WHERE NOT {evidence} GROUP BY 1, 2, 3"
                        + HOURLY_MERGE.format(least="least", greatest="greatest")
                    ).rowcount
                    removed += only_row(
                        conn.execute(f"SELECT count(*) FROM {part} r WHERE NOT {evidence}")
                    )[0]
                    conn.execute(drop)
            self._partitions = self._existing_partitions()
        return RetentionReport(removed, kept, hours)

    def _old_tables(self, cutoff_ms: int) -> list[tuple[str, str]]:
        """The tables of readings wholly older than the cutoff, oldest first, each with the
        statement that drops it."""
        if self.layout == HYPERTABLE:
            rows = self.db.rows(
                "SELECT format('%%I.%%I', chunk_schema, chunk_name), range_start_integer,"
                " range_end_integer FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'readings' AND range_end_integer <= %s"
                " ORDER BY range_start_integer",
                (cutoff_ms,),
            )
            drop = "SELECT drop_chunks('readings', older_than => {1}, newer_than => {0})"
            return [(chunk, drop.format(start, end)) for chunk, start, end in rows]
        starts = sorted(s for s in self._existing_partitions() if next_month_ms(s) <= cutoff_ms)
        return [(partition_name(s), f"DROP TABLE {partition_name(s)}") for s in starts]

    # -- alerts -------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        rows = self.db.rows(f"SELECT id, {_ALERT_COLS} FROM alerts WHERE status <> 'resolved'")
        return [_alert_from_row(r) for r in rows]

    def save_alerts(
        self,
        changes: Sequence[AlertChange],
        state_namespace: str = "",
        state: dict[str, str | None] | None = None,
    ) -> None:
        stamp = now_ms()
        with self.db.tx() as conn:
            for ch in changes:
                self._write_alert(conn, ch, stamp)
            if state:
                _write_state(conn, state_namespace, state)

    @staticmethod
    def _write_alert(conn: psycopg.Connection, ch: AlertChange, stamp: int) -> None:
        a = ch.alert
        a.updated_ms = stamp
        if a.id is None:
            a.id = only_row(
                conn.execute(
                    f"INSERT INTO alerts ({_ALERT_COLS}) VALUES ({', '.join(['%s'] * 20)})"
                    " RETURNING id",
                    _alert_values(a),
                )
            )[0]
        else:
            conn.execute(
                f"UPDATE alerts SET {_ALERT_SETS} WHERE id = %s", (*_alert_values(a), a.id)
            )
        if ch.action is not None:
            conn.execute(
                "INSERT INTO alert_audit (alert_id, at_ms, actor, action, comment)"
                " VALUES (%s, %s, %s, %s, %s)",
                (a.id, stamp, ch.actor, ch.action, ch.comment),
            )
            conn.execute(NOTIFY)  # live streams of every API process (store.postgres.notify)

    def get_alert(self, alert_id: int) -> Alert | None:
        row = self.db.one(f"SELECT id, {_ALERT_COLS} FROM alerts WHERE id = %s", (alert_id,))
        return _alert_from_row(row) if row else None

    def list_alerts(self, q: AlertQuery) -> list[Alert]:
        where: list[str] = []
        args: list[str | int | list[str]] = []
        if q.site_ids:
            where.append("site_id = ANY(%s)")
            args.append(list(q.site_ids))
        for col, val in (
            ("device_id", q.device_id),
            ("rule_id", q.rule_id),
            ("family", q.family),
            ("severity", q.severity),
        ):
            if val is not None:
                where.append(f"{col} = %s")
                args.append(val)
        if q.statuses:
            where.append("status = ANY(%s)")
            args.append(list(q.statuses))
        if q.since_ms is not None:
            where.append("last_ms >= %s")
            args.append(q.since_ms)
        if q.until_ms is not None:
            where.append("first_ms < %s")
            args.append(q.until_ms)
        sql = f"SELECT id, {_ALERT_COLS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_ms DESC, id DESC LIMIT %s"
        args.append(q.limit)
        return [_alert_from_row(r) for r in self.db.rows(sql, args)]

    def last_audit_id(self) -> int:
        return self.db.only("SELECT coalesce(max(id), 0) FROM alert_audit")[0]

    def audit_events(
        self, after_id: int, site_ids: Sequence[str] | None = None, limit: int = 500
    ) -> list[AuditEvent]:
        where = "t.id > %s"
        args: list = [after_id]
        if site_ids is not None:
            where += " AND a.site_id = ANY(%s)"
            args.append(list(site_ids))
        rows = self.db.rows(
            f"SELECT t.id, t.action, t.actor, t.comment, t.at_ms, a.id, {_ALERT_COLS_A}"
            f" FROM alert_audit t JOIN alerts a ON a.id = t.alert_id"
            f" WHERE {where} ORDER BY t.id LIMIT %s",
            (*args, limit),
        )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], _alert_from_row(r[5:])) for r in rows]

    def audit_trail(self, alert_id: int) -> list[AuditEntry]:
        rows = self.db.rows(
            "SELECT alert_id, at_ms, actor, action, comment FROM alert_audit"
            " WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        )
        return [AuditEntry(*r) for r in rows]

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
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO notice_deliveries"
                " (target, alert_id, action, ok, attempts, error, at_ms, channel)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (target, alert_id, action, ok, attempts, error, at_ms, channel),
            )

    def deliveries(self, limit: int = 100, channel: str | None = None) -> list[Delivery]:
        where = "" if channel is None else " WHERE channel = %s"
        rows = self.db.rows(
            "SELECT target, alert_id, action, ok, attempts, error, at_ms, channel"
            f" FROM notice_deliveries{where} ORDER BY id DESC LIMIT %s",
            (limit,) if channel is None else (channel, limit),
        )
        return [Delivery(*r) for r in rows]

    def claim_notice(self, key: str, at_ms: int) -> bool:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO notice_claims (key, claimed_ms) VALUES (%s, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (key, at_ms),
            )
            return cur.rowcount == 1

    def release_notice(self, key: str) -> None:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM notice_claims WHERE key = %s", (key,))

    # -- users and tokens -----------------------------------------------------------------------

    def add_user(
        self, name: str, password_hash: str, role: str, jurisdictions: Sequence[str]
    ) -> None:
        with self.db.tx() as conn:
            old = conn.execute(
                "SELECT password_hash FROM users WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if old is not None and old[0] != password_hash:
                _end_sessions(conn, name)
            conn.execute(
                "INSERT INTO users (name, password_hash, role, jurisdictions, created_ms)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " password_hash = excluded.password_hash, role = excluded.role,"
                " jurisdictions = excluded.jurisdictions, created_ms = excluded.created_ms",
                (name, password_hash, role, json.dumps(list(jurisdictions)), now_ms()),
            )
            conn.execute("DELETE FROM disabled_users WHERE name = %s", (name,))

    def get_user(self, name: str) -> tuple[Principal, str] | None:
        row = self.db.one(
            "SELECT name, role, jurisdictions, password_hash FROM users WHERE name = %s"
            " AND name NOT IN (SELECT name FROM disabled_users)",
            (name,),
        )
        if row is None:
            return None
        return Principal(row[0], row[1], tuple(json.loads(row[2]))), row[3]

    def list_users(self) -> list[UserInfo]:
        rows = self.db.rows(
            "SELECT u.name, u.role, u.jurisdictions, d.name IS NOT NULL, u.created_ms"
            " FROM users u LEFT JOIN disabled_users d ON d.name = u.name ORDER BY u.name"
        )
        return [
            UserInfo(Principal(name, role, tuple(json.loads(scope))), bool(off), created)
            for name, role, scope, off, created in rows
        ]

    def set_user_disabled(self, name: str, disabled: bool) -> bool:
        with self.db.tx() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone() is None:
                return False
            if disabled:
                conn.execute(
                    "INSERT INTO disabled_users (name, at_ms) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, now_ms()),
                )
                _end_sessions(conn, name)
            else:
                conn.execute("DELETE FROM disabled_users WHERE name = %s", (name,))
        return True

    def delete_user(self, name: str) -> bool:
        with self.db.tx() as conn:
            gone = conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount
            conn.execute("DELETE FROM disabled_users WHERE name = %s", (name,))
            _end_sessions(conn, name)
        return bool(gone)

    def add_token(
        self, token_hash: str, principal: Principal, expires_ms: int | None, label: str = ""
    ) -> None:
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO tokens (token_hash, name, kind, role, jurisdictions, label,"
                " created_ms, expires_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
        row = self.db.one(
            "SELECT t.name, t.kind, coalesce(u.role, t.role),"
            " coalesce(u.jurisdictions, t.jurisdictions), u.name IS NOT NULL"
            " FROM tokens t LEFT JOIN users u ON t.kind = 'user' AND u.name = t.name"
            " WHERE t.token_hash = %s AND (t.expires_ms IS NULL OR t.expires_ms > %s)"
            " AND NOT (t.kind = 'user' AND t.name IN (SELECT name FROM disabled_users))",
            (token_hash, now_ms),
        )
        if row is None:
            return None
        name, kind, role, scope, has_user = row
        if kind == "user" and not has_user:
            return None
        return Principal(name, role, tuple(json.loads(scope)), kind)

    def list_tokens(self, now_ms: int) -> list[TokenInfo]:
        rows = self.db.rows(
            "SELECT substr(token_hash, 1, %s), name, kind, role, jurisdictions, label,"
            " created_ms, expires_ms FROM tokens WHERE expires_ms IS NULL OR expires_ms > %s"
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
        with self.db.tx() as conn:
            gone = conn.execute(
                "DELETE FROM tokens WHERE substr(token_hash, 1, %s) = %s",
                (TOKEN_ID_CHARS, token_id),
            ).rowcount
        return bool(gone)

    # -- the alert stage's checkpoint (engine state) -----------------------------------------

    def load_state(self, namespace: str) -> dict[str, str]:
        return dict(
            self.db.rows("SELECT key, value FROM engine_state WHERE namespace = %s", (namespace,))
        )

    def save_state(self, namespace: str, items: dict[str, str | None]) -> None:
        with self.db.tx() as conn:
            _write_state(conn, namespace, items)

    # -- registry edits, public links, tanks, counters, mailed reports (store.records_sql) ---

    def site_edits(self) -> dict[str, str]:
        return dict(self.db.rows(records_sql.SITE_EDITS))

    def save_site_edit(self, site_id: str, doc: str) -> None:
        self._save_edit(records_sql.SAVE_SITE_EDIT, site_id, doc)

    def device_edits(self) -> dict[str, str]:
        return dict(self.db.rows(records_sql.DEVICE_EDITS))

    def save_device_edit(self, device_id: str, doc: str) -> None:
        self._save_edit(records_sql.SAVE_DEVICE_EDIT, device_id, doc)

    def _save_edit(self, sql: str, key: str, doc: str) -> None:
        with self.db.tx() as conn:
            conn.execute(_pg(sql), (key, doc))
            conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")  # every process reloads its registry

    def public_links(self) -> dict[str, str]:
        return dict(self.db.rows(records_sql.PUBLIC_LINKS))

    def save_public_link(self, site_id: str, public_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute(_pg(records_sql.SAVE_PUBLIC_LINK), (site_id, public_id))

    def add_tank_records(self, events: Sequence[TankEvent], keep: int) -> list[TankEvent]:
        with self.db.tx() as conn:
            return add_tank_records(conn, events, keep)

    def tank_records(self, site_id: str | None = None) -> list[TankEvent]:
        sql, args = records_sql.tank_query(site_id)
        return [records_sql.tank_event(r) for r in self.db.rows(_pg(sql), args)]

    def counter(self, name: str) -> int:
        row = self.db.one(_pg(records_sql.COUNTER), (name,))
        return 0 if row is None else row[0]

    def save_counter(self, name: str, value: int) -> None:
        with self.db.tx() as conn:
            conn.execute(_pg(records_sql.SAVE_COUNTER), (name, value))

    def mailed_reports(self) -> list[MailedReport]:
        return [MailedReport(*r) for r in self.db.rows(records_sql.MAILED_REPORTS)]

    def record_mailed_report(self, report: MailedReport) -> None:
        with self.db.tx() as conn:
            conn.execute(_pg(records_sql.RECORD_MAILED), records_sql.mailed_values(report))

    # -- notification: contacts, preferences, escalation steps -------------------------------

    def notify_settings(self, owners: Sequence[str]) -> dict[str, str]:
        if not owners:
            return {}
        return dict(self.db.rows(_pg(notify_sql.settings_query(owners)), tuple(owners)))

    def save_notify_settings(self, owner: str, doc: str | None, actor: str, at_ms: int) -> None:
        with self.db.tx() as conn:
            if doc is None:
                conn.execute(_pg(notify_sql.DELETE_SETTINGS), (owner,))
            else:
                conn.execute(_pg(notify_sql.UPSERT_SETTINGS), (owner, doc, at_ms, actor))

    def claim_escalation(
        self, alert_id: int, level: int, at_ms: int, audit: Sequence[AuditEntry]
    ) -> bool:
        with self.db.tx() as conn:
            claimed = conn.execute(
                _pg(notify_sql.CLAIM), notify_sql.claim_args(alert_id, level, at_ms)
            ).rowcount
            if claimed:
                with conn.cursor() as cur:
                    cur.executemany(_pg(notify_sql.INSERT_AUDIT), notify_sql.audit_rows(audit))
        return bool(claimed)

    def escalation_steps(self, alert_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        if not alert_ids:
            return {}
        rows = self.db.rows(_pg(notify_sql.steps_query(alert_ids)), tuple(alert_ids))
        return notify_sql.steps_by_alert(rows)

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        with self.db.tx() as conn, conn.cursor() as cur:
            cur.executemany(_pg(notify_sql.INSERT_AUDIT), notify_sql.audit_rows(entries))

    def close(self) -> None:
        self.db.close()


def _only_new(readings: Sequence[Reading], inserted: list[tuple]) -> list[Reading]:
    """The batch's readings the insert stored (the first of any repeated in the batch)."""
    keys = set(inserted)
    new = []
    for r in readings:
        key = (r.device_id, r.parameter, r.ts_ms)
        if key in keys:
            keys.discard(key)
            new.append(r)
    return new


def _pg(sql: str) -> str:
    """The shared queries' `?` placeholders as psycopg's (none of them has a literal `?`)."""
    return sql.replace("?", "%s")


def add_tank_records(
    conn: psycopg.Connection, events: Sequence[TankEvent], keep: int
) -> list[TankEvent]:
    """TankStore.add_tank_records in the caller's transaction (store.tank_log adds the alert
    feed's entries to it), one writer at a time: two batches never lock rows in turn."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (TANKS_LOCK,))
    return records_sql.add_tank_records(
        lambda sql, args: conn.execute(_pg(sql), args), events, keep
    )


def _end_sessions(conn: psycopg.Connection, name: str) -> None:
    conn.execute("DELETE FROM tokens WHERE name = %s AND kind = 'user'", (name,))


def _copy_readings(conn: psycopg.Connection, readings: Sequence[Reading]) -> Sequence[Reading]:
    """Store the readings not stored yet; returns them. COPY straight into `readings` first, in
    a savepoint: nearly every batch is new readings, and that does half the work of the staging
    table. A batch holding a stored reading (a redelivery, a device resending its buffer) fails
    as a whole there, and goes through the staging table, whose insert skips what is stored."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY readings ({_READING_FIELDS}) FROM STDIN (FORMAT BINARY)") as copy:
                _write_rows(copy, readings)
            return readings
    except psycopg.errors.UniqueViolation:
        pass
    with conn.cursor().copy(
        f"COPY readings_in ({_READING_FIELDS}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        _write_rows(copy, readings)
    inserted = conn.execute(
        f"INSERT INTO readings ({_READING_FIELDS}) SELECT {_READING_FIELDS}"
        " FROM readings_in ON CONFLICT DO NOTHING RETURNING device_id, parameter, ts_ms"
    ).fetchall()
    return _only_new(readings, inserted)


def _write_rows(copy: psycopg.Copy, readings: Sequence[Reading]) -> None:
    copy.set_types(_READING_TYPES)
    for r in readings:
        copy.write_row(r)


def _create_staging(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS readings_in (device_id text, site_id text,"
        " parameter text, ts_ms bigint, value double precision, flag text, recv_ms bigint,"
        " seq bigint) ON COMMIT DELETE ROWS"
    )


def _write_state(conn: psycopg.Connection, namespace: str, items: dict[str, str | None]) -> None:
    with conn.cursor() as cur:
        upserts = [(namespace, k, v) for k, v in sorted(items.items()) if v is not None]
        deletes = [(namespace, k) for k, v in sorted(items.items()) if v is None]
        if upserts:
            cur.executemany(
                "INSERT INTO engine_state (namespace, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                upserts,
            )
        if deletes:
            cur.executemany("DELETE FROM engine_state WHERE namespace = %s AND key = %s", deletes)
