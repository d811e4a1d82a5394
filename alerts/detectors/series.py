"""Facade over the single-series detectors of one parameter of one device."""

from __future__ import annotations

import math

import numpy as np

from alerts.detectors.base import DetectorResult, batch_result
from alerts.detectors.registry import discovered
from alerts.detectors.settings import DetectorSettings, SeriesSettings


class SeriesDetectors:
    """The streaming reference of every registered detector judging one series, in order.

    A value a detector does not pass (outside the plausible band) is withheld from the detectors
    after it (as NaN), so a broken-probe reading cannot poison their baselines.
    """

    def __init__(self, parameter: str, settings: DetectorSettings | SeriesSettings) -> None:
        series = (
            settings.for_parameter(parameter)
            if isinstance(settings, DetectorSettings)
            else settings
        )
        self.parameter = parameter
        self.settings = series
        self.detectors = [
            (d, series.detectors[d.table], d.streaming(series.detectors[d.table]))
            for d in discovered().values()
            if d.table in series.detectors
        ]

    def update(self, ts_ms: int, value: float) -> list[DetectorResult]:
        """One result per detector, in the registry's order."""
        out = []
        for d, settings, detector in self.detectors:
            out.append(detector.update(ts_ms, value))
            if d.passes is not None and not d.passes(settings, value):
                value = math.nan
        return out

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        """Per detector kind, a BATCH_DTYPE array (score, active): `update` reading by reading."""
        results = [
            self.update(t, v)
            for t, v in zip(np.asarray(ts_ms).tolist(), np.asarray(values).tolist(), strict=True)
        ]
        return {
            d.kind: batch_result(
                np.array([r[k].score for r in results], dtype=np.float64),
                np.array([r[k].active for r in results], dtype=bool),
            )
            for k, (d, _, _) in enumerate(self.detectors)
        }
