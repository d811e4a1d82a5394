"""SeriesBank: many series judged together equal each series judged alone by SeriesDetectors,
for the detectors of a pool parameter together and for every registered detector alone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from alerts.detectors import SeriesDetectors, load_detector_settings
from alerts.detectors import bank as bank_module
from alerts.detectors.bank import SeriesBank, robust_rows
from alerts.detectors.base import robust_stats
from alerts.detectors.registry import discovered
from alerts.detectors.settings import SeriesSettings

MINUTE = 60_000
T0 = 1_795_334_400_000
SETTINGS = load_detector_settings()


def small(parameter: str = "free_chlorine") -> SeriesSettings:
    """Short windows, so warm-up, full windows and buffer wrap-around all happen in a few hundred
    readings; min_history below lag and thresholds low enough that every detector fires."""
    s = SETTINGS.for_parameter(parameter)
    return s.replaced(
        stuck=dataclasses.replace(s.stuck, min_readings=5, min_minutes=3.0),
        spike=dataclasses.replace(s.spike, window=15, min_history=5, threshold=4.0),
        shift=dataclasses.replace(s.shift, window=20, lag=6, min_history=4, threshold=6.0),
    )


def series_values(rng: np.random.Generator, n: int, settings: SeriesSettings) -> np.ndarray:
    """Noisy readings with the faults the detectors look for, at random places."""
    band = settings.implausible
    mid, spread = (band.low + band.high) / 2, (band.high - band.low) / 50
    x = np.round(mid + spread * rng.standard_normal(n), 2)
    for _ in range(rng.integers(0, 4)):
        a = int(rng.integers(0, max(n, 1)))
        b = a + int(rng.integers(1, 40))
        match rng.integers(0, 6):
            case 0:
                x[a:b] = x[a]  # stuck
            case 1:
                x[a] += 20 * spread  # spike
            case 2:
                x[a:] += 5 * spread  # level shift
            case 3:
                x[a:b] = np.nan  # missing
            case 4:
                x[a:b] = 0.0  # a dry cell reading a hard zero
            case _:
                x[a] = band.high + (band.high - band.low) * rng.random()  # out of band
    return x


def series_times(rng: np.random.Generator, n: int) -> np.ndarray:
    # Mostly one-minute steps; some repeats (rate over < 1 s) and some gaps.
    steps = rng.choice([0, MINUTE, MINUTE, MINUTE, 7 * MINUTE], size=n)
    return T0 + np.cumsum(steps)


def assert_same(kind: str, ref, got, disabled: bool) -> None:
    assert got.kind == ref.kind == kind
    assert got.active == ref.active, kind
    if disabled:
        assert not got.active and math.isnan(got.score) and not got.evidence
        return
    if math.isnan(ref.score):
        assert math.isnan(got.score), kind
    else:
        assert abs(got.score - ref.score) <= 1e-9, (kind, got.score, ref.score)
    if not ref.active:
        return  # the bank builds evidence for active decisions only
    assert got.evidence.keys() == ref.evidence.keys(), kind
    for key, want in ref.evidence.items():
        have = got.evidence[key]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(have), (kind, key)
        else:
            assert have == pytest.approx(want, rel=0, abs=1e-9), (kind, key, have, want)


def check_interleaved(
    settings: SeriesSettings, seed: int, n_series: int, max_len: int, capacity: int = 2
) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=n_series)
    values = [series_values(rng, int(n), settings) for n in lengths]
    times = [series_times(rng, int(n)) for n in lengths]
    # A random interleaving that keeps each series in order, cut into random batches (a batch
    # may hold one series several times, or nothing of some).
    order = rng.permutation(np.repeat(np.arange(n_series), lengths))
    position = np.zeros(n_series, dtype=int)
    bank = SeriesBank(settings.parameter, settings, capacity=capacity)
    keys = [("device", i) for i in range(n_series)]
    refs = [SeriesDetectors(settings.parameter, settings) for _ in range(n_series)]
    disabled = {d.kind: not vec.enabled for d, vec in bank.detectors}
    cuts = np.unique(rng.integers(0, len(order) + 1, size=max(len(order) // 5, 1)))
    for batch in np.split(order, cuts):
        rows, ts, vs = [], [], []
        for series in batch.tolist():
            k = position[series]
            position[series] += 1
            rows.append(bank.row(keys[series]))
            ts.append(int(times[series][k]))
            vs.append(float(values[series][k]))
        result = bank.update(np.array(rows, dtype=np.int64), np.array(ts), np.array(vs))
        for i, series in enumerate(batch.tolist()):
            expected = refs[series].update(ts[i], vs[i])
            for ref, got in zip(expected, result.detector_results(i), strict=True):
                assert_same(ref.kind, ref, got, disabled.get(ref.kind, False))
    assert (position == lengths).all()


@pytest.mark.parametrize("seed", range(12))
def test_bank_equals_series_detectors_small_windows(seed: int) -> None:
    check_interleaved(small(), seed, n_series=5, max_len=160)


@pytest.mark.parametrize("seed", range(6))
def test_bank_equals_series_detectors_with_drift_refresh(seed: int) -> None:
    """A drift baseline recomputed every 3 readings, held in between."""
    s = small()
    settings = s.replaced(shift=dataclasses.replace(s.shift, refresh_rows=3))
    check_interleaved(settings, seed, n_series=5, max_len=160)


@pytest.mark.parametrize("seed", range(4))
def test_windows_judged_in_chunks_give_the_same_results(seed: int, monkeypatch) -> None:
    """Rounds of more rows than one chunk: vectorised chunks of nine, and a short last one."""
    monkeypatch.setattr(bank_module, "CHUNK_ROWS", 9)
    check_interleaved(small(), seed, n_series=20, max_len=160)


@pytest.mark.parametrize("parameter", ["ph", "turbidity"])
def test_bank_equals_series_detectors_pool_settings(parameter: str) -> None:
    """The committed settings: past the 1680-reading drift buffer (ph), drift off (turbidity)."""
    check_interleaved(SETTINGS.for_parameter(parameter), 99, n_series=2, max_len=1800)


def test_bank_fires_every_detector_somewhere() -> None:
    """Guards the equality tests against comparing detectors that never do anything."""
    settings = small()
    bank = SeriesBank(settings.parameter, settings)
    rng = np.random.default_rng(1)
    x = np.round(5.0 + 0.2 * rng.standard_normal(200), 2)
    x[50:70] = x[50]  # stuck
    x[100] += 4.0  # spike
    x[150:] += 1.5  # shift
    x[30] = 50.0  # implausible
    rows = np.full(len(x), bank.row("a"))
    result = bank.update(rows, T0 + np.arange(len(x)) * MINUTE, x)
    for kind, batch in result.kinds.items():
        assert batch.active.any(), kind


def test_disabled_drift_keeps_no_buffer() -> None:
    settings = SETTINGS.for_parameter("turbidity")
    assert math.isinf(settings.shift.threshold)
    bank = SeriesBank("turbidity", settings, capacity=4)
    (drift,) = [vec for d, vec in bank.detectors if d.kind == "drift"]
    assert not drift.enabled and drift.values.data.size <= 4 * 8


def test_robust_rows_matches_robust_stats_on_partial_windows() -> None:
    rng = np.random.default_rng(3)
    windows = np.round(rng.standard_normal((40, 31)), 1)  # ties, even and odd lengths
    lengths = rng.integers(1, 32, size=40)
    med, scale = robust_rows(windows.copy(), lengths, 0.01)
    for i, n in enumerate(lengths):
        assert (med[i], scale[i]) == robust_stats(windows[i, 31 - n :], 0.01)


def alone(kind: str) -> SeriesSettings:
    """The small pool settings' plausible band and detector `kind` alone: its small settings,
    else its defaults."""
    base = small()
    table = discovered()[kind].table
    settings = base.detectors.get(table) or discovered()[kind].settings()
    return SeriesSettings(base.parameter, {"implausible": base.implausible, table: settings})


@pytest.mark.parametrize("kind", sorted(discovered()))
@pytest.mark.parametrize("seed", range(4))
def test_every_registered_detector_bank_equals_its_streaming_reference(
    kind: str, seed: int
) -> None:
    """One generic check for every detector module, built-in or new (alerts/detectors/plugins):
    its vectorised form (or the per-row streaming fallback) against its streaming reference.
    That it fires at all on faults it looks for is each detector's own test (the built-ins:
    test_bank_fires_every_detector_somewhere; zero_run fires here on the hard zeros)."""
    check_interleaved(alone(kind), seed, n_series=5, max_len=160)
