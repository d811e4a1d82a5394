"""Spikes: a reading far from the rolling median of the readings before it (robust z)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import KindBatch, Lanes, enabled, floats, ints, kind_batch, lane_stats
from alerts.detectors.base import DetectorResult, RingBuffer, robust_stats
from alerts.detectors.registry import Detector, register
from alerts.detectors.stacked import grown
from alerts.settings_files import STRICT
from domain.model import AlertFamily

KIND = "spike"


@dataclass(frozen=True, slots=True)
class SpikeSettings:
    __pydantic_config__ = STRICT

    window: int
    min_history: int
    threshold: float
    scale_floor: float


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


class SpikeBank:
    """SpikeDetector over many series (`VectorisedDetector`)."""

    def __init__(self, settings: SpikeSettings, capacity: int) -> None:
        self.settings = settings
        self.enabled = enabled(settings.threshold)
        keep = settings.window if self.enabled else 0  # switched off: no buffer
        self.values = Lanes(keep, capacity, np.float64)
        self.times = Lanes(keep, capacity, np.int64)
        self.pushed = np.zeros(capacity, dtype=np.int64)  # readings judged per row

    def grow(self, capacity: int) -> None:
        self.values.grow(capacity)
        self.times.grow(capacity)
        self.pushed = grown(self.pushed, capacity, 0)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        n = len(values)
        return kind_batch(
            n,
            {
                "value": values,
                "median": floats(n),
                "scale": floats(n),
                "z": floats(n),
                "threshold": self.settings.threshold,
                "window_start_ms": ints(n),
                "window_end_ms": ints(n),
            },
        )

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        self._judge(idx, rows, v, b)
        self.pushed[rows] += 1
        self.values.push(rows, v)
        self.times.push(rows, ts)

    def _judge(self, idx: np.ndarray, rows: np.ndarray, v: np.ndarray, b: KindBatch) -> None:
        s = self.settings
        lengths = np.minimum(self.pushed[rows], s.window)
        ready = lengths >= s.min_history
        if not ready.any():
            return
        idx, rows, v, lengths = idx[ready], rows[ready], v[ready], lengths[ready]
        med, scale = lane_stats(self.values, rows, 0, lengths, s.scale_floor)
        z = (v - med) / scale
        b.score[idx] = np.abs(z)
        b.active[idx] = np.abs(z) > s.threshold
        e = b.evidence
        e["median"][idx], e["scale"][idx], e["z"][idx] = med, scale, z
        e["window_start_ms"][idx] = self.times.at(rows, lengths - 1)
        e["window_end_ms"][idx] = self.times.at(rows, 0)


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=SpikeSettings,
        streaming=SpikeDetector,
        vectorised=SpikeBank,
        order=30,
    )
)
