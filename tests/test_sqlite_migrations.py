"""SQLite's schema steps: recorded per component in each file's `schema_migrations`, applied
on open, from an empty file and from a file of a release before versions were recorded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from domain.model import Reading
from domain.tanks import TankEvent, TankEventKind
from store import records_sql
from store.base import MailedReport, ReadingQuery, Store
from store.ledger import SqliteLedger
from store.migrations import Migration
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


# -- the key-value engine state of earlier releases, and the typed tables it moves to ----------

TANK_RECORDS = [
    TankEvent("tl1", "s1", TankEventKind.CLEANED, "T1", T0, T0 + 5, "王师傅", "清洗公司"),
    TankEvent("tl1", "s1", TankEventKind.DISINFECTED, "T1", T0 + 60_000, T0 + 65_000, "王师傅",
              disinfectant="二氧化氯", report_id="R-7"),
]  # fmt: skip
SITE_DOC = json.dumps({"id": "s1", "name": "游泳馆"}, ensure_ascii=False)
# (namespace, key, value) rows as releases before the typed tables wrote them.
LEGACY_STATE = [
    ("registry.sites", "s1", SITE_DOC),
    ("registry.devices", "d1", '{"id": "d1"}'),
    ("public.links", "s1", "p" * 24),
    ("ops.counters", "readings_stored", "1234"),
    ("reports.mailed", "310104/week/2026-11-22", str(T0)),
    ("reports.mailed", "310105/month/2026-10-31", str(T0 + 1)),
    ("tanks.records", "s1|T1", json.dumps([r.as_dict() for r in TANK_RECORDS], ensure_ascii=False)),
    ("store.influx.last_seen", "d1", str(T0 + 9)),
    ("store.influx.last_seen", "d2", str(T0)),
    # The alert stage's checkpoint stays.
    ("threshold", "s1|d1|ph", "{}"),
    ("custody/p3", "bag-1", "{}"),
]
LAST_SEEN_BEFORE = [("d2", T0 + 7)]  # device_last_seen rows: the newer time wins
TYPED_TABLES = (
    "site_edits", "device_edits", "public_links", "counters", "mailed_reports", "tank_records"
)  # fmt: skip


def typed_steps(migrations: tuple[Migration, ...]) -> list[Migration]:
    """The steps that move the engine state's namespaces into their tables."""
    names = {name for name, _ in records_sql.SQLITE_STEPS}
    return [m for m in migrations if m.name in names]


def assert_moved(store: Store, engine_state: set[str]) -> None:
    """What the steps made of LEGACY_STATE; `engine_state`: the namespaces left there."""
    assert store.site_edits() == {"s1": SITE_DOC}
    assert store.device_edits() == {"d1": '{"id": "d1"}'}
    assert store.public_links() == {"s1": "p" * 24}
    assert store.counter("readings_stored") == 1234
    assert store.mailed_reports() == [
        MailedReport("310104", "week", "2026-11-22", T0),
        MailedReport("310105", "month", "2026-10-31", T0 + 1),
    ]
    assert store.tank_records() == TANK_RECORDS
    assert store.last_seen() == {"d1": T0 + 9, "d2": T0 + 7}
    assert store.load_state("threshold") == {"s1|d1|ph": "{}"}
    assert store.load_state("custody/p3") == {"bag-1": "{}"}
    assert engine_state == {"threshold", "custody/p3"}


def test_engine_state_of_an_earlier_release_moves_to_typed_tables(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    SqliteStore(path).close()
    first = min(m.version for m in typed_steps(MIGRATIONS))
    with sqlite3.connect(path) as conn:  # as a release before the typed tables left it
        conn.executescript("".join(f"DROP TABLE {t};" for t in TYPED_TABLES))
        conn.execute(
            "DELETE FROM schema_migrations WHERE component = 'store' AND version >= ?", (first,)
        )
        conn.executemany("INSERT INTO engine_state VALUES (?, ?, ?)", LEGACY_STATE)
        conn.executemany("INSERT INTO device_last_seen VALUES (?, ?)", LAST_SEEN_BEFORE)
    store = SqliteStore(path)
    try:
        with sqlite3.connect(path) as conn:
            left = {ns for (ns,) in conn.execute("SELECT DISTINCT namespace FROM engine_state")}
        assert_moved(store, left)
    finally:
        store.close()
