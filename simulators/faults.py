"""Faults that a simulated pool can suffer, as plain data.

A `Fault` is a kind, a half-open window `[start_ms, end_ms)` of true (not device) time in UTC
epoch milliseconds, and kind-specific parameters. `PoolModel` interprets them; scenario files
(`simulators/data/scenarios/*.toml`) name them. Two groups:

Physical faults change the water itself, so every parameter that depends on it follows:
- `dosing_pump_failure`: the hypochlorite pump delivers only `remaining_fraction` of what the
  controller asks for; free chlorine decays (fast under bather load), ORP falls with it.
- `ph_controller_runaway`: the acid controller misbehaves. `direction = "down"`: the acid pump
  is stuck on and pH falls at `rate_ph_per_h`; `"up"`: the acid tank is empty and pH climbs at
  `rate_ph_per_h` on top of the natural upward drift.
- `filtration_failure`: the filter removes only `remaining_fraction` of its normal load and
  releases `release_ntu_per_h` (media breakthrough, bypass valve left open); turbidity climbs.

Sensor and reporting faults leave the water alone and change only what the device reports:
- `sensor_stuck`: `parameter` repeats its last reported value exactly, flagged N.
- `sensor_drift`: `parameter` reads off by `rate_per_h` times the hours since the fault started.
- `calibration`: `parameter` is flagged C; with `reference_value` set, it reads the calibration
  standard (e.g. pH buffer 6.86) instead of the pool, which a system ignoring flags would take
  for a violation.
- `analyzer_off`: nothing is sent; with `opening_hours_only` only while the pool is open (the
  pattern of an operator hiding bad water from the supervisor).
- `replay`: tampering; the device reports, in a loop, the values it reported during the
  `loop_hours` before the fault started, with fresh timestamps.
- `intermittent_connectivity`: outages of exponentially distributed length (mean
  `mean_outage_min`) cover about `loss_fraction` of the time; samples in an outage are dropped.
- `clock_skew`: reported timestamps are `offset_min` minutes off true time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

# The Landun parameter names a pool analyzer reports (see domain/data/parameters.toml).
POOL_PARAMETERS: tuple[str, ...] = (
    "free_chlorine",
    "combined_chlorine",
    "ph",
    "turbidity",
    "orp",
    "temperature",
)

# What drinking-water analyzers report beyond those (simulators/water_model.py).
WATER_PARAMETERS: tuple[str, ...] = (
    "chlorine_dioxide",
    "conductivity",
    "tds",
    "pressure",
    "tank_level",
)


class FaultKind(StrEnum):
    DOSING_PUMP_FAILURE = "dosing_pump_failure"
    PH_CONTROLLER_RUNAWAY = "ph_controller_runaway"
    FILTRATION_FAILURE = "filtration_failure"
    SENSOR_STUCK = "sensor_stuck"
    SENSOR_DRIFT = "sensor_drift"
    CALIBRATION = "calibration"
    ANALYZER_OFF = "analyzer_off"
    REPLAY = "replay"
    INTERMITTENT_CONNECTIVITY = "intermittent_connectivity"
    CLOCK_SKEW = "clock_skew"


PHYSICAL_KINDS = frozenset(
    {
        FaultKind.DOSING_PUMP_FAILURE,
        FaultKind.PH_CONTROLLER_RUNAWAY,
        FaultKind.FILTRATION_FAILURE,
    }
)

# Every parameter a kind accepts, with its default; None marks an optional parameter without a
# default. Unknown names are rejected so that a typo in a scenario file fails loudly.
PARAM_DEFAULTS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.DOSING_PUMP_FAILURE: {"remaining_fraction": 0.0},
    FaultKind.PH_CONTROLLER_RUNAWAY: {"direction": "down", "rate_ph_per_h": 0.2},
    FaultKind.FILTRATION_FAILURE: {"remaining_fraction": 0.0, "release_ntu_per_h": 0.25},
    FaultKind.SENSOR_STUCK: {"parameter": "free_chlorine"},
    FaultKind.SENSOR_DRIFT: {"parameter": "orp", "rate_per_h": -1.5},
    FaultKind.CALIBRATION: {"parameter": "ph", "reference_value": None},
    FaultKind.ANALYZER_OFF: {"opening_hours_only": True},
    FaultKind.REPLAY: {"loop_hours": 24.0},
    FaultKind.INTERMITTENT_CONNECTIVITY: {"loss_fraction": 0.3, "mean_outage_min": 4.0},
    FaultKind.CLOCK_SKEW: {"offset_min": 30.0},
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault over `[start_ms, end_ms)` of true time; `params` is completed with defaults."""

    kind: FaultKind
    start_ms: int
    end_ms: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = FaultKind(self.kind)
        if self.end_ms <= self.start_ms:
            raise ValueError(f"fault {kind}: end_ms must be after start_ms")
        merged = resolve_params(kind, self.params)
        # Frozen dataclass: normalise the fields once, here, and keep them read-only after.
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "params", MappingProxyType(merged))

    @property
    def is_physical(self) -> bool:
        return self.kind in PHYSICAL_KINDS

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms


def resolve_params(kind: FaultKind, params: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's defaults overlaid with `params`, after checking names and values."""
    defaults = PARAM_DEFAULTS[kind]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"fault {kind}: unknown parameter(s) {sorted(unknown)}")
    merged = {**defaults, **params}
    parameter = merged.get("parameter")
    if parameter is not None and parameter not in POOL_PARAMETERS + WATER_PARAMETERS:
        raise ValueError(f"fault {kind}: unknown parameter {parameter!r}")
    if kind is FaultKind.PH_CONTROLLER_RUNAWAY and merged["direction"] not in ("up", "down"):
        raise ValueError(f"fault {kind}: direction must be 'up' or 'down'")
    fraction_keys = ("remaining_fraction", "loss_fraction")
    for key in fraction_keys:
        if key in merged and not 0.0 <= float(merged[key]) <= 1.0:
            raise ValueError(f"fault {kind}: {key} must be within [0, 1]")
    return merged
