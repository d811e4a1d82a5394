"""Implausible values: outside a plausible band, or changing faster than the water can."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import KindBatch, floats, ints, kind_batch
from alerts.detectors.base import DetectorResult
from alerts.detectors.registry import Detector, register
from alerts.detectors.stacked import grown
from alerts.settings_files import STRICT
from domain.model import AlertFamily

KIND = "implausible"
MS_PER_MIN = 60_000.0
# Rates over less than a second are not meaningful (duplicate timestamps, clock jitter).
MIN_RATE_DT_MS = 1_000


@dataclass(frozen=True, slots=True)
class ImplausibleSettings:
    __pydantic_config__ = STRICT

    low: float
    high: float
    max_rate_per_min: float


def in_band(settings: ImplausibleSettings, values: np.ndarray) -> np.ndarray:
    """The values the statistical detectors may judge: a broken probe's reading outside the
    plausible band must not poison their baselines (False for NaN)."""
    return (values >= settings.low) & (values <= settings.high)


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


class ImplausibleBank:
    """ImplausibleDetector over many series (`VectorisedDetector`)."""

    enabled = True

    def __init__(self, settings: ImplausibleSettings, capacity: int) -> None:
        self.settings = settings
        self.last_ts = np.full(capacity, -1, dtype=np.int64)  # last in-band reading; -1: none
        self.last_value = np.full(capacity, np.nan)

    def grow(self, capacity: int) -> None:
        self.last_ts = grown(self.last_ts, capacity, -1)
        self.last_value = grown(self.last_value, capacity, np.nan)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        s, n = self.settings, len(values)
        return kind_batch(
            n,
            {
                "value": values,
                "low": s.low,
                "high": s.high,
                "rate_per_min": floats(n),
                "max_rate_per_min": s.max_rate_per_min,
                "previous_ms": ints(n),
            },
        )

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        s = self.settings
        width = s.high - s.low
        inband = in_band(s, v)
        last_ts = self.last_ts[rows]
        dt_min = np.maximum(ts - last_ts, MIN_RATE_DT_MS) / MS_PER_MIN
        rate = np.abs(v - self.last_value[rows]) / dt_min
        rate_score = np.where(last_ts < 0, 0.0, rate / s.max_rate_per_min)
        band_score = np.where(v < s.low, 1.0 + (s.low - v) / width, 1.0 + (v - s.high) / width)
        score = np.where(inband, rate_score, band_score)
        b.score[idx] = score
        b.active[idx] = score > 1.0
        b.evidence["rate_per_min"][idx] = np.where(inband & (last_ts >= 0), rate, np.nan)
        b.evidence["previous_ms"][idx] = last_ts
        self.last_ts[rows[inband]] = ts[inband]
        self.last_value[rows[inband]] = v[inband]


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=ImplausibleSettings,
        streaming=ImplausibleDetector,
        vectorised=ImplausibleBank,
        order=10,
        passes=in_band,
    )
)
