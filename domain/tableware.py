"""Tableware disinfection lines (餐饮具集中消毒服务单位): cycle and batch events, and the cycle a
start and an end describe. No I/O.

A line washes, rinses, disinfects (steam cabinet, hot-water rinse, infrared cabinet or chlorine
immersion), dries and packs restaurant tableware. Its controller (registry kind
`disinfection_line`) publishes the line's sensors as telemetry and its cycles and packed batches
as events. Like bag scans, events may arrive late, twice or out of order: a cycle is always
derived from its events, never updated in place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from domain.model import Device

LINE_CONTROLLER = "disinfection_line"  # the registry `kind` of a line's controller


class Method(StrEnum):
    """How a line disinfects (餐饮服务食品安全操作规范 2018, 附录J)."""

    STEAM = "steam"  # 蒸汽 (or boiling): 100 °C
    HOT_WATER = "hot_water"  # dishwasher final rinse: ~85 °C
    INFRARED = "infrared"  # 红外线消毒柜: 120 °C
    CHEMICAL = "chemical"  # 含氯消毒剂浸泡: available chlorine


class LineEventKind(StrEnum):
    CYCLE_START = "cycle_start"
    CYCLE_END = "cycle_end"
    BATCH_PACKED = "batch_packed"


@dataclass(frozen=True, slots=True)
class LineEvent:
    """One cycle start or end (`ref_id` = cycle id) or one packed batch (`ref_id` = batch id).
    `ts_ms` is the controller's time, `recv_ms` when Landun received it."""

    device_id: str
    site_id: str
    line_id: str
    event: LineEventKind
    ref_id: str
    ts_ms: int
    recv_ms: int
    method: Method | None = None
    sets: int | None = None  # a batch's packed sets
    production_date: str | None = None  # a batch's production date (YYYY-MM-DD, on the label)

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What makes an event the same event when it is delivered again."""
        return (self.device_id, str(self.event), self.ref_id, self.ts_ms)


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A line as the registry describes it (`attributes` of its controller)."""

    line_id: str
    method: Method
    capacity_sets: int  # sets one cycle can disinfect (cabinet load, or tunnel throughput)


def line_spec(device: Device) -> LineSpec | None:
    """The line a controller runs, or None if the device is no line controller."""
    if device.kind != LINE_CONTROLLER:
        return None
    a = device.attributes
    return LineSpec(str(a["line_id"]), Method(a["method"]), int(a["capacity_sets"]))


def check_line_attributes(device: Device) -> None:
    """Refuse a line controller whose registry entry lacks what the cycle rules need."""
    try:
        spec = line_spec(device)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(
            f"device {device.id}: a {LINE_CONTROLLER} needs attributes line_id, method"
            f" ({', '.join(Method)}) and capacity_sets: {exc!r}"
        ) from exc
    if spec is not None and spec.capacity_sets <= 0:
        raise ValueError(f"device {device.id}: capacity_sets must be positive")


@dataclass(frozen=True, slots=True)
class Cycle:
    """A disinfection cycle as its events tell it; an end without a start (or the other way
    round) is kept, so a lost event shows instead of hiding the cycle."""

    site_id: str
    device_id: str
    line_id: str
    cycle_id: str
    method: Method | None
    start_ms: int | None
    end_ms: int | None
    end_recv_ms: int | None

    @property
    def duration_s(self) -> float | None:
        if self.start_ms is None or self.end_ms is None:
            return None
        return (self.end_ms - self.start_ms) / 1000


def derive_cycles(events: Iterable[LineEvent]) -> list[Cycle]:
    """The cycles of a set of line events (batches ignored), ordered by start (or end) time.
    The first start and first end of a cycle id count; repeats are redeliveries or rescans."""
    starts: dict[tuple[str, str], LineEvent] = {}
    ends: dict[tuple[str, str], LineEvent] = {}
    for ev in sorted(events, key=lambda ev: (ev.ts_ms, ev.recv_ms)):
        key = (ev.device_id, ev.ref_id)
        if ev.event is LineEventKind.CYCLE_START:
            starts.setdefault(key, ev)
        elif ev.event is LineEventKind.CYCLE_END:
            ends.setdefault(key, ev)
    cycles = []
    for key in dict.fromkeys([*starts, *ends]):
        s, e = starts.get(key), ends.get(key)
        first = s or e
        assert first is not None
        cycles.append(
            Cycle(
                site_id=first.site_id,
                device_id=first.device_id,
                line_id=first.line_id,
                cycle_id=first.ref_id,
                method=(s.method if s and s.method else e.method if e else None),
                start_ms=s.ts_ms if s else None,
                end_ms=e.ts_ms if e else None,
                end_recv_ms=e.recv_ms if e else None,
            )
        )
    cycles.sort(key=lambda c: c.start_ms if c.start_ms is not None else c.end_ms or 0)
    return cycles
