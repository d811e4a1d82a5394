"""Level shifts and drift: two-sided CUSUM of robust z against a lagged rolling baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import KindBatch, Lanes, enabled, floats, kind_batch, lane_stats
from alerts.detectors.base import DetectorResult, RingBuffer, robust_stats, window_of
from alerts.detectors.registry import Detector, register
from alerts.detectors.stacked import grown
from alerts.settings_files import STRICT
from domain.model import AlertFamily

KIND = "drift"
# The sums are capped at this multiple of the threshold so that, once the baseline has caught
# up with a new level, the alert clears in about threshold / slack readings instead of lingering.
CUSUM_CAP = 2.0


@dataclass(frozen=True, slots=True)
class ShiftSettings:
    __pydantic_config__ = STRICT

    window: int
    lag: int
    min_history: int
    scale_floor: float
    slack: float
    threshold: float
    clip: float
    # Readings between recomputations of the baseline (1: every reading); see `baseline_anchor`.
    refresh_rows: int = 1
    # A drift is one sensor's only while no other drift-judged parameter of the device has a
    # drift score above partner_share x its own threshold: parameters moving together are the
    # water (dosing stopped or restored), which the range rules and the event detector report.
    # It is raised once it has been so for partner_rows readings in a row; a partner that was
    # that high within the last partner_memory readings still explains it (the recovery). 0
    # share: off. Applied by the alert rule (alerts/detector_rule.py), which sees the device.
    partner_share: float = 0.0
    partner_rows: int = 1
    partner_memory: int = 1


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
        anchor = int(baseline_anchor(np.asarray(self.pushed, dtype=np.int64), s))
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


class ShiftBank:
    """ShiftDetector over many series (`VectorisedDetector`)."""

    def __init__(self, settings: ShiftSettings, capacity: int) -> None:
        self.settings = settings
        self.enabled = enabled(settings.threshold)
        keep = settings.window + settings.lag if self.enabled else 0  # off: no buffer
        self.values = Lanes(keep, capacity, np.float64)
        self.pushed = np.zeros(capacity, dtype=np.int64)  # readings judged per row
        self.s_pos = np.zeros(capacity)
        self.s_neg = np.zeros(capacity)
        # The baseline last computed per row (ShiftDetector.baseline).
        self.anchor = np.full(capacity, -1, dtype=np.int64)
        self.med = np.full(capacity, np.nan)
        self.scale = np.full(capacity, np.nan)

    def grow(self, capacity: int) -> None:
        self.values.grow(capacity)
        self.pushed = grown(self.pushed, capacity, 0)
        self.s_pos = grown(self.s_pos, capacity, 0.0)
        self.s_neg = grown(self.s_neg, capacity, 0.0)
        self.anchor = grown(self.anchor, capacity, -1)
        self.med = grown(self.med, capacity, np.nan)
        self.scale = grown(self.scale, capacity, np.nan)

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        n = len(values)
        return kind_batch(
            n,
            {
                "value": values,
                "median": floats(n),
                "scale": floats(n),
                "z": floats(n),
                "cusum_up": floats(n),
                "cusum_down": floats(n),
                "threshold": self.settings.threshold,
                "window_end_ms": ts,
            },
        )

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, v: np.ndarray, b: KindBatch
    ) -> None:
        self._judge(idx, rows, v, b)
        self.pushed[rows] += 1
        self.values.push(rows, v)

    def _judge(self, idx: np.ndarray, rows: np.ndarray, v: np.ndarray, b: KindBatch) -> None:
        s = self.settings
        # The baseline: up to `window` values ending `lag` values before the reading.
        lengths = np.minimum(self.pushed[rows] - s.lag, s.window)
        ready = lengths >= s.min_history
        if not ready.any():
            return
        idx, rows, v, lengths = idx[ready], rows[ready], v[ready], lengths[ready]
        anchor = baseline_anchor(self.pushed[rows], s)
        stale = anchor != self.anchor[rows]
        if stale.any():  # a stale row's anchor is its own count: its window ends `lag` back
            r = rows[stale]
            self.med[r], self.scale[r] = lane_stats(
                self.values, r, s.lag, lengths[stale], s.scale_floor
            )
            self.anchor[r] = anchor[stale]
        med, scale = self.med[rows], self.scale[rows]
        z = (v - med) / scale
        # The same arithmetic, in the same order, as ShiftDetector._step.
        cap = CUSUM_CAP * s.threshold
        zc = np.minimum(np.maximum(z, -s.clip), s.clip)
        s_pos = np.minimum(np.maximum(0.0, self.s_pos[rows] + zc - s.slack), cap)
        s_neg = np.minimum(np.maximum(0.0, self.s_neg[rows] - zc - s.slack), cap)
        self.s_pos[rows], self.s_neg[rows] = s_pos, s_neg
        score = np.maximum(s_pos, s_neg)
        b.score[idx] = score
        b.active[idx] = score > s.threshold
        e = b.evidence
        e["median"][idx], e["scale"][idx], e["z"][idx] = med, scale, z
        e["cusum_up"][idx], e["cusum_down"][idx] = s_pos, s_neg


DETECTOR = register(
    Detector(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=ShiftSettings,
        streaming=ShiftDetector,
        vectorised=ShiftBank,
        section="shift",
        order=40,
    )
)
