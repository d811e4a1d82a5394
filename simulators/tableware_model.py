"""A tableware disinfection line (餐饮具集中消毒服务单位), for the scenarios and the demo.

`TablewareModel(device_id, line_id, method, capacity_sets, seed, start_ms)` plans the line's
cycles (those starting at or after `start_ms`) day by day and hands out what its controller
sends: `events_until(t_ms)` the cycle starts and ends and the packed batches (wire-contract
records for `.../events`) with times before `t_ms`, and `sample(t_ms)` the line's telemetry.
Deterministic from the seed and the device id; each local day draws from its own stream, so a
day does not depend on how the model is sampled.

The line (a cabinet line of a unit washing for ~100 restaurants):
- Works 07:00-19:00 Asia/Shanghai every day (or the `hours` given: the demo's unit works
  around the clock). A cycle starts every 30 min from 07:10 (±2 min)
  while it can end before closing: the cabinet heats from 40 °C to its set point in 3 min
  (exponential), holds it 14-16 min (set point 1.5-3.5 °C above the method's limit, noise σ
  0.3 °C), then the cycle ends and the cabinet cools towards 40 °C (time constant 8 min).
- Each cycle's load is 85-98 % of the cabinet's capacity; it dries and is packed as one batch
  8-14 min after the cycle ends (batch id and production date on the label).
- Pre-wash and main wash water 55 ± 2 °C, rinse 70 ± 2 °C, detergent dosing 12 ± 1 mL/min and
  the conveyor at 1.2-1.6 m/min while the line works; wash water cools and the conveyor stops
  when it does not.

Faults (`LineFault`, half-open windows of true time, applied to cycles starting in them):
- `failing_steam_cabinet`: the steam supply fails mid-hold: 4 min into the hold the temperature
  sags by `depth` °C (default 4) for `minutes` (default 6), then recovers.
- `short_cycle`: the hold lasts `hold_min` minutes (default 6).
- `batch_without_cycle`: the cabinet is not run; the load is packed all the same.
- `silent_sensors`: the disinfection sensor reports nothing; the line runs on.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np

from domain.tableware import Method
from simulators.pool_model import LOCAL_OFFSET_MS, MS_PER_DAY, MS_PER_H, Sample, local_day

MS_PER_MIN = 60_000
OPEN_H, CLOSE_H = 7.0, 19.0
FIRST_CYCLE_MIN = 10  # after opening
CYCLE_EVERY_MIN = 30
HEAT_MIN = 3.0
HOLD_MIN = (14.0, 16.0)
SETPOINT_ABOVE = (1.5, 3.5)  # °C above the method's limit
COOL_TAU_MIN = 8.0
IDLE_C = 40.0
LOAD_SHARE = (0.85, 0.98)
PACK_AFTER_MIN = (8.0, 14.0)
# The limit each cabinet method is set against (the rules' own limits live in
# alerts/data/disinfection_cycles.toml; a cabinet is set above them).
CABINET_LIMIT_C = {Method.STEAM: 100.0, Method.INFRARED: 120.0}


class LineFaultKind(StrEnum):
    FAILING_STEAM_CABINET = "failing_steam_cabinet"
    SHORT_CYCLE = "short_cycle"
    BATCH_WITHOUT_CYCLE = "batch_without_cycle"
    SILENT_SENSORS = "silent_sensors"


PARAM_DEFAULTS: dict[LineFaultKind, dict[str, float]] = {
    LineFaultKind.FAILING_STEAM_CABINET: {"depth": 4.0, "minutes": 6.0},
    LineFaultKind.SHORT_CYCLE: {"hold_min": 6.0},
    LineFaultKind.BATCH_WITHOUT_CYCLE: {},
    LineFaultKind.SILENT_SENSORS: {},
}


@dataclass(frozen=True, slots=True)
class LineFault:
    kind: LineFaultKind
    start_ms: int
    end_ms: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = LineFaultKind(self.kind)
        if self.end_ms <= self.start_ms:
            raise ValueError(f"fault {kind}: end_ms must be after start_ms")
        unknown = set(self.params) - set(PARAM_DEFAULTS[kind])
        if unknown:
            raise ValueError(f"fault {kind}: unknown parameter(s) {sorted(unknown)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(
            self, "params", MappingProxyType({**PARAM_DEFAULTS[kind], **self.params})
        )

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class PlannedCycle:
    cycle_id: str
    start_ms: int
    hold_start_ms: int
    end_ms: int
    setpoint: float
    run: bool  # False: the cabinet was not run (its load is packed all the same)
    sag: tuple[int, int, float] | None  # (from, to, depth) of a failing steam supply


def _midnight(day: int) -> int:
    return day * MS_PER_DAY - LOCAL_OFFSET_MS


def _date(day: int) -> str:
    return datetime.fromtimestamp(_midnight(day) / 1000 + 8 * 3600, UTC).strftime("%Y-%m-%d")


def _hour(t_ms: int) -> float:
    return ((t_ms + LOCAL_OFFSET_MS) % MS_PER_DAY) / MS_PER_H


class TablewareModel:
    def __init__(
        self,
        device_id: str,
        line_id: str,
        method: Method,
        capacity_sets: int,
        seed: int,
        start_ms: int,
        *,
        faults: Sequence[LineFault] = (),
        hours: tuple[float, float] = (OPEN_H, CLOSE_H),
    ) -> None:
        if method not in CABINET_LIMIT_C:
            raise ValueError(f"the model simulates cabinet lines ({sorted(CABINET_LIMIT_C)})")
        self.device_id = device_id
        self.line_id = line_id
        self.method = method
        self.capacity = capacity_sets
        self.faults = tuple(faults)
        self.hours = hours
        self.start_ms = start_ms
        self._words = [seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(device_id.encode())]
        self._noise = np.random.Generator(np.random.PCG64([*self._words, 1]))
        self._planned_day = local_day(start_ms) - 1
        self.cycles: list[PlannedCycle] = []
        self._queue: list[tuple[int, int, dict]] = []
        self._order = 0

    # -- public -------------------------------------------------------------------------------

    def events_until(self, until_ms: int) -> list[dict]:
        """Cycle and batch events with a time before `until_ms` not handed out yet."""
        self._plan_to(until_ms)
        out = [rec for ts, _, rec in self._queue if ts < until_ms]
        self._queue = [q for q in self._queue if q[0] >= until_ms]
        return out

    def sample(self, t_ms: int) -> Sample | None:
        self._plan_to(t_ms + 1)
        noise = self._noise.normal(0.0, 1.0, 5)
        working = self.hours[0] <= _hour(t_ms) < self.hours[1]
        values = {
            "wash_temperature": round((55.0 if working else 30.0) + 0.8 * noise[0], 1),
            "rinse_temperature": round((70.0 if working else 30.0) + 0.8 * noise[1], 1),
            "detergent_dosing": round(max(12.0 + noise[2], 0.0), 1) if working else 0.0,
            "conveyor_speed": round(1.4 + 0.1 * noise[3], 2) if working else 0.0,
        }
        if not self._silent(t_ms):
            values["disinfection_temperature"] = round(self.cabinet(t_ms) + 0.3 * noise[4], 1)
        return Sample(ts_ms=t_ms, values=values, flags={})

    def cabinet(self, t_ms: int) -> float:
        """The true cabinet temperature."""
        c = self._cycle_at(t_ms)
        if c is None:
            last = self._last_ended(t_ms)
            if last is None:
                return IDLE_C
            top = self._hold_value(last, last.end_ms)
            decay = math.exp(-(t_ms - last.end_ms) / (COOL_TAU_MIN * MS_PER_MIN))
            return IDLE_C + (top - IDLE_C) * decay
        if t_ms < c.hold_start_ms:
            frac = (t_ms - c.start_ms) / (c.hold_start_ms - c.start_ms)
            return IDLE_C + (c.setpoint - IDLE_C) * (1 - math.exp(-4 * frac)) / (1 - math.exp(-4))
        return self._hold_value(c, t_ms)

    # -- internals ----------------------------------------------------------------------------

    def _silent(self, t_ms: int) -> bool:
        return any(f.kind is LineFaultKind.SILENT_SENSORS and f.active(t_ms) for f in self.faults)

    def _fault(self, kind: LineFaultKind, t_ms: int) -> LineFault | None:
        return next((f for f in self.faults if f.kind is kind and f.active(t_ms)), None)

    def _hold_value(self, c: PlannedCycle, t_ms: int) -> float:
        if not c.run:
            return IDLE_C
        if c.sag is not None and c.sag[0] <= t_ms < c.sag[1]:
            # A smooth sag: down by `depth` in its middle.
            phase = (t_ms - c.sag[0]) / (c.sag[1] - c.sag[0])
            return c.setpoint - c.sag[2] * math.sin(math.pi * phase)
        return c.setpoint

    def _cycle_at(self, t_ms: int) -> PlannedCycle | None:
        for c in reversed(self.cycles):
            if c.start_ms <= t_ms < c.end_ms:
                return c if c.run else None
            if c.end_ms <= t_ms:
                return None
        return None

    def _last_ended(self, t_ms: int) -> PlannedCycle | None:
        return next((c for c in reversed(self.cycles) if c.end_ms <= t_ms and c.run), None)

    def _plan_to(self, until_ms: int) -> None:
        while _midnight(self._planned_day + 1) < until_ms + MS_PER_H:
            self._planned_day += 1
            self._plan_day(self._planned_day)

    def _emit(self, ts: int, rec: dict) -> None:
        self._order += 1
        self._queue.append((ts, self._order, rec))
        self._queue.sort(key=lambda q: (q[0], q[1]))

    def _plan_day(self, day: int) -> None:
        rng = np.random.Generator(np.random.PCG64([*self._words, 100 + day]))
        open_ms = _midnight(day) + int(self.hours[0] * MS_PER_H)
        close_ms = _midnight(day) + int(self.hours[1] * MS_PER_H)
        limit = CABINET_LIMIT_C[self.method]
        stamp = _date(day).replace("-", "")
        k = 0
        while True:
            start = open_ms + (FIRST_CYCLE_MIN + k * CYCLE_EVERY_MIN) * MS_PER_MIN
            start += int(rng.uniform(-2, 2) * MS_PER_MIN)
            hold_min = rng.uniform(*HOLD_MIN)
            setpoint = limit + rng.uniform(*SETPOINT_ABOVE)
            load = int(self.capacity * rng.uniform(*LOAD_SHARE))
            pack_after = rng.uniform(*PACK_AFTER_MIN)
            short = self._fault(LineFaultKind.SHORT_CYCLE, start)
            if short is not None:
                hold_min = float(short.params["hold_min"])
            hold_start = start + int(HEAT_MIN * MS_PER_MIN)
            end = hold_start + int(hold_min * MS_PER_MIN)
            if end + int(pack_after * MS_PER_MIN) >= close_ms:
                break
            k += 1
            if start < self.start_ms:
                continue  # before the model's start: the line's history begins with it
            failing = self._fault(LineFaultKind.FAILING_STEAM_CABINET, start)
            sag = None
            if failing is not None:
                sag_from = hold_start + 4 * MS_PER_MIN
                sag_to = sag_from + int(float(failing.params["minutes"]) * MS_PER_MIN)
                sag = (sag_from, sag_to, float(failing.params["depth"]))
            run = self._fault(LineFaultKind.BATCH_WITHOUT_CYCLE, start) is None
            cid = f"{self.line_id}-{stamp}-C{k:02d}"
            c = PlannedCycle(cid, start, hold_start, end, setpoint, run, sag)
            self.cycles.append(c)
            if run:
                base = {"line_id": self.line_id, "cycle_id": cid}
                method = {"method": str(self.method)}
                self._emit(start, {"ts": start, "event": "cycle_start", **base, **method})
                self._emit(end, {"ts": end, "event": "cycle_end", **base})
            packed = end + int(pack_after * MS_PER_MIN)
            self._emit(
                packed,
                {
                    "ts": packed,
                    "event": "batch_packed",
                    "line_id": self.line_id,
                    "batch_id": f"{self.line_id}-{stamp}-B{k:02d}",
                    "sets": load,
                    "production_date": _date(day),
                },
            )
