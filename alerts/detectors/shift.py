"""Level shifts and drift: two-sided CUSUM of robust z against a lagged rolling baseline."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import (
    DetectorResult,
    RingBuffer,
    batch_result,
    lagged_window_stats,
    robust_stats,
    window_of,
)
from alerts.detectors.settings import ShiftSettings

KIND = "drift"
# The sums are capped at this multiple of the threshold so that, once the baseline has caught
# up with a new level, the alert clears in about threshold / slack readings instead of lingering.
CUSUM_CAP = 2.0


class ShiftDetector:
    """z = clip((x - median) / scale) against the `window` readings ending `lag` readings back;
    S+ = max(0, S+ + z - slack), S- = max(0, S- - z - slack); active while max(S+, S-) > threshold.
    A slow drift shows up because the lagged baseline trails it.
    """

    def __init__(self, settings: ShiftSettings) -> None:
        self.settings = settings
        self.values = RingBuffer(settings.window + settings.lag)
        self.s_pos = 0.0
        self.s_neg = 0.0

    def _step(self, z: float) -> float:
        s = self.settings
        cap = CUSUM_CAP * s.threshold
        z = min(max(z, -s.clip), s.clip)
        self.s_pos = min(max(0.0, self.s_pos + z - s.slack), cap)
        self.s_neg = min(max(0.0, self.s_neg - z - s.slack), cap)
        return max(self.s_pos, self.s_neg)

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        s = self.settings
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        result = DetectorResult(KIND, math.nan, False)
        window = window_of(self.values, s.lag)
        if len(window) >= s.min_history:
            med, scale = robust_stats(window, s.scale_floor)
            z = (value - med) / scale
            score = self._step(z)
            result = DetectorResult(
                KIND,
                score,
                score > s.threshold,
                {
                    "value": value,
                    "median": med,
                    "scale": scale,
                    "z": z,
                    "cusum_up": self.s_pos,
                    "cusum_down": self.s_neg,
                    "threshold": s.threshold,
                    "window_end_ms": ts_ms,
                },
            )
        self.values.push(value)
        return result

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        s = self.settings
        v = np.asarray(values, dtype=np.float64)
        ok = np.flatnonzero(~np.isnan(v))
        med, scale = lagged_window_stats(
            self.values.values(), v[ok], s.window, s.lag, s.min_history, s.scale_floor
        )
        z = (v[ok] - med) / scale
        score = np.full(len(v), np.nan)
        # The recursion is inherently sequential; it shares `_step` with `update`.
        for i, zi in zip(ok.tolist(), z.tolist(), strict=True):
            if not math.isnan(zi):
                score[i] = self._step(zi)
        self.values.extend(v[ok])
        return batch_result(score, score > s.threshold)
