"""Spikes: a reading far from the rolling median of the readings before it (robust z)."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import (
    DetectorResult,
    RingBuffer,
    batch_result,
    lagged_window_stats,
    robust_stats,
)
from alerts.detectors.settings import SpikeSettings

KIND = "spike"


class SpikeDetector:
    """|z| of each reading against median/MAD of the previous `window` valid readings.

    The reading joins the window after it is judged; a median is not moved by the spike itself.
    """

    def __init__(self, settings: SpikeSettings) -> None:
        self.settings = settings
        self.values = RingBuffer(settings.window)
        self.times = RingBuffer(settings.window)  # only for evidence (window start/end)

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        s = self.settings
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        result = DetectorResult(KIND, math.nan, False)
        if self.values.count >= s.min_history:
            med, scale = robust_stats(self.values.values(), s.scale_floor)
            z = (value - med) / scale
            times = self.times.values()
            result = DetectorResult(
                KIND,
                abs(z),
                abs(z) > s.threshold,
                {
                    "value": value,
                    "median": med,
                    "scale": scale,
                    "z": z,
                    "threshold": s.threshold,
                    "window_start_ms": int(times[0]),
                    "window_end_ms": int(times[-1]),
                },
            )
        self.values.push(value)
        self.times.push(float(ts_ms))
        return result

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        s = self.settings
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        score = np.full(len(v), np.nan)
        med, scale = lagged_window_stats(
            self.values.values(), v[ok], s.window, 0, s.min_history, s.scale_floor
        )
        score[ok] = np.abs((v[ok] - med) / scale)
        self.values.extend(v[ok])
        self.times.extend(np.asarray(ts_ms, dtype=np.float64)[ok])
        return batch_result(score, score > s.threshold)
