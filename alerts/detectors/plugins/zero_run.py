"""`integrity:zero_run:<p>`: an analyser reporting exactly zero, reading after reading.

A dry measuring cell or a disconnected electrode often reads a hard 0 rather than a plausible
value; free chlorine can be near zero, but rarely exactly zero for many readings while the
analyser's noise is otherwise there. Judges the parameters given a `zero_run` table in
detectors.toml (none in the packaged file).
"""

from __future__ import annotations

import numpy as np

from alerts.detectors.bank import KindBatch, ints, kind_batch
from alerts.detectors.base import DetectorResult
from alerts.detectors.registry import Detector, PluginSettings, register
from alerts.detectors.stacked import grown
from domain.model import AlertFamily

KIND = "zero_run"


class ZeroRunSettings(PluginSettings):
    min_readings: int = 10  # ten readings in a row: one zero is a glitch, ten are a fault
    epsilon: float = 1e-9  # "exactly zero": below any analyser's resolution


class ZeroRunDetector:
    """Active while the last `min_readings` readings were all zero."""

    def __init__(self, settings: ZeroRunSettings) -> None:
        self.settings = settings
        self.run = 0  # zero readings in a row, up to now

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        if np.isnan(value):
            return DetectorResult(KIND, float("nan"), False)
        self.run = self.run + 1 if abs(value) <= self.settings.epsilon else 0
        active = self.run >= self.settings.min_readings
        return DetectorResult(KIND, float(self.run), active, {"zero_readings": self.run})


class ZeroRunBank:
    """ZeroRunDetector over many series (`VectorisedDetector`)."""

    enabled = True

    def __init__(self, settings: ZeroRunSettings, capacity: int) -> None:
        self.settings = settings
        self.run = np.zeros(capacity, dtype=np.int64)

    def grow(self, capacity: int) -> None:
        self.run = grown(self.run, capacity, 0)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        return kind_batch(len(values), {"zero_readings": ints(len(values))})

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        run = np.where(np.abs(v) <= self.settings.epsilon, self.run[rows] + 1, 0)
        self.run[rows] = run
        b.score[idx] = run
        b.active[idx] = run >= self.settings.min_readings
        b.evidence["zero_readings"][idx] = run


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=ZeroRunSettings,
        streaming=ZeroRunDetector,
        vectorised=ZeroRunBank,
        # Before the plausibility check: a hard 0 is often outside the plausible band too, and
        # the zero run says why.
        order=5,
    )
)
