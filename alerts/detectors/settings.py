"""Detector settings from `alerts/data/detectors.toml`, as frozen dataclasses.

The file holds engineering settings (chosen by reasoning about sensors and, for the drinking-water
event profile, tuned on the first two thirds of the GECCO 2018 training file); they are not limits
from a standard. Per-parameter tables override the `series_defaults` tables key by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.detectors.registry import discovered
from alerts.settings_files import (
    STRICT,
    SettingsError,
    check_keys,
    checked,
    parse_toml,
    read_toml,
)


@dataclass(frozen=True, slots=True)
class SeriesSettings:
    """The settings of every registered detector judging one parameter, by its table name
    (`series.shift` reads like a field)."""

    parameter: str
    detectors: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "detectors")[name]
        except (KeyError, AttributeError):
            raise AttributeError(name) from None

    def replaced(self, **tables: Any) -> SeriesSettings:
        """A copy with these detectors' settings replaced."""
        return SeriesSettings(self.parameter, {**self.detectors, **tables})


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    __pydantic_config__ = STRICT

    timeout_factor: float
    min_timeout_s: float


@dataclass(frozen=True, slots=True)
class InconsistencySettings:
    __pydantic_config__ = STRICT

    orp: str
    chlorine: str
    window: int
    orp_drop: float
    chlorine_tolerance: float
    min_chlorine: float


@dataclass(frozen=True, slots=True)
class EventSettings:
    __pydantic_config__ = STRICT

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
    # Rows in a row a parameter's readings are held out of its level baseline (0 = never):
    # while the detector is active, and (hold_z > 0) while the reading's own |level z| exceeds
    # hold_z (a suspect row, alarmed or not). After that they flow in again, so a lasting new
    # level becomes the new normal.
    max_frozen: int = 0
    hold_z: float = 0.0
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
    # A step or ramp channel score above the threshold raises at once: those channels are
    # confirmed over two or `ramp_rows` rows already, so m-of-n would only add lateness.
    confirmed_raise: bool = False
    # Operating data (flows) as context, never as event signals: a confirmed relative change of
    # a `context` column by more than `context_change` against the median of its
    # `context_window` rows before marks a flow change; for `context_rows` rows after it, the z
    # of the `context_explains` parameters (in every channel) is multiplied by
    # `context_discount` (0: a move of theirs alone is explained away). 0 rows: off.
    context: tuple[str, ...] = ()
    context_explains: tuple[str, ...] = ()
    context_window: int = 60
    context_change: float = 0.1
    context_rows: int = 0
    context_discount: float = 1.0


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    __pydantic_config__ = STRICT

    lag_h: float
    tolerance_s: float
    min_rows: int


@dataclass(frozen=True, slots=True)
class GapSettings:
    __pydantic_config__ = STRICT

    window_min: float
    on_fraction: float
    off_fraction: float
    slack_intervals: float


@dataclass(frozen=True, slots=True)
class ClockSkewSettings:
    __pydantic_config__ = STRICT

    min_refused: int


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    __pydantic_config__ = STRICT

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


def _table(value: Any, file: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(file, key, "expected a table")
    return value


def _merged(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **override}


_TOP = {"source", "confidence", "series_defaults", "series", "offline", "inconsistency"}
_TOP |= {"event_profiles", "replay", "gaps", "clock_skew"}


def parse_detector_settings(doc: dict[str, Any], file: str = "detectors.toml") -> DetectorSettings:
    """The settings of `doc`, or SettingsError naming the file, the key and the reason."""
    check_keys(doc, _TOP, file)
    # The single-series detectors: every registered one, by its table (registry.py).
    tables = {d.table: d for d in discovered().values()}
    defaults = _table(doc.get("series_defaults", {}), file, "series_defaults")
    check_keys(defaults, set(tables), file, "series_defaults")
    series: dict[str, SeriesSettings] = {}
    for name, spec in _table(doc.get("series", {}), file, "series").items():
        key = f"series.{name}"
        check_keys(_table(spec, file, key), set(tables), file, key)
        series[name] = SeriesSettings(
            parameter=name,
            detectors={
                table: checked(
                    d.settings,
                    _merged(
                        _table(defaults.get(table, {}), file, f"series_defaults.{table}"),
                        _table(spec.get(table, {}), file, f"{key}.{table}"),
                    ),
                    file,
                    f"{key}.{table}",
                )
                for table, d in tables.items()
                if table in defaults or table in spec
            },
        )
    profiles = {
        name: checked(EventSettings, spec, file, f"event_profiles.{name}")
        for name, spec in doc.get("event_profiles", {}).items()
    }
    for name, profile in profiles.items():
        missing = set(profile.parameters) - set(profile.scale_floor)
        if missing:
            raise SettingsError(
                file, f"event_profiles.{name}.scale_floor", f"none for {sorted(missing)}"
            )
        strange = set(profile.context_explains) - set(profile.parameters)
        if strange:
            raise SettingsError(
                file, f"event_profiles.{name}.context_explains", f"not judged: {sorted(strange)}"
            )
    return DetectorSettings(
        source=checked(str, doc.get("source"), file, "source"),
        confidence=checked(str, doc.get("confidence"), file, "confidence"),
        series=series,
        offline=checked(OfflineSettings, doc.get("offline"), file, "offline"),
        inconsistency=checked(
            InconsistencySettings, doc.get("inconsistency"), file, "inconsistency"
        ),
        event_profiles=profiles,
        replay=checked(ReplaySettings, doc.get("replay"), file, "replay"),
        gaps=checked(GapSettings, doc.get("gaps"), file, "gaps"),
        clock_skew=checked(ClockSkewSettings, doc.get("clock_skew"), file, "clock_skew"),
    )


def load_detector_settings(path: str | Path | None = None) -> DetectorSettings:
    """Read the settings file (the config dir's or the packaged one), or `path` when given."""
    if path is None:
        file, doc = read_toml("detectors.toml")
    else:
        file, doc = str(path), parse_toml(str(path), Path(path).read_text("utf-8"))
    return parse_detector_settings(doc, file)
