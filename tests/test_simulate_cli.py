"""`landun simulate` against a running system: simulated time, scenario, ground truth."""

from __future__ import annotations

import json

from domain.registry import load_registry
from landun.cli import main
from landun.demo import demo_registry_path
from tests.conftest import wait_for


def test_simulate_replays_faster_than_real_time_into_the_system(system, broker, tmp_path):
    truth = tmp_path / "truth.json"
    rc = main(
        [
            "simulate", "--broker", broker.url, "--registry", str(demo_registry_path()),
            "--sites", "2", "--speed", "3600", "--duration", "40m", "--seed", "3",
            "--scenario", "sensor_stuck", "--ground-truth", str(truth),
        ]
    )  # fmt: skip
    assert rc == 0
    # 40 simulated minutes of 2 pools x 6 parameters, reported every minute.
    for device in ("pool-cn-01-wq", "pool-cn-02-wq"):  # the first two pools by id
        wait_for(
            lambda d=device: (
                len(system.http.get("/api/v1/readings", params={"device": d}).json()) >= 39 * 6
            ),
            what=f"readings of {device}",
        )
    records = json.loads(truth.read_text())
    assert records and records[0]["kind"] == "stuck"
    assert records[0]["device_id"] == "pool-cn-01-wq"


def test_registry_out_describes_the_simulated_devices(tmp_path):
    out = tmp_path / "sim.toml"
    # A zero duration connects to nothing and publishes nothing: only the registry is written.
    rc = main(["simulate", "--sites", "3", "--registry-out", str(out), "--duration", "0s"])
    assert rc == 0
    reg = load_registry(out)
    assert sorted(reg.devices) == ["sim-pool-001-wq", "sim-pool-002-wq", "sim-pool-003-wq"]
    assert reg.devices["sim-pool-001-wq"].parameters[0] == "free_chlorine"
