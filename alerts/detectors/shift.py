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


def baseline_anchor(pushed: np.ndarray, settings: ShiftSettings) -> np.ndarray:
    """Per series, the count of valid readings at which the baseline of its next reading was
    computed (`pushed`: valid readings seen so far).

    The first baseline is computed as soon as it has `min_history` values; after that, only when
    the count is a multiple of `refresh_rows`: a reference of hundreds of readings ending hours
    back moves little in a few readings, and sorting it for every reading was the detectors' main
    cost. The anchor only changes at a reading whose own count it is, so the baseline computed
    then is that reading's own.
    """
    first = settings.lag + settings.min_history
    k = settings.refresh_rows
    return np.where(pushed <= first, pushed, np.maximum(first, pushed - pushed % k))


class ShiftDetector:
    """z = clip((x - median) / scale) against the `window` readings ending `lag` readings back;
    S+ = max(0, S+ + z - slack), S- = max(0, S- - z - slack); active while max(S+, S-) > threshold.
    A slow drift shows up because the lagged baseline trails it. The baseline is recomputed
    every `refresh_rows` readings (`baseline_anchor`).
    """

    def __init__(self, settings: ShiftSettings) -> None:
        self.settings = settings
        self.values = RingBuffer(settings.window + settings.lag)
        self.pushed = 0  # valid readings seen
        self.baseline = (-1, math.nan, math.nan)  # anchor, median, scale last computed
        self.s_pos = 0.0
        self.s_neg = 0.0

    def _step(self, z: float) -> float:
        s = self.settings
        cap = CUSUM_CAP * s.threshold
        z = min(max(z, -s.clip), s.clip)
        self.s_pos = min(max(0.0, self.s_pos + z - s.slack), cap)
        self.s_neg = min(max(0.0, self.s_neg - z - s.slack), cap)
        return max(self.s_pos, self.s_neg)

    def _baseline(self) -> tuple[float, float]:
        """Median and scale the next reading is judged against; NaN below `min_history`."""
        s = self.settings
        anchor = int(baseline_anchor(np.asarray(self.pushed), s))
        if anchor != self.baseline[0]:
            window = window_of(self.values, s.lag)  # anchor == pushed: this reading's own
            if len(window) < s.min_history:
                return math.nan, math.nan
            self.baseline = (anchor, *robust_stats(window, s.scale_floor))
        return self.baseline[1], self.baseline[2]

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        s = self.settings
        result = DetectorResult(KIND, math.nan, False)
        med, scale = self._baseline()
        if not math.isnan(med):
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
        self.pushed += 1
        return result

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        s = self.settings
        v = np.asarray(values, dtype=np.float64)
        ok = np.flatnonzero(~np.isnan(v))
        # Every reading's own baseline, then the one of its anchor (before the batch: cached).
        own_med, own_scale = lagged_window_stats(
            self.values.values(), v[ok], s.window, s.lag, s.min_history, s.scale_floor
        )
        at = baseline_anchor(self.pushed + np.arange(len(ok)), s) - self.pushed
        cached = at < 0
        _, cached_med, cached_scale = self.baseline
        med = np.where(cached, cached_med, own_med[np.maximum(at, 0)])
        scale = np.where(cached, cached_scale, own_scale[np.maximum(at, 0)])
        if len(ok) and not cached[-1] and not math.isnan(med[-1]):
            self.baseline = (self.pushed + int(at[-1]), float(med[-1]), float(scale[-1]))
        z = (v[ok] - med) / scale
        score = np.full(len(v), np.nan)
        # The recursion is inherently sequential; it shares `_step` with `update`.
        for i, zi in zip(ok.tolist(), z.tolist(), strict=True):
            if not math.isnan(zi):
                score[i] = self._step(zi)
        self.values.extend(v[ok])
        self.pushed += len(ok)
        return batch_result(score, score > s.threshold)
