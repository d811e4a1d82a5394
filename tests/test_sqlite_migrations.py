"""SQLite's schema steps: recorded per component in each file's `schema_migrations`, applied
on open, from an empty file and from a file of a release before versions were recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from domain.model import Reading
from store.base import ReadingQuery
from store.ledger import SqliteLedger
from store.sqlite import MIGRATIONS, SqliteStore

T0 = 1_795_334_400_000


def _versions(path: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT component, version FROM schema_migrations"))


def test_an_empty_file_gets_every_step_recorded(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    SqliteStore(path).close()
    SqliteLedger(path).close()
    assert _versions(path) == {("store", m.version) for m in MIGRATIONS} | {("ledger", 1)}
    SqliteStore(path).close()  # nothing left to apply
    assert _versions(path) == {("store", m.version) for m in MIGRATIONS} | {("ledger", 1)}


def test_a_file_from_before_versions_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    reading = Reading("d1", "s1", "ph", T0, 7.2, recv_ms=T0)
    store.write_batch([reading])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE schema_migrations")
    store = SqliteStore(path)
    try:
        assert _versions(path) == {("store", m.version) for m in MIGRATIONS}
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


def test_webhook_deliveries_of_an_earlier_release_move_to_the_notice_deliveries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "landun.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:  # as a release before the notification channels left it
        conn.executescript(
            "DROP TABLE notice_deliveries; DROP TABLE notice_claims;"
            " CREATE TABLE deliveries (id INTEGER PRIMARY KEY, target TEXT NOT NULL,"
            " alert_id INTEGER NOT NULL, action TEXT NOT NULL, ok INTEGER NOT NULL,"
            " attempts INTEGER NOT NULL, error TEXT NOT NULL, at_ms INTEGER NOT NULL);"
            " INSERT INTO deliveries VALUES (1, 'https://hook.example.cn/x', 7, 'opened', 0, 5,"
            " 'HTTP 503', 1795334400000);"
            " DELETE FROM schema_migrations WHERE component = 'store' AND version > 1;"
        )
    store = SqliteStore(path)
    try:
        [d] = store.deliveries()
        assert (d.channel, d.target, d.alert_id, d.ok, d.error) == (
            "webhook",
            "https://hook.example.cn/x",
            7,
            False,
            "HTTP 503",
        )
        assert store.claim_notice("7:0:opened:sms:13800138000", T0)
    finally:
        store.close()
