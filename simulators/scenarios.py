"""Fault scenarios as data: one TOML file per scenario in `simulators/data/scenarios/`.

A scenario file holds:

    id = "dosing_pump_failure"          # must match the file name
    domain = "pool"                     # or "drinking_water" (simulators/water_model.py); the
                                        # device index then counts small, secondary and school
                                        # supplies in turn
    description = "..."
    device_index = 0                    # which pool: 0 = the first pool; "all" = every pool

    [fault]                             # absent for the clean scenario
    kind = "dosing_pump_failure"        # a simulators.faults.FaultKind
    start_offset_min = 60               # after the run start
    align_local = "16:00"               # optional: then wait for this Asia/Shanghai wall-clock time
    duration_min = 480
    [fault.params]                      # kind-specific, see simulators/faults.py
    remaining_fraction = 0.0

    [[expected]]                        # the ground truth: alerts the system should raise
    family = "compliance"               # or "integrity"
    kind = "range:free_chlorine"
    parameter = "free_chlorine"         # optional for device-level kinds (offline, tampering, ...)
    max_delay_min = 240                 # how long after the fault starts the alert may come
    max_clear_delay_min = 60            # how long after the fault ends it may stay open

`expected = []` states that no alert at all is expected.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.faults import (
    POOL_PARAMETERS,
    WATER_PARAMETERS,
    Fault,
    FaultKind,
    resolve_params,
)
from simulators.pool_model import LOCAL_OFFSET_MS, MS_PER_DAY

SCENARIO_DIR = Path(__file__).parent / "data" / "scenarios"
DOMAINS = ("pool", "drinking_water")
FAMILIES = ("compliance", "integrity")
INTEGRITY_KINDS = ("stuck", "drift", "offline", "flagged", "tampering", "clock_skew", "gaps")
MS_PER_MIN = 60_000


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    family: str
    kind: str
    parameter: str | None
    max_delay_min: float = 0.0
    max_clear_delay_min: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A fault with times relative to the run start, turned into a `Fault` per run."""

    kind: FaultKind
    start_offset_min: float
    duration_min: float
    align_local: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def start_ms(self, run_start_ms: int) -> int:
        start = run_start_ms + int(self.start_offset_min * MS_PER_MIN)
        if self.align_local is None:
            return start
        # Next occurrence (at or after `start`) of the wall-clock time in Asia/Shanghai.
        hours, minutes = (int(part) for part in self.align_local.split(":"))
        target = (hours * 60 + minutes) * MS_PER_MIN
        local = start + LOCAL_OFFSET_MS
        return start + (target - local % MS_PER_DAY) % MS_PER_DAY

    def to_fault(self, run_start_ms: int) -> Fault:
        start = self.start_ms(run_start_ms)
        return Fault(self.kind, start, start + int(self.duration_min * MS_PER_MIN), self.params)


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    domain: str
    description: str
    device_index: int | None  # None: every device of the domain
    fault: FaultSpec | None
    expected: tuple[ExpectedAlert, ...]

    def affects(self, device_index: int) -> bool:
        return self.device_index is None or self.device_index == device_index

    def faults_for(self, device_index: int, run_start_ms: int) -> list[Fault]:
        if self.fault is None or not self.affects(device_index):
            return []
        return [self.fault.to_fault(run_start_ms)]


def list_scenarios() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario by name (a file in SCENARIO_DIR) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no scenario {name_or_path!r} (known: {list_scenarios()})")
    with path.open("rb") as handle:
        doc = tomllib.load(handle)
    try:
        scenario = parse_scenario(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"scenario file {path}: {exc}") from exc
    if scenario.id != path.stem:
        raise ValueError(f"scenario file {path}: id {scenario.id!r} differs from the file name")
    return scenario


def parse_scenario(doc: Mapping[str, Any]) -> Scenario:
    _reject_unknown(doc, {"id", "domain", "description", "device_index", "fault", "expected"})
    domain = doc.get("domain", "pool")
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
    index = doc.get("device_index", 0)
    if index != "all" and (not isinstance(index, int) or index < 0):
        raise ValueError(f"device_index must be a non-negative integer or 'all', not {index!r}")
    return Scenario(
        id=str(doc["id"]),
        domain=domain,
        description=str(doc["description"]).strip(),
        device_index=None if index == "all" else index,
        fault=_parse_fault(doc["fault"]) if "fault" in doc else None,
        expected=tuple(_parse_expected(item) for item in doc["expected"]),
    )


def _parse_fault(doc: Mapping[str, Any]) -> FaultSpec:
    _reject_unknown(doc, {"kind", "start_offset_min", "duration_min", "align_local", "params"})
    kind = FaultKind(doc["kind"])
    align = doc.get("align_local")
    if align is not None:
        hours, minutes = (int(part) for part in str(align).split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError(f"align_local {align!r} is not HH:MM")
    duration = float(doc["duration_min"])
    if duration <= 0:
        raise ValueError("duration_min must be positive")
    return FaultSpec(
        kind=kind,
        start_offset_min=float(doc["start_offset_min"]),
        duration_min=duration,
        align_local=align,
        params=resolve_params(kind, doc.get("params", {})),
    )


def _parse_expected(doc: Mapping[str, Any]) -> ExpectedAlert:
    _reject_unknown(doc, {"family", "kind", "parameter", "max_delay_min", "max_clear_delay_min"})
    family, kind, parameter = doc["family"], doc["kind"], doc.get("parameter")
    if family not in FAMILIES:
        raise ValueError(f"expected alert family {family!r} is not one of {FAMILIES}")
    if parameter is not None and parameter not in POOL_PARAMETERS + WATER_PARAMETERS:
        raise ValueError(f"expected alert parameter {parameter!r} is unknown")
    if family == "compliance" and kind != f"range:{parameter}":
        raise ValueError(f"compliance kind must be 'range:<parameter>', not {kind!r}")
    if family == "integrity" and kind not in INTEGRITY_KINDS:
        raise ValueError(f"integrity kind {kind!r} is not one of {INTEGRITY_KINDS}")
    return ExpectedAlert(
        family=family,
        kind=kind,
        parameter=parameter,
        max_delay_min=float(doc.get("max_delay_min", 0.0)),
        max_clear_delay_min=float(doc.get("max_clear_delay_min", 0.0)),
    )


def _reject_unknown(doc: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(doc) - known
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
