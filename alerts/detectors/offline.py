"""Deadman: devices that have not reported within k x their expected interval.

Evaluated on a clock (`overdue(now_ms)`), not on arrival, because a silent device sends nothing
to react to. Feed `seen` with Landun's receive time, not the sensor's clock, which may be wrong.
"""

from __future__ import annotations

import numpy as np

from alerts.detectors.base import DetectorResult
from alerts.detectors.settings import OfflineSettings

KIND = "offline"


def overdue_mask(
    last_seen_ms: np.ndarray,
    interval_s: np.ndarray,
    now_ms: int,
    timeout_factor: float,
    min_timeout_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(overdue flags, silence / timeout) for arrays of devices; a pure function of the clock."""
    timeout_ms = np.maximum(interval_s * timeout_factor, min_timeout_s) * 1000.0
    ratio = (now_ms - last_seen_ms) / timeout_ms
    return ratio > 1.0, ratio


class OfflineMonitor:
    """Last-seen times and expected intervals of many devices in parallel numpy arrays."""

    def __init__(self, settings: OfflineSettings, capacity: int = 64) -> None:
        self.settings = settings
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.last_seen_ms = np.zeros(capacity, dtype=np.int64)
        self.interval_s = np.zeros(capacity, dtype=np.float64)

    def register(self, device_id: str, interval_s: float, now_ms: int) -> None:
        """Start watching a device; it gets one full timeout of grace from `now_ms`."""
        i = self.index.get(device_id)
        if i is None:
            i = len(self.ids)
            if i == len(self.interval_s):
                self.last_seen_ms = np.resize(self.last_seen_ms, 2 * i)
                self.interval_s = np.resize(self.interval_s, 2 * i)
            self.index[device_id] = i
            self.ids.append(device_id)
            self.last_seen_ms[i] = now_ms
        self.interval_s[i] = interval_s

    def seen(self, device_id: str, recv_ms: int) -> None:
        i = self.index[device_id]
        # Out-of-order arrivals (an offline buffer flushed late) must not move the clock back.
        self.last_seen_ms[i] = max(int(self.last_seen_ms[i]), recv_ms)

    def overdue(self, now_ms: int) -> list[DetectorResult]:
        n = len(self.ids)
        s = self.settings
        flags, ratio = overdue_mask(
            self.last_seen_ms[:n], self.interval_s[:n], now_ms, s.timeout_factor, s.min_timeout_s
        )
        return [
            DetectorResult(
                KIND,
                float(ratio[i]),
                True,
                {
                    "device_id": self.ids[i],
                    "last_seen_ms": int(self.last_seen_ms[i]),
                    "interval_s": float(self.interval_s[i]),
                    "timeout_s": max(float(self.interval_s[i]) * s.timeout_factor, s.min_timeout_s),
                    "silent_s": (now_ms - int(self.last_seen_ms[i])) / 1000.0,
                },
            )
            for i in np.flatnonzero(flags)
        ]
