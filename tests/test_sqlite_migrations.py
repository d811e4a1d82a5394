"""SQLite's schema steps: recorded per component in each file's `schema_migrations`, applied
on open, from an empty file and from a file of a release before versions were recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from domain.model import Reading
from store.base import ReadingQuery
from store.ledger import SqliteLedger
from store.sqlite import SqliteStore, readings_path

T0 = 1_795_334_400_000


def _versions(path: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT component, version FROM schema_migrations"))


def test_an_empty_file_gets_every_step_recorded(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    SqliteStore(path).close()
    SqliteLedger(path).close()
    assert _versions(path) == {("store", 1), ("store", 2), ("ledger", 1)}
    assert _versions(readings_path(path)) == {("readings", 1), ("readings", 2)}
    SqliteStore(path).close()  # nothing left to apply
    assert _versions(readings_path(path)) == {("readings", 1), ("readings", 2)}


def test_a_file_from_before_versions_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    reading = Reading("d1", "s1", "ph", T0, 7.2, recv_ms=T0)
    store.write_batch([reading])
    store.compact(0)
    store.close()
    with sqlite3.connect(readings_path(path)) as conn:  # as the previous release left it
        conn.execute("DROP TABLE readings_hourly")
        conn.execute("DROP TABLE schema_migrations")
    store = SqliteStore(path)
    try:
        assert _versions(readings_path(path)) == {("readings", 1), ("readings", 2)}
        assert store.query_readings(ReadingQuery(device_id="d1")) == [reading]
        assert store.downsample("d1", ["ph"], T0, T0 + 3_600_000, 3_600_000)[0].count == 1
    finally:
        store.close()


def test_a_file_upgraded_by_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('store', 99, 'from the future', 0)")
    with pytest.raises(RuntimeError, match="newer Landun"):
        SqliteStore(path)
