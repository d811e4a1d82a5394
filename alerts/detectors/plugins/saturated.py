"""`integrity:saturated:<p>`: an analyser pinned at an end of its measuring range.

A chlorine analyser of range 0-5 mg/L reports 5.00 whatever the water holds above that, and one
whose cell has run dry may sit at 0.00: the value is then the instrument's limit, not the water's,
and a limit rule judging it may understate a breach. Active once `min_readings` readings in a row
lie within `tolerance` of (or beyond) either end of the range. Which parameters, and their
analysers' ranges, are data: a `saturated` table per parameter in detectors.toml (none in the
packaged file, so registered and idle); without `low` or `high` that end is not judged.
"""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.bank import KindBatch, ints, kind_batch
from alerts.detectors.base import DetectorResult
from alerts.detectors.registry import Detector, PluginSettings, register
from alerts.detectors.stacked import grown
from domain.model import AlertFamily

KIND = "saturated"


class SaturatedSettings(PluginSettings):
    low: float = -math.inf  # the analyser's measuring range
    high: float = math.inf
    tolerance: float = 0.0  # "at the end": within this of it (the display resolution, say)
    # Five readings in a row: one reading at the rail is a real extreme, five are the rail.
    min_readings: int = 5


def at_rail(settings: SaturatedSettings, values: np.ndarray | float) -> np.ndarray | bool:
    s = settings
    return (values <= s.low + s.tolerance) | (values >= s.high - s.tolerance)


class SaturatedDetector:
    """The streaming reference: readings in a row at an end of the range."""

    def __init__(self, settings: SaturatedSettings) -> None:
        self.settings = settings
        self.run = 0

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        if math.isnan(value):
            return DetectorResult(KIND, math.nan, False)
        self.run = self.run + 1 if at_rail(self.settings, value) else 0
        s = self.settings
        evidence = {"value": value, "rail_readings": self.run, "low": s.low, "high": s.high}
        return DetectorResult(KIND, self.run / s.min_readings, self.run >= s.min_readings, evidence)


class SaturatedBank:
    """The same over many series (`VectorisedDetector`)."""

    enabled = True

    def __init__(self, settings: SaturatedSettings, capacity: int) -> None:
        self.settings = settings
        self.run = np.zeros(capacity, dtype=np.int64)

    def grow(self, capacity: int) -> None:
        self.run = grown(self.run, capacity, 0)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        s, n = self.settings, len(values)
        evidence = {"value": values, "rail_readings": ints(n), "low": s.low, "high": s.high}
        return kind_batch(n, evidence)

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        run = np.where(at_rail(self.settings, v), self.run[rows] + 1, 0)
        self.run[rows] = run
        b.score[idx] = run / self.settings.min_readings
        b.active[idx] = run >= self.settings.min_readings
        b.evidence["rail_readings"][idx] = run


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=SaturatedSettings,
        streaming=SaturatedDetector,
        vectorised=SaturatedBank,
        # Before the plausibility check: a rail may lie outside the plausible band.
        order=6,
    )
)
