"""Retention in a running Landun: the housekeeping thread applies the readings retention and the
dead-letter retention when due (store/data/retention.toml), on a fixed clock here, and in a
whole system on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing, nullcontext
from pathlib import Path

import psycopg
import pytest

from domain.model import Alert, AlertFamily, DeadLetter, Reading, Severity
from domain.timeutil import now_ms
from landun.housekeeping import Housekeeper, retention_jobs
from store.base import AlertChange, ReadingQuery, Store
from store.postgres.store import PostgresStore
from store.retention import (
    DAY_MS,
    HOUR_MS,
    ReadingRetention,
    load_every_hours,
    load_retention_settings,
)
from store.sqlite import SqliteStore, connect_readonly
from tests.conftest import demo_config, start_system, wait_for
from tests.postgres import fresh_database

NOW = 1_795_334_400_000  # 2026-11-22 00:00 UTC, the fixed clock
MINUTE = 60_000
TOPIC = "landun/v1/devices/d1/telemetry"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        with fresh_database() as url:
            pg = PostgresStore(url)
            yield pg
            pg.close()
        return
    lite = SqliteStore(tmp_path / "landun.db")
    yield lite
    lite.close()


def _readings(device: str, start_ms: int, n: int) -> list[Reading]:
    return [
        Reading(device, "s1", "ph", start_ms + i * MINUTE, 7.0, recv_ms=start_ms) for i in range(n)
    ]


def _ph(store: Store, device: str) -> list[Reading]:
    return store.query_readings(ReadingQuery(device_id=device, limit=10_000))


def test_the_settings_are_data() -> None:
    assert load_retention_settings().raw_days >= 366, "a year's inspection finds its readings"
    assert load_every_hours() >= 1


def test_retention_runs_when_due_on_a_fixed_clock(store: Store) -> None:
    settings = load_retention_settings()
    old_start = NOW - (settings.raw_days + 100) * DAY_MS
    old, recent = _readings("d1", old_start, 60), _readings("d1", NOW - DAY_MS, 10)
    store.write_batch(old + recent)
    # An alert whose window holds ten old readings: they are its evidence.
    alert = Alert("s1", "d1", "range:ph", AlertFamily.COMPLIANCE, Severity.WARNING, "ph",
                  "pH high", old_start + 20 * MINUTE, old_start + 29 * MINUTE)  # fmt: skip
    store.save_alerts([AlertChange(alert, "opened")])
    raw_days_ago = (settings.raw_days + 100) * DAY_MS
    store.write_batch([], [DeadLetter(TOPIC, "d1", NOW - raw_days_ago, "not JSON", b"x" * 50)])
    clock = [NOW]
    housekeeper = Housekeeper(retention_jobs(store, clock=lambda: clock[0]), tick_s=3600)

    housekeeper.run_due()
    assert _ph(store, "d1") == old[20:30] + recent, "evidence and recent readings stay"
    hours = store.downsample("d1", ["ph"], old_start, old_start + HOUR_MS, HOUR_MS)
    assert [(b.count, b.mean) for b in hours] == [(60, pytest.approx(7.0))], "rolled up"
    assert store.dead_letters() == [] and store.dead_letter_counts() == {"not JSON": 1}

    # More old readings arrive (a device's offline buffer): not due again within every_hours.
    late = _readings("d2", old_start, 5)
    store.write_batch(late)
    clock[0] = NOW + load_every_hours() * HOUR_MS - 1
    housekeeper.run_due()
    assert _ph(store, "d2") == late
    clock[0] += 1
    housekeeper.run_due()
    assert _ph(store, "d2") == []
    assert _ph(store, "d1") == old[20:30] + recent


def test_a_failing_job_is_logged_and_the_others_still_run(caplog) -> None:
    runs: list[int] = []
    ran_twice = threading.Event()

    class Failing:
        def maybe_run(self) -> None:
            raise RuntimeError("disk on fire")

    class Counting:
        def maybe_run(self) -> None:
            runs.append(1)
            if len(runs) >= 2:
                ran_twice.set()

    housekeeper = Housekeeper([Failing(), Counting()], tick_s=0.01)
    housekeeper.start()
    try:
        assert ran_twice.wait(10), "the thread lives on after a failure"
    finally:
        housekeeper.stop()
    assert "Failing failed" in caplog.text


def test_retention_waits_for_its_interval_after_a_failure() -> None:
    calls = []

    class Down:
        def apply_retention(self, now_ms, settings):
            calls.append(now_ms)
            raise RuntimeError("database away")

    clock = [NOW]
    job = ReadingRetention(Down(), every_hours=24, clock=lambda: clock[0])
    with pytest.raises(RuntimeError):
        job.maybe_run()
    clock[0] += HOUR_MS
    assert job.maybe_run() is None, "not retried at every tick"
    assert calls == [NOW]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_landun_run_applies_the_retention(backend: str, broker, tmp_path: Path) -> None:
    """Readings past raw_days in the store when Landun starts are gone a tick later."""
    old_start = now_ms() - (load_retention_settings().raw_days + 30) * DAY_MS
    old = _readings("retired-device", old_start, 30)
    data_dir = tmp_path / "var"
    with fresh_database() if backend == "postgres" else nullcontext() as url:
        seeded = PostgresStore(url) if url else SqliteStore(data_dir / "landun.db")
        try:
            seeded.write_batch(old)
        finally:
            seeded.close()
        cfg = demo_config(broker.url, data_dir, f"landun-{tmp_path.name}", database_url=url,
                          tick_s=0.2)  # fmt: skip
        running = start_system(cfg)
        try:
            wait_for(lambda: _count_old(data_dir, url) == 0, 30, "old readings removed")
        finally:
            running.stop()


def _count_old(data_dir: Path, url: str | None) -> int:
    sql = "SELECT count(*) FROM readings_all WHERE device_id = 'retired-device'"
    if url:
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchone()[0]
    with closing(connect_readonly(data_dir / "landun.db")) as conn:
        return conn.execute(sql).fetchone()[0]
