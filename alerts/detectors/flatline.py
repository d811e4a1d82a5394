"""Flat-line (stuck) sensors: a live analyzer always jitters, an unchanged value means a fault."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import DetectorResult, batch_result
from alerts.detectors.settings import StuckSettings

KIND = "stuck"
MS_PER_MIN = 60_000.0


class StuckDetector:
    """Active once consecutive valid readings have stayed within `epsilon` of each other for at
    least `min_readings` readings AND `min_minutes`: both, so neither a fast sampler nor two
    readings either side of a gap can make a run look long.

    Score = min(readings / min_readings, minutes / min_minutes); >= 1 when active.
    """

    def __init__(self, settings: StuckSettings) -> None:
        self.settings = settings
        self.last_value = math.nan
        self.run_start_ms = 0
        self.run_count = 0

    def _score(self, count: int | np.ndarray, minutes: float | np.ndarray) -> float | np.ndarray:
        s = self.settings
        return np.minimum(count / s.min_readings, minutes / s.min_minutes)

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        if math.isnan(self.last_value) or abs(value - self.last_value) > self.settings.epsilon:
            self.run_start_ms = ts_ms
            self.run_count = 0
        self.run_count += 1
        self.last_value = value
        minutes = (ts_ms - self.run_start_ms) / MS_PER_MIN
        score = float(self._score(self.run_count, minutes))
        evidence = {
            "value": value,
            "run_readings": self.run_count,
            "run_start_ms": self.run_start_ms,
            "window_end_ms": ts_ms,
            "epsilon": self.settings.epsilon,
        }
        return DetectorResult(KIND, score, score >= 1.0, evidence)

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        ts = np.asarray(ts_ms, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        score = np.full(len(v), np.nan)
        ok = np.flatnonzero(~np.isnan(v))
        if len(ok) == 0:
            return batch_result(score, np.zeros(len(v), bool))
        vv, tt = v[ok], ts[ok]
        prev = np.concatenate(([self.last_value], vv[:-1]))
        # NaN `prev` (no history) compares False, so mark it as a change explicitly.
        changed = np.isnan(prev) | (np.abs(vv - prev) > self.settings.epsilon)
        k = np.arange(len(vv))
        start = np.maximum.accumulate(np.where(changed, k, -1))
        cont = start < 0  # still in the run carried in from earlier batches
        count = np.where(cont, self.run_count + k + 1, k - start + 1)
        start_ms = np.where(cont, self.run_start_ms, tt[np.maximum(start, 0)])
        score[ok] = self._score(count, (tt - start_ms) / MS_PER_MIN)
        self.last_value = float(vv[-1])
        self.run_count = int(count[-1])
        self.run_start_ms = int(start_ms[-1])
        return batch_result(score, score >= 1.0)
