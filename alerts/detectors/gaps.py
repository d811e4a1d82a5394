"""Many short outages that add up: the fraction of the last `window_min` lost in gaps longer than
`slack_intervals` intervals but not longer than the offline timeout (a longer silence is the
offline rule's). Sensor time, so a buffer flushed late leaves no gap. A device has nothing to
report until it has had a gap in the window or is active.

`GapBank` keeps the devices' state in arrays: a batch's sensor times are checked for gaps all at
once, and only the devices with a gap in the window (or active) are stepped time by time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from alerts.detectors.base import DetectorResult
from alerts.detectors.settings import GapSettings
from alerts.detectors.stacked import Stacked

KIND = "gaps"
NONE = -(2**62)  # no sensor time seen yet


@dataclass(slots=True)
class GapDecision:
    index: int  # of the sensor time in the update
    result: DetectorResult


class GapBank(Stacked):
    """Gap detectors of many devices (rows 0, 1, ...); `register` a device before its first
    update."""

    STATE = (("interval_ms", 0.0), ("offline_ms", 0.0), ("last_ts", NONE), ("active", False))

    def __init__(self, settings: GapSettings, capacity: int = 64) -> None:
        super().__init__(capacity)
        self.settings = settings
        self.window_ms = settings.window_min * 60_000
        self.interval_ms = np.zeros(capacity)  # 0: not registered
        self.offline_ms = np.zeros(capacity)
        self.last_ts = np.full(capacity, NONE, dtype=np.int64)
        self.active = np.zeros(capacity, dtype=bool)
        self.lost: dict[int, deque[tuple[int, float]]] = {}  # (end, time lost) of each gap

    def registered(self, rows: np.ndarray) -> np.ndarray:
        self.fit(rows)
        return self.interval_ms[rows] > 0

    def register(self, rows: np.ndarray, interval_ms: np.ndarray, offline_ms: np.ndarray) -> None:
        self.fit(rows)
        self.interval_ms[rows], self.offline_ms[rows] = interval_ms, offline_ms

    def update(self, rows: np.ndarray, ts_ms: np.ndarray) -> list[GapDecision]:
        """Sensor times of registered devices, each device's together, distinct and ascending.
        The decisions in input order."""
        first = np.concatenate(([True], rows[1:] != rows[:-1]))
        last = self.last_ts[rows]
        previous = np.where(first, last, np.maximum(last, np.roll(ts_ms, 1)))
        gap = ts_ms - previous
        new_gap = (
            (previous != NONE)
            & (gap > 0)
            & (self.settings.slack_intervals * self.interval_ms[rows] < gap)
            & (gap <= self.offline_ms[rows])
        )
        # Devices without a gap in the window (an active one has some) have nothing to say:
        # only their newest time moves.
        busy = np.zeros(self.capacity, dtype=bool)
        busy[rows[new_gap]] = True
        busy[list(self.lost)] = True
        slow = busy[rows]
        np.maximum.at(self.last_ts, rows[~slow], ts_ms[~slow])
        decisions = []
        for i in np.flatnonzero(slow).tolist():
            res = self._step(int(rows[i]), int(ts_ms[i]))
            if res is not None:
                decisions.append(GapDecision(i, res))
        return decisions

    def _step(self, row: int, ts: int) -> DetectorResult | None:
        s = self.settings
        last = int(self.last_ts[row])
        lost = self.lost.get(row, deque())
        if last != NONE and ts > last:
            gap = ts - last
            interval_ms = float(self.interval_ms[row])
            if s.slack_intervals * interval_ms < gap <= self.offline_ms[row]:
                lost.append((ts, gap - interval_ms))
        self.last_ts[row] = max(ts, last)
        while lost and lost[0][0] < ts - self.window_ms:
            lost.popleft()
        if lost:
            self.lost[row] = lost
        else:
            self.lost.pop(row, None)
        active = bool(self.active[row])
        if not lost and not active:
            return None
        fraction = sum(x for _, x in lost) / self.window_ms
        active = self.active[row] = fraction >= (s.off_fraction if active else s.on_fraction)
        evidence = {"lost_fraction": fraction, "gaps": len(lost), "window_min": s.window_min}
        return DetectorResult(KIND, fraction / s.on_fraction, bool(active), evidence)
