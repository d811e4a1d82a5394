"""Drinking-water tank cleaning and disinfection records (二次供水设施清洗消毒): the events a
supply's record terminal sends, and each tank's state as its events tell it. No I/O.

A storage tank must be emptied, cleaned and disinfected at a fixed interval
(alerts/data/tanks.toml); the record of each job names the tank, the time and who did it.
Records may arrive late, twice or out of order, so a tank's state is derived from its records
(the newest of each kind wins)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum

# Device kind of a supply's cleaning-record terminal (the registry's `kind` field).
TANK_LOG = "tank_log"


class TankEventKind(StrEnum):
    CLEANED = "tank_cleaned"  # 清洗
    DISINFECTED = "tank_disinfected"  # 消毒


@dataclass(frozen=True, slots=True)
class TankEvent:
    """One cleaning or disinfection job. `ts_ms` is when it was done, `recv_ms` when Landun
    received the record."""

    device_id: str
    site_id: str
    event: TankEventKind
    tank_id: str
    ts_ms: int
    recv_ms: int
    operator: str
    contractor: str | None = None  # the licensed cleaning company, when not the site's staff
    disinfectant: str | None = None
    report_id: str | None = None  # the water test after the job

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What makes a record the same record when it is delivered again."""
        return (self.site_id, self.tank_id, str(self.event), self.ts_ms)

    def as_dict(self) -> dict:
        return asdict(self) | {"event": str(self.event)}

    @classmethod
    def from_dict(cls, d: dict) -> TankEvent:
        return cls(**(d | {"event": TankEventKind(d["event"])}))


@dataclass(frozen=True, slots=True)
class Tank:
    """A tank's newest cleaning and disinfection, and when both were last done."""

    site_id: str
    tank_id: str
    cleaned_ms: int | None
    disinfected_ms: int | None

    @property
    def serviced_ms(self) -> int | None:
        """When the tank was last both cleaned and disinfected (the older of the two): what the
        interval runs from. None until both are on record."""
        if self.cleaned_ms is None or self.disinfected_ms is None:
            return None
        return min(self.cleaned_ms, self.disinfected_ms)


def derive_tank(site_id: str, tank_id: str, events: Iterable[TankEvent]) -> Tank:
    newest: dict[TankEventKind, int] = {}
    for e in events:
        newest[e.event] = max(newest.get(e.event, e.ts_ms), e.ts_ms)
    return Tank(
        site_id, tank_id, newest.get(TankEventKind.CLEANED), newest.get(TankEventKind.DISINFECTED)
    )
