"""Simulated scenarios through the real ingest pipeline and alert engine (landun.evaluate).

Small runs to stay fast; `landun eval-scenarios` gives the full figures."""

from __future__ import annotations

from alerts.standards import builtin_profiles
from domain.model import AlertFamily
from domain.timeutil import iso_to_ms
from landun.evaluate import PROFILE, RunSettings, aligned_end_ms, run_scenario, score
from simulators.scenarios import load_scenario

# A fixed simulated span: what a scenario tests must not change with the day CI runs on.
END_MS = aligned_end_ms(iso_to_ms("2026-12-07T08:00:00+08:00"))
ADVISORY = {p for p, limit in builtin_profiles()[PROFILE].limits.items() if limit.advisory}


def run(name: str, pools: int, days: float, seed: int = 1):
    return run_scenario(load_scenario(name), RunSettings(pools, days, seed, END_MS))


def test_clean_pools_raise_no_alert() -> None:
    # Three pools (the second one outdoor, with its daily temperature cycle) for two days.
    result = run("clean", pools=3, days=2)
    families = {AlertFamily.COMPLIANCE, AlertFamily.INTEGRITY, AlertFamily.QUALITY}
    # An advisory limit (water temperature 23-30 degC) is information, not a finding: an outdoor
    # pool's water does pass 30 degC on warm afternoons, in the model as in summer. Such alerts
    # are water-quality information, never compliance.
    advisory = [a for a in result.alerts if a.parameter in ADVISORY]
    assert all(a.family is AlertFamily.QUALITY for a in advisory)
    raised = [(a.device_id, a.rule_id) for a in result.alerts if a.family in families]
    assert [r for r in raised if r[1] not in {f"range:{p}" for p in ADVISORY}] == []


def test_dosing_pump_failure_raises_free_chlorine_range_in_time() -> None:
    figures = score(run("dosing_pump_failure", pools=1, days=1))
    assert figures["kinds"]["range:free_chlorine"]["recall"] == 1.0
    assert figures["kinds"]["range:free_chlorine"]["median_ttd_min"] <= 270
    # Chlorine and ORP fall together when the pump stops: the water, not a drifting electrode.
    assert "drift" not in figures["kinds"]


def test_stuck_sensor_is_found() -> None:
    figures = score(run("sensor_stuck", pools=1, days=0.5))
    assert figures["kinds"]["stuck"]["recall"] == 1.0
    assert figures["false_positives"] == 0


def test_analyzer_off_while_open_raises_offline_each_day() -> None:
    figures = score(run("analyzer_off_opening_hours", pools=1, days=1))
    offline = figures["kinds"]["offline"]
    assert offline["expected"] == 2 and offline["recall"] == 1.0  # 09:00-22:00 and 06:00-09:00


def test_same_seed_same_alerts() -> None:
    def alerts(seed: int) -> list[tuple]:
        result = run("sensor_stuck", pools=2, days=0.5, seed=seed)
        return [(a.device_id, a.rule_id, a.opened_ms, a.first_ms, a.count) for a in result.alerts]

    first = alerts(3)
    assert first and alerts(3) == first


def test_replayed_perfect_data_is_found_as_tampering() -> None:
    # The multi-parameter detectors see every valid row, not only rows a single-series detector
    # had something to say about (a regression once starved them).
    figures = score(run("replayed_perfect_data", pools=1, days=2))
    assert figures["kinds"]["tampering"]["recall"] == 1.0


def test_a_clock_running_ahead_is_found_from_the_refused_readings() -> None:
    figures = score(run("clock_skew", pools=1, days=2))
    assert figures["kinds"]["clock_skew"]["recall"] == 1.0
    assert figures["dead_letters"] > 0  # the readings themselves are refused, with the reason
    assert "offline" not in figures["kinds"]  # refused, yet heard: its link works


def test_slow_orp_electrode_drift_is_found_within_its_allowance() -> None:
    figures = score(run("sensor_drift", pools=1, days=2, seed=2))
    drift = figures["kinds"]["drift"]
    assert drift["recall"] == 1.0 and drift["median_ttd_min"] <= 720


def test_orp_following_ph_back_after_a_runaway_raises_no_drift() -> None:
    # The runaway starts before the drift reference is warm, so the reference holds it; ORP
    # returning with pH, hours after pH is back inside its limits, is the water, not a drift.
    figures = score(run("ph_runaway", pools=1, days=2))
    assert figures["kinds"]["range:ph"]["recall"] == 1.0
    assert "drift" not in figures["kinds"]
