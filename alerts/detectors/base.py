"""Shared pieces of the streaming detectors: the result record, ring buffers and robust stats.

A detector's streaming form (`update`, one reading) and its batch forms (`update_many`, or a bank
over many series) must give identical results, so the window statistics use only medians (order
independent, hence bit-identical whether computed on a ring buffer or on a sliding-window view)
and recursions share one scalar step function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Scale of the median absolute deviation to a standard deviation for Gaussian noise.
MAD_TO_SD = 1.4826

# What `update_many` returns: one row per input reading.
BATCH_DTYPE = np.dtype([("score", "f8"), ("active", "?")])


@dataclass(slots=True)
class DetectorResult:
    """One detector decision the alert engine can turn into an alert."""

    kind: str
    score: float
    active: bool
    evidence: Mapping[str, float | int | str] = field(default_factory=dict)


def batch_result(scores: np.ndarray, active: np.ndarray) -> np.ndarray:
    out = np.empty(len(scores), dtype=BATCH_DTYPE)
    out["score"] = scores
    out["active"] = active
    return out


class RingBuffer:
    """Fixed-capacity float buffer; the newest `capacity` values in arrival order on demand."""

    __slots__ = ("capacity", "count", "data", "head")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = np.zeros(capacity, dtype=np.float64)
        self.head = 0  # index the next value goes to
        self.count = 0

    def push(self, value: float) -> None:
        self.data[self.head] = value
        self.head = (self.head + 1) % self.capacity
        if self.count < self.capacity:
            self.count += 1

    def values(self) -> np.ndarray:
        """Stored values, oldest first (a copy)."""
        if self.count < self.capacity:
            return self.data[: self.count].copy()
        return np.concatenate((self.data[self.head :], self.data[: self.head]))

    def extend(self, values: np.ndarray) -> None:
        """Push many values; `values()` afterwards equals pushing them one by one."""
        n = len(values)
        if n >= self.capacity:
            self.data[:] = values[n - self.capacity :]
            self.head = 0
            self.count = self.capacity
            return
        first = min(n, self.capacity - self.head)
        self.data[self.head : self.head + first] = values[:first]
        self.data[: n - first] = values[first:]
        self.head = (self.head + n) % self.capacity
        self.count = min(self.capacity, self.count + n)


def median_last(a: np.ndarray) -> np.ndarray:
    """Median along the last axis, equal to np.median's, without its per-call overhead (which
    dominates on the small windows judged once per reading). No NaNs expected."""
    n = a.shape[-1]
    h = n // 2
    if n % 2:
        return np.partition(a, h, axis=-1)[..., h]
    part = np.partition(a, (h - 1, h), axis=-1)
    return (part[..., h - 1] + part[..., h]) * 0.5


def _sorted_median(s: np.ndarray) -> float:
    n = len(s)
    return float((s[(n - 1) // 2] + s[n // 2]) / 2)


def robust_stats(window: np.ndarray, scale_floor: float) -> tuple[float, float]:
    """Median and MAD-based scale of one window; the floor stops quantised data dividing by 0.

    By sorting, which gives np.median's values exactly at a fraction of its cost on one small
    window (np.median's generality costs ~20 µs a call; this runs once per reading)."""
    med = _sorted_median(np.sort(window))
    deviations = np.abs(window - med)
    deviations.sort()
    return med, max(_sorted_median(deviations) * MAD_TO_SD, scale_floor)


def window_of(buffer: RingBuffer, lag: int) -> np.ndarray:
    """The baseline window of a (window + lag) ring buffer: all but its newest `lag` values."""
    values = buffer.values()
    # Clamped: a negative stop would slice from the end and hand back the oldest values.
    return values[: max(len(values) - lag, 0)]
