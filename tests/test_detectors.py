"""Streaming detectors: faults fire where injected, clean pool data is silent, batch == stream."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from alerts.detectors import (
    EventDetector,
    InconsistencyDetector,
    OfflineMonitor,
    SeriesDetectors,
    load_detector_settings,
    overdue_mask,
)
from alerts.detectors.settings import OfflineSettings

MINUTE = 60_000
DAY = 1440
T0 = 1_795_334_400_000  # 2026-11-22T00:00Z
# Realistic pool readings: (mean, sd, display resolution).
POOL = {
    "free_chlorine": (0.6, 0.03, 0.01),
    "ph": (7.4, 0.02, 0.01),
    "orp": (700.0, 5.0, 1.0),
    "turbidity": (0.3, 0.03, 0.01),
    "temperature": (27.0, 0.05, 0.1),
}

SETTINGS = load_detector_settings()


def minutes(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * MINUTE


def clean(parameter: str, n: int = DAY, seed: int = 0) -> np.ndarray:
    mean, sd, res = POOL[parameter]
    rng = np.random.default_rng(seed + sum(map(ord, parameter)))
    return np.round((mean + sd * rng.standard_normal(n)) / res) * res


def active_at(parameter: str, values: np.ndarray, kind: str) -> np.ndarray:
    out = SeriesDetectors(parameter, SETTINGS).update_many(minutes(len(values)), values)
    return np.flatnonzero(out[kind]["active"])


@pytest.mark.parametrize("parameter", sorted(POOL))
def test_clean_day_is_silent(parameter: str) -> None:
    out = SeriesDetectors(parameter, SETTINGS).update_many(minutes(DAY), clean(parameter))
    for kind, res in out.items():
        assert not res["active"].any(), f"{kind} fired on clean {parameter}"


def test_clean_day_silent_for_event_and_consistency() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    event = EventDetector(params, SETTINGS.event_profile("pool"))
    assert not event.update_many(minutes(DAY), rows)["active"].any()
    inc = InconsistencyDetector(SETTINGS.inconsistency)
    assert not inc.update_many(minutes(DAY), clean("orp"), clean("free_chlorine"))["active"].any()


def test_stuck_sensor_fires_after_its_minutes_and_clears() -> None:
    x = clean("free_chlorine")
    x[600:720] = 0.55  # the analyzer freezes at one value for two hours
    hits = active_at("free_chlorine", x, "stuck")
    # The configured minutes after the first frozen reading (one reading a minute).
    assert hits[0] == 600 + int(SETTINGS.for_parameter("free_chlorine").stuck.min_minutes)
    assert hits[-1] == 719


def test_spike_fires_on_the_spike_only() -> None:
    x = clean("free_chlorine")
    x[800] += 0.5
    assert active_at("free_chlorine", x, "spike").tolist() == [800]


def test_level_shift_detected_soon_after_onset() -> None:
    x = clean("ph")
    x[700:] += 0.15  # ~7 sd step, e.g. a recalibration error
    hits = active_at("ph", x, "drift")
    assert 700 <= hits[0] <= 715


def test_slow_drift_detected() -> None:
    x = clean("free_chlorine")
    x[600:] -= np.linspace(0.0, 0.3, DAY - 600)  # electrode slowly losing sensitivity
    hits = active_at("free_chlorine", x, "drift")
    # Found within the day it started, never before (the reference window is a whole day, so
    # the normal daily cycle of dosing is not mistaken for drift).
    assert len(hits) and 600 < hits[0] < DAY


def test_implausible_band_and_rate() -> None:
    x = clean("orp")
    x[500] = 1400.0  # physically reportable, not plausible in a pool
    assert active_at("orp", x, "implausible").tolist() == [500]
    p = clean("ph")
    p[300:] += 1.0  # one pH unit in one minute: faster than any dosing
    assert active_at("ph", p, "implausible").tolist() == [300]


def test_out_of_band_value_is_withheld_from_statistics() -> None:
    x = clean("orp")
    x[500] = 1400.0
    out = SeriesDetectors("orp", SETTINGS).update_many(minutes(DAY), x)
    assert not out["spike"]["active"].any()
    assert math.isnan(out["spike"]["score"][500])


def test_inconsistent_orp_and_chlorine() -> None:
    orp, cl = clean("orp"), clean("free_chlorine")
    orp[600:] -= np.minimum(np.arange(DAY - 600), 60) * 1.5  # ORP falls 90 mV in an hour
    inc = InconsistencyDetector(SETTINGS.inconsistency)
    hits = np.flatnonzero(inc.update_many(minutes(DAY), orp, cl)["active"])
    assert len(hits) and 600 < hits[0] < 700
    # The same ORP fall with chlorine falling too is consistent.
    cl2 = cl.copy()
    cl2[600:] -= np.minimum(np.arange(DAY - 600), 60) * 0.005
    inc2 = InconsistencyDetector(SETTINGS.inconsistency)
    assert not inc2.update_many(minutes(DAY), orp, cl2)["active"].any()
    # Chlorine near zero (a failed dosing pump): ORP follows the log of its smallest changes,
    # so the same fall is explained, and the evidence says at what level chlorine was.
    low = np.full(DAY, SETTINGS.inconsistency.min_chlorine / 4)
    inc3 = InconsistencyDetector(SETTINGS.inconsistency)
    assert not inc3.update_many(minutes(DAY), orp, low)["active"].any()
    assert (
        inc3.update(int(minutes(DAY + 1)[-1]), orp[-1], low[-1]).evidence["chlorine_level"]
        == low[-1]
    )


def test_water_quality_event_with_persistence_and_release() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    rows[900:930, 0] -= 0.3  # chlorine demand surge: chlorine and ORP fall together
    rows[900:930, 2] -= 80.0
    settings = SETTINGS.event_profile("pool")
    out = EventDetector(params, settings).update_many(minutes(DAY), rows)
    hits = np.flatnonzero(out["active"])
    assert hits[0] == 900 + settings.persist_m - 1
    assert hits[-1] == 929


def test_offline_devices_are_judged_on_the_clock() -> None:
    # Explicit settings: the committed timeout is tuned elsewhere, the mechanism is tested here.
    mon = OfflineMonitor(OfflineSettings(timeout_factor=3.0, min_timeout_s=180.0), capacity=2)
    mon.register("a", 60, T0)
    mon.register("b", 60, T0)
    mon.register("c", 300, T0)
    mon.seen("a", T0 + 10 * MINUTE)
    mon.seen("a", T0 + 5 * MINUTE)  # late flush must not move last-seen back
    mon.seen("c", T0 + 10 * MINUTE)
    now = T0 + 14 * MINUTE
    overdue = {r.evidence["device_id"]: r for r in mon.overdue(now)}
    # a: 4 min silent < 3 min? no: timeout max(3 x 60 s, 180 s) = 3 min -> overdue.
    # b: never seen since registration 14 min ago -> overdue. c: 4 min < 15 min -> fine.
    assert sorted(overdue) == ["a", "b"]
    assert overdue["a"].kind == "offline" and overdue["a"].score == pytest.approx(4 / 3)
    flags, _ = overdue_mask(np.array([now - 100_000]), np.array([60.0]), now, 3.0, 180.0)
    assert not flags[0]


def _with_faults_and_gaps(parameter: str, seed: int) -> np.ndarray:
    x = clean(parameter, seed=seed)
    rng = np.random.default_rng(seed)
    x[rng.choice(DAY, 60, replace=False)] = np.nan
    x[400:470] = x[399]
    x[900] *= 3
    x[1000:] += 4 * POOL[parameter][1]
    x[1200] = -1e6  # outside every band
    return x


def _split_batches(det, ts: np.ndarray, *cols: np.ndarray) -> list[np.ndarray]:
    """update_many over uneven chunks, including 1-row ones."""
    cuts = [0, 1, 7, 150, 151, 700, len(ts)]
    return [det.update_many(ts[a:b], *(c[a:b] for c in cols)) for a, b in itertools.pairwise(cuts)]


@pytest.mark.parametrize("parameter", ["free_chlorine", "ph", "orp"])
def test_series_batch_equals_streaming(parameter: str) -> None:
    x = _with_faults_and_gaps(parameter, seed=3)
    ts = minutes(DAY)
    one = SeriesDetectors(parameter, SETTINGS)
    streamed: dict[str, tuple[list[float], list[bool]]] = {}
    for t, v in zip(ts.tolist(), x.tolist(), strict=True):
        for r in one.update(t, v):
            s, a = streamed.setdefault(r.kind, ([], []))
            s.append(r.score)
            a.append(r.active)
    many = SeriesDetectors(parameter, SETTINGS)
    parts = _split_batches(many, ts, x)
    for kind, (scores, actives) in streamed.items():
        batch = np.concatenate([p[kind] for p in parts])
        np.testing.assert_array_equal(batch["score"], np.array(scores), err_msg=kind)
        np.testing.assert_array_equal(batch["active"], np.array(actives), err_msg=kind)


def test_drift_baseline_refreshed_every_k_readings() -> None:
    """Streaming and batches agree, and the baseline moves only every `refresh_rows` readings."""
    s = SETTINGS.for_parameter("orp")
    shift = dataclasses.replace(s.shift, window=200, lag=30, min_history=30, refresh_rows=7)
    settings = s.replaced(shift=shift)
    x = _with_faults_and_gaps("orp", seed=4)
    ts = minutes(DAY)
    one = SeriesDetectors("orp", settings)
    results = [one.update(t, v)[3] for t, v in zip(ts.tolist(), x.tolist(), strict=True)]
    many = SeriesDetectors("orp", settings)
    batch = np.concatenate([p["drift"] for p in _split_batches(many, ts, x)])
    np.testing.assert_array_equal(batch["score"], [r.score for r in results])
    np.testing.assert_array_equal(batch["active"], [r.active for r in results])
    valid = ~np.isnan(np.where((x >= 100) & (x <= 1000), x, np.nan))
    count = np.cumsum(valid) - valid  # valid readings before each one
    medians = [r.evidence.get("median") for r in results]
    steady = [
        (c, m)
        for c, m, ok in zip(count.tolist(), medians, valid.tolist(), strict=True)
        if ok and c > shift.lag + shift.min_history
    ]
    changes = {c for (c, m), (_, prev) in zip(steady[1:], steady, strict=False) if m != prev}
    assert changes and all(c % 7 == 0 for c in changes)


def test_event_and_consistency_batch_equals_streaming() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([_with_faults_and_gaps(p, seed=5) for p in params])
    rows[1100:1105] = np.nan  # whole rows missing
    rows[600:640, :2] *= 1.5  # an event, so the persistence and hysteresis paths run
    ts = minutes(DAY)
    settings = dataclasses.replace(SETTINGS.event_profile("pool"), window=200, min_history=50)
    one = EventDetector(params, settings)
    streamed = [one.update(t, r) for t, r in zip(ts.tolist(), rows, strict=True)]
    batch = np.concatenate(_split_batches(EventDetector(params, settings), ts, rows))
    np.testing.assert_array_equal(batch["score"], [r.score for r in streamed])
    np.testing.assert_array_equal(batch["active"], [r.active for r in streamed])
    assert batch["active"].any()

    inc = InconsistencyDetector(SETTINGS.inconsistency)
    orp, cl = rows[:, 2], rows[:, 0]
    streamed = [inc.update(t, o, c) for t, o, c in zip(ts.tolist(), orp, cl, strict=True)]
    fresh = InconsistencyDetector(SETTINGS.inconsistency)
    batch = np.concatenate(_split_batches(fresh, ts, orp, cl))
    np.testing.assert_array_equal(batch["score"], [r.score for r in streamed])
    np.testing.assert_array_equal(batch["active"], [r.active for r in streamed])


def test_missing_values_leave_state_as_if_absent() -> None:
    x = _with_faults_and_gaps("ph", seed=7)
    ts = minutes(DAY)
    ok = ~np.isnan(x)
    full = SeriesDetectors("ph", SETTINGS).update_many(ts, x)
    dense = SeriesDetectors("ph", SETTINGS).update_many(ts[ok], x[ok])
    for kind in full:
        assert not full[kind]["active"][~ok].any()
        np.testing.assert_array_equal(full[kind]["score"][ok], dense[kind]["score"], err_msg=kind)


def test_streaming_result_carries_evidence() -> None:
    det = SeriesDetectors("free_chlorine", SETTINGS)
    x = clean("free_chlorine", n=200)
    x[150] += 0.5
    results = [det.update(t, v) for t, v in zip(minutes(200).tolist(), x.tolist(), strict=True)]
    spike = results[150][2]
    assert spike.kind == "spike" and spike.active
    assert {"median", "scale", "z", "threshold", "window_start_ms", "window_end_ms"} <= set(
        spike.evidence
    )
    assert spike.evidence["window_end_ms"] == T0 + 149 * MINUTE


def test_settings_file_has_source_and_every_pool_parameter() -> None:
    assert "engineering" in SETTINGS.source.lower()
    assert SETTINGS.confidence
    for p in POOL:
        assert SETTINGS.for_parameter(p).parameter == p
    with pytest.raises(KeyError):
        SETTINGS.for_parameter("no_such_parameter")


def test_event_baseline_frozen_during_a_long_event() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    rows[700:1100, 0] -= 0.3  # a 400-minute chlorine and ORP excursion: longer than half the
    rows[700:1100, 2] -= 80.0  # 720-row baseline, so an unfrozen median would absorb it
    base = dataclasses.replace(SETTINGS.event_profile("pool"), window=300, min_history=60)
    drifting = EventDetector(params, base).update_many(minutes(DAY), rows)["active"]
    frozen = dataclasses.replace(base, max_frozen=600)
    held = EventDetector(params, frozen).update_many(minutes(DAY), rows)["active"]
    assert held[705:1100].all()  # the whole event, not just its first hours
    assert not drifting[705:1100].all()
    assert not held[1105:].any()  # released when the readings return


def test_suspect_readings_kept_out_of_the_baseline_before_an_episode() -> None:
    """A long excursion that never raised (below the persistence threshold: 2-of-3 never met,
    its score is under 8) still must not widen the baseline: with hold_z its readings stay out,
    so the next excursion scores as high as the first."""
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p, 2 * DAY) for p in params])
    rows[800:1200, 1] += 0.12  # 6 sd of pH for 400 rows: suspect, not an event on its own
    rows[1500:1520, 1] += 0.12
    base = dataclasses.replace(SETTINGS.event_profile("pool"), window=720, refresh_rows=1)
    scores = {}
    for name, hold in (("open", 0.0), ("held", 4.0)):
        settings = dataclasses.replace(base, max_frozen=600, hold_z=hold)
        scores[name] = EventDetector(params, settings).update_many(minutes(2 * DAY), rows)
    second = slice(1505, 1520)
    assert np.median(scores["held"]["score"][second]) > 1.5 * np.median(
        scores["open"]["score"][second]
    )


def test_one_broken_row_sets_no_peak_that_clears_the_event() -> None:
    """Every analyser reading 0 for one row (a broken probe) scores hundreds; the episode's peak
    counts a score only as far as the row before confirms it, so the clear on return
    (clear_ratio x peak) does not end the event there."""
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    rows[700:900, 0] -= 0.3
    rows[700:900, 2] -= 80.0
    rows[800] = 0.0
    settings = dataclasses.replace(SETTINGS.event_profile("pool"), clear_ratio=0.15)
    active = EventDetector(params, settings).update_many(minutes(DAY), rows)["active"]
    assert active[710:900].all()


def test_confirmed_channel_raises_without_waiting_for_two_of_three() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    rows[700:760, 1] += 0.3
    base = dataclasses.replace(
        SETTINGS.event_profile("pool"), step_window=60, step_threshold=8.0, persist_m=3
    )
    first = {}
    for raise_now in (False, True):
        settings = dataclasses.replace(base, confirmed_raise=raise_now)
        active = EventDetector(params, settings).update_many(minutes(DAY), rows)["active"]
        first[raise_now] = int(np.flatnonzero(active)[0])
    assert first[True] == 701  # the step, confirmed on its second row
    assert first[False] > first[True]


def test_a_change_of_flow_explains_a_lone_ph_move() -> None:
    """Flows are context: after a flow change a pH move alone is discounted away; the same move
    with no flow change, or chlorine moving with no explanation, is an event."""
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([clean(p) for p in params])
    rows[700:760, 1] += 0.3
    flows = np.full((DAY, 2), 1500.0)
    changed = flows.copy()
    changed[690:, 0] = 1900.0  # a pump switched on 10 minutes before
    settings = dataclasses.replace(
        SETTINGS.event_profile("pool"),
        context=("flow", "flow_2"),
        context_explains=("ph", "orp"),
        context_window=60,
        context_change=0.1,
        context_rows=120,
        context_discount=0.0,
    )

    def active(values: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        return EventDetector(params, settings).update_many(minutes(DAY), values, context)["active"]

    assert active(rows, flows)[705:760].all()
    assert active(rows, None)[705:760].all()
    assert not active(rows, changed).any()
    chlorine = rows.copy()
    chlorine[700:760, 0] -= 0.5
    assert active(chlorine, changed)[705:760].all()


def test_event_batch_equals_streaming_with_frozen_and_short_baselines() -> None:
    params = ["free_chlorine", "ph", "orp", "turbidity"]
    rows = np.column_stack([_with_faults_and_gaps(p, seed=11) for p in params])
    rows[1100:1105] = np.nan
    rows[600:700, :2] *= 1.5
    ts = minutes(DAY)
    settings = dataclasses.replace(
        SETTINGS.event_profile("pool"),
        window=200,
        lag=10,
        min_history=50,
        short_window=60,
        max_frozen=40,
    )
    one = EventDetector(params, settings)
    streamed = [one.update(t, r) for t, r in zip(ts.tolist(), rows, strict=True)]
    batch = np.concatenate(_split_batches(EventDetector(params, settings), ts, rows))
    np.testing.assert_array_equal(batch["score"], [r.score for r in streamed])
    np.testing.assert_array_equal(batch["active"], [r.active for r in streamed])
    assert batch["active"].any()
