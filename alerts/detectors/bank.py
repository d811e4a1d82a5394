"""The single-series detectors of many series of one parameter, evaluated together.

`SeriesDetectors` keeps one state per series and judges one reading at a time; a backlog drain
delivers one reading for each of thousands of series per batch, so per-series batching does not
help and the per-reading Python and copy overhead dominates. `SeriesBank` holds the same state for
many series in 2-D arrays (one row per series) and judges a whole batch with array operations.

Contract: for any interleaving of series and readings, every series gets, reading by reading, the
scores and active flags `SeriesDetectors(parameter, settings).update` would give it. A batch may
hold several readings of one series: occurrence k of every series is judged in round k, so each
series sees its readings in order.

How the window statistics stay identical to `robust_stats`: each window is sorted once (numpy's
row sort is SIMD and much faster than `np.median`'s partition on many short rows); the median is
read off the sorted row, and the MAD's order statistics are found by a binary search over the two
runs of deviations below and above the median, which are already sorted. Medians are functions of
the multiset of values, so the results are bit-identical to the streaming detectors.

One deliberate difference: a detector whose threshold is infinite (drift is switched off that way
for several parameters) is never active, so the bank skips it entirely: score NaN, no evidence,
no buffer. `SeriesDetectors` still computes a finite score there that nothing acts on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alerts.detectors.base import MAD_TO_SD, DetectorResult, robust_stats
from alerts.detectors.flatline import MS_PER_MIN
from alerts.detectors.plausibility import MIN_RATE_DT_MS
from alerts.detectors.settings import SeriesSettings
from alerts.detectors.shift import CUSUM_CAP, baseline_anchor
from alerts.detectors.stacked import grown

# Up to this many windows, np.median row by row beats the fixed cost of the vectorised search
# (a series flushing its offline buffer is judged one reading per round).
FEW_ROWS = 8
# Windows are judged this many rows at a time. The windows, their sort and the unfilled mask are
# temporaries of rows x up to 1,680 values: a 2,000-row drift round made 23 MB ones, which glibc
# serves from thread arenas that then stay grown (the 10 M-reading ingest run peaked at 513 MB).
# At 256 rows they are ~3 MB, reused from one chunk to the next, and stay in cache.
CHUNK_ROWS = 256
Evidence = dict[str, np.ndarray | float]


@dataclass(slots=True)
class KindBatch:
    """One detector's decisions on a batch, one entry per reading; the evidence arrays are
    filled where the detector judged the reading (always where it is active)."""

    score: np.ndarray
    active: np.ndarray
    evidence: Evidence

    def filled(self) -> dict[str, np.ndarray]:
        """The evidence arrays the detector fills (the others are its settings, one number)."""
        return {k: v for k, v in self.evidence.items() if isinstance(v, np.ndarray)}


@dataclass(slots=True)
class BankResult:
    kinds: dict[str, KindBatch]

    def detector_results(self, i: int) -> list[DetectorResult]:
        """Reading i as `SeriesDetectors.update` reports it: implausible, stuck, spike, drift.

        Evidence only for active decisions, the only ones an alert carries: building it for every
        reading would cost more than judging it.
        """
        out = []
        for kind, b in self.kinds.items():
            evidence: dict[str, float | int | str] = {}
            if b.active[i]:
                evidence = {
                    k: v[i].item() if isinstance(v, np.ndarray) else v
                    for k, v in b.evidence.items()
                }
            out.append(DetectorResult(kind, float(b.score[i]), bool(b.active[i]), evidence))
        return out


class _Lanes:
    """Per-row buffers of the newest `keep` values, each row's values contiguous so the windows of
    many rows are gathered in one fancy index over a strided view.

    A row is written left to right; when it reaches the end, its newest `keep` values move back
    to the front (one copy of `keep` values per `width - keep` pushes). `end` starts at `keep`,
    so a window slice never falls off the front of a young row; callers mask the slots the row
    has not filled yet.
    """

    def __init__(self, keep: int, capacity: int, dtype: type) -> None:
        self.keep = keep
        # Slack of keep/16: a copy of `keep` values every keep/16 pushes is ~16 values a push,
        # and the drift lanes (the largest state) are 6 % over `keep` rather than 25 %.
        self.width = keep + max(keep // 16, 8)
        self.data: np.ndarray = np.zeros((capacity, self.width), dtype=dtype)
        self.end = np.full(capacity, keep, dtype=np.int64)  # index after each row's newest value

    def grow(self, capacity: int) -> None:
        self.data = grown(self.data, capacity, 0)
        self.end = grown(self.end, capacity, self.keep)

    def push(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Append one value to each of `rows` (distinct)."""
        at_end = rows[self.end[rows] == self.width]
        if len(at_end):
            self.data[at_end, : self.keep] = self.data[at_end, self.width - self.keep :]
            self.end[at_end] = self.keep
        self.data[rows, self.end[rows]] = values
        self.end[rows] += 1

    def windows(self, rows: np.ndarray, back: int, length: int) -> np.ndarray:
        """Per row, the `length` slots ending `back` slots before its newest value (a copy)."""
        starts = rows * self.width + self.end[rows] - back - length
        return sliding_window_view(self.data.reshape(-1), length)[starts]

    def at(self, rows: np.ndarray, back: np.ndarray | int) -> np.ndarray:
        """Per row, the value `back` slots before the newest (0 = newest)."""
        return self.data[rows, self.end[rows] - 1 - back]


def _kth_deviation(s: np.ndarray, med: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The k-th smallest |x - med| (0-based) per row over the first n values of sorted rows `s`.

    Below the split p = n // 2 the deviations med - s[p-1-i] rise with i, above it s[p+j] - med
    rise with j: two sorted runs, so binary-search how many of the k+1 smallest come from the
    lower run. (m - x is exactly -(x - m) in IEEE arithmetic, so the values equal np.abs(x - m).)
    Probes index the flattened rows (one `take` instead of a 2-D fancy index per probe). A probe
    stays within [-1, width) of its row; a -1 reads a value the masks ignore.
    """
    flat = s.reshape(-1)
    p = n // 2
    split = np.arange(len(s)) * s.shape[1] + p  # flat index of each row's s[p]
    lo = np.maximum(0, k + 1 - (n - p))
    hi = np.minimum(p, k + 1)
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        # mid values from the lower run against the (k + 1 - mid)-th of the upper run
        lower = med - flat.take(split - 1 - mid)
        upper = flat.take(split + k - mid) - med
        enough = (mid >= p) | (mid > k) | (lower >= upper)
        hi = np.where(enough, mid, hi)  # a closed row has mid == hi
        lo = np.where(open_ & ~enough, mid + 1, lo)
    lower = np.where(lo > 0, med - flat.take(split - lo), -np.inf)
    upper = np.where(lo <= k, flat.take(split + k - lo) - med, -np.inf)
    return np.maximum(lower, upper)


def robust_rows(
    windows: np.ndarray, lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """`robust_stats` of every row, over its last `lengths` values (the rest is not yet filled).

    Overwrites `windows`.
    """
    width = windows.shape[1]
    if len(windows) <= FEW_ROWS:
        pairs = zip(windows, lengths.tolist(), strict=True)
        stats = np.array([robust_stats(w[width - n :], scale_floor) for w, n in pairs])
        return stats[:, 0], stats[:, 1]
    if (lengths < width).any():
        unfilled = np.arange(width) < (width - lengths)[:, None]
        windows[unfilled] = np.inf  # sorts to the end, out of reach of the order statistics
    s = np.sort(windows, axis=1)
    rows = np.arange(len(s))
    lo, hi = (lengths - 1) // 2, lengths // 2
    # np.median averages the one or two middle values: (a + b) / 2, which is a when they coincide.
    med = (s[rows, lo] + s[rows, hi]) / 2
    mad_lo = _kth_deviation(s, med, lengths, lo)
    # Odd lengths (full spike windows) have one middle deviation: (a + a) / 2 == a.
    mad = mad_lo if (lo == hi).all() else (mad_lo + _kth_deviation(s, med, lengths, hi)) / 2
    return med, np.maximum(mad * MAD_TO_SD, scale_floor)


def robust_in_chunks(
    windows_of: Callable[[slice], np.ndarray], lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """`robust_rows` CHUNK_ROWS rows at a time; `windows_of(part)` builds the windows of the rows
    `part` (it may overwrite them)."""
    med, scale = np.empty(len(lengths)), np.empty(len(lengths))
    for start in range(0, len(lengths), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        med[part], scale[part] = robust_rows(windows_of(part), lengths[part], scale_floor)
    return med, scale


def _lane_stats(
    lanes: _Lanes, rows: np.ndarray, back: int, lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Robust stats of each row's window of `lengths` values ending `back` before its newest."""
    return robust_in_chunks(
        lambda part: lanes.windows(rows[part], back, int(lengths[part].max())),
        lengths,
        scale_floor,
    )


def rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Reading indices per round: round k holds occurrence k of every row, in input order; no
    rounds for no rows."""
    n = len(rows)
    if not n:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - group_start
    by_round = np.lexsort((np.arange(n), occurrence))
    counts = np.bincount(occurrence)
    return np.split(by_round, np.cumsum(counts)[:-1])


def _enabled(threshold: float) -> bool:
    return not (math.isinf(threshold) and threshold > 0)


class SeriesBank:
    """Implausible, stuck, spike and drift detectors of many series of one parameter."""

    def __init__(self, parameter: str, settings: SeriesSettings, capacity: int = 64) -> None:
        self.parameter = parameter
        self.settings = settings
        self.keys: dict[Hashable, int] = {}
        self.capacity = capacity
        self.spike_on = _enabled(settings.spike.threshold)
        self.drift_on = _enabled(settings.shift.threshold)
        self.imp_ts = np.full(capacity, -1, dtype=np.int64)  # last in-band reading; -1: none
        self.imp_value = np.full(capacity, np.nan)
        self.stuck_value = np.full(capacity, np.nan)
        self.stuck_start = np.zeros(capacity, dtype=np.int64)
        self.stuck_count = np.zeros(capacity, dtype=np.int64)
        self.pushed = np.zeros(capacity, dtype=np.int64)  # valid readings seen per row
        # A switched-off detector keeps no buffer (it would be the largest state of all).
        spike, shift = settings.spike.window, settings.shift.window + settings.shift.lag
        self.spike_values = _Lanes(spike if self.spike_on else 0, capacity, np.float64)
        self.spike_times = _Lanes(spike if self.spike_on else 0, capacity, np.int64)
        self.shift_values = _Lanes(shift if self.drift_on else 0, capacity, np.float64)
        self.s_pos = np.zeros(capacity)
        self.s_neg = np.zeros(capacity)
        # The drift baseline last computed per row (ShiftDetector.baseline).
        self.drift_anchor = np.full(capacity, -1, dtype=np.int64)
        self.drift_med = np.full(capacity, np.nan)
        self.drift_scale = np.full(capacity, np.nan)

    def row(self, key: Hashable) -> int:
        """The row of series `key`, registering it on first sight."""
        r = self.keys.get(key)
        if r is None:
            r = self.keys[key] = len(self.keys)
            if r == self.capacity:
                self._grow(2 * self.capacity)
        return r

    def _grow(self, capacity: int) -> None:
        self.imp_ts = grown(self.imp_ts, capacity, -1)
        self.imp_value = grown(self.imp_value, capacity, np.nan)
        self.stuck_value = grown(self.stuck_value, capacity, np.nan)
        self.stuck_start = grown(self.stuck_start, capacity, 0)
        self.stuck_count = grown(self.stuck_count, capacity, 0)
        self.pushed = grown(self.pushed, capacity, 0)
        self.s_pos = grown(self.s_pos, capacity, 0.0)
        self.s_neg = grown(self.s_neg, capacity, 0.0)
        self.drift_anchor = grown(self.drift_anchor, capacity, -1)
        self.drift_med = grown(self.drift_med, capacity, np.nan)
        self.drift_scale = grown(self.drift_scale, capacity, np.nan)
        for lanes in (self.spike_values, self.spike_times, self.shift_values):
            lanes.grow(capacity)
        self.capacity = capacity

    def update(self, rows: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> BankResult:
        """Judge a batch; rows may repeat (each series' readings in input order)."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        out = self._empty(ts, v)
        for idx in rounds(rows):
            self._round(idx, rows[idx], ts[idx], v[idx], out)
        return BankResult(out)

    def _empty(self, ts: np.ndarray, v: np.ndarray) -> dict[str, KindBatch]:
        s = self.settings
        n = len(v)

        def batch(evidence: Evidence) -> KindBatch:
            return KindBatch(np.full(n, np.nan), np.zeros(n, bool), evidence)

        def floats() -> np.ndarray:
            return np.full(n, np.nan)

        def ints() -> np.ndarray:
            return np.zeros(n, dtype=np.int64)

        return {
            "implausible": batch(
                {
                    "value": v,
                    "low": s.implausible.low,
                    "high": s.implausible.high,
                    "rate_per_min": floats(),
                    "max_rate_per_min": s.implausible.max_rate_per_min,
                    "previous_ms": ints(),
                }
            ),
            "stuck": batch(
                {
                    "value": v,
                    "run_readings": ints(),
                    "run_start_ms": ints(),
                    "window_end_ms": ts,
                    "epsilon": s.stuck.epsilon,
                }
            ),
            "spike": batch(
                {
                    "value": v,
                    "median": floats(),
                    "scale": floats(),
                    "z": floats(),
                    "threshold": s.spike.threshold,
                    "window_start_ms": ints(),
                    "window_end_ms": ints(),
                }
            ),
            "drift": batch(
                {
                    "value": v,
                    "median": floats(),
                    "scale": floats(),
                    "z": floats(),
                    "cusum_up": floats(),
                    "cusum_down": floats(),
                    "threshold": s.shift.threshold,
                    "window_end_ms": ts,
                }
            ),
        }

    def _round(
        self,
        idx: np.ndarray,
        rows: np.ndarray,
        ts: np.ndarray,
        v: np.ndarray,
        out: dict[str, KindBatch],
    ) -> None:
        """Readings `idx` (of the batch), at most one per row."""
        band = self.settings.implausible
        self._implausible(idx, rows, ts, v, out["implausible"])
        # Out-of-band values are withheld from the statistical detectors, as NaN would be.
        ok = (v >= band.low) & (v <= band.high)
        idx, rows, ts, v = idx[ok], rows[ok], ts[ok], v[ok]
        if not len(idx):
            return
        self._stuck(idx, rows, ts, v, out["stuck"])
        if self.spike_on:
            self._spike(idx, rows, v, out["spike"])
        if self.drift_on:
            self._drift(idx, rows, v, out["drift"])
        self.pushed[rows] += 1
        if self.spike_on:
            self.spike_values.push(rows, v)
            self.spike_times.push(rows, ts)
        if self.drift_on:
            self.shift_values.push(rows, v)

    def _implausible(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        s = self.settings.implausible
        valid = ~np.isnan(v)
        idx, rows, ts, v = idx[valid], rows[valid], ts[valid], v[valid]
        width = s.high - s.low
        inband = (v >= s.low) & (v <= s.high)
        last_ts = self.imp_ts[rows]
        dt_min = np.maximum(ts - last_ts, MIN_RATE_DT_MS) / MS_PER_MIN
        rate = np.abs(v - self.imp_value[rows]) / dt_min
        rate_score = np.where(last_ts < 0, 0.0, rate / s.max_rate_per_min)
        band_score = np.where(v < s.low, 1.0 + (s.low - v) / width, 1.0 + (v - s.high) / width)
        score = np.where(inband, rate_score, band_score)
        b.score[idx] = score
        b.active[idx] = score > 1.0
        b.filled()["rate_per_min"][idx] = np.where(inband & (last_ts >= 0), rate, np.nan)
        b.filled()["previous_ms"][idx] = last_ts
        self.imp_ts[rows[inband]] = ts[inband]
        self.imp_value[rows[inband]] = v[inband]

    def _stuck(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        s = self.settings.stuck
        last = self.stuck_value[rows]
        changed = np.isnan(last) | (np.abs(v - last) > s.epsilon)
        start = np.where(changed, ts, self.stuck_start[rows])
        count = np.where(changed, 0, self.stuck_count[rows]) + 1
        self.stuck_value[rows] = v
        self.stuck_start[rows] = start
        self.stuck_count[rows] = count
        score = np.minimum(count / s.min_readings, (ts - start) / MS_PER_MIN / s.min_minutes)
        b.score[idx] = score
        b.active[idx] = score >= 1.0
        b.filled()["run_readings"][idx] = count
        b.filled()["run_start_ms"][idx] = start

    def _spike(self, idx: np.ndarray, rows: np.ndarray, v: np.ndarray, b: KindBatch) -> None:
        s = self.settings.spike
        lengths = np.minimum(self.pushed[rows], s.window)
        ready = lengths >= s.min_history
        if not ready.any():
            return
        idx, rows, v, lengths = idx[ready], rows[ready], v[ready], lengths[ready]
        med, scale = _lane_stats(self.spike_values, rows, 0, lengths, s.scale_floor)
        z = (v - med) / scale
        b.score[idx] = np.abs(z)
        b.active[idx] = np.abs(z) > s.threshold
        e = b.filled()
        e["median"][idx], e["scale"][idx], e["z"][idx] = med, scale, z
        e["window_start_ms"][idx] = self.spike_times.at(rows, lengths - 1)
        e["window_end_ms"][idx] = self.spike_times.at(rows, 0)

    def _drift(self, idx: np.ndarray, rows: np.ndarray, v: np.ndarray, b: KindBatch) -> None:
        s = self.settings.shift
        # The baseline: up to `window` values ending `lag` values before the reading.
        lengths = np.minimum(self.pushed[rows] - s.lag, s.window)
        ready = lengths >= s.min_history
        if not ready.any():
            return
        idx, rows, v, lengths = idx[ready], rows[ready], v[ready], lengths[ready]
        anchor = baseline_anchor(self.pushed[rows], s)
        stale = anchor != self.drift_anchor[rows]
        if stale.any():  # a stale row's anchor is its own count: its window ends `lag` back
            r = rows[stale]
            self.drift_med[r], self.drift_scale[r] = _lane_stats(
                self.shift_values, r, s.lag, lengths[stale], s.scale_floor
            )
            self.drift_anchor[r] = anchor[stale]
        med, scale = self.drift_med[rows], self.drift_scale[rows]
        z = (v - med) / scale
        # The same arithmetic, in the same order, as ShiftDetector._step.
        cap = CUSUM_CAP * s.threshold
        zc = np.minimum(np.maximum(z, -s.clip), s.clip)
        s_pos = np.minimum(np.maximum(0.0, self.s_pos[rows] + zc - s.slack), cap)
        s_neg = np.minimum(np.maximum(0.0, self.s_neg[rows] - zc - s.slack), cap)
        self.s_pos[rows], self.s_neg[rows] = s_pos, s_neg
        score = np.maximum(s_pos, s_neg)
        b.score[idx] = score
        b.active[idx] = score > s.threshold
        e = b.filled()
        e["median"][idx], e["scale"][idx], e["z"][idx] = med, scale, z
        e["cusum_up"][idx], e["cusum_down"][idx] = s_pos, s_neg
