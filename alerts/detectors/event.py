"""Multivariate water-quality event score: several parameters leaving their baselines together.

Per parameter, z = (x - median) / max(1.4826 MAD, floor) against a lagged rolling baseline of its
own valid readings; the row score is sqrt(mean of the top-k z^2) over the parameters present. A
row is raw-positive when the score exceeds the threshold; the detector turns active when m of the
last n scored rows are raw-positive, and stays active while the score is above off_ratio x
threshold (hysteresis). Rows where every parameter is missing leave the state untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from alerts.detectors.base import (
    DetectorResult,
    RingBuffer,
    batch_result,
    lagged_window_stats,
    robust_stats,
    window_of,
)
from alerts.detectors.settings import EventSettings

KIND = "water_quality_event"


def combine_top_k(z2_sorted_desc: np.ndarray, available: np.ndarray, top_k: int) -> np.ndarray:
    """sqrt(mean of the top-k squared z per row). Summed column by column in a fixed order, so a
    single row (streaming) and many rows (batch) give bit-identical results."""
    k = np.minimum(available, top_k)
    acc = np.zeros(z2_sorted_desc.shape[0])
    for j in range(min(top_k, z2_sorted_desc.shape[1])):
        acc = acc + np.where(j < k, z2_sorted_desc[:, j], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, np.sqrt(acc / k), np.nan)


class EventDetector:
    def __init__(self, parameters: Sequence[str], settings: EventSettings) -> None:
        unknown = set(parameters) - set(settings.scale_floor)
        if unknown:
            raise ValueError(f"no scale_floor in the event settings for {sorted(unknown)}")
        self.parameters = tuple(parameters)
        self.settings = settings
        self.buffers = [RingBuffer(settings.window + settings.lag) for _ in self.parameters]
        self.floors = [settings.scale_floor[p] for p in self.parameters]
        self.raw = np.zeros(settings.persist_n, dtype=bool)  # ring of recent raw-positive rows
        self.raw_head = 0
        self.raw_sum = 0
        self.active = False
        self.active_since_ms = -1

    def _persist_step(self, ts_ms: int, score: float) -> bool:
        """Persistence and hysteresis; shared by `update` and `update_many`."""
        s = self.settings
        raw = score > s.threshold
        self.raw_sum += int(raw) - int(self.raw[self.raw_head])
        self.raw[self.raw_head] = raw
        self.raw_head = (self.raw_head + 1) % s.persist_n
        if self.active:
            if not score > s.off_ratio * s.threshold:
                self.active = False
                # A new episode must earn its own m-of-n, not reuse the last one's rows.
                self.raw[:] = False
                self.raw_sum = 0
        elif self.raw_sum >= s.persist_m:
            self.active = True
            self.active_since_ms = ts_ms
        return self.active

    def update(self, ts_ms: int, values: Sequence[float] | np.ndarray) -> DetectorResult:
        s = self.settings
        row = np.asarray(values, dtype=np.float64)
        z = np.full(len(self.parameters), np.nan)
        medians = {}
        for j, buf in enumerate(self.buffers):
            x = row[j]
            if math.isnan(x):
                continue
            window = window_of(buf, s.lag)
            if len(window) >= s.min_history:
                med, scale = robust_stats(window, self.floors[j])
                z[j] = (x - med) / scale
                medians[self.parameters[j]] = med
            buf.push(x)
        if np.isnan(row).all():
            return DetectorResult(KIND, math.nan, self.active)
        score = self._score_rows(z[None, :])[0]
        active = self._persist_step(ts_ms, score)
        evidence = {
            "threshold": s.threshold,
            "active_since_ms": self.active_since_ms if active else -1,
            "window_end_ms": ts_ms,
            **{f"z_{p}": float(z[j]) for j, p in enumerate(self.parameters)},
            **{f"median_{p}": m for p, m in medians.items()},
        }
        return DetectorResult(KIND, float(score), active, evidence)

    def _score_rows(self, z: np.ndarray) -> np.ndarray:
        z2 = np.where(np.isnan(z), -np.inf, z * z)
        z2_sorted = -np.sort(-z2, axis=1)
        available = (~np.isnan(z)).sum(axis=1)
        return combine_top_k(z2_sorted, available, self.settings.top_k)

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`values` has one column per parameter, in the constructor's order."""
        s = self.settings
        ts = np.asarray(ts_ms, dtype=np.int64)
        rows = np.asarray(values, dtype=np.float64).reshape(len(ts), len(self.parameters))
        z = np.full(rows.shape, np.nan)
        for j, buf in enumerate(self.buffers):
            ok = np.flatnonzero(~np.isnan(rows[:, j]))
            med, scale = lagged_window_stats(
                buf.values(), rows[ok, j], s.window, s.lag, s.min_history, self.floors[j]
            )
            z[ok, j] = (rows[ok, j] - med) / scale
            buf.extend(rows[ok, j])
        score = self._score_rows(z)
        active = np.zeros(len(ts), dtype=bool)
        present = ~np.isnan(rows).all(axis=1)
        for i in range(len(ts)):
            active[i] = self._persist_step(int(ts[i]), score[i]) if present[i] else self.active
        return batch_result(score, active)
