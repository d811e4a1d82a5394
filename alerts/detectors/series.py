"""Facade over the single-series detectors of one parameter of one device."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import DetectorResult
from alerts.detectors.flatline import StuckDetector
from alerts.detectors.plausibility import ImplausibleDetector
from alerts.detectors.settings import DetectorSettings, SeriesSettings
from alerts.detectors.shift import ShiftDetector
from alerts.detectors.spike import SpikeDetector


class SeriesDetectors:
    """Implausible, stuck, spike and drift detectors over one series.

    A value outside the plausible band is reported as implausible and then withheld from the
    statistical detectors (as NaN), so a broken-probe reading cannot poison their baselines.
    """

    def __init__(self, parameter: str, settings: DetectorSettings | SeriesSettings) -> None:
        series = (
            settings.for_parameter(parameter)
            if isinstance(settings, DetectorSettings)
            else settings
        )
        self.parameter = parameter
        self.settings = series
        self.implausible = ImplausibleDetector(series.implausible)
        self.stuck = StuckDetector(series.stuck)
        self.spike = SpikeDetector(series.spike)
        self.shift = ShiftDetector(series.shift)

    def _in_band(self, value: float) -> bool:
        return self.settings.implausible.low <= value <= self.settings.implausible.high

    def update(self, ts_ms: int, value: float) -> list[DetectorResult]:
        """One result per detector: implausible, stuck, spike, drift (in that order)."""
        first = self.implausible.update(ts_ms, value)
        judged = value if self._in_band(value) else math.nan
        return [
            first,
            self.stuck.update(ts_ms, judged),
            self.spike.update(ts_ms, judged),
            self.shift.update(ts_ms, judged),
        ]

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        """Per detector kind, a BATCH_DTYPE array (score, active) equal to repeated `update`."""
        v = np.asarray(values, dtype=np.float64)
        band = self.settings.implausible
        judged = np.where((v >= band.low) & (v <= band.high), v, np.nan)
        return {
            "implausible": self.implausible.update_many(ts_ms, v),
            "stuck": self.stuck.update_many(ts_ms, judged),
            "spike": self.spike.update_many(ts_ms, judged),
            "drift": self.shift.update_many(ts_ms, judged),
        }
