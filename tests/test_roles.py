"""Separate roles as OS processes: Mosquitto, PostgreSQL, 2 `landun ingest`, 2 `landun alerts`
and `landun api`, with one ingest and one alert worker killed with SIGKILL mid-stream and the api
killed and restarted. Every reading is stored once, the range alerts are those a single
`landun run` finds on the same messages (it listens on the same broker at the same time), no
alert is written twice, nothing in any log says IntegrityError or "hook failed", and the killed
worker's partitions are taken over. An acknowledgement through one api shows in another, and in
its live stream.

The full-size run (20,000 messages) is bench/roles.py; here 2,000 keep CI short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landun.broker import free_port
from store.feed import load_feed_settings
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.postgres import fresh_database
from tests.roles_rig import (
    Deployment,
    Paced,
    Role,
    Watch,
    alerts_written_twice,
    feed_behind,
    login,
    messages,
    partition_holders,
    range_alerts,
    readings_stored,
    single_run,
    wait_until,
    write_registry,
)

DEVICES = 20
TOTAL = 2_000  # 100 minutes of sensor time per device
OVER = 8  # devices far below the free chlorine limit in each episode
# Sensor minutes of the two episodes: each longer than the 10 min pending time, and each with
# its edges well away from the minutes around the kills (40-60); the second still open at the end.
EPISODES = [(5, 22), (68, 95)]
# Messages a second: a device's consecutive messages 200 ms apart, so the two ingest processes
# rarely commit them out of order even on a loaded machine (docs/deployment.md, known limits).
RATE = 100.0


@pytest.mark.skipif(not have_mosquitto(), reason="needs the mosquitto binary")
def test_separate_roles_survive_kill_9(tmp_path: Path) -> None:
    parts = load_feed_settings().partitions
    broker = MosquittoBroker(tmp_path, persistence=True)
    broker.start()
    devices = write_registry(tmp_path / "registry.toml", DEVICES)
    msgs = messages(devices, TOTAL, set(devices[:OVER]), EPISODES)
    with fresh_database() as url, fresh_database() as single_url:
        d = Deployment(tmp_path, url, broker.url, tmp_path / "registry.toml")
        single = single_run(
            tmp_path, single_url, broker.url, tmp_path / "registry.toml", free_port()
        )
        publisher = None
        try:
            single.start().wait_for("Landun is running")
            ingest = [d.ingest(1), d.ingest(2)]
            workers = [d.alerts(1), d.alerts(2)]
            api_port = free_port()
            api = d.api(1, api_port)
            wait_until(lambda: partition_holders(url) == (parts, 2), 60, "two workers sharing")
            takeover = Watch(lambda: partition_holders(url) == (parts, 1))
            restarted: list[Role] = []

            def at(i: int) -> None:
                if i == TOTAL * 45 // 100:
                    ingest[0].kill()
                    api.kill()
                elif i == TOTAL * 50 // 100:
                    workers[0].kill()
                    takeover.start_timer()
                elif i == TOTAL * 55 // 100:
                    # An orchestrator restarts what died: the ingest session's unacknowledged
                    # messages come back with it; the api is stateless.
                    restarted.append(d.ingest(1))
                    restarted.append(d.api(1, api_port))

            publisher = Paced(broker.port)
            publisher.run(msgs, RATE, at)
            wait_until(lambda: readings_stored(url) >= TOTAL * 5, 120, "every reading stored")
            wait_until(lambda: feed_behind(url) == 0, 120, "the feed evaluated")
            wait_until(
                lambda: readings_stored(single_url) >= TOTAL * 5, 120, "the single run's readings"
            )
            takeover.join(timeout=60)

            assert readings_stored(url) == TOTAL * 5
            # Taken over at all (Watch gives up after 120 s); how fast is bench/roles.py's figure.
            assert takeover.took is not None, "the killed worker's partitions were not taken"
            print(f"partitions taken over in {takeover.took:.2f} s")
            expected = range_alerts(single_url)
            # Both episodes of every over-limit device, no more.
            assert len(expected) == OVER * len(EPISODES)
            # The single run settles its last batch on its own time.
            time.sleep(1)
            assert range_alerts(url) == range_alerts(single_url)
            assert alerts_written_twice(url) == []
            logs = d.logs()
            assert "IntegrityError" not in logs
            assert "hook failed" not in logs
            assert "Traceback" not in logs

            # An acknowledgement through one api shows in another.
            other = d.api(2, free_port())
            one = login(api_port, tmp_path)
            two = login(int(other.args[other.args.index("--port") + 1]), tmp_path)
            open_now = one.get("/api/v1/alerts", params={"status": "open"}).json()
            target = next(a for a in open_now if a["rule_id"].startswith("range:"))
            # The other api's live stream hears of it (PostgreSQL NOTIFY rings its bell).
            with two.stream("GET", "/api/v1/alerts/stream") as events:
                lines = events.iter_lines()
                assert next(lines).startswith("retry:")
                r = one.post(f"/api/v1/alerts/{target['id']}/acknowledge", json={"comment": "seen"})
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "acknowledged"
                heard = next(line for line in lines if line.startswith("data:"))
                event = json.loads(heard.removeprefix("data:"))
                assert (event["action"], event["alert"]["id"]) == ("acknowledged", target["id"])
            seen = two.get(f"/api/v1/alerts/{target['id']}").json()
            assert seen["status"] == "acknowledged"
            again = two.post(f"/api/v1/alerts/{target['id']}/acknowledge", json={"comment": ""})
            assert again.status_code == 409
        finally:
            if publisher is not None:
                publisher.close()
            d.stop()
            single.stop()
            broker.stop()


@pytest.mark.parametrize("role", ["ingest", "alerts", "api"])
def test_a_role_without_postgresql_says_so_in_one_line(role: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LANDUN_DATABASE_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "landun.cli", role, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"landun {role}: {role} runs beside other processes and needs PostgreSQL: give"
        " --database postgresql://... (or LANDUN_DATABASE_URL); for one process on SQLite use"
        " landun run"
    ]
