"""A hospital's medical-waste chain and its temporary store (暂存间), for tests and the demo.

`HospitalModel(site_id, scanner_id, sensor_id, seed, start_ms)` plans the waste day by day and
hands out what the hospital's devices send: `events_until(t_ms)` the bag scans (wire-contract
records for `.../events`) with times before `t_ms`, and `sample(t_ms)` the store-room sensor's
telemetry (`room_temperature`, `room_humidity`, `door_open`). Deterministic from the seed and the
site id; each local day draws from its own stream, so a day does not depend on how the model is
sampled.

The hospital (a district hospital of about 200 beds, ~100 kg of medical waste a day):
- Departments produce waste per category at the daily rates of `DEPARTMENTS` (weekends 75 %,
  each day ×0.9–1.1, each round ×lognormal(0, 0.2)). Three collection rounds (08:00, 12:30,
  17:00 local, ±10 min) take what was produced since the last round; less than 0.3 kg of a
  category waits for the next round (a sharps box is not closed half empty). Waste is bagged up
  to the category's bag capacity; each bag is weighed at collection (±0.02 kg, 0.01 kg steps).
- The porter visits the departments 5 min apart, reaches the store 15–25 min later and scans
  the bags in (`bag_stored`, 10 s apart) with the door open from a minute before the first scan
  to 2–4 min after the last.
- The licensed disposal company comes every 24–40 h between 08:00 and 18:00 (the 2-day limit
  minus a margin: a clean hospital never lets waste reach the 44 h warning), weighs every bag
  in the store on its own scale (bias ±0.3 % per visit, ±0.02 kg) and takes it under one
  manifest (联单), scanning a bag every 15 s; the door is open from a minute before to 2–4 min
  after the last scan, at least 10 min.
- The store is cooled towards 12–16 °C (time constant 15 min), exchanges heat with the outside
  (30 ± 3 °C, a summer day, through walls with a 3 h time constant) and, with the door open,
  with the corridor (1 h time constant). Humidity follows the outside with the door open.

Faults (`HospitalFault`, half-open windows of true time):
- `overdue_storage`: the disposal company does not come; the first visit after the window
  takes everything.
- `weight_diversion`: at handovers in the window, a `share` of the infectious bags has lost a
  `fraction` of its weight (sellable plastics taken out between storage and handover).
- `cold_room_failure`: the cooling is off.
- `door_left_open`: the store-room door stays open.
"""

from __future__ import annotations

import heapq
import math
import tomllib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from domain.waste import WasteCategory, WasteEventKind
from simulators.pool_model import (
    LOCAL_OFFSET_MS,
    MS_PER_DAY,
    MS_PER_H,
    Sample,
    is_weekend,
    local_day,
    local_hour,
)

MS_PER_MIN = 60_000
HOSPITAL_SCENARIO_DIR = Path(__file__).parent / "data" / "scenarios" / "hospital"


@dataclass(frozen=True, slots=True)
class Department:
    name: str
    daily_kg: Mapping[WasteCategory, float]


C = WasteCategory
DEPARTMENTS: tuple[Department, ...] = (
    Department("重症医学科", {C.INFECTIOUS: 14.0, C.SHARPS: 2.0, C.PHARMACEUTICAL: 0.6}),
    Department("外科", {C.INFECTIOUS: 18.0, C.SHARPS: 2.5, C.PATHOLOGICAL: 1.5}),
    Department("内科", {C.INFECTIOUS: 12.0, C.SHARPS: 2.0, C.PHARMACEUTICAL: 0.8}),
    Department("手术室", {C.INFECTIOUS: 20.0, C.SHARPS: 3.0, C.PATHOLOGICAL: 4.0}),
    Department("检验科", {C.INFECTIOUS: 8.0, C.SHARPS: 1.0, C.CHEMICAL: 1.5}),
    Department("药剂科", {C.PHARMACEUTICAL: 1.2, C.CHEMICAL: 0.3}),
)
BAG_CAPACITY_KG = {
    C.INFECTIOUS: 4.0,
    C.SHARPS: 2.0,
    C.PATHOLOGICAL: 3.0,
    C.PHARMACEUTICAL: 2.0,
    C.CHEMICAL: 2.0,
}
MIN_BAG_KG = 0.3
ROUNDS_MIN = (8 * 60, 12 * 60 + 30, 17 * 60)  # local minutes after midnight
ROUND_SHARE = (0.35, 0.35, 0.30)  # of the day's production each round takes
WEEKEND_FACTOR = 0.75
VISIT_GAP_H = (24.0, 40.0)
VISIT_WINDOW_H = (8.0, 18.0)
CARRIER = "上海市医疗废物处置中心"

COOL_TAU_H = 0.25
WALL_TAU_H = 3.0
DOOR_TAU_H = 1.0
AMBIENT_MEAN, AMBIENT_SWING = 30.0, 3.0
SUBSTEP_MS = 60_000


class HospitalFaultKind(StrEnum):
    OVERDUE_STORAGE = "overdue_storage"
    WEIGHT_DIVERSION = "weight_diversion"
    COLD_ROOM_FAILURE = "cold_room_failure"
    DOOR_LEFT_OPEN = "door_left_open"


PARAM_DEFAULTS: dict[HospitalFaultKind, dict[str, Any]] = {
    HospitalFaultKind.OVERDUE_STORAGE: {},
    HospitalFaultKind.WEIGHT_DIVERSION: {"share": 0.5, "fraction": 0.25},
    HospitalFaultKind.COLD_ROOM_FAILURE: {},
    HospitalFaultKind.DOOR_LEFT_OPEN: {},
}


@dataclass(frozen=True, slots=True)
class HospitalFault:
    kind: HospitalFaultKind
    start_ms: int
    end_ms: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = HospitalFaultKind(self.kind)
        if self.end_ms <= self.start_ms:
            raise ValueError(f"fault {kind}: end_ms must be after start_ms")
        unknown = set(self.params) - set(PARAM_DEFAULTS[kind])
        if unknown:
            raise ValueError(f"fault {kind}: unknown parameter(s) {sorted(unknown)}")
        merged = PARAM_DEFAULTS[kind] | dict(self.params)
        if any(not 0.0 <= float(v) <= 1.0 for v in merged.values()):
            raise ValueError(f"fault {kind}: share and fraction must be within [0, 1]")
        # Frozen dataclass: normalise the fields once, here.
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "params", MappingProxyType(merged))

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms


@dataclass(slots=True)
class _Bag:
    bag_id: str
    department: str
    category: WasteCategory
    weight_kg: float  # true weight
    collected_ms: int
    stored_ms: int


def _midnight(day: int) -> int:
    return day * MS_PER_DAY - LOCAL_OFFSET_MS


def _yyyymmdd(day: int) -> str:
    return datetime.fromtimestamp(_midnight(day) / 1000 + 8 * 3600, UTC).strftime("%Y%m%d")


class HospitalModel:
    def __init__(
        self,
        site_id: str,
        scanner_id: str,
        sensor_id: str,
        seed: int,
        start_ms: int,
        *,
        departments: Sequence[Department] = DEPARTMENTS,
        faults: Sequence[HospitalFault] = (),
        interval_s: int = 60,
    ) -> None:
        self.site_id = site_id
        self.scanner_id = scanner_id
        self.sensor_id = sensor_id
        self.departments = tuple(departments)
        self.faults = tuple(faults)
        self.interval_s = interval_s
        self.start_ms = start_ms
        self._words = [seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(site_id.encode())]
        self._visit_rng = np.random.Generator(np.random.PCG64([*self._words, 1]))
        self._noise_rng = np.random.Generator(np.random.PCG64([*self._words, 2]))
        self.setpoint = float(self._visit_rng.uniform(12.0, 16.0))
        self._planned_day = local_day(start_ms) - 1
        self._carry: dict[tuple[str, WasteCategory], float] = {}
        self._store: list[_Bag] = []
        self._queue: list[tuple[int, int, dict]] = []  # (ts, order, record) of events to send
        self._order = 0
        self._doors: list[tuple[int, int]] = []
        self._next_visit = self._visit_at(start_ms + 2 * MS_PER_H)
        self._visits = 0
        self._t = start_ms
        self._temperature = self._equilibrium(start_ms)
        self.handed_true_kg: dict[str, float] = {}  # bag -> weight at handover, for checks

    # -- public -------------------------------------------------------------------------------

    def events_until(self, until_ms: int) -> list[dict]:
        """Bag scans with a time before `until_ms` not handed out yet, in time order."""
        self._plan_to(until_ms)
        out = []
        while self._queue and self._queue[0][0] < until_ms:
            out.append(heapq.heappop(self._queue)[2])
        return out

    def sample(self, t_ms: int) -> Sample | None:
        """The store-room sensor's reading at `t_ms` (times must not go backwards)."""
        if t_ms < self._t:
            raise ValueError(f"sample at {t_ms} is before the model time {self._t}")
        self._plan_to(t_ms + 1)
        self._doors = [d for d in self._doors if d[1] > self._t]
        while self._t < t_ms:
            step = min(SUBSTEP_MS, t_ms - self._t)
            self._temperature += self._dtemp(self._t) * step / MS_PER_H
            self._t += step
        door = self.door_open(t_ms)
        noise = self._noise_rng.normal(0.0, 1.0, 2)
        humidity = 60.0 + 5.0 * math.sin(2 * math.pi * local_hour(t_ms) / 24) + 10.0 * door
        values = {
            "room_temperature": round(self._temperature + 0.1 * noise[0], 1),
            "room_humidity": float(round(min(max(humidity + 1.5 * noise[1], 5.0), 99.0))),
            "door_open": 1.0 if door else 0.0,
        }
        return Sample(ts_ms=t_ms, values=values, flags={})

    def door_open(self, t_ms: int) -> bool:
        if any(f.kind is HospitalFaultKind.DOOR_LEFT_OPEN and f.active(t_ms) for f in self.faults):
            return True
        return any(a <= t_ms < b for a, b in self._doors)

    # -- climate ------------------------------------------------------------------------------

    def ambient(self, t_ms: int) -> float:
        return AMBIENT_MEAN + AMBIENT_SWING * math.sin(2 * math.pi * (local_hour(t_ms) - 9) / 24)

    def _cooling(self, t_ms: int) -> bool:
        failed = HospitalFaultKind.COLD_ROOM_FAILURE
        return not any(f.kind is failed and f.active(t_ms) for f in self.faults)

    def _dtemp(self, t_ms: int) -> float:
        amb, temp = self.ambient(t_ms), self._temperature
        rate = (amb - temp) / WALL_TAU_H
        if self._cooling(t_ms):
            rate += (self.setpoint - temp) / COOL_TAU_H
        if self.door_open(t_ms):
            rate += (amb - temp) / DOOR_TAU_H
        return rate

    def _equilibrium(self, t_ms: int) -> float:
        """The closed, cooled store's steady temperature: runs start without a transient."""
        amb = self.ambient(t_ms)
        return (self.setpoint / COOL_TAU_H + amb / WALL_TAU_H) / (1 / COOL_TAU_H + 1 / WALL_TAU_H)

    # -- the waste chain ----------------------------------------------------------------------

    def _plan_to(self, until_ms: int) -> None:
        while _midnight(self._planned_day + 1) < until_ms:
            self._planned_day += 1
            self._plan_day(self._planned_day)

    def _plan_day(self, day: int) -> None:
        rng = np.random.Generator(np.random.PCG64([*self._words, 100 + day]))
        factor = (WEEKEND_FACTOR if is_weekend(day) else 1.0) * float(rng.uniform(0.9, 1.1))
        seq = 0
        rounds = []
        for minute, share in zip(ROUNDS_MIN, ROUND_SHARE, strict=True):
            start = _midnight(day) + (minute + int(rng.integers(-10, 11))) * MS_PER_MIN
            rounds.append((start, share))
        day_end = _midnight(day + 1)
        for start, share in rounds:
            self._hand_over_before(start, rng)
            if start < self.start_ms:
                continue
            seq = self._collection_round(day, start, share * factor, seq, rng)
        self._hand_over_before(day_end, rng)

    def _collection_round(
        self, day: int, start: int, share: float, seq: int, rng: np.random.Generator
    ) -> int:
        bags: list[_Bag] = []
        for i, dept in enumerate(self.departments):
            t = start + i * 5 * MS_PER_MIN
            for cat, daily in dept.daily_kg.items():
                key = (dept.name, cat)
                amount = self._carry.get(key, 0.0) + daily * share * float(rng.lognormal(0, 0.2))
                if amount < MIN_BAG_KG:
                    self._carry[key] = amount
                    continue
                self._carry[key] = 0.0
                n = math.ceil(amount / BAG_CAPACITY_KG[cat])
                for _ in range(n):
                    seq += 1
                    weight = amount / n * float(rng.uniform(0.85, 1.15))
                    t += int(rng.integers(5, 30)) * 1000
                    bags.append(
                        _Bag(f"{self.site_id}-{_yyyymmdd(day)}-{seq:04d}", dept.name, cat,
                             round(weight, 3), t, 0)
                    )  # fmt: skip
        arrive = start + (len(self.departments) * 5 + int(rng.integers(15, 26))) * MS_PER_MIN
        for k, bag in enumerate(bags):
            bag.stored_ms = arrive + k * 10_000
            self._emit(bag.collected_ms, self._collected(bag, rng))
            self._emit(bag.stored_ms, self._record(WasteEventKind.STORED, bag, bag.stored_ms))
        if bags:
            close = bags[-1].stored_ms + int(rng.integers(2, 5)) * MS_PER_MIN
            self._doors.append((arrive - MS_PER_MIN, close))
        self._store.extend(bags)
        return seq

    def _hand_over_before(self, t_ms: int, rng: np.random.Generator) -> None:
        while self._next_visit < t_ms:
            visit = self._next_visit
            if self._visit_cancelled(visit):
                kind = HospitalFaultKind.OVERDUE_STORAGE
                end = max(f.end_ms for f in self.faults if f.kind is kind and f.active(visit))
                self._next_visit = self._visit_at(end)
                continue
            self._hand_over(visit, rng)
            gap = float(self._visit_rng.uniform(*VISIT_GAP_H)) * MS_PER_H
            self._next_visit = self._pull_into_window(visit + int(gap))

    def _hand_over(self, visit: int, rng: np.random.Generator) -> None:
        taken = [b for b in self._store if b.stored_ms < visit]
        self._store = [b for b in self._store if b.stored_ms >= visit]
        self._visits += 1
        if not taken:
            return
        manifest = f"LD{_yyyymmdd(local_day(visit))}-{self.site_id}-{self._visits:03d}"
        bias = 1.0 + float(rng.normal(0.0, 0.003))
        diversion = next(
            (
                f
                for f in self.faults
                if f.kind is HospitalFaultKind.WEIGHT_DIVERSION and f.active(visit)
            ),
            None,
        )
        for k, bag in enumerate(taken):
            t = visit + k * 15_000
            weight = bag.weight_kg
            diverted = float(rng.uniform())  # drawn for every bag: faulted runs stay in step
            if (
                diversion is not None
                and bag.category is C.INFECTIOUS
                and diverted < diversion.params["share"]
            ):
                weight *= 1.0 - float(diversion.params["fraction"])
            self.handed_true_kg[bag.bag_id] = weight
            measured = self._weigh(weight * bias, rng)
            rec = self._record(WasteEventKind.HANDED_OVER, bag, t) | {
                "weight_kg": measured,
                "manifest_id": manifest,
                "carrier": CARRIER,
            }
            self._emit(t, rec)
        last_scan = visit + (len(taken) - 1) * 15_000
        close = max(last_scan + int(rng.integers(2, 5)) * MS_PER_MIN, visit + 10 * MS_PER_MIN)
        self._doors.append((visit - MS_PER_MIN, close))

    def _visit_cancelled(self, t_ms: int) -> bool:
        kind = HospitalFaultKind.OVERDUE_STORAGE
        return any(f.kind is kind and f.active(t_ms) for f in self.faults)

    def _visit_at(self, t_ms: int) -> int:
        """The first time at or after `t_ms` inside the visiting hours."""
        lo, hi = (int(h * MS_PER_H) for h in VISIT_WINDOW_H)
        since_midnight = (t_ms + LOCAL_OFFSET_MS) % MS_PER_DAY
        if since_midnight < lo:
            return t_ms - since_midnight + lo
        if since_midnight > hi:
            return t_ms - since_midnight + MS_PER_DAY + lo
        return t_ms

    def _pull_into_window(self, t_ms: int) -> int:
        """Back to the end of the visiting hours when `t_ms` falls outside them, so the gap
        never grows beyond the one drawn."""
        lo, hi = (int(h * MS_PER_H) for h in VISIT_WINDOW_H)
        since_midnight = (t_ms + LOCAL_OFFSET_MS) % MS_PER_DAY
        if since_midnight > hi:
            return t_ms - since_midnight + hi
        if since_midnight < lo:
            return t_ms - since_midnight - MS_PER_DAY + hi
        return t_ms

    # -- wire records ---------------------------------------------------------------------------

    def _weigh(self, kg: float, rng: np.random.Generator) -> float:
        return round(max(kg + float(rng.normal(0.0, 0.02)), 0.01), 2)

    def _record(self, kind: WasteEventKind, bag: _Bag, t_ms: int) -> dict:
        return {"ts": t_ms, "event": str(kind), "bag_id": bag.bag_id, "category": str(bag.category)}

    def _collected(self, bag: _Bag, rng: np.random.Generator) -> dict:
        return self._record(WasteEventKind.COLLECTED, bag, bag.collected_ms) | {
            "weight_kg": self._weigh(bag.weight_kg, rng),
            "department": bag.department,
        }

    def _emit(self, t_ms: int, record: dict) -> None:
        self._order += 1
        heapq.heappush(self._queue, (t_ms, self._order, record))


# -- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HospitalExpected:
    rule_id: str  # an alerts.custody rule id
    max_delay_min: float


@dataclass(frozen=True, slots=True)
class HospitalScenario:
    """A hospital run: `days` from local midnight, an optional fault with offsets from then."""

    id: str
    description: str
    days: float
    fault_kind: HospitalFaultKind | None
    start_offset_min: float
    duration_min: float
    params: Mapping[str, Any]
    expected: tuple[HospitalExpected, ...]

    def faults(self, run_start_ms: int) -> list[HospitalFault]:
        if self.fault_kind is None:
            return []
        start = run_start_ms + int(self.start_offset_min * MS_PER_MIN)
        end = start + int(self.duration_min * MS_PER_MIN)
        return [HospitalFault(self.fault_kind, start, end, self.params)]


def list_hospital_scenarios() -> list[str]:
    return sorted(path.stem for path in HOSPITAL_SCENARIO_DIR.glob("hospital_*.toml"))


def load_hospital_scenario(name: str) -> HospitalScenario:
    path = HOSPITAL_SCENARIO_DIR / f"{name}.toml"
    doc = tomllib.loads(path.read_text("utf-8"))
    if doc.get("domain") != "hospital" or doc.get("id") != path.stem:
        raise ValueError(f"{path}: domain must be 'hospital' and id the file name")
    fault = doc.get("fault")
    return HospitalScenario(
        id=doc["id"],
        description=" ".join(doc["description"].split()),
        days=float(doc["days"]),
        fault_kind=HospitalFaultKind(fault["kind"]) if fault else None,
        start_offset_min=float(fault["start_offset_min"]) if fault else 0.0,
        duration_min=float(fault["duration_min"]) if fault else 0.0,
        params=dict(fault.get("params", {})) if fault else {},
        expected=tuple(
            HospitalExpected(e["rule_id"], float(e["max_delay_min"])) for e in doc["expected"]
        ),
    )
