"""SQLite readings land in an inbox in the main file, move as a run into `readings_runs` in the
readings file and are compacted into `readings` there: nothing is lost, doubled or hidden from a query on
the way, whichever table (or two tables, during a move) a reading is in."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from domain.model import Alert, AlertFamily, Reading, Severity
from store.base import AlertChange, ReadingQuery, StoreUnavailable
from store.sqlite import _READING_COLS as COLS
from store.sqlite import INBOXES, SqliteStore, connect_readonly, readings_path

T0 = 1_795_334_400_000
MIN = 60_000
PARAMS = ("ph", "orp", "free_chlorine")


def _batch(minute: int, devices: int = 6) -> list[Reading]:
    return [
        Reading(f"dev-{d}", f"site-{d % 2}", p, T0 + minute * MIN, 7 + minute / 100 + d, "N",
                T0 + minute * MIN + 500, minute)
        for d in range(devices)
        for p in PARAMS
    ]  # fmt: skip


def _counts(path: Path) -> tuple[int, int, int]:
    """Rows in the inboxes, the runs and `readings`, read in one statement as queries read them
    (a row being moved is counted in its inbox and in its run)."""
    conn = connect_readonly(path)
    try:
        return conn.execute(
            f"SELECT (SELECT count(*) FROM {INBOXES[0]}) + (SELECT count(*) FROM {INBOXES[1]}),"
            " (SELECT count(*) FROM cold.readings_runs), (SELECT count(*) FROM cold.readings)"
        ).fetchone()
    finally:
        conn.close()


def _inbox(path: Path) -> int:
    return _counts(path)[0]


def _tables(path: Path) -> tuple[int, int]:
    """Rows in `readings`, and in the inboxes and the runs together."""
    inbox, recent, main = _counts(path)
    return main, recent + inbox


def _everything(store: SqliteStore) -> dict:
    """Every query that reads readings, for one device, as plain data."""
    dev = "dev-3"
    return {
        "raw": store.query_readings(ReadingQuery(device_id=dev, limit=10_000)),
        "site": store.query_readings(ReadingQuery(site_id="site-1", limit=10_000)),
        "latest": sorted(store.latest_readings(dev), key=lambda r: r.parameter),
        "hourly": store.downsample(dev, PARAMS, T0, T0 + 90 * MIN, 3_600_000),
        "stats": store.reading_stats(dev, "ph", T0, T0 + 90 * MIN, 10.0, 10.5),
    }


def test_compaction_moves_every_reading_once_and_queries_do_not_change(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path, recent_max_rows=1_000_000, compact_rows=7)
    for minute in range(60):
        assert store.write_batch(_batch(minute)) == 18
    before = _everything(store)
    assert len(before["raw"]) == 180 and len(before["latest"]) == 3
    assert _tables(path) == (0, 1080)

    assert store.flush_inbox() == 1080
    assert _tables(path) == (0, 1080)
    assert _everything(store) == before
    # Part way: some devices compacted, the rest still recent.
    assert store.compact_step(max_rows=500) > 0
    main, recent = _tables(path)
    assert main > 0 and recent > 0 and main + recent == 1080
    assert _everything(store) == before

    assert store.compact(max_rows=0) == 1080 - main
    assert _tables(path) == (1080, 0)
    assert _everything(store) == before

    # Duplicates of compacted readings are still refused; later readings land in recent again.
    assert store.write_batch(_batch(10) + _batch(60)) == 18
    assert _tables(path) == (1080, 18)
    store.close()


def test_one_device_bigger_than_a_step_is_moved_whole(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path, recent_max_rows=1_000_000, compact_rows=5)
    for minute in range(40):
        store.write_batch(_batch(minute, devices=1))
    store.flush_inbox()
    assert store.compact_step(max_rows=0) == 120  # dev-0's three series, 40 rows each
    assert _tables(path) == (120, 0)
    store.close()


def test_background_compaction_keeps_recent_bounded(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path, recent_max_rows=100, compact_rows=30, inbox_max_rows=40)
    for minute in range(50):
        store.write_batch(_batch(minute))
    deadline = time.monotonic() + 30  # a bound for a stuck thread, not a speed claim
    # Once the compactor has settled: none of its rows counted twice, the runs within
    # bounds, and the inboxes moved on once over 40 rows (so at most one batch more).
    settled = lambda c: c[1] <= 100 and sum(c) == 900 and c[0] <= 40 + 18  # noqa: E731
    while not settled(counts := _counts(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settled(counts), counts
    store.close()
    # Reopened: the count of recent rows is read back, and nothing was lost.
    store = SqliteStore(path, recent_max_rows=100, compact_rows=30, inbox_max_rows=40)
    assert len(store.query_readings(ReadingQuery(limit=10_000))) == 900
    store.close()


def test_a_move_cut_short_shows_each_reading_once_and_is_finished_later(tmp_path: Path) -> None:
    """A move copies an inbox to the readings file, then empties it in the main file: a crash
    in between leaves its rows in both. Queries show them once, they are still refused, ingest
    goes on into the other inbox, and the next move finishes the job."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    for minute in range(10):
        store.write_batch(_batch(minute))
    before = _everything(store)
    inbox, switched, generation = store._switch_inbox()
    assert switched
    store._copy_inbox(inbox, generation)  # the copy, without the emptying
    assert _counts(path) == (180, 180, 0)
    assert _everything(store) == before
    assert store.write_batch(_batch(9) + _batch(10)) == 18
    assert _counts(path) == (198, 180, 0)
    assert store.flush_inbox() == 198
    assert _counts(path) == (0, 198, 0)
    assert len(store.query_readings(ReadingQuery(device_id="dev-3", limit=10_000))) == 33
    store.close()


def test_two_compactors_interleaved_lose_nothing_and_count_nothing_twice(tmp_path: Path) -> None:
    """Workers on a shared subscription each compact the same files. One copies an inbox and is
    held up before emptying it; the other moves that inbox, compacts, and switches ingest back
    to it. The first one's late emptying must not take the new rows with it, and its late copy
    of rows already compacted must not show twice."""
    path = tmp_path / "landun.db"
    a, b = SqliteStore(path), SqliteStore(path)
    for minute in range(10):
        a.write_batch(_batch(minute))
    inbox, switched, generation = a._switch_inbox()
    assert switched
    a._copy_inbox(inbox, generation)
    assert b.compact(max_rows=0) == 180  # moved the copied inbox on, and switched back to it
    a._copy_inbox(inbox, generation)  # ingest's again: nothing copied
    assert b.write_batch(_batch(10)) == 18  # into the inbox `a` still means to empty
    assert a._empty_inbox(inbox, generation) == 0
    assert _counts(path) == (18, 0, 180)
    before = _everything(a)
    # `a` copies its inbox again (as after a crash between copy and emptying) once a third
    # worker has compacted the first copy: rows in both trees, shown once.
    inbox, switched, generation = a._switch_inbox()
    a._copy_inbox(inbox, generation)
    c = SqliteStore(path)
    assert c.compact_step(max_rows=0) == 18
    c.close()
    a._copy_inbox(inbox, generation)
    assert _counts(path) == (18, 18, 198)
    assert _everything(a) == _everything(b) == before
    assert a.write_batch(_batch(10)) == 0
    a.compact(max_rows=0)  # the second copy meets its twin in `readings` and goes
    assert _counts(path) == (0, 0, 198) and _everything(a) == before
    a.close()
    b.close()


def test_ingest_and_alerts_do_not_wait_for_the_readings_file(tmp_path: Path) -> None:
    """Moves and compaction hold the readings file's write lock; ingest commits and alert
    writes are in the main file and go on meanwhile (a compaction step is postponed)."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path, busy_timeout_ms=100)
    for minute in range(5):
        store.write_batch(_batch(minute))
    store.flush_inbox()
    blocker = sqlite3.connect(readings_path(path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        assert store.write_batch(_batch(4) + _batch(5)) == 18  # still checks for duplicates
        alert = Alert("site-1", "dev-1", "range:ph", AlertFamily.COMPLIANCE, Severity.WARNING,
                      "ph", "pH 9.1 above 8.5", T0, T0)  # fmt: skip
        store.save_alerts([AlertChange(alert, "opened")])
        assert [a.id for a in store.open_alerts()] == [alert.id]
        with pytest.raises(StoreUnavailable):
            store.compact(max_rows=0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.compact(max_rows=0) == 108
    assert _counts(path) == (0, 0, 108)
    store.close()


def test_a_new_main_file_beside_a_readings_file_still_refuses_what_it_holds(
    tmp_path: Path,
) -> None:
    """Ingest looks for duplicates in the readings file only below the newest sensor time moved
    there, noted in the main file: a main file started afresh learns it from the readings."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    for minute in range(10):
        store.write_batch(_batch(minute))
    store.compact(max_rows=0)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = SqliteStore(path)
    assert store.write_batch(_batch(-5)) == 18  # older than all: moving it must not lower
    assert store.flush_inbox() == 18  # what the main file knows was moved
    assert store.write_batch(_batch(9)) == 0
    assert store.write_batch(_batch(10)) == 18
    assert _counts(path) == (18, 18, 180)
    store.close()


LEGACY_TABLE = """(device_id TEXT NOT NULL, parameter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, flag TEXT NOT NULL, recv_ms INTEGER NOT NULL, seq INTEGER,
    site_id TEXT NOT NULL, PRIMARY KEY ({})) WITHOUT ROWID"""


@pytest.mark.parametrize("with_inbox", [True, False], ids=["inbox", "before-inbox"])
def test_a_database_with_readings_in_the_main_file_is_moved_whole(
    tmp_path: Path, with_inbox: bool
) -> None:
    """Earlier releases kept every reading in the main file (`readings`, `readings_recent` and,
    later, `readings_inbox`, read through a view there). Opening such a database moves them to
    the readings file: all still found, still refused when sent again, the old tables gone."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    for minute in range(10):
        store.write_batch(_batch(minute))
    before = _everything(store)
    store.close()
    readings_path(path).unlink()
    legacy = {"readings": range(0, 4), "readings_recent": range(4, 7)}
    if with_inbox:
        legacy["readings_inbox"] = range(7, 10)
    else:
        legacy["readings_recent"] = range(4, 10)
    with sqlite3.connect(path) as conn:
        for table, minutes in legacy.items():
            key = (
                "ts_ms, device_id, parameter"
                if table == "readings_inbox"
                else "device_id, parameter, ts_ms"
            )
            conn.execute(f"CREATE TABLE {table} {LEGACY_TABLE.format(key)}")
            conn.execute(
                f"INSERT INTO {table} ({COLS}) SELECT {COLS} FROM {INBOXES[0]}"
                " WHERE ts_ms >= ? AND ts_ms < ?",
                (T0 + minutes.start * MIN, T0 + minutes.stop * MIN),
            )
        conn.execute(
            "CREATE VIEW readings_all AS "
            + " UNION ALL ".join(f"SELECT {COLS} FROM {t}" for t in legacy)
        )
        for inbox in INBOXES:
            conn.execute(f"DROP TABLE {inbox}")
        conn.execute("DROP TABLE schema_migrations")  # earlier releases kept no versions

    store = SqliteStore(path)
    assert _everything(store) == before
    assert _tables(path) == (10 * 18, 0)
    with sqlite3.connect(path) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    assert not names & {"readings", "readings_recent", "readings_inbox", "readings_all"}
    assert store.write_batch(_batch(3) + _batch(7) + _batch(10)) == 18  # duplicates refused
    assert _inbox(path) == 18
    assert len(store.query_readings(ReadingQuery(device_id="dev-3", limit=10_000))) == 33
    store.close()


def test_a_readings_file_with_the_former_recent_tree_is_compacted_on_open(tmp_path: Path) -> None:
    """Until runs, the readings file had `readings_recent`, keyed by series: opening it moves its
    rows into `readings` and drops it."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    for minute in range(10):
        store.write_batch(_batch(minute))
    store.compact(max_rows=0)
    before = _everything(store)
    store.close()
    with sqlite3.connect(readings_path(path)) as cold:
        cold.execute(
            f"CREATE TABLE readings_recent {LEGACY_TABLE.format('device_id, parameter, ts_ms')}"
        )
        cold.execute(
            f"INSERT INTO readings_recent ({COLS}) SELECT {COLS} FROM readings WHERE ts_ms >= ?",
            (T0 + 6 * MIN,),
        )
        cold.execute("DELETE FROM readings WHERE ts_ms >= ?", (T0 + 6 * MIN,))

    store = SqliteStore(path)
    assert _everything(store) == before
    assert _counts(path) == (0, 0, 180)
    with sqlite3.connect(readings_path(path)) as cold:
        names = {n for (n,) in cold.execute("SELECT name FROM sqlite_master")}
    assert "readings_recent" not in names
    assert store.write_batch(_batch(8) + _batch(10)) == 18
    store.close()
