"""`integrity:zero_run:<p>`: an analyser reporting exactly zero, reading after reading.

A dry measuring cell or a disconnected electrode often reads a hard 0 rather than a plausible
value; free chlorine can be near zero, but rarely exactly zero for many readings while the
analyser's noise is otherwise there. Idle until `[plugins.zero_run] parameters = [...]` names
the parameters it judges (detectors.toml).
"""

from __future__ import annotations

import numpy as np

from alerts.detectors.base import DetectorResult, batch_result
from alerts.detectors.registry import Plugin, PluginSettings, register
from domain.model import AlertFamily

KIND = "zero_run"


class ZeroRunSettings(PluginSettings):
    min_readings: int = 10  # ten readings in a row: one zero is a glitch, ten are a fault
    epsilon: float = 1e-9  # "exactly zero": below any analyser's resolution


class ZeroRunDetector:
    """Active while the last `min_readings` readings were all zero."""

    def __init__(self, settings: ZeroRunSettings) -> None:
        self.settings = settings
        self.run = 0  # zero readings in a row, up to now

    def update(self, ts_ms: int, value: float) -> DetectorResult:
        self.run = self.run + 1 if abs(value) <= self.settings.epsilon else 0
        active = self.run >= self.settings.min_readings
        return DetectorResult(KIND, float(self.run), active, {"zero_readings": self.run})

    def update_many(self, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The same decisions for a batch of this series' readings, vectorised."""
        zero = np.abs(np.asarray(values, dtype=np.float64)) <= self.settings.epsilon
        # Run length at each reading: readings since the last non-zero one (or the start,
        # continuing the run carried in from earlier batches).
        index = np.arange(1, len(zero) + 1)
        last_nonzero = np.maximum.accumulate(np.where(zero, 0, index))
        run = index - last_nonzero + np.where(last_nonzero == 0, self.run, 0)
        if len(run):
            self.run = int(run[-1])
        return batch_result(run.astype(np.float64), run >= self.settings.min_readings)


PLUGIN = register(
    Plugin(
        kind=KIND,
        family=AlertFamily.INTEGRITY,
        settings=ZeroRunSettings,
        streaming=ZeroRunDetector,
        vectorised=ZeroRunDetector,
    )
)
