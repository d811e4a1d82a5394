"""Flat-line (stuck) sensors: a live analyzer always jitters, an unchanged value means a fault."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import KindBatch, ints, kind_batch
from alerts.detectors.base import DetectorResult
from alerts.detectors.registry import Detector, register
from alerts.detectors.stacked import grown
from alerts.settings_files import STRICT
from domain.model import AlertFamily

KIND = "stuck"
MS_PER_MIN = 60_000.0


@dataclass(frozen=True, slots=True)
class StuckSettings:
    __pydantic_config__ = STRICT

    epsilon: float
    min_readings: int
    min_minutes: float


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


class StuckBank:
    """StuckDetector over many series (`VectorisedDetector`)."""

    enabled = True

    def __init__(self, settings: StuckSettings, capacity: int) -> None:
        self.settings = settings
        self.last_value = np.full(capacity, np.nan)
        self.run_start = np.zeros(capacity, dtype=np.int64)
        self.run_count = np.zeros(capacity, dtype=np.int64)

    def grow(self, capacity: int) -> None:
        self.last_value = grown(self.last_value, capacity, np.nan)
        self.run_start = grown(self.run_start, capacity, 0)
        self.run_count = grown(self.run_count, capacity, 0)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        n = len(values)
        return kind_batch(
            n,
            {
                "value": values,
                "run_readings": ints(n),
                "run_start_ms": ints(n),
                "window_end_ms": ts,
                "epsilon": self.settings.epsilon,
            },
        )

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        s = self.settings
        last = self.last_value[rows]
        changed = np.isnan(last) | (np.abs(v - last) > s.epsilon)
        start = np.where(changed, ts, self.run_start[rows])
        count = np.where(changed, 0, self.run_count[rows]) + 1
        self.last_value[rows] = v
        self.run_start[rows] = start
        self.run_count[rows] = count
        score = np.minimum(count / s.min_readings, (ts - start) / MS_PER_MIN / s.min_minutes)
        b.score[idx] = score
        b.active[idx] = score >= 1.0
        b.evidence["run_readings"][idx] = count
        b.evidence["run_start_ms"][idx] = start


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=StuckSettings,
        streaming=StuckDetector,
        vectorised=StuckBank,
        order=20,
    )
)
