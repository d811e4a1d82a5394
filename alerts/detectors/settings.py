"""Detector settings from `alerts/data/detectors.toml`, as frozen dataclasses.

The file holds engineering settings (chosen by reasoning about sensors and, for the drinking-water
event profile, tuned on the first two thirds of the GECCO 2018 training file); they are not limits
from a standard. Per-parameter tables override the `series_defaults` tables key by key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ImplausibleSettings:
    low: float
    high: float
    max_rate_per_min: float


@dataclass(frozen=True, slots=True)
class StuckSettings:
    epsilon: float
    min_readings: int
    min_minutes: float


@dataclass(frozen=True, slots=True)
class SpikeSettings:
    window: int
    min_history: int
    threshold: float
    scale_floor: float


@dataclass(frozen=True, slots=True)
class ShiftSettings:
    window: int
    lag: int
    min_history: int
    scale_floor: float
    slack: float
    threshold: float
    clip: float
    # Readings between recomputations of the baseline (1: every reading); see shift.py.
    refresh_rows: int = 1


@dataclass(frozen=True, slots=True)
class SeriesSettings:
    parameter: str
    implausible: ImplausibleSettings
    stuck: StuckSettings
    spike: SpikeSettings
    shift: ShiftSettings


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    timeout_factor: float
    min_timeout_s: float


@dataclass(frozen=True, slots=True)
class InconsistencySettings:
    orp: str
    chlorine: str
    window: int
    orp_drop: float
    chlorine_tolerance: float


@dataclass(frozen=True, slots=True)
class EventSettings:
    parameters: tuple[str, ...]
    window: int
    lag: int
    min_history: int
    top_k: int
    threshold: float
    persist_m: int
    persist_n: int
    off_ratio: float
    scale_floor: dict[str, float]
    # Second, short baseline (0 = off); a reading must stand out against both to count.
    short_window: int = 0
    # Rows the baselines stay frozen while an event is active (0 = never frozen).
    max_frozen: int = 0
    # Rows between recomputations of the full baseline (1: every row).
    refresh_rows: int = 1
    # Step channel (0 = off): the newest row and the one before it, both against the median of
    # the `step_window` rows before them, scaled by the spread of that statistic over the last
    # `step_scale_window` rows. Counts as (step score) x threshold / step_threshold.
    step_window: int = 0
    step_scale_window: int = 1440
    step_threshold: float = 8.0
    # Ramp channel (0 = off): a parameter that moved the same way on each of its last
    # `ramp_rows` readings, by (total change) / scale_floor; counts as (largest of those) x
    # threshold / ramp_threshold.
    ramp_rows: int = 0
    ramp_threshold: float = 3.0
    # An episode clears when its score falls below clear_ratio x its peak (0 = off); the next
    # episode must then rise `threshold` above the lowest score since.
    clear_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    lag_h: float
    tolerance_s: float
    min_rows: int


@dataclass(frozen=True, slots=True)
class GapSettings:
    window_min: float
    on_fraction: float
    off_fraction: float
    slack_intervals: float


@dataclass(frozen=True, slots=True)
class ClockSkewSettings:
    min_refused: int


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    source: str
    confidence: str
    series: dict[str, SeriesSettings]
    offline: OfflineSettings
    inconsistency: InconsistencySettings
    event_profiles: dict[str, EventSettings]
    replay: ReplaySettings
    gaps: GapSettings
    clock_skew: ClockSkewSettings

    def for_parameter(self, parameter: str) -> SeriesSettings:
        try:
            return self.series[parameter]
        except KeyError:
            raise KeyError(f"no detector settings for parameter {parameter!r}") from None

    def event_profile(self, name: str) -> EventSettings:
        try:
            return self.event_profiles[name]
        except KeyError:
            raise KeyError(f"no event profile {name!r} in detector settings") from None


def _merged(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **override}


def parse_detector_settings(doc: dict[str, Any]) -> DetectorSettings:
    defaults = doc.get("series_defaults", {})
    series: dict[str, SeriesSettings] = {}
    for name, spec in doc["series"].items():
        series[name] = SeriesSettings(
            parameter=name,
            implausible=ImplausibleSettings(**spec["implausible"]),
            stuck=StuckSettings(**_merged(defaults.get("stuck", {}), spec.get("stuck", {}))),
            spike=SpikeSettings(**_merged(defaults.get("spike", {}), spec.get("spike", {}))),
            shift=ShiftSettings(**_merged(defaults.get("shift", {}), spec.get("shift", {}))),
        )
    profiles = {
        name: EventSettings(
            **{
                **spec,
                "parameters": tuple(spec["parameters"]),
                "scale_floor": {k: float(v) for k, v in spec["scale_floor"].items()},
            }
        )
        for name, spec in doc["event_profiles"].items()
    }
    for name, profile in profiles.items():
        missing = set(profile.parameters) - set(profile.scale_floor)
        if missing:
            raise ValueError(f"event profile {name!r} has no scale_floor for {sorted(missing)}")
    return DetectorSettings(
        source=doc["source"],
        confidence=doc["confidence"],
        series=series,
        offline=OfflineSettings(**doc["offline"]),
        inconsistency=InconsistencySettings(**doc["inconsistency"]),
        event_profiles=profiles,
        replay=ReplaySettings(**doc["replay"]),
        gaps=GapSettings(**doc["gaps"]),
        clock_skew=ClockSkewSettings(**doc["clock_skew"]),
    )


def load_detector_settings(path: str | Path | None = None) -> DetectorSettings:
    """Read the committed settings file, or `path` when given."""
    if path is None:
        text = resources.files("alerts").joinpath("data/detectors.toml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_detector_settings(tomllib.loads(text))
