"""Streaming anomaly detectors (numpy): causal, one state per series, batch == streaming."""

from alerts.detectors.base import BATCH_DTYPE, DetectorResult
from alerts.detectors.consistency import InconsistencyDetector
from alerts.detectors.event import EventDetector
from alerts.detectors.offline import OfflineMonitor, overdue_mask
from alerts.detectors.plugins.flatline import StuckDetector
from alerts.detectors.plugins.plausibility import ImplausibleDetector
from alerts.detectors.plugins.shift import ShiftDetector
from alerts.detectors.plugins.spike import SpikeDetector
from alerts.detectors.series import SeriesDetectors
from alerts.detectors.settings import (
    DetectorSettings,
    EventSettings,
    SeriesSettings,
    load_detector_settings,
)

__all__ = [
    "BATCH_DTYPE",
    "DetectorResult",
    "DetectorSettings",
    "EventDetector",
    "EventSettings",
    "ImplausibleDetector",
    "InconsistencyDetector",
    "OfflineMonitor",
    "SeriesDetectors",
    "SeriesSettings",
    "ShiftDetector",
    "SpikeDetector",
    "StuckDetector",
    "load_detector_settings",
    "overdue_mask",
]
