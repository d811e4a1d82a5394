"""Cross-parameter inconsistency: ORP falling while free chlorine holds or rises.

ORP follows hypochlorous acid, so with a working chlorine analyzer the two move together. A large
ORP fall with flat chlorine points at a fouled or ageing ORP electrode, or a chlorine analyzer that
no longer responds (a pH rise also lowers ORP; the evidence carries both slopes for the inspector).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alerts.detectors.base import DetectorResult, RingBuffer, batch_result, median_last
from alerts.detectors.settings import InconsistencySettings

KIND = "inconsistent"


def _half_slope(windows: np.ndarray) -> np.ndarray:
    """Robust change across each window: median of its newer half minus its older half."""
    half = windows.shape[-1] // 2
    return median_last(windows[..., -half:]) - median_last(windows[..., :half])


class InconsistencyDetector:
    """Over the last `window` rows where both are valid: active when the ORP slope is at most
    -orp_drop while the chlorine slope is at least -chlorine_tolerance. Score = ORP fall / orp_drop
    (0 when chlorine fell too, since then the ORP fall is explained)."""

    def __init__(self, settings: InconsistencySettings) -> None:
        self.settings = settings
        self.orp = RingBuffer(settings.window)
        self.chlorine = RingBuffer(settings.window)
        self.times = RingBuffer(settings.window)

    def _score(self, orp_slope: np.ndarray, cl_slope: np.ndarray) -> np.ndarray:
        s = self.settings
        return np.where(cl_slope >= -s.chlorine_tolerance, -orp_slope / s.orp_drop, 0.0)

    def update(self, ts_ms: int, orp: float, chlorine: float) -> DetectorResult:
        if math.isnan(orp) or math.isnan(chlorine):
            return DetectorResult(KIND, math.nan, False)
        self.orp.push(orp)
        self.chlorine.push(chlorine)
        self.times.push(float(ts_ms))
        if self.orp.count < self.settings.window:
            return DetectorResult(KIND, math.nan, False)
        orp_slope = float(_half_slope(self.orp.values()))
        cl_slope = float(_half_slope(self.chlorine.values()))
        score = float(self._score(np.float64(orp_slope), np.float64(cl_slope)))
        evidence = {
            "orp_change": orp_slope,
            "chlorine_change": cl_slope,
            "orp_drop": self.settings.orp_drop,
            "chlorine_tolerance": self.settings.chlorine_tolerance,
            "window_start_ms": int(self.times.values()[0]),
            "window_end_ms": ts_ms,
        }
        return DetectorResult(KIND, score, score >= 1.0, evidence)

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
            cl_slope = _half_slope(sliding_window_view(ext_c[start:], w))
            score[ok[first:]] = self._score(orp_slope, cl_slope)
        self.orp.extend(o[ok])
        self.chlorine.extend(c[ok])
        self.times.extend(np.asarray(ts_ms, dtype=np.float64)[ok])
        return batch_result(score, score >= 1.0)
