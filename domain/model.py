"""Core records that cross stage boundaries. Times are UTC epoch milliseconds (see timeutil)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

# Ingest refuses a reading whose sensor time lies ahead of the receive time; the refusal's reason
# carries this phrase, which the clock-skew rule looks for in dead letters.
FUTURE_TS = "in the future"

# HJ 212 data flags. Only N (normal) readings are judged for compliance.
VALID_FLAG = "N"
DATA_FLAGS: dict[str, str] = {
    "N": "normal",
    "F": "stopped",
    "M": "maintenance",
    "S": "manual",
    "D": "fault",
    "C": "calibration",
    "T": "over range",
    "B": "communication fault",
}


class SiteKind(StrEnum):
    """Kinds the code itself handles (simulators, custody); every kind a site may have is in the
    kinds table (domain/data/site_kinds.toml, domain.kinds)."""

    POOL = "pool"
    MEDICAL = "medical_institution"
    DRINKING_WATER = "drinking_water"
    TABLEWARE = "tableware_disinfection"


class AlertFamily(StrEnum):
    COMPLIANCE = "compliance"  # 超标: outside the standard's limits
    INTEGRITY = "integrity"  # 离线或故障: offline, stuck, implausible, drifting sensors
    QUALITY = "water_quality"  # water behaving unusually while still inside the limits
    CUSTODY = "custody"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Reading(NamedTuple):
    """One measured value. `ts_ms` is sensor time, `recv_ms` when Landun received it.

    A named tuple rather than a frozen dataclass: ingest builds one per value, and a frozen
    dataclass's __init__ (a guarded setattr per field) cost five times as much."""

    device_id: str
    site_id: str
    parameter: str
    ts_ms: int
    value: float
    flag: str = VALID_FLAG
    recv_ms: int = 0
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    device_id: str | None
    recv_ms: int
    reason: str
    raw: bytes
    source: str = "mqtt"


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    kind: str  # a kind of domain/data/site_kinds.toml
    jurisdiction: str
    address: str = ""
    profile: str = "gb37488-2019-pool"
    timezone: str = "Asia/Shanghai"
    latitude: float | None = None
    longitude: float | None = None
    # per-parameter partial limits replacing the profile's (e.g. {"free_chlorine": {"min": 0.4}})
    limit_overrides: dict[str, dict] = field(default_factory=dict)
    subtype: str = ""  # one of the kind's subtypes in the kinds table, or none


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    site_id: str
    kind: str
    parameters: tuple[str, ...]
    interval_s: int = 60
    credential_hash: str = ""
    mn: str | None = None  # HJ 212 MN (equipment id) when the device speaks HJ 212
    # Kind-specific registry data the kind's own modules check (a disinfection line's id and
    # capacity: domain.tableware.line_spec).
    attributes: dict = field(default_factory=dict)


@dataclass(slots=True)
class Alert:
    """One episode of one rule on one subject. Repeats update it instead of opening another."""

    site_id: str
    device_id: str | None
    rule_id: str
    family: AlertFamily
    severity: Severity
    parameter: str | None
    message: str
    first_ms: int
    last_ms: int
    first_value: float | None = None
    last_value: float | None = None
    worst_value: float | None = None
    worst_ms: int | None = None
    count: int = 1
    status: AlertStatus = AlertStatus.OPEN
    limit: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)
    opened_ms: int = 0
    updated_ms: int = 0
    resolved_ms: int | None = None
    id: int | None = None

    @property
    def subject(self) -> str:
        return self.device_id or self.site_id
