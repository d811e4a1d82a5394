"""Cross-parameter inconsistency: ORP falling while free chlorine holds or rises.

ORP follows hypochlorous acid, so with a working chlorine analyzer the two move together. A large
ORP fall with flat chlorine points at a fouled or ageing ORP electrode, or a chlorine analyzer that
no longer responds (a pH rise also lowers ORP; the evidence carries both slopes for the inspector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alerts.detectors.bank import rounds
from alerts.detectors.base import DetectorResult, RingBuffer, batch_result, median_last
from alerts.detectors.settings import InconsistencySettings
from alerts.detectors.stacked import Stacked

KIND = "inconsistent"


def _halves(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medians of each window's older and newer halves."""
    half = windows.shape[-1] // 2
    return median_last(windows[..., :half]), median_last(windows[..., -half:])


def _half_slope(windows: np.ndarray) -> np.ndarray:
    """Robust change across each window: median of its newer half minus its older half."""
    older, newer = _halves(windows)
    return newer - older


def _chlorine(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(change, level now) of chlorine windows: the level is the newer half's median."""
    older, newer = _halves(windows)
    return newer - older, newer


def _score(
    settings: InconsistencySettings,
    orp_slope: np.ndarray,
    cl_slope: np.ndarray,
    cl_level: np.ndarray,
) -> np.ndarray:
    s = settings
    holds = (cl_slope >= -s.chlorine_tolerance) & (cl_level >= s.min_chlorine)
    return np.where(holds, -orp_slope / s.orp_drop, 0.0)


def _result(
    settings: InconsistencySettings,
    ts_ms: int,
    orp_slope: float,
    cl_slope: float,
    cl_level: float,
    start_ms: int,
) -> DetectorResult:
    """The decision on a full window of `settings.window` rows, from `start_ms` to `ts_ms`."""
    score = float(
        _score(settings, np.asarray(orp_slope), np.asarray(cl_slope), np.asarray(cl_level))
    )
    evidence = {
        "orp_change": orp_slope,
        "chlorine_change": cl_slope,
        "chlorine_level": cl_level,
        "orp_drop": settings.orp_drop,
        "chlorine_tolerance": settings.chlorine_tolerance,
        "window_start_ms": start_ms,
        "window_end_ms": ts_ms,
    }
    return DetectorResult(KIND, score, score >= 1.0, evidence)


class InconsistencyDetector:
    """Over the last `window` rows where both are valid: active when the ORP slope is at most
    -orp_drop while the chlorine slope is at least -chlorine_tolerance and chlorine is at least
    min_chlorine. Score = ORP fall / orp_drop (0 when chlorine fell too, or is so low that ORP
    follows its smallest changes, since then the ORP fall is explained)."""

    def __init__(self, settings: InconsistencySettings) -> None:
        self.settings = settings
        self.orp = RingBuffer(settings.window)
        self.chlorine = RingBuffer(settings.window)
        self.times = RingBuffer(settings.window)

    def update(self, ts_ms: int, orp: float, chlorine: float) -> DetectorResult:
        if math.isnan(orp) or math.isnan(chlorine):
            return DetectorResult(KIND, math.nan, False)
        self.orp.push(orp)
        self.chlorine.push(chlorine)
        self.times.push(float(ts_ms))
        if self.orp.count < self.settings.window:
            return DetectorResult(KIND, math.nan, False)
        orp_slope = float(_half_slope(self.orp.values()))
        cl_slope, cl_level = (float(x) for x in _chlorine(self.chlorine.values()))
        start = int(self.times.values()[0])
        return _result(self.settings, ts_ms, orp_slope, cl_slope, cl_level, start)

    def update_many(self, ts_ms: np.ndarray, orp: np.ndarray, chlorine: np.ndarray) -> np.ndarray:
        w = self.settings.window
        o = np.asarray(orp, dtype=np.float64)
        c = np.asarray(chlorine, dtype=np.float64)
        ok = np.flatnonzero(~(np.isnan(o) | np.isnan(c)))
        score = np.full(len(o), np.nan)
        h = self.orp.count
        ext_o = np.concatenate((self.orp.values(), o[ok]))
        ext_c = np.concatenate((self.chlorine.values(), c[ok]))
        # Row j of the valid rows ends at ext position h + j; it is scored once w rows exist.
        first = max(0, w - 1 - h)
        if len(ok) > first:
            start = h + first - w + 1
            orp_slope = _half_slope(sliding_window_view(ext_o[start:], w))
            cl_slope, cl_level = _chlorine(sliding_window_view(ext_c[start:], w))
            score[ok[first:]] = _score(self.settings, orp_slope, cl_slope, cl_level)
        self.orp.extend(o[ok])
        self.chlorine.extend(c[ok])
        self.times.extend(np.asarray(ts_ms, dtype=np.float64)[ok])
        return batch_result(score, score >= 1.0)


@dataclass(slots=True)
class InconsistencyBatch:
    """The decisions on a batch of rows, one entry per row; NaN where no full window was judged."""

    settings: InconsistencySettings
    ts_ms: np.ndarray
    orp_change: np.ndarray
    chlorine_change: np.ndarray
    chlorine_level: np.ndarray
    start_ms: np.ndarray
    score: np.ndarray
    active: np.ndarray

    def result(self, i: int) -> DetectorResult:
        """Row i as `InconsistencyDetector.update` reports it."""
        if math.isnan(self.score[i]):
            return DetectorResult(KIND, math.nan, False)
        return _result(
            self.settings,
            int(self.ts_ms[i]),
            float(self.orp_change[i]),
            float(self.chlorine_change[i]),
            float(self.chlorine_level[i]),
            int(self.start_ms[i]),
        )


class InconsistencyBank(Stacked):
    """`InconsistencyDetector` state of many devices (rows 0, 1, ...), judged together: rows in
    rounds of at most one per device, as `EventBank` does. Per device, rings of the last `window`
    rows where both values were valid."""

    STATE = (("orp", 0.0), ("chlorine", 0.0), ("times", 0), ("head", 0), ("count", 0))

    def __init__(self, settings: InconsistencySettings, capacity: int = 64) -> None:
        super().__init__(capacity)
        self.settings = settings
        w = settings.window
        self.orp = np.zeros((capacity, w))
        self.chlorine = np.zeros((capacity, w))
        self.times = np.zeros((capacity, w), dtype=np.int64)
        self.head = np.zeros(capacity, dtype=np.int64)  # the oldest value once a ring is full
        self.count = np.zeros(capacity, dtype=np.int64)

    def update(
        self, rows: np.ndarray, ts_ms: np.ndarray, orp: np.ndarray, chlorine: np.ndarray
    ) -> InconsistencyBatch:
        """Judge a batch; a device may repeat (its rows in input order)."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64)
        o = np.asarray(orp, dtype=np.float64)
        c = np.asarray(chlorine, dtype=np.float64)
        self.fit(rows)
        n = len(rows)
        out = InconsistencyBatch(
            self.settings,
            ts,
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.zeros(n, dtype=np.int64),
            np.full(n, np.nan),
            np.zeros(n, dtype=bool),
        )
        # A row missing either value is not judged and leaves the rings as they were.
        valid = np.flatnonzero(~(np.isnan(o) | np.isnan(c)))
        for idx in rounds(rows[valid]):
            self._round(valid[idx], rows, ts, o, c, out)
        return out

    def _round(
        self,
        idx: np.ndarray,
        rows: np.ndarray,
        ts: np.ndarray,
        o: np.ndarray,
        c: np.ndarray,
        out: InconsistencyBatch,
    ) -> None:
        """Rows `idx` of the batch (valid, at most one per device): push, then judge the full
        windows."""
        w = self.settings.window
        d = rows[idx]
        h = self.head[d]
        self.orp[d, h], self.chlorine[d, h], self.times[d, h] = o[idx], c[idx], ts[idx]
        self.head[d] = (h + 1) % w
        self.count[d] = np.minimum(self.count[d] + 1, w)
        full = self.count[d] == w
        idx, d = idx[full], d[full]
        if not len(idx):
            return
        oldest = self.head[d]
        chronological = (oldest[:, None] + np.arange(w)) % w
        orp_slope = _half_slope(self.orp[d[:, None], chronological])
        cl_slope, cl_level = _chlorine(self.chlorine[d[:, None], chronological])
        score = _score(self.settings, orp_slope, cl_slope, cl_level)
        out.orp_change[idx], out.chlorine_change[idx] = orp_slope, cl_slope
        out.chlorine_level[idx] = cl_level
        out.start_ms[idx] = self.times[d, oldest]
        out.score[idx], out.active[idx] = score, score >= 1.0
