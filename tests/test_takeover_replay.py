"""A worker taking a partition over rebuilds its detectors from the stored readings before it
follows the feed: an alert worker is killed with SIGKILL in the middle of a stuck-sensor episode
(the detector needs 50 minutes of identical readings), another takes its partitions, and the
stuck alerts it raises are those a single `landun run` raises on the same messages: same
devices, same first reading. Without the replay the survivor would count the episode afresh
from the take-over and open each alert 40 minutes late."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from landun.broker import free_port
from store.feed import load_feed_settings
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.postgres import fresh_database
from tests.roles_rig import (
    MINUTE,
    T0,
    Deployment,
    Paced,
    feed_behind,
    partition_holders,
    query,
    readings_stored,
    single_run,
    wait_until,
    write_registry,
)

DEVICES = 6
STUCK_FROM = 10  # sensor minute from which the stuck devices repeat one free chlorine value
KILL_AT = 40  # the minute before which the first worker judged everything, then is killed
MINUTES = 100
RATE = 100.0


def _messages(devices: list[str], stuck: set[str]) -> list[tuple[str, bytes]]:
    rng = random.Random(5)
    out = []
    for k in range(MINUTES):
        for dev in devices:
            frozen = dev in stuck and k >= STUCK_FROM
            values = {
                "free_chlorine": 0.55 if frozen else round(rng.gauss(0.6, 0.03), 2),
                "ph": round(rng.gauss(7.4, 0.02), 2),
                "turbidity": round(abs(rng.gauss(0.3, 0.03)), 2),
                "orp": round(rng.gauss(710, 4)),
                "temperature": round(rng.gauss(27.0, 0.1), 1),
            }
            body = {"ts": T0 + k * MINUTE, "seq": k, "values": values}
            out.append((dev, json.dumps(body, separators=(",", ":")).encode()))
    return out


def _stuck_alerts(url: str) -> set[tuple[str, str, int]]:
    sql = "SELECT device_id, rule_id, first_ms FROM alerts WHERE rule_id LIKE %s"
    return set(query(url, sql, ("%stuck%",)))


@pytest.mark.skipif(not have_mosquitto(), reason="needs the mosquitto binary")
def test_a_survivor_replays_stored_readings_into_its_detectors(tmp_path: Path) -> None:
    parts = load_feed_settings().partitions
    broker = MosquittoBroker(tmp_path, persistence=True)
    broker.start()
    devices = write_registry(tmp_path / "registry.toml", DEVICES)
    stuck = set(devices[:3])
    msgs = _messages(devices, stuck)
    split = KILL_AT * DEVICES
    with fresh_database() as url, fresh_database() as single_url:
        d = Deployment(tmp_path, url, broker.url, tmp_path / "registry.toml")
        single = single_run(
            tmp_path, single_url, broker.url, tmp_path / "registry.toml", free_port()
        )
        publisher = None
        try:
            single.start().wait_for("Landun is running")
            d.ingest(1)
            first = d.alerts(1)
            wait_until(lambda: partition_holders(url) == (parts, 1), 60, "one worker holding all")
            publisher = Paced(broker.port)
            publisher.run(msgs[:split], RATE)
            wait_until(lambda: readings_stored(url) >= split * 5, 120, "the first part stored")
            wait_until(lambda: feed_behind(url) == 0, 120, "the first part judged")
            first.kill()
            d.alerts(2)
            wait_until(lambda: partition_holders(url) == (parts, 1), 60, "the survivor holding")
            publisher.run(msgs[split:], RATE)
            wait_until(lambda: readings_stored(url) >= len(msgs) * 5, 120, "every reading stored")
            wait_until(lambda: feed_behind(url) == 0, 120, "the feed judged")
            wait_until(
                lambda: readings_stored(single_url) >= len(msgs) * 5, 120, "the single run's"
            )
            wait_until(lambda: len(_stuck_alerts(single_url)) == len(stuck), 30, "single alerts")
            expected = _stuck_alerts(single_url)
            assert {dev for dev, _, _ in expected} == stuck
            # Sooner than 50 minutes after the kill: only with the readings the killed worker
            # judged (replayed) can the survivor see the 50 minutes.
            assert all(first_ms < T0 + (KILL_AT + 50) * MINUTE for _, _, first_ms in expected)
            assert _stuck_alerts(url) == expected
            assert "stored readings replayed" in d.logs()
            assert "Traceback" not in d.logs()
        finally:
            if publisher is not None:
                publisher.close()
            d.stop()
            single.stop()
            broker.stop()
