"""The pool model: reproducible, clean within GB 37488-2019, and each fault showing its effect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulators.faults import Fault, FaultKind
from simulators.ground_truth import ground_truth, write_ground_truth
from simulators.pool_model import MS_PER_H, PoolModel, Sample, is_open
from simulators.scenarios import list_scenarios, load_scenario

MONDAY = 1_795_363_200_000  # 2026-11-23 00:00 Asia/Shanghai, a Monday
MINUTE = 60_000
DAY = 24 * MS_PER_H

# GB 37488-2019, artificial swimming pools.
LIMITS = {
    "free_chlorine": (0.3, 1.0),
    "combined_chlorine": (0.0, 0.4),
    "ph": (7.0, 7.8),
    "turbidity": (0.0, 1.0),
    "orp": (650.0, float("inf")),
}


def run(model: PoolModel, start_ms: int, minutes: int) -> list[Sample | None]:
    return [model.sample(start_ms + i * MINUTE) for i in range(minutes)]


def series(samples: list[Sample | None], name: str) -> np.ndarray:
    return np.array([s.values[name] for s in samples if s is not None])


def fault_run(kind: str, start_h: float, hours: float, total_h: float, **params):
    fault = Fault(
        FaultKind(kind),
        MONDAY + int(start_h * MS_PER_H),
        MONDAY + int((start_h + hours) * MS_PER_H),
        params,
    )
    model = PoolModel("pool-1", 11, faults=[fault], start_ms=MONDAY)
    return fault, run(model, MONDAY, int(total_h * 60))


def test_same_seed_same_samples_different_seed_different() -> None:
    times = [MONDAY + i * 47_000 + (i % 3) * 5_000 for i in range(300)]
    first, second, other = PoolModel("p", 1), PoolModel("p", 1), PoolModel("p", 2)
    a = [first.sample(t) for t in times]
    b = [second.sample(t) for t in times]
    c = [other.sample(t) for t in times]
    assert a == b
    assert a != c


def test_device_id_separates_pools_sharing_a_seed() -> None:
    assert PoolModel("a", 1).sample(MONDAY) != PoolModel("b", 1).sample(MONDAY)


def test_irregular_and_large_steps_are_accepted() -> None:
    model = PoolModel("p", 3, start_ms=MONDAY)
    for t in (MONDAY, MONDAY + 1, MONDAY + 1, MONDAY + 5 * MS_PER_H, MONDAY + 3 * DAY):
        sample = model.sample(t)
        assert sample is not None and sample.ts_ms == t
    with pytest.raises(ValueError):
        model.sample(MONDAY)


@pytest.mark.parametrize("indoor", [True, False])
def test_clean_week_stays_within_gb37488(indoor: bool) -> None:
    samples = run(PoolModel("pool-7", 7, indoor=indoor, start_ms=MONDAY), MONDAY, 7 * 24 * 60)
    assert all(s is not None and not s.flags for s in samples)
    for name, (low, high) in LIMITS.items():
        values = series(samples, name)
        assert low <= values.min() and values.max() <= high, name
    free = series(samples, "free_chlorine")
    # Comfortably inside, and alive: the chlorine moves with the load and the controller.
    assert free.min() >= 0.4 and free.max() <= 0.9
    assert free.std() > 0.02
    assert np.corrcoef(free, series(samples, "orp"))[0, 1] > 0.2
    temperature = series(samples, "temperature")
    assert temperature.min() >= 23.0 and temperature.max() <= 31.0
    assert (temperature.max() - temperature.min() > 2.0) == (not indoor)


def test_combined_chlorine_and_turbidity_follow_bathers() -> None:
    samples = run(PoolModel("pool-7", 7, start_ms=MONDAY), MONDAY, 24 * 60)
    hour = np.arange(len(samples)) / 60
    turbidity = series(samples, "turbidity")
    combined = series(samples, "combined_chlorine")
    evening, night = (hour >= 19) & (hour < 21), (hour >= 3) & (hour < 5)
    assert turbidity[evening].mean() > turbidity[night].mean() + 0.1
    assert combined[evening].mean() > combined[night].mean() + 0.05


def test_dosing_pump_failure_drops_chlorine_and_orp() -> None:
    _, samples = fault_run("dosing_pump_failure", 16, 8, 26)
    start = 16 * 60
    free = series(samples, "free_chlorine")
    orp = series(samples, "orp")
    assert free[: start - 1].min() > 0.3
    assert (free[start : start + 4 * 60] < 0.3).any()
    assert (orp[start : start + 6 * 60] < 650).any()
    assert free[-60:].min() > 0.3  # dosing catches up after the repair


def test_ph_runaway_leaves_range() -> None:
    _, samples = fault_run("ph_controller_runaway", 10, 4, 14)
    assert (series(samples, "ph")[10 * 60 :] < 7.0).any()
    _, samples = fault_run("ph_controller_runaway", 10, 4, 14, direction="up", rate_ph_per_h=0.2)
    assert (series(samples, "ph")[10 * 60 :] > 7.8).any()


def test_filtration_failure_raises_turbidity() -> None:
    _, samples = fault_run("filtration_failure", 10, 6, 16)
    turbidity = series(samples, "turbidity")
    assert turbidity[: 10 * 60].max() < 1.0
    assert (turbidity[10 * 60 : 14 * 60] > 1.0).any()


def test_stuck_sensor_repeats_exactly() -> None:
    _, samples = fault_run("sensor_stuck", 10, 2, 13)
    free = series(samples, "free_chlorine")
    assert len(set(free[10 * 60 : 12 * 60])) == 1
    assert free[10 * 60] == free[10 * 60 - 1]
    assert len(set(free[12 * 60 :])) > 1
    assert all(not s.flags for s in samples if s is not None)


def test_drift_offsets_the_reading_only() -> None:
    clean = run(PoolModel("pool-1", 11, start_ms=MONDAY), MONDAY, 12 * 60)
    _, drifted = fault_run("sensor_drift", 2, 10, 12, parameter="orp", rate_per_h=-2.0)
    difference = series(drifted, "orp") - series(clean, "orp")
    assert difference[: 2 * 60].max() == 0
    assert difference[11 * 60] == pytest.approx(-18.0, abs=1.0)
    assert np.array_equal(series(drifted, "ph"), series(clean, "ph"))


def test_calibration_is_flagged_c_with_the_buffer_value() -> None:
    _, samples = fault_run("calibration", 10, 0.5, 11, parameter="ph", reference_value=6.86)
    during = samples[10 * 60 : 10 * 60 + 30]
    assert all(s is not None and s.flags == {"ph": "C"} for s in during)
    assert all(abs(s.values["ph"] - 6.86) < 0.05 for s in during if s is not None)
    assert all(s is not None and not s.flags for s in samples[10 * 60 + 30 :])


def test_analyzer_off_silent_only_while_open() -> None:
    _, samples = fault_run("analyzer_off", 0, 48, 48)
    for i, sample in enumerate(samples):
        assert (sample is None) == is_open(MONDAY + i * MINUTE)


def test_clock_skew_offsets_reported_time() -> None:
    fault, samples = fault_run("clock_skew", 2, 1, 4, offset_min=-30.0)
    for i, sample in enumerate(samples):
        assert sample is not None
        t = MONDAY + i * MINUTE
        assert sample.ts_ms - t == (-30 * MINUTE if fault.active(t) else 0)


def test_replay_repeats_an_earlier_day_exactly() -> None:
    _, samples = fault_run("replay", 30, 30, 60)
    start = 30 * 60
    for i in range(start, 60 * 60):
        loop = (i - start) % (24 * 60)
        assert samples[i].values == samples[start - 24 * 60 + loop].values
    assert samples[start].values != samples[start - 1].values


def test_intermittent_connectivity_drops_about_the_loss_fraction() -> None:
    _, samples = fault_run("intermittent_connectivity", 1, 24, 26, loss_fraction=0.3)
    window = samples[60 : 25 * 60]
    lost = sum(s is None for s in window) / len(window)
    assert 0.15 < lost < 0.45
    assert all(s is not None for s in samples[:60] + samples[25 * 60 :])


def test_unknown_fault_parameter_is_rejected() -> None:
    with pytest.raises(ValueError):
        Fault(FaultKind.SENSOR_STUCK, 0, 1, {"paramter": "ph"})


@pytest.mark.parametrize("name", list_scenarios())
def test_scenario_loads_and_ground_truth_is_well_formed(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    devices = [("site-1", "pool-1"), ("site-2", "pool-2")]
    records = ground_truth(scenario, MONDAY + 9 * MS_PER_H, devices)
    if scenario.fault is None:
        assert records == [] and scenario.expected == ()
        return
    assert records and scenario.expected
    for record in records:
        assert record["scenario"] == name
        assert (record["site_id"], record["device_id"]) in devices
        assert record["family"] in ("compliance", "integrity")
        assert record["start_ms"] < record["end_ms"]
        if record["family"] == "compliance":
            assert record["kind"] == f"range:{record['parameter']}"
    path = tmp_path / "truth.json"
    write_ground_truth(path, records)
    written = json.loads(path.read_text())
    assert len(written) == len(records)
    assert all(row["start"].endswith("Z") and row["end"].endswith("Z") for row in written)


def test_scenarios_cover_the_required_set() -> None:
    assert set(list_scenarios()) == {
        "clean",
        "dosing_pump_failure",
        "ph_runaway",
        "filtration_failure",
        "sensor_stuck",
        "sensor_drift",
        "calibration",
        "analyzer_off_opening_hours",
        "replayed_perfect_data",
        "intermittent_connectivity",
        "clock_skew",
        "water_clean",
        "water_dosing_failure",
        "water_turbidity_event",
        "water_sensor_stuck",
        "water_analyzer_off",
    }


def test_analyzer_off_ground_truth_follows_opening_hours() -> None:
    scenario = load_scenario("analyzer_off_opening_hours")
    records = ground_truth(scenario, MONDAY, [("site-1", "pool-1")])
    assert [(r["start_ms"] - MONDAY) / MS_PER_H for r in records] == [6.0, 30.0]
    assert [(r["end_ms"] - MONDAY) / MS_PER_H for r in records] == [22.0, 46.0]


def test_scenario_faults_drive_the_model() -> None:
    scenario = load_scenario("dosing_pump_failure")
    run_start = MONDAY + 9 * MS_PER_H
    (fault,) = scenario.faults_for(0, run_start)
    assert scenario.faults_for(1, run_start) == []
    assert fault.start_ms == MONDAY + 16 * MS_PER_H  # aligned to 16:00 local
    samples = run(PoolModel("pool-1", 5, faults=[fault], start_ms=run_start), run_start, 12 * 60)
    assert (series(samples, "free_chlorine") < 0.3).any()
