"""Events through the alert feed, with separate roles over one PostgreSQL database: a disinfection
line's cycle, a tank cleaning record and a medical-waste custody fault ingested by `landun ingest`
raise their alerts in `landun alerts`; a ledger's record and its feed entry commit together or
not at all; an entry the worker cannot decode or evaluate is set aside as a dead letter, and the
worker goes on past it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from domain.model import Reading
from domain.tableware import LineEvent, LineEventKind, Method
from domain.tanks import TankEvent, TankEventKind
from domain.timeutil import now_ms
from domain.waste import WasteCategory, WasteEvent, WasteEventKind
from landun.broker import free_port
from landun.demo import demo_registry_path
from store.feed import POISON_SOURCE, encode_entry, load_feed_settings, partition_of
from store.lines import PostgresLineLedger
from store.postgres.ledger import PostgresLedger
from store.postgres.store import PostgresStore
from store.tank_log import PostgresTankLog
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.conftest import Publisher
from tests.postgres import fresh_database
from tests.roles_rig import Deployment, feed_behind, query, wait_until

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
HOSPITAL, SCANNER, ROOM = "hosp-xh-01", "hosp-xh-01-scan", "hosp-xh-01-env"
WATER, TANK_TERMINAL = "water-xh-01", "water-xh-01-tank"
TABLEWARE, LINE = "tw-xh-01", "tw-xh-01-line1"
needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="needs the mosquitto binary")


@contextlib.contextmanager
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, str, Publisher]]:
    """Mosquitto, a fresh database and the demo registry; tanks due every 20 days, so that a
    record ingest accepts (at most 30 days old) can already be overdue."""
    packaged = Path(__file__).parents[1] / "alerts" / "data" / "tanks.toml"
    config = tmp_path / "config"
    config.mkdir()
    (config / "tanks.toml").write_text(
        packaged.read_text("utf-8").replace("days = 183", "days = 20"), "utf-8"
    )
    broker = MosquittoBroker(tmp_path)
    broker.start()
    publisher = None
    with fresh_database() as url:
        d = Deployment(tmp_path, url, broker.url, demo_registry_path(),
                       extra=["--config-dir", str(config)])  # fmt: skip
        try:
            publisher = Publisher(broker.url)
            yield d, url, publisher
        finally:
            if publisher is not None:
                publisher.close()
            d.stop()
            broker.stop()


def _alerts(url: str) -> dict[str, tuple[str, str | None, str]]:
    rows = query(url, "SELECT rule_id, site_id, device_id, message FROM alerts")
    return {rule: (site, device, message) for rule, site, device, message in rows}


def _custody_fault(publisher: Publisher, now: int) -> None:
    """A bag that lost 0.3 kg between collection and handover (diverted waste)."""
    collected = {"ts": now - 20 * HOUR, "event": "bag_collected", "bag_id": "B1",
                 "category": "infectious", "weight_kg": 5.0, "department": "ICU"}  # fmt: skip
    stored = {"ts": now - 20 * HOUR + 10 * MIN, "event": "bag_stored", "bag_id": "B1"}
    handed = {"ts": now - 10 * MIN, "event": "bag_handed_over", "bag_id": "B1",
              "weight_kg": 4.7, "manifest_id": "M1"}  # fmt: skip
    publisher.publish(SCANNER, [collected, stored], kind="events")
    publisher.publish(SCANNER, handed, kind="events")


@needs_mosquitto
def test_line_tank_and_waste_events_raise_their_alerts_in_a_separate_worker(tmp_path: Path):
    with deployment(tmp_path) as (d, url, publisher):
        d.alerts(1)
        d.ingest(1)
        now = now_ms()
        # Line L1 (steam, 100 °C for 10 min) at temperature for 8 minutes only: a short cycle.
        start = now - 30 * MIN
        publisher.publish(
            LINE,
            [{"ts": start + i * MIN, "values": {"disinfection_temperature": 102.0}}
             for i in range(9)],
        )  # fmt: skip
        wait_until(lambda: query(url, "SELECT count(*) FROM readings")[0][0] == 9, 30, "readings")
        publisher.publish(
            LINE,
            [{"ts": start, "event": "cycle_start", "line_id": "L1", "cycle_id": "C1",
              "method": "steam"},
             {"ts": start + 8 * MIN, "event": "cycle_end", "line_id": "L1", "cycle_id": "C1"}],
            kind="events",
        )  # fmt: skip
        # Tank T1 last cleaned and disinfected 25 days ago: 5 days past its interval.
        for event in ("tank_cleaned", "tank_disinfected"):
            record = {"ts": now - 25 * DAY, "event": event, "tank_id": "T1", "operator": "王师傅"}
            publisher.publish(TANK_TERMINAL, record, kind="events")
        _custody_fault(publisher, now)
        published = time.monotonic()

        rules = {"cycle:noncompliant", "tank:cleaning_overdue:T1", "custody:weight_loss"}
        alerts = wait_until(
            lambda: (a := _alerts(url)).keys() >= rules and a, 60, "alerts", step=0.05
        )
        print(f"all three alerts {time.monotonic() - published:.2f} s after the last event")
        assert alerts["cycle:noncompliant"][:2] == (TABLEWARE, LINE)
        assert "short cycle" in alerts["cycle:noncompliant"][2]
        assert alerts["tank:cleaning_overdue:T1"][:2] == (WATER, None)
        assert alerts["custody:weight_loss"][0] == HOSPITAL
        # Each event recorded once, in its ledger, by the ingest process.
        assert query(url, "SELECT count(*) FROM line_events")[0][0] == 2
        assert query(url, "SELECT count(*) FROM waste_events")[0][0] == 3
        assert query(url, "SELECT count(*) FROM tank_records")[0][0] == 2
        wait_until(lambda: feed_behind(url) == 0, 30, "the feed evaluated")
        logs = d.logs()
        assert "Traceback" not in logs and "hook failed" not in logs
        assert query(url, "SELECT count(*) FROM dead_letters")[0][0] == 0


# -- a record and its feed entry: one transaction -----------------------------------------------

T0 = now_ms() - HOUR  # recent enough for every ledger; the tests read no clock after this
PARTS = 4


def _waste(bag: str, ts: int = T0) -> WasteEvent:
    return WasteEvent(SCANNER, HOSPITAL, WasteEventKind.COLLECTED, bag, ts, T0,
                      WasteCategory.INFECTIOUS, 2.0, "ICU")  # fmt: skip


def _line(cycle: str, ts: int = T0) -> LineEvent:
    return LineEvent(LINE, TABLEWARE, "L1", LineEventKind.CYCLE_START, cycle, ts, T0, Method.STEAM)


def _tank(tank: str, ts: int = T0) -> TankEvent:
    return TankEvent(TANK_TERMINAL, WATER, TankEventKind.CLEANED, tank, ts, T0, "王师傅")


# Per ledger: its events, how many records it holds, and a check that makes its table refuse
# the record of "C".
LEDGERS = {
    "waste": (_waste, "SELECT count(*) FROM waste_events", "waste_events CHECK (bag_id <> 'C')"),
    "line": (_line, "SELECT count(*) FROM line_events", "line_events CHECK (ref_id <> 'C')"),
    "tank": (
        _tank,
        "SELECT count(*) FROM tank_records",
        "tank_records CHECK (tank_id <> 'C')",
    ),
}


def _writer(kind: str, url: str, store: PostgresStore):
    """The ledger of `kind`, writing the feed as in `landun ingest`."""
    if kind == "tank":
        return PostgresTankLog(store, PARTS)
    ledger = PostgresLedger(url) if kind == "waste" else PostgresLineLedger(url)
    ledger.enable_feed(PARTS)
    return ledger


def _entries(url: str) -> list[tuple[int, int, str]]:
    return query(url, "SELECT part, pos, body FROM feed_entries ORDER BY part, pos")


@pytest.mark.parametrize("kind", ["waste", "line", "tank"])
def test_a_record_and_its_feed_entry_commit_together_or_not_at_all(kind: str, pg_url: str):
    store = PostgresStore(pg_url)
    store.enable_feed(PARTS, {})
    writer = _writer(kind, pg_url, store)
    event, count, check = LEDGERS[kind]
    table, _, condition = check.partition(" ")

    def held() -> int:
        return query(pg_url, count)[0][0]

    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            # The feed append fails (its table is away): the record is rolled back with it.
            admin.execute("ALTER TABLE feed_entries RENAME TO feed_entries_away")
            with pytest.raises(psycopg.errors.UndefinedTable):
                writer.record([event("A")])
            admin.execute("ALTER TABLE feed_entries_away RENAME TO feed_entries")
            assert held() == 0 and _entries(pg_url) == []
            # The ledger refuses a record, after a good one: no feed entry either.
            admin.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse_c {condition}")
            with pytest.raises(psycopg.errors.CheckViolation):
                writer.record([event("B"), event("C")])
            admin.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse_c")
            assert held() == 0 and _entries(pg_url) == []
        # Both, once; a redelivery adds neither.
        assert writer.record([event("A")]) == [event("A")]
        assert writer.record([event("A")]) == []
        (part, pos, body), *more = _entries(pg_url)
        assert held() == 1 and more == [] and pos is None  # numbered by the reader, once committed
        site = event("A").site_id
        assert part == partition_of(site, PARTS) and site in body
    finally:
        if kind != "tank":
            writer.close()
        store.close()


# -- poison entries -------------------------------------------------------------------------------


def _poison(url: str, part: int, bodies: list[str], committed_ms: int) -> list[int]:
    """Append entries already numbered after the head, as a reader numbers them; their positions."""
    with psycopg.connect(url) as conn:
        (head,) = conn.execute(
            "UPDATE feed_heads SET pos = pos + %s WHERE part = %s RETURNING pos",
            (len(bodies), part),
        ).fetchone()
        first = head - len(bodies) + 1
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO feed_entries (part, pos, body, committed_ms) VALUES (%s, %s, %s, %s)",
                [(part, first + i, b, committed_ms) for i, b in enumerate(bodies)],
            )
    return list(range(first, head + 1))


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith(name + " ")))


@needs_mosquitto
def test_a_poison_entry_is_set_aside_and_the_worker_goes_on(tmp_path: Path):
    parts = load_feed_settings().partitions
    part = partition_of(HOSPITAL, parts)
    with deployment(tmp_path) as (d, url, publisher):
        metrics = free_port()
        worker = d.alerts(1, metrics_port=metrics)
        wait_until(lambda: _metric(metrics, "landun_alerts_partitions_held") == parts, 60, "held")
        now = now_ms()
        good = Reading(ROOM, HOSPITAL, "room_temperature", now - MIN, 18.0, "N", now, 1)
        failing = good._replace(ts_ms=now - 2 * MIN, value="warm")  # decodes, cannot be judged
        bodies = [
            "{not json",  # damaged
            orjson.dumps({"r": [[ROOM, HOSPITAL]]}).decode(),  # a reading of two fields
            orjson.dumps(encode_entry([failing], [], [])).decode(),
            orjson.dumps(encode_entry([good], [], [])).decode(),  # judged with the one before
        ]
        positions = _poison(url, part, bodies, now - MIN)
        appended = time.monotonic()
        cursor = f"SELECT pos FROM feed_cursors WHERE part = {part}"
        wait_until(
            lambda: query(url, cursor)[0][0] == positions[-1], 60, "past the poison", step=0.05
        )
        print(f"past three poison entries and a good one in {time.monotonic() - appended:.2f} s")
        letters = query(
            url,
            "SELECT topic, device_id, reason, raw FROM dead_letters WHERE source = %s ORDER BY id",
            (POISON_SOURCE,),
        )
        assert [t for t, *_ in letters] == [f"feed/{part}/{p}" for p in positions[:3]]
        reasons = [r for _, _, r, _ in letters]
        assert reasons[0].startswith(f"feed entry {part}/{positions[0]} set aside: cannot be"
                                     " decoded: JSONDecodeError")  # fmt: skip
        assert "cannot be decoded: TypeError" in reasons[1]
        assert (
            "set aside: ValueError: could not convert" in reasons[2]
            and "warm" in bytes(letters[2][3]).decode()
        )
        assert bytes(letters[0][3]) == b"{not json" and letters[2][1] == ROOM
        assert _metric(metrics, "landun_alerts_poison_total") == 3
        # Logged once each, and the worker goes on with new events.
        log = worker.text()
        assert [log.count(f"feed entry {part}/{p} set aside") for p in positions[:3]] == [1, 1, 1]
        d.ingest(1)
        _custody_fault(publisher, now)
        wait_until(lambda: "custody:weight_loss" in _alerts(url), 60, "the custody alert")
        assert _metric(metrics, "landun_alerts_poison_total") == 3
