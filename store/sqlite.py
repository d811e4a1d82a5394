"""SQLite backend (WAL): readings, dead letters, device status, alerts with audit, engine state.
Connections as store.sqlite_db: one writer behind a lock, a reader per thread."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from domain import strict_json
from domain.model import Alert, AlertFamily, AlertStatus, DeadLetter, Reading, Severity
from domain.timeutil import now_ms
from store import notify_sql
from store.base import (
    TOKEN_ID_CHARS,
    AlertChange,
    AlertQuery,
    AuditEntry,
    AuditEvent,
    Bucket,
    Delivery,
    DeviceStatus,
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

COMPACTION_NICE = 10  # added to the compaction thread's nice value (lower CPU priority)

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
_SAME_KEY = "device_id = {0}.device_id AND parameter = {0}.parameter AND ts_ms = {0}.ts_ms"
INBOXES = ("readings_inbox0", "readings_inbox1")
LEGACY_TABLES = ("readings_inbox", "readings_recent", "readings")  # in the main file until 2026-11
LEGACY_COLD_TABLES = ("readings_recent",)  # in the readings file until 2026-11


def _table(key: str) -> str:
    return f"({_READING_COLUMNS}\n    PRIMARY KEY ({key})\n) WITHOUT ROWID"


def readings_path(path: Path) -> Path:
    """The file beside the main database that holds the series-keyed readings."""
    return path.with_name(f"{path.stem}-readings{path.suffix}")


# Readings are clustered by series (device, parameter, time): a week of one series is a short
# range scan. A batch holds one reading of each of thousands of series, and inserting it into a
# tree keyed by series dirties one page per reading: with 200,000 rows in such a tree, a commit
# of 10,000 readings wrote ~14 MB of WAL, and the checkpoints stalled the commits. So readings
# pass through three trees, newest first:
# - an inbox in the main file, keyed by time: a commit of the newest readings fills a few pages.
#   There are two: ingest appends to the active one while the other is being moved on.
# - `readings_runs`, keyed by run, then series: an inbox moves in, sorted, as one new run once it
#   holds `inbox_max_rows`. A run's key range is new: a move appends pages, whatever the size of
#   the tree. Queries look up a series in each live run (listed in `runs`, with their row counts).
# - `readings`: compaction moves the runs' rows over a few devices at a time, each series
#   bringing the rows of every run to its page at once.
# The last two live in their own file (`readings_path`). SQLite has one writer per file: moves
# and compaction hold that file's write lock for up to a few hundred milliseconds, and ingest
# commits and alert writes, in the main file, no longer wait behind them. A move copies an inbox
# in one transaction of the readings file, then empties it in a short one of the main file; in
# between its rows are in both, and `readings_all` shows them once.
READINGS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings {_table("device_id, parameter, ts_ms")};
CREATE TABLE IF NOT EXISTS readings_runs (
    run INTEGER NOT NULL,            -- the inbox generation it was moved at
    {_READING_COLUMNS}
    PRIMARY KEY (run, device_id, parameter, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    rows INTEGER NOT NULL,           -- rows of the run still in `readings_runs`
    min_ts_ms INTEGER NOT NULL,      -- the sensor times of the rows it ever held
    max_ts_ms INTEGER NOT NULL
);
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
READINGS_MIGRATIONS = (
    Migration(1, "readings, runs (as of 2026-12)", READINGS_SCHEMA),
    Migration(2, "retention: hourly aggregates", READINGS_HOURLY),
)
# A series' rows in the runs: one index lookup per live run.
_IN_RUNS = "run IN (SELECT run FROM {0}runs)"
# What queries read, on every reader connection (a view in the main file cannot name an
# attached one; the readings file is attached as `cold`). Readers and ingest take the main
# file's snapshot first, then the readings file's (SQLite begins a statement's transactions in
# schema order, attached files last): a row an inbox no longer holds is in the readings file.
# A row can be in two trees for a while: copied but not yet emptied from its inbox, or copied
# again after another process's compaction moved it on (until compaction meets it again).
_IN_COLD_RUNS = _IN_RUNS.format("cold.")
_IN_OWN_RUNS = _IN_RUNS.format("")  # in the readings file's own connection
_READINGS_ALL = (
    f"CREATE TEMP VIEW readings_all AS SELECT {_READING_COLS} FROM cold.readings"
    f" UNION ALL SELECT {_READING_COLS} FROM cold.readings_runs AS r WHERE {_IN_COLD_RUNS}"
    f" AND NOT EXISTS (SELECT 1 FROM cold.readings WHERE {_SAME_KEY.format('r')})"
    + "".join(
        f" UNION ALL SELECT {_READING_COLS} FROM main.{inbox} AS i"
        f" WHERE NOT EXISTS (SELECT 1 FROM cold.readings_runs"
        f" WHERE {_IN_COLD_RUNS} AND {_SAME_KEY.format('i')})"
        f" AND NOT EXISTS (SELECT 1 FROM cold.readings WHERE {_SAME_KEY.format('i')})"
        for inbox in INBOXES
    )
)

# Ingest's insert into each inbox (?1-?8: the reading, ?9: `moved_ts_ms`). A reading in the other
# inbox, or already moved on, is a duplicate too; only one not newer than `moved_ts_ms` can be
# in the readings file.
_KEY_IS_READING = "device_id = ?1 AND parameter = ?2 AND ts_ms = ?3"
_INSERT_INTO_INBOX = tuple(
    f"INSERT OR IGNORE INTO {inbox} ({_READING_COLS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
    f" WHERE NOT EXISTS (SELECT 1 FROM {other} WHERE {_KEY_IS_READING}) AND (?3 > ?9 OR"
    " NOT EXISTS (SELECT 1 FROM cold.readings_runs WHERE run IN (SELECT run FROM cold.runs"
    f" WHERE ?3 BETWEEN min_ts_ms AND max_ts_ms) AND {_KEY_IS_READING})"
    f" AND NOT EXISTS (SELECT 1 FROM cold.readings WHERE {_KEY_IS_READING}))"
    for inbox, other in (INBOXES, INBOXES[::-1])
)


def _tables_among(conn: sqlite3.Connection, names: Sequence[str]) -> list[str]:
    """Which of `names` are tables of the connection's main file."""
    rows = conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")
    return [t for (t,) in rows if t in names]


def _first_device_in_runs(conn: sqlite3.Connection, at_or_after: str) -> str | None:
    return conn.execute(
        "SELECT min((SELECT device_id FROM readings_runs WHERE run = runs.run AND device_id >= ?"
        " ORDER BY device_id LIMIT 1)) FROM runs",
        (at_or_after,),
    ).fetchone()[0]


def _add_readings_view(conn: sqlite3.Connection, path: Path) -> None:
    attach_readonly(conn, readings_path(path), "cold")
    conn.execute(_READINGS_ALL)


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store at `path` on which `readings_all` holds every
    reading, for tools and tests that open the files themselves."""
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=10)
    _add_readings_view(conn, path)
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

MIGRATIONS = (
    Migration(1, "inboxes, alerts, accounts, engine state (as of 2026-12)", SCHEMA),
    Migration(2, "notifications: deliveries by channel, claimed notice keys", NOTIFICATIONS),
    Migration(3, notify_sql.MIGRATION_NAME, notify_sql.SQLITE_SCHEMA),
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


class SqliteStore(SqliteDatabase):
    """`inbox_max_rows` bounds an inbox (every query scans the inboxes; each move is one more
    run). `recent_max_rows` bounds the rows in runs (the more rows a series gathers there, the
    fewer pages compaction rewrites per reading; a query looks in every run); `compact_rows` is
    about how many rows one compaction step moves."""

    def __init__(
        self,
        path: Path | str,
        busy_timeout_ms: int = 5000,
        recent_max_rows: int = 1_000_000,
        compact_rows: int = 50_000,
        inbox_max_rows: int = 25_000,
    ) -> None:
        self._cold = SqliteDatabase(
            readings_path(Path(path)), "readings", READINGS_MIGRATIONS, busy_timeout_ms
        )
        super().__init__(path, "store", MIGRATIONS, busy_timeout_ms)
        attach_readonly(self._writer, self._cold.path, "cold")  # for the duplicate checks
        self._move_legacy_readings()
        if self._writer.execute("SELECT moved_ts_ms IS NULL FROM inbox_state").fetchone()[0]:
            # A new main file beside a readings file that has readings (one scan, if any).
            with self._tx() as conn:
                self._note_moved(conn, ["cold.readings", "cold.readings_runs"])
        self.inbox_max_rows = inbox_max_rows
        self.recent_max_rows = recent_max_rows
        self.compact_rows = compact_rows
        self._inbox_rows = sum(self._count(self._writer, t) for t in INBOXES)
        self._compact_from = ""  # compaction sweeps the devices in key order, then wraps
        # Compaction runs on its own thread: sqlite3 releases the GIL while a statement runs, so
        # moving rows overlaps with decoding the next batch instead of delaying its acks.
        self._compact_wanted = threading.Event()
        self._compactor: threading.Thread | None = None
        self._compacting = threading.RLock()  # one compaction at a time in this process
        self._closing = False

    def _setup_reader(self, conn: sqlite3.Connection) -> None:
        _add_readings_view(conn, self.path)

    def _move_legacy_readings(self) -> None:
        """Databases from earlier releases hold readings in tables this one no longer has, in
        the main file or the readings file: they move into `readings` once, on open (copied,
        then dropped: a crash in between only copies again)."""
        legacy = _tables_among(self._writer, LEGACY_TABLES)
        legacy_cold = _tables_among(self._cold._writer, LEGACY_COLD_TABLES)
        if not legacy and not legacy_cold:
            return
        log.warning("moving the readings of %s into %s (once)", self.path, self._cold.path)
        with self._attached_main() as cold:
            for table in [f"hot.{t}" for t in legacy] + legacy_cold:
                cold.execute(
                    f"INSERT OR IGNORE INTO readings ({_READING_COLS})"
                    f" SELECT {_READING_COLS} FROM {table}"
                )
            for table in legacy_cold:
                cold.execute(f"DROP TABLE {table}")
        if legacy:
            with self._tx() as conn:
                self._note_moved(conn, legacy)
                conn.execute("DROP VIEW IF EXISTS readings_all")
                for table in legacy:
                    conn.execute(f"DROP TABLE {table}")

    @contextmanager
    def _attached_main(self) -> Iterator[sqlite3.Connection]:
        """A write transaction of the readings file that can read the main file (as `hot`).
        Attached only meanwhile: every transaction of the readings writer would otherwise hold
        a snapshot of the main file, and the main file's checkpoints would wait for it."""
        conn = self._cold._writer
        with self._cold._lock:
            try:
                attach_readonly(conn, self.path, "hot")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"sqlite: cannot attach {self.path}: {exc}") from exc
        try:
            with self._cold._tx() as cold:
                yield cold
        finally:
            with self._cold._lock, suppress(sqlite3.Error):
                # If this fails, the next ATTACH fails too and says why.
                conn.execute("DETACH DATABASE hot")

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
                active, moved_ts = conn.execute(
                    "SELECT active, moved_ts_ms FROM inbox_state"
                ).fetchone()
                conn.executemany(
                    _INSERT_INTO_INBOX[active],
                    [
                        (r.device_id, r.parameter, r.ts_ms, r.value, r.flag, r.recv_ms, r.seq,
                         r.site_id, moved_ts)
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
        self._inbox_rows += stored
        if self._inbox_rows > self.inbox_max_rows:
            self._wake_compactor()
        return stored

    def close(self) -> None:
        self._closing = True  # a step in progress finishes; no new one starts
        if self._compactor is not None:
            self._compact_wanted.set()
            self._compactor.join()
        super().close()
        self._cold.close()

    def _wake_compactor(self) -> None:
        with self._lock:
            if self._compactor is None:
                self._compactor = threading.Thread(
                    target=self._compact_loop, name="landun-compact", daemon=True
                )
                self._compactor.start()
        self._compact_wanted.set()

    def _compact_loop(self) -> None:
        if sys.platform == "linux":  # there, a thread's id names the thread alone
            # Compaction is background work; ingest and alert evaluation come first. It holds
            # only the readings file's write lock for long, which nothing on the hot path takes.
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPACTION_NICE)
        while True:
            self._compact_wanted.wait()
            self._compact_wanted.clear()
            if self._closing:
                return
            try:
                self.compact()
            except StoreUnavailable as exc:
                # Nothing is lost: the rows wait in their inbox or in a run.
                log.warning("compaction postponed: %s", exc)
            except Exception:
                # Nor here; the thread must live on, or the inboxes would grow without bound.
                log.exception("compaction failed; trying again at the next wake-up")

    def compact(self, max_rows: int | None = None) -> int:
        """Move the inboxes into runs, then compaction steps until the runs hold at most
        `max_rows` (default `recent_max_rows`; 0 moves everything); returns the rows moved into
        `readings`."""
        limit = self.recent_max_rows if max_rows is None else max_rows
        moved = 0
        with self._compacting:
            self.flush_inbox()
            while not self._closing:
                step = self.compact_step(limit)
                if not step:
                    break
                moved += step
        return moved

    @staticmethod
    def _note_moved(conn: sqlite3.Connection, tables: Sequence[str]) -> None:
        """Raise `moved_ts_ms` to the newest sensor time in `tables`, in the transaction that
        removes their readings from the main file."""
        newest = " UNION ALL ".join(f"SELECT max(ts_ms) AS ts FROM {t}" for t in tables)
        conn.execute(
            "UPDATE inbox_state SET moved_ts_ms = max(ifnull(moved_ts_ms, ts), ts)"
            f" FROM (SELECT max(ts) AS ts FROM ({newest})) WHERE ts IS NOT NULL"
        )

    @staticmethod
    def _count(conn: sqlite3.Connection, table: str) -> int:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def flush_inbox(self) -> int:
        """Move every inbox row into runs; returns the rows."""
        moved = 0
        with self._compacting:
            for _ in INBOXES:  # the other inbox first if a move was cut short, then the active one
                inbox, switched, generation = self._switch_inbox()
                self._copy_inbox(inbox, generation)
                moved += self._empty_inbox(inbox, generation)
                if switched:
                    break
        return moved

    def _switch_inbox(self) -> tuple[int, bool, int]:
        """Have ingest append to the other inbox if that one is empty; returns the inbox to move,
        whether ingest switched away from it, and the generation from which it gets no rows."""
        with self._tx() as conn:
            active, generation = conn.execute(
                "SELECT active, generation FROM inbox_state"
            ).fetchone()
            if conn.execute(f"SELECT 1 FROM {INBOXES[1 - active]} LIMIT 1").fetchone():
                return 1 - active, False, generation
            conn.execute(
                "UPDATE inbox_state SET active = ?, generation = generation + 1", (1 - active,)
            )
        return active, True, generation + 1

    def _copy_inbox(self, inbox: int, generation: int) -> None:
        """Copy an inbox ingest no longer appends to into run `generation`, unless ingest was
        switched back to it since (another compactor moved it on; its new rows are for a later
        run). A second copy of the same rows (after a crash, or by another process) adds only
        what compaction has moved on since, shown once by `readings_all`."""
        with self._attached_main() as cold:
            # In series order: the run's pages are filled one after the other.
            copied = cold.execute(
                f"INSERT OR IGNORE INTO readings_runs (run, {_READING_COLS})"
                f" SELECT ?1, {_READING_COLS} FROM hot.{INBOXES[inbox]}"
                " WHERE (SELECT generation FROM hot.inbox_state) = ?1"
                " ORDER BY device_id, parameter, ts_ms",
                (generation,),
            ).rowcount
            if copied > 0:
                cold.execute(
                    "INSERT INTO runs (run, rows, min_ts_ms, max_ts_ms)"
                    f" SELECT ?, ?, min(ts_ms), max(ts_ms) FROM hot.{INBOXES[inbox]} WHERE true"
                    " ON CONFLICT (run) DO UPDATE SET rows = rows + excluded.rows,"
                    " min_ts_ms = min(min_ts_ms, excluded.min_ts_ms),"
                    " max_ts_ms = max(max_ts_ms, excluded.max_ts_ms)",
                    (generation, copied),
                )

    def _empty_inbox(self, inbox: int, generation: int) -> int:
        """Empty an inbox once copied, unless it was switched to since `generation` (another
        compactor emptied it then, and it may hold new rows now)."""
        with self._tx() as conn:
            if conn.execute("SELECT generation FROM inbox_state").fetchone()[0] != generation:
                return 0
            self._note_moved(conn, [INBOXES[inbox]])
            moved = conn.execute(f"DELETE FROM {INBOXES[inbox]}").rowcount
        self._inbox_rows = max(0, self._inbox_rows - moved)
        return moved

    def compact_step(self, max_rows: int) -> int:
        """If the runs hold more than `max_rows`, move the rows of the next devices in key order
        (about `compact_rows` rows, whole devices) from every run into `readings`, in one
        transaction of the readings file; returns the rows moved."""
        with self._compacting, self._cold._tx() as conn:
            (total,) = conn.execute("SELECT ifnull(sum(rows), 0) FROM runs").fetchone()
            if total <= max_rows:
                return 0
            where, args = self._next_devices(conn, total)
            moved_by_run = conn.execute(
                f"SELECT run, count(*) FROM readings_runs WHERE {_IN_OWN_RUNS}"
                f" AND {where} GROUP BY run",
                args,
            ).fetchall()
            conn.execute(
                f"INSERT OR IGNORE INTO readings ({_READING_COLS})"
                f" SELECT {_READING_COLS} FROM readings_runs WHERE {_IN_OWN_RUNS}"
                f" AND {where} ORDER BY device_id, parameter, ts_ms",
                args,
            )
            conn.execute(f"DELETE FROM readings_runs WHERE {_IN_OWN_RUNS} AND {where}", args)
            conn.executemany(
                "UPDATE runs SET rows = rows - ? WHERE run = ?", [(n, r) for r, n in moved_by_run]
            )
            # Emptiness, not the count, decides: a run listed is a run queries look in.
            conn.execute(
                "DELETE FROM runs WHERE NOT EXISTS"
                " (SELECT 1 FROM readings_runs WHERE run = runs.run)"
            )
        return sum(n for _, n in moved_by_run)

    def _next_devices(self, conn: sqlite3.Connection, total: int) -> tuple[str, tuple[str, ...]]:
        """The condition on `device_id` of the next compaction step. Devices are taken in key
        order, then the sweep wraps; the step's end is found in the biggest run, scaled to hold
        about `compact_rows` of all the runs' rows."""
        first = _first_device_in_runs(conn, self._compact_from)
        if first is None:  # the sweep is past the last device: start again
            first = _first_device_in_runs(conn, "") or ""
        run, rows = conn.execute("SELECT run, rows FROM runs ORDER BY rows DESC LIMIT 1").fetchone()
        row = conn.execute(
            "SELECT device_id FROM readings_runs WHERE run = ? AND device_id >= ?"
            " ORDER BY device_id, parameter, ts_ms LIMIT 1 OFFSET ?",
            (run, first, max(1, self.compact_rows * rows // total)),
        ).fetchone()
        if row is None:  # the rest of the sweep: up to the last device, then wrap
            self._compact_from = ""
            return "device_id >= ?", (first,)
        if row[0] == first:  # one device holds more than a step: move it alone
            self._compact_from = first + "\0"
            return "device_id = ?", (first,)
        self._compact_from = row[0]
        return "device_id >= ? AND device_id < ?", (first, row[0])

    def apply_retention(
        self, now_ms: int, settings: RetentionSettings, batch_rows: int = 10_000
    ) -> RetentionReport:
        """Roll up and delete the compacted readings older than the cutoff, series by series, at
        most `batch_rows` a transaction, keeping those that are an alert's evidence. Older
        readings still in runs go once compaction has moved them on."""
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
                "SELECT device_id, parameter FROM cold.readings"
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
        with self._compacting, self._attached_main() as cold:
            row = cold.execute(
                "SELECT ts_ms FROM readings WHERE device_id = ? AND parameter = ? AND ts_ms >= ?"
                " AND ts_ms < ? ORDER BY ts_ms LIMIT 1 OFFSET ?",
                (*series, start, cutoff, batch_rows),
            ).fetchone()
            end = cutoff if row is None else row[0]
            args = (*series, start, end)
            batch = "device_id = ? AND parameter = ? AND ts_ms >= ? AND ts_ms < ?"
            hours = cold.execute(
                f"INSERT INTO readings_hourly ({HOURLY_COLS}) {HOURLY_SELECT} FROM readings r"
                f" WHERE {batch} AND NOT {is_evidence('hot.alerts', 'r')} GROUP BY 1, 2, 3"
                + HOURLY_MERGE.format(least="min", greatest="max"),
                args,
            ).rowcount
            kept = cold.execute(
                f"SELECT count(*) FROM readings r WHERE {batch}"
                f" AND {is_evidence('hot.alerts', 'r')}",
                args,
            ).fetchone()[0]
            removed = cold.execute(
                f"DELETE FROM readings WHERE {batch}"
                f" AND NOT {is_evidence('hot.alerts', 'readings')}",
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
        sql = (
            "SELECT device_id, site_id, parameter, ts_ms, value, flag, recv_ms, seq"
            " FROM readings_all"
        )
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
        # SQLite takes the bare columns from the row holding max(ts_ms).
        rows = self._reader().execute(
            "SELECT device_id, site_id, parameter, max(ts_ms), value, flag, recv_ms, seq"
            " FROM readings_all WHERE device_id = ? GROUP BY parameter",
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
        row = (
            self._reader()
            .execute(
                "SELECT count(*), ifnull(sum(flag = 'N'), 0),"
                " ifnull(sum(flag = 'N' AND (value < ? OR value > ?)), 0)"
                " FROM readings_all WHERE device_id = ? AND parameter = ? AND ts_ms >= ?"
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
            sql = downsample_sql("readings_all", "cold.readings_hourly", marks, valid_only, "?")
            return [Bucket(*r) for r in self._reader().execute(sql, args + args)]
        flag = " AND flag = 'N'" if valid_only else ""
        rows = self._reader().execute(
            f"SELECT (ts_ms / ?) * ? AS b, parameter, avg(value), min(value), max(value), count(*)"
            f" FROM readings_all WHERE device_id = ? AND parameter IN ({marks})"
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

    # -- engine state -------------------------------------------------------------------------

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
