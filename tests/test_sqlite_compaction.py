"""SQLite readings land in `readings_recent` and are compacted into `readings`: nothing is lost,
doubled or hidden from a query on the way, whichever table a reading is in."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from domain.model import Reading
from store.base import ReadingQuery
from store.sqlite import _READING_COLS as COLS
from store.sqlite import SqliteStore

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


def _tables(path: Path) -> tuple[int, int]:
    """Rows in `readings`, and in the inbox and `readings_recent` together."""
    with sqlite3.connect(path) as conn:
        main = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        recent = conn.execute(
            "SELECT (SELECT count(*) FROM readings_recent) + (SELECT count(*) FROM readings_inbox)"
        ).fetchone()[0]
    return main, recent


def _inbox(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM readings_inbox").fetchone()[0]


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
    while _tables(path)[1] - _inbox(path) > 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    main, recent = _tables(path)
    assert recent - _inbox(path) <= 100 and main + recent == 900
    assert _inbox(path) <= 40 + 18  # moved on once over 40: at most one batch more
    store.close()
    # Reopened: the count of recent rows is read back, and nothing was lost.
    store = SqliteStore(path, recent_max_rows=100, compact_rows=30, inbox_max_rows=40)
    assert len(store.query_readings(ReadingQuery(limit=10_000))) == 900
    store.close()


def test_a_database_from_before_the_inbox_is_read_whole(tmp_path: Path) -> None:
    """Its view read `readings` and `readings_recent` only: opening it adds the inbox, and the
    readings it holds are all still found, and still refused when sent again."""
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    for minute in range(10):
        store.write_batch(_batch(minute))
    store.flush_inbox()
    before = _everything(store)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP VIEW readings_all")
        conn.execute(
            f"CREATE VIEW readings_all AS SELECT {COLS} FROM readings"
            f" UNION ALL SELECT {COLS} FROM readings_recent"
        )
        conn.execute("DROP TABLE readings_inbox")

    store = SqliteStore(path)
    assert _everything(store) == before
    assert store.write_batch(_batch(3) + _batch(10)) == 18  # duplicates still refused
    assert _inbox(path) == 18
    assert len(store.query_readings(ReadingQuery(device_id="dev-3", limit=10_000))) == 33
    store.close()
