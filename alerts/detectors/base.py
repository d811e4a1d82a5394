"""Shared pieces of the streaming detectors: the result record, ring buffers and robust stats.

Every detector has two drivers over the same state: `update` (one reading) and `update_many`
(a batch, vectorised where the maths allows). Both must give identical results, so the window
statistics use only medians (order independent, hence bit-identical whether computed on a ring
buffer or on a sliding-window view) and recursions share one scalar step function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


def rolling_robust_stats(
    series: np.ndarray, window: int, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Median and scale of every length-`window` slice of `series` (row i = series[i:i+window]).

    Computed in chunks so memory stays bounded on long replays.
    """
    n = len(series) - window + 1
    med = np.empty(max(n, 0))
    scale = np.empty(max(n, 0))
    chunk = max(1, 2_000_000 // window)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        views = sliding_window_view(series[start : stop + window - 1], window)
        m = np.median(views, axis=1)
        med[start:stop] = m
        mad = np.median(np.abs(views - m[:, None]), axis=1) * MAD_TO_SD
        scale[start:stop] = np.maximum(mad, scale_floor)
    return med, scale


def lagged_window_stats(
    history: np.ndarray,
    new: np.ndarray,
    window: int,
    lag: int,
    min_history: int,
    scale_floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline median and scale for each value of `new`, as the streaming detectors see them.

    `history` is what a ring buffer of capacity window + lag held before the batch. The baseline
    of a value is the up-to-`window` values ending `lag` values before it (never itself). Values
    whose baseline has fewer than `min_history` points get NaN.
    """
    ext = np.concatenate((history, new))
    h = len(history)
    n = len(new)
    med = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    positions = np.arange(h, h + n)
    available = np.minimum(positions - lag, window)
    full = np.flatnonzero(positions - lag >= window)
    # Warm-up (partial windows) happens at most `window` times per series: loop over it.
    for j in np.flatnonzero((available >= min_history) & (positions - lag < window)):
        end = positions[j] - lag
        med[j], scale[j] = robust_stats(ext[:end], scale_floor)
    if len(full):
        first = positions[full[0]] - lag - window
        last = positions[full[-1]] - lag
        m, s = rolling_robust_stats(ext[first:last], window, scale_floor)
        med[full] = m
        scale[full] = s
    return med, scale


def window_of(buffer: RingBuffer, lag: int) -> np.ndarray:
    """The baseline window of a (window + lag) ring buffer: all but its newest `lag` values."""
    values = buffer.values()
    # Clamped: a negative stop would slice from the end and hand back the oldest values.
    return values[: max(len(values) - lag, 0)]
