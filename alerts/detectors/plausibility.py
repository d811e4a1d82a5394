"""Implausible values: outside a plausible band, or changing faster than the water can."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import DetectorResult, batch_result
from alerts.detectors.settings import ImplausibleSettings

KIND = "implausible"
MS_PER_MIN = 60_000.0
# Rates over less than a second are not meaningful (duplicate timestamps, clock jitter).
MIN_RATE_DT_MS = 1_000


class ImplausibleDetector:
    """Score > 1 means implausible: 1 + relative excess outside the band, or rate / max rate.

    The rate is taken against the previous in-band reading, so a reading outside the band never
    becomes the reference for the next one.
    """

    def __init__(self, settings: ImplausibleSettings) -> None:
        self.settings = settings
        self.last_ts = -1  # -1: no in-band reading yet
        self.last_value = math.nan

    def _score(self, ts_ms: int, value: float) -> tuple[float, float]:
        s = self.settings
        width = s.high - s.low
        if value < s.low:
            return 1.0 + (s.low - value) / width, math.nan
        if value > s.high:
            return 1.0 + (value - s.high) / width, math.nan
        if self.last_ts < 0:
            return 0.0, math.nan
        dt_min = max(ts_ms - self.last_ts, MIN_RATE_DT_MS) / MS_PER_MIN
        rate = abs(value - self.last_value) / dt_min
        return rate / s.max_rate_per_min, rate

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        score, rate = self._score(ts_ms, value)
        evidence = {
            "value": value,
            "low": self.settings.low,
            "high": self.settings.high,
            "rate_per_min": rate,
            "max_rate_per_min": self.settings.max_rate_per_min,
            "previous_ms": self.last_ts,
        }
        if self.settings.low <= value <= self.settings.high:
            self.last_ts = ts_ms
            self.last_value = value
        return DetectorResult(KIND, score, score > 1.0, evidence)

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        s = self.settings
        ts = np.asarray(ts_ms, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        n = len(v)
        width = s.high - s.low
        inband = (v >= s.low) & (v <= s.high)  # False for NaN
        # Reference for row i: the latest in-band row before i, else the carried-in state.
        idx = np.where(inband, np.arange(n), -1)
        prev = np.empty(n, dtype=np.int64)
        prev[0] = -1
        prev[1:] = np.maximum.accumulate(idx)[:-1]
        has_prev = prev >= 0
        ref_ts = np.where(has_prev, ts[np.maximum(prev, 0)], self.last_ts)
        ref_v = np.where(has_prev, v[np.maximum(prev, 0)], self.last_value)
        dt_min = np.maximum(ts - ref_ts, MIN_RATE_DT_MS) / MS_PER_MIN
        rate_score = np.abs(v - ref_v) / dt_min / s.max_rate_per_min
        rate_score = np.where(ref_ts < 0, 0.0, rate_score)
        band_score = 1.0 + np.maximum(s.low - v, v - s.high) / width
        score = np.where(inband, rate_score, band_score)
        if inband.any():
            last = int(np.flatnonzero(inband)[-1])
            self.last_ts = int(ts[last])
            self.last_value = float(v[last])
        return batch_result(score, score > 1.0)
