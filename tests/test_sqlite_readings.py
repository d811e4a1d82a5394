"""SQLite keeps readings in one table keyed by series. Files of the previous release (inboxes in
the main file; runs, compacted readings and hourly aggregates in a second file) and of releases
before it are moved in on open: every reading found once, every query answering the same, the
old tables and the second file gone, duplicates still refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import store.sqlite
from domain.model import Reading
from store.base import ReadingQuery
from store.sqlite import _READING_COLS as COLS
from store.sqlite import INBOXES, MIGRATIONS, SqliteStore, readings_path
from store.sqlite_db import upgrade

T0 = 1_795_334_400_000
MIN = 60_000
HOUR = 3_600_000
PARAMS = ("ph", "orp", "free_chlorine")

# The readings file of the previous release (store/sqlite.py at abe3ce0, READINGS_SCHEMA and
# READINGS_HOURLY), recorded there as component `readings`, versions 1 and 2.
_COLUMNS = """device_id TEXT NOT NULL, parameter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, flag TEXT NOT NULL, recv_ms INTEGER NOT NULL, seq INTEGER,
    site_id TEXT NOT NULL"""
PREVIOUS_READINGS_FILE = f"""
CREATE TABLE readings ({_COLUMNS}, PRIMARY KEY (device_id, parameter, ts_ms)) WITHOUT ROWID;
CREATE TABLE readings_runs (run INTEGER NOT NULL, {_COLUMNS},
    PRIMARY KEY (run, device_id, parameter, ts_ms)) WITHOUT ROWID;
CREATE TABLE runs (run INTEGER PRIMARY KEY, rows INTEGER NOT NULL, min_ts_ms INTEGER NOT NULL,
    max_ts_ms INTEGER NOT NULL);
CREATE TABLE readings_hourly (device_id TEXT NOT NULL, parameter TEXT NOT NULL,
    hour_ms INTEGER NOT NULL, n INTEGER NOT NULL, total REAL NOT NULL, lo REAL NOT NULL,
    hi REAL NOT NULL, valid_n INTEGER NOT NULL, valid_total REAL NOT NULL, valid_lo REAL,
    valid_hi REAL, PRIMARY KEY (device_id, parameter, hour_ms)) WITHOUT ROWID;
CREATE TABLE schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL,
    name TEXT NOT NULL, applied_ms INTEGER NOT NULL, PRIMARY KEY (component, version));
INSERT INTO schema_migrations VALUES ('readings', 1, 'readings, runs (as of 2026-12)', 0),
    ('readings', 2, 'retention: hourly aggregates', 0);
"""
# Hourly aggregates retention wrote for dev-3's pH, the day before the readings.
HOURLY = [("dev-3", "ph", T0 - 24 * HOUR + h * HOUR, 60, 420.0, 6.9, 7.1, 59, 413.0, 6.9, 7.1)
          for h in range(3)]  # fmt: skip


def _batch(minute: int, devices: int = 6) -> list[Reading]:
    return [
        Reading(f"dev-{d}", f"site-{d % 2}", p, T0 + minute * MIN, 7 + minute / 100 + d, "N",
                T0 + minute * MIN + 500, minute)
        for d in range(devices)
        for p in PARAMS
    ]  # fmt: skip


def _rows(minutes: range) -> list[tuple]:
    return [
        (r.device_id, r.parameter, r.ts_ms, r.value, r.flag, r.recv_ms, r.seq, r.site_id)
        for m in minutes
        for r in _batch(m)
    ]


def _insert(conn: sqlite3.Connection, table: str, minutes: range, run: int | None = None) -> None:
    extra = "" if run is None else "run, "
    conn.executemany(
        f"INSERT INTO {table} ({extra}{COLS}) VALUES ({'?, ' * (run is not None)}{'?, ' * 7}?)",
        [(run, *row) if run is not None else row for row in _rows(minutes)],
    )


def _previous_release(path: Path) -> None:
    """Files as the previous release left them after 60 minutes of 18 readings: minutes 0-19
    compacted, 15-29 in run 1 (15-19 moved on by another process's compaction, not yet met
    again), 30-39 in run 2, 40-49 in the inbox ingest no longer appends to (35-39 of it copied
    into run 2 before a crash), 50-59 in the active inbox; older hours aggregated."""
    with sqlite3.connect(path, isolation_level=None) as main:
        upgrade(main, "store", MIGRATIONS[:3])
        _insert(main, INBOXES[0], range(35, 50))
        _insert(main, INBOXES[1], range(50, 60))
        main.executemany(
            "INSERT INTO device_sites (site_id, device_id) VALUES (?, ?)",
            {(r.site_id, r.device_id) for r in _batch(0)},
        )
        main.execute("UPDATE inbox_state SET active = 1, generation = 2, moved_ts_ms = ?",
                     (T0 + 39 * MIN,))  # fmt: skip
    with sqlite3.connect(readings_path(path), isolation_level=None) as cold:
        cold.executescript(PREVIOUS_READINGS_FILE)
        _insert(cold, "readings", range(0, 20))
        _insert(cold, "readings_runs", range(15, 30), run=1)
        _insert(cold, "readings_runs", range(30, 40), run=2)
        cold.execute("INSERT INTO runs VALUES (1, 270, ?, ?), (2, 180, ?, ?)",
                     (T0 + 15 * MIN, T0 + 29 * MIN, T0 + 30 * MIN, T0 + 39 * MIN))  # fmt: skip
        cold.executemany(f"INSERT INTO readings_hourly VALUES ({'?, ' * 10}?)", HOURLY)


def _reference(path: Path, hourly: list[tuple] = HOURLY) -> SqliteStore:
    """The same readings and aggregates written by this release."""
    store = SqliteStore(path)
    for minute in range(60):
        assert store.write_batch(_batch(minute)) == 18
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO readings_hourly VALUES ({'?, ' * 10}?)", hourly)
    return store


def _everything(store: SqliteStore) -> dict:
    """Every query that reads readings, as plain data."""
    dev = "dev-3"
    return {
        "all": store.query_readings(ReadingQuery(limit=10_000)),
        "raw": store.query_readings(ReadingQuery(device_id=dev, limit=10_000)),
        "newest": store.query_readings(ReadingQuery(device_id=dev, descending=True, limit=5)),
        "site": store.query_readings(ReadingQuery(site_id="site-1", parameters=["ph"], limit=999)),
        "latest": sorted(store.latest_readings(dev), key=lambda r: r.parameter),
        "hourly": store.downsample(dev, PARAMS, T0 - 24 * HOUR, T0 + 2 * HOUR, HOUR),
        "hourly_all": store.downsample(dev, PARAMS, T0 - 24 * HOUR, T0 + 2 * HOUR, HOUR, False),
        "minutes": store.downsample(dev, PARAMS, T0, T0 + HOUR, 10 * MIN),
        "stats": store.reading_stats(dev, "ph", T0, T0 + 90 * MIN, 10.0, 10.5),
    }


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _readings(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT device_id, parameter, ts_ms FROM readings").fetchall()


@pytest.mark.parametrize("batch_rows", [7, 50_000], ids=["small-batches", "one-batch"])
def test_the_previous_layout_is_moved_into_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    monkeypatch.setattr(store.sqlite, "ABSORB_BATCH_ROWS", batch_rows)
    reference = _reference(tmp_path / "reference.db")
    path = tmp_path / "landun.db"
    _previous_release(path)

    upgraded = SqliteStore(path)
    try:
        keys = _readings(path)
        assert len(keys) == len(set(keys)) == 60 * 18  # every reading, once
        assert _everything(upgraded) == _everything(reference)
        assert not readings_path(path).exists()
        assert not _tables(path) & {*INBOXES, "inbox_state", "readings_runs", "runs"}
        assert upgraded.write_batch(_batch(3) + _batch(37) + _batch(55)) == 0  # duplicates
        assert upgraded.write_batch(_batch(60)) == 18
    finally:
        upgraded.close()
        reference.close()


def test_a_move_cut_short_is_finished_on_the_next_open(tmp_path: Path) -> None:
    """A crash part way through copying the readings file: the main file is at the new step with
    some of the file's readings; the next open copies the rest and ignores what is there."""
    path = tmp_path / "landun.db"
    _previous_release(path)
    with sqlite3.connect(path, isolation_level=None) as main:
        upgrade(main, "store", MIGRATIONS)
        main.execute("ATTACH DATABASE ? AS old", (str(readings_path(path)),))
        main.execute(f"INSERT INTO readings ({COLS}) SELECT {COLS} FROM old.readings LIMIT 100")
        main.execute("DETACH DATABASE old")
    upgraded = SqliteStore(path)
    try:
        keys = _readings(path)
        assert len(keys) == len(set(keys)) == 60 * 18
        assert not readings_path(path).exists()
    finally:
        upgraded.close()


LEGACY_TABLE = """(device_id TEXT NOT NULL, parameter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, flag TEXT NOT NULL, recv_ms INTEGER NOT NULL, seq INTEGER,
    site_id TEXT NOT NULL, PRIMARY KEY ({})) WITHOUT ROWID"""


@pytest.mark.parametrize("with_inbox", [True, False], ids=["inbox", "before-inbox"])
def test_a_database_with_readings_in_the_main_file_is_moved_whole(
    tmp_path: Path, with_inbox: bool
) -> None:
    """Releases before 2026-11 kept every reading in the main file (`readings`, `readings_recent`
    and, later, `readings_inbox`, read through a view there) and recorded no schema versions."""
    reference = _reference(tmp_path / "reference.db", hourly=[])  # before retention
    path = tmp_path / "landun.db"
    legacy = {"readings": range(0, 40), "readings_recent": range(40, 50)}
    if with_inbox:
        legacy["readings_inbox"] = range(50, 60)
    else:
        legacy["readings_recent"] = range(40, 60)
    with sqlite3.connect(path) as conn:
        for table, minutes in legacy.items():
            key = (
                "ts_ms, device_id, parameter"
                if table == "readings_inbox"
                else "device_id, parameter, ts_ms"
            )
            conn.execute(f"CREATE TABLE {table} {LEGACY_TABLE.format(key)}")
            _insert(conn, table, minutes)
        conn.execute(
            "CREATE VIEW readings_all AS "
            + " UNION ALL ".join(f"SELECT {COLS} FROM {t}" for t in legacy)
        )
        conn.execute(
            "CREATE TABLE device_sites (site_id TEXT NOT NULL, device_id TEXT NOT NULL,"
            " PRIMARY KEY (site_id, device_id)) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO device_sites VALUES (?, ?)", {(r.site_id, r.device_id) for r in _batch(0)}
        )
    store = SqliteStore(path)
    try:
        assert len(_readings(path)) == 60 * 18
        assert _everything(store) == _everything(reference)
        assert not _tables(path) & {"readings_recent", "readings_inbox", *INBOXES}
        with sqlite3.connect(path) as conn:
            assert conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'view'"
            ).fetchone() == (0,)
        assert store.write_batch(_batch(3) + _batch(57) + _batch(60)) == 18  # duplicates refused
    finally:
        store.close()
        reference.close()
