"""Tampering: a device reporting, row for row, what it reported `lag_h` earlier ("perfect" data
replayed to hide a fault). A row matches when every value equals a row sent `lag_h` earlier (within
`tolerance_s`); `min_rows` matching rows in a row raise it, and it holds until a row differs.

Per device the last day of rows is kept as (time, 64-bit hash of the row) in a ring sized for the
device's reporting interval: ~16 bytes a row, so a province of devices keeps a day of history in
tens of MB. A hash collision would need 2^-64 luck.

`ReplayBank` keeps the rings of many devices in two flat arrays (each device its own stretch) and
judges a batch in rounds of at most one row per device. A device's rows arrive in time order, so
its ring, read from the oldest slot, is sorted by time: the slots within the tolerance of the time
a day back are found by a binary search rather than a scan of the day. When several match, the
lowest slot of the ring is the one reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import rounds
from alerts.detectors.base import DetectorResult
from alerts.detectors.settings import ReplaySettings
from alerts.detectors.stacked import Stacked, grown

KIND = "tampering"
MS_PER_H = 3_600_000
NEVER = -(2**62)  # the time of an empty slot: far past, no overflow in differences


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's set of (column, value) pairs, equal for equal rows.

    Values are finite (ingest refuses NaN); -0.0 counts as 0.0, as it compares equal."""
    columns = _mix(np.arange(1, values.shape[1] + 1, dtype=np.uint64) << np.uint64(40))
    bits = np.where(present, values + 0.0, 0.0).view(np.uint64)
    terms = np.where(present, _mix(bits ^ columns), np.uint64(0))
    return terms.sum(axis=1, dtype=np.uint64).view(np.int64)  # wraps: a sum modulo 2^64


@dataclass(slots=True)
class ReplayBatch:
    """The decisions on a batch of rows, one entry per row."""

    settings: ReplaySettings
    lag_ms: int
    run: np.ndarray  # identical rows in a row, this one included
    same_as_ms: np.ndarray  # time of the matching row a day back; NEVER: none

    @property
    def active(self) -> np.ndarray:
        return self.run >= self.settings.min_rows

    def result(self, i: int) -> DetectorResult:
        run = int(self.run[i])
        evidence: dict[str, float | int | str] = {
            "identical_rows": run,
            "lag_h": self.lag_ms / MS_PER_H,
        }
        if self.same_as_ms[i] != NEVER:
            evidence["same_as_ms"] = int(self.same_as_ms[i])
        min_rows = self.settings.min_rows
        return DetectorResult(KIND, run / min_rows, run >= min_rows, evidence)


class ReplayBank(Stacked):
    """Replay detectors of many devices (rows 0, 1, ...); `register` a device before its first
    row."""

    STATE = (("start", 0), ("slots", 0), ("pushes", 0), ("run", 0))

    def __init__(self, settings: ReplaySettings, capacity: int = 64) -> None:
        super().__init__(capacity)
        self.settings = settings
        self.lag_ms = int(settings.lag_h * MS_PER_H)
        self.tolerance_ms = int(settings.tolerance_s * 1000)
        self.start = np.zeros(capacity, dtype=np.int64)  # of the device's stretch of the rings
        self.slots = np.zeros(capacity, dtype=np.int64)  # 0: not registered
        self.pushes = np.zeros(capacity, dtype=np.int64)
        self.run = np.zeros(capacity, dtype=np.int64)
        self.used = 0
        self.ring_ts = np.full(0, NEVER, dtype=np.int64)
        self.ring_hash = np.zeros(0, dtype=np.int64)

    def registered(self, rows: np.ndarray) -> np.ndarray:
        self.fit(rows)
        return self.slots[rows] > 0

    def register(self, rows: np.ndarray, interval_s: np.ndarray) -> None:
        """Give each device of `rows` a ring that holds a day of rows at its reporting interval."""
        self.fit(rows)
        window_ms = self.lag_ms + 2 * self.tolerance_ms
        n = (window_ms / (np.asarray(interval_s) * 1000)).astype(np.int64) + 16
        end = self.used + int(n.sum())
        if end > len(self.ring_ts):
            size = max(2 * len(self.ring_ts), end)
            self.ring_ts = grown(self.ring_ts, size, NEVER)
            self.ring_hash = grown(self.ring_hash, size, 0)
        self.start[rows] = self.used + np.cumsum(n) - n
        self.slots[rows] = n
        self.used = end

    def update(self, rows: np.ndarray, ts_ms: np.ndarray, hashes: np.ndarray) -> ReplayBatch:
        """Judge a batch of rows (`row_hashes`) of registered devices; a device may repeat, its
        rows in time order."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64)
        out = ReplayBatch(
            self.settings,
            self.lag_ms,
            np.zeros(len(rows), dtype=np.int64),
            np.full(len(rows), NEVER, dtype=np.int64),
        )
        for idx in rounds(rows):
            self._round(idx, rows[idx], ts[idx], hashes[idx], out)
        return out

    def _round(
        self, idx: np.ndarray, d: np.ndarray, ts: np.ndarray, h: np.ndarray, out: ReplayBatch
    ) -> None:
        n, start = self.slots[d], self.start[d]
        oldest = self.pushes[d] % n  # the slot written next holds the oldest row

        def slot(k: np.ndarray) -> np.ndarray:
            """Ring index of the k-th oldest slot."""
            return (oldest + k) % n

        target = ts - self.lag_ms
        # First k (oldest first) whose time is not before target - tolerance.
        lo, hi = np.zeros(len(d), dtype=np.int64), n.copy()
        while (open_ := lo < hi).any():
            mid = (lo + hi) // 2
            before = self.ring_ts[start + slot(mid)] < target - self.tolerance_ms
            lo = np.where(open_ & before, mid + 1, lo)
            hi = np.where(open_ & ~before, mid, hi)
        # Walk the slots within the tolerance; keep the lowest ring index of an equal row.
        best = n.copy()
        k = lo
        while (inside := k < n).any():
            i = start + slot(k)
            inside &= self.ring_ts[i] <= target + self.tolerance_ms
            if not inside.any():
                break
            hit = inside & (self.ring_hash[i] == h)
            best = np.where(hit, np.minimum(best, slot(k)), best)
            k = k + 1
        found = best < n
        self.run[d] = np.where(found, self.run[d] + 1, 0)
        out.run[idx] = self.run[d]
        out.same_as_ms[idx[found]] = self.ring_ts[start[found] + best[found]]
        self.ring_ts[start + oldest] = ts
        self.ring_hash[start + oldest] = h
        self.pushes[d] += 1
