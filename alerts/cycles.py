"""Tableware disinfection cycle rules: a line's cycles, packed batches and sensors judged against
the settings of `alerts/data/disinfection_cycles.toml`, each alert carrying the cycles' curves
against the limit and the batch ids behind it.

- on cycle events (`on_events`, after the line ledger has recorded them): a cycle is compliant
  only if the method's parameter (disinfection temperature, rinse temperature, available
  chlorine) held at or above the limit, without a break, for the whole minimum dwell time; a
  dip or a short cycle is a violation, a cycle whose sensor was silent cannot be judged and is a
  silent-sensor violation;
- on batch events: a batch needs compliant cycles on its line within the look-back whose
  capacity (registry `capacity_sets` per cycle) earlier batches have not used up; none at all is
  a batch without a cycle, too little is more output than the cycles could disinfect;
- on telemetry (`observe`): the conveyor running while the disinfection sensor has been silent.

Cycles are judged on the readings the store holds when the cycle's end arrives: a controller
publishes a cycle's readings before its end, as the simulator does. Likewise a batch is judged
on the cycles recorded when it arrives, so a controller sends a cycle's end before the batch
packed from it. All alerts belong to the line's controller device."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from alerts.settings_files import check_like, packaged_toml, read_toml
from domain.model import VALID_FLAG, Alert, AlertFamily, Reading, Severity
from domain.params import default_catalogue, unit_label
from domain.registry import Registry
from domain.tableware import (
    Cycle,
    LineEvent,
    LineEventKind,
    LineSpec,
    Method,
    derive_cycles,
    line_spec,
)
from domain.timeutil import ms_to_iso
from store.base import ReadingQuery
from store.lines import LineLedger

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

RULE_CYCLE = "cycle:noncompliant"
RULE_BATCH = "cycle:batch_without_cycle"
RULE_CAPACITY = "cycle:over_capacity"
RULE_SILENT = "cycle:sensors_silent"

CONVEYOR = "conveyor_speed"
MINUTE_MS = 60_000
# An alert's evidence keeps the newest cycles and batches: enough to show the pattern, bounded
# however long the alert stays open.
MAX_EVIDENCE_ITEMS = 20
MAX_CURVE_POINTS = 240
MAX_CYCLE_READINGS = 5_000
# Verdicts kept in memory: a day of cycles of ~2,000 lines; older ones are read again if needed.
MAX_VERDICTS = 100_000


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    text: str
    confidence: str
    engineering: bool = False


@dataclass(frozen=True, slots=True)
class MethodLimit:
    method: Method
    parameter: str
    min: float
    min_dwell_s: float
    source: Source

    def as_dict(self) -> dict:
        return {
            "parameter": self.parameter,
            "min": self.min,
            "min_dwell_s": self.min_dwell_s,
            "unit": _unit(self.parameter),
            "text": f"≥ {self.min:g} {unit_label(_unit(self.parameter))}"
            f" for ≥ {self.min_dwell_s:g} s",
            "method": str(self.method),
            "standard": "餐饮服务食品安全操作规范 (2018)",
            "clause": self.source.text,
            "confidence": self.source.confidence,
            "engineering": self.source.engineering,
        }


@dataclass(frozen=True, slots=True)
class CycleSettings:
    methods: dict[Method, MethodLimit]
    max_gap_s: float
    min_coverage: float
    lookback_min: float
    silent_after_s: float
    clear_after_compliant: int
    sources: dict[str, Source]

    def limit(self, name: str, **values: object) -> dict:
        s = self.sources[name]
        return {
            **values,
            "standard": "tableware disinfection (alerts/data/disinfection_cycles.toml)",
            "clause": s.text,
            "confidence": s.confidence,
            "engineering": s.engineering,
        }


def _unit(parameter: str) -> str:
    p = default_catalogue().parameters.get(parameter)
    return p.unit if p else ""


def _source(sec: dict) -> Source:
    return Source(" ".join(sec["source"].split()), sec["confidence"], sec.get("engineering", False))


def parse_cycle_settings(doc: dict) -> CycleSettings:
    methods = {}
    for name, sec in doc["methods"].items():
        method = Method(name)
        if sec["min_dwell_s"] <= 0:
            raise ValueError(f"methods.{name}.min_dwell_s must be positive")
        methods[method] = MethodLimit(
            method, sec["parameter"], float(sec["min"]), float(sec["min_dwell_s"]), _source(sec)
        )
    missing = set(Method) - set(methods)
    if missing:
        raise ValueError(f"methods: no limits for {sorted(missing)}")
    sp, b, si, cl = doc["sampling"], doc["batch"], doc["silent"], doc["clear"]
    if not 0 < sp["min_coverage"] <= 1:
        raise ValueError("sampling.min_coverage must be in (0, 1]")
    return CycleSettings(
        methods=methods,
        max_gap_s=float(sp["max_gap_s"]),
        min_coverage=float(sp["min_coverage"]),
        lookback_min=float(b["lookback_minutes"]),
        silent_after_s=float(si["silent_after_s"]),
        clear_after_compliant=int(cl["compliant_cycles"]),
        sources={k: _source(doc[k]) for k in ("sampling", "batch", "silent", "clear")},
    )


@cache
def default_cycle_settings() -> CycleSettings:
    """The config dir's disinfection_cycles.toml or the packaged one (checked like custody's)."""
    file, doc = read_toml("disinfection_cycles.toml")
    check_like(doc, packaged_toml("disinfection_cycles.toml"), file)
    return parse_cycle_settings(doc)


# -- judging one cycle (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    cycle: Cycle
    limit: MethodLimit
    compliant: bool
    silent: bool  # too few readings to judge: the sensors were silent
    held_s: float  # longest unbroken stretch at or above the limit
    coverage: float  # share of the cycle covered by readings no further apart than the max gap
    lowest: float | None
    curve: tuple[tuple[int, float], ...]
    reason: str

    def evidence(self) -> dict:
        c = self.cycle
        return {
            "cycle_id": c.cycle_id,
            "line_id": c.line_id,
            "method": None if c.method is None else str(c.method),
            "start": None if c.start_ms is None else ms_to_iso(c.start_ms),
            "end": None if c.end_ms is None else ms_to_iso(c.end_ms),
            "duration_s": c.duration_s,
            "parameter": self.limit.parameter,
            "limit_min": self.limit.min,
            "min_dwell_s": self.limit.min_dwell_s,
            "held_s": self.held_s,
            "coverage": round(self.coverage, 3),
            "lowest": self.lowest,
            "compliant": self.compliant,
            "reason": self.reason,
            "curve": [[t, v] for t, v in _thin(self.curve)],
        }


def _thin(curve: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """At most MAX_CURVE_POINTS, always keeping the lowest point (the one that matters)."""
    if len(curve) <= MAX_CURVE_POINTS:
        return curve
    step = -(-len(curve) // MAX_CURVE_POINTS)
    keep = set(range(0, len(curve), step)) | {min(range(len(curve)), key=lambda i: curve[i][1])}
    return tuple(curve[i] for i in sorted(keep))


def judge_cycle(
    cycle: Cycle, readings: Sequence[Reading], limit: MethodLimit, max_gap_s: float, coverage: float
) -> Verdict:
    """A complete cycle (start and end known) against its method's limit."""
    assert cycle.start_ms is not None and cycle.end_ms is not None
    start, end = cycle.start_ms, cycle.end_ms
    pts = sorted(
        (r.ts_ms, r.value) for r in readings if start <= r.ts_ms <= end and r.flag == VALID_FLAG
    )
    gap_ms = max_gap_s * 1000
    span = max(end - start, 1)
    covered = sum(b[0] - a[0] for a, b in itertools.pairwise(pts) if b[0] - a[0] <= gap_ms)
    cover = covered / span
    held = 0
    run_start: int | None = None
    prev: int | None = None
    for t, v in pts:
        if v >= limit.min and run_start is not None and prev is not None and t - prev <= gap_ms:
            held = max(held, t - run_start)
        elif v >= limit.min:
            run_start = t
        else:
            run_start = None
        prev = t
    held_s = held / 1000
    # The lowest once the limit was first reached (a dip), else the highest it got to: the
    # heat-up before the hold is no finding.
    reached = next((i for i, (_, v) in enumerate(pts) if v >= limit.min), None)
    lowest = (
        min(v for _, v in pts[reached:])
        if reached is not None
        else max((v for _, v in pts), default=None)
    )
    duration_s = (end - start) / 1000
    unit = unit_label(_unit(limit.parameter))
    silent = len(pts) < 2 or cover < coverage
    if silent:
        reason = f"readings cover {cover:.0%} of the cycle: the sensor was silent"
    elif duration_s < limit.min_dwell_s:
        reason = f"short cycle: {duration_s:g} s, at least {limit.min_dwell_s:g} s needed"
    elif held_s < limit.min_dwell_s:
        reason = (
            f"held at or above {limit.min:g} {unit} for {held_s:g} s without a break, at least"
            f" {limit.min_dwell_s:g} s needed (at worst {lowest:g} {unit})"
        )
    else:
        reason = f"held at or above {limit.min:g} {unit} for {held_s:g} s"
    compliant = not silent and duration_s >= limit.min_dwell_s and held_s >= limit.min_dwell_s
    return Verdict(cycle, limit, compliant, silent, held_s, cover, lowest, tuple(pts), reason)


# -- batch coverage (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cover:
    """What stood behind one batch: the sets the compliant cycles could still disinfect."""

    available: int
    cycles: tuple[str, ...]  # the compliant cycles whose capacity it drew on
    previous_ms: int | None  # when the line packed its previous batch


def batch_cover(
    batch: LineEvent,
    events: Sequence[LineEvent],
    compliant: set[str],
    capacity: int,
    lookback_ms: int,
) -> Cover:
    """Walk the line's events in time order: each compliant cycle's end adds `capacity` sets,
    usable for `lookback_ms`; each batch uses the oldest capacity first."""
    ends = {
        c.cycle_id: c.end_ms
        for c in derive_cycles(events)
        if c.end_ms is not None and c.cycle_id in compliant
    }
    steps: list[tuple[int, int, str, int]] = [(t, 0, cid, capacity) for cid, t in ends.items()]
    steps += [
        (e.ts_ms, 1, e.ref_id, e.sets or 0)
        for e in events
        if e.event is LineEventKind.BATCH_PACKED and e.ts_ms <= batch.ts_ms
    ]
    credits: list[list] = []  # [expires_ms, remaining sets, cycle id]
    previous: int | None = None
    for t, kind, ref, n in sorted(steps):
        credits = [c for c in credits if c[0] >= t and c[1] > 0]
        if kind == 0:
            credits.append([t + lookback_ms, n, ref])
            continue
        if ref == batch.ref_id and t == batch.ts_ms:
            return Cover(sum(c[1] for c in credits), tuple(c[2] for c in credits), previous)
        previous = t
        for c in credits:
            used = min(c[1], n)
            c[1] -= used
            n -= used
    return Cover(0, (), previous)


# -- the rule -----------------------------------------------------------------------------------


def _alert(
    site_id: str,
    device_id: str,
    rule_id: str,
    severity: Severity,
    message: str,
    at_ms: int,
    value: float | None,
    limit: dict,
    evidence: dict,
    parameter: str | None,
    family: AlertFamily = AlertFamily.COMPLIANCE,
) -> Alert:
    return Alert(
        site_id=site_id,
        device_id=device_id,
        rule_id=rule_id,
        family=family,
        severity=severity,
        parameter=parameter,
        message=message,
        first_ms=at_ms,
        last_ms=at_ms,
        first_value=value,
        last_value=value,
        worst_value=value,
        worst_ms=at_ms if value is not None else None,
        limit=limit,
        evidence=evidence,
    )


class CycleRule:
    """Implements the engine's Rule protocol plus `on_events`. Its in-memory state (when each
    line's sensor last reported, which cycles were compliant) is guarded by its own lock, never
    held while calling the engine."""

    def __init__(
        self, registry: Registry, lines: LineLedger, settings: CycleSettings | None = None
    ) -> None:
        self.registry = registry
        self.lines = lines
        self.settings = settings or default_cycle_settings()
        self._lock = threading.Lock()
        self._last_sensor: dict[str, int] = {}
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._streak: dict[str, int] = {}  # compliant cycles in a row, per line

    def _spec(self, device_id: str) -> LineSpec | None:
        dev = self.registry.devices.get(device_id)
        return None if dev is None else line_spec(dev)

    # -- telemetry: a running line with a silent sensor -----------------------------------------

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        devices = {r.device_id for r in readings}
        specs = {d: spec for d in devices if (spec := self._spec(d)) is not None}
        if not specs:
            return  # no line controller in the batch (a deployment without lines: every batch)
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            if r.device_id in specs:
                by_device[r.device_id].append(r)
        raises: list[Alert] = []
        clears: list[tuple[str, str]] = []
        silent_ms = int(self.settings.silent_after_s * 1000)
        with self._lock:
            for device_id, rs in by_device.items():
                spec = specs[device_id]
                param = self.settings.methods[spec.method].parameter
                for r in sorted(rs, key=lambda r: r.ts_ms):
                    if r.parameter == param:
                        if r.ts_ms > self._last_sensor.get(device_id, -1):
                            self._last_sensor[device_id] = r.ts_ms
                            clears.append((r.site_id, device_id))
                    elif r.parameter == CONVEYOR and r.value > 0 and r.flag == VALID_FLAG:
                        if device_id not in self._last_sensor:
                            known = self._latest(engine, device_id, param)
                            self._last_sensor[device_id] = known or r.ts_ms
                        last = self._last_sensor[device_id]
                        if r.ts_ms - last > silent_ms:
                            raises.append(self._silent_alert(r, spec, param, last))
        for site_id, device_id in clears:
            if engine.is_open(site_id, device_id, RULE_SILENT):
                engine.clear_alert(site_id, device_id, RULE_SILENT, "readings accepted again")
        for a in raises:
            engine.raise_alert(a, a.last_value)

    @staticmethod
    def _latest(engine: AlertEngine, device_id: str, parameter: str) -> int | None:
        return max(
            (r.ts_ms for r in engine.store.latest_readings(device_id) if r.parameter == parameter),
            default=None,
        )

    def _silent_alert(self, r: Reading, spec: LineSpec, param: str, last: int) -> Alert:
        s = self.settings
        minutes = (r.ts_ms - last) / MINUTE_MS
        return _alert(
            r.site_id,
            r.device_id,
            RULE_SILENT,
            Severity.WARNING,
            f"line {spec.line_id}: conveyor running with no {param} reading since"
            f" {ms_to_iso(last)}",
            r.ts_ms,
            round(minutes, 1),
            s.limit("silent", silent_after_s=s.silent_after_s),
            {"line_id": spec.line_id, "silent_since": ms_to_iso(last), "conveyor_speed": r.value},
            param,
            AlertFamily.INTEGRITY,
        )

    def tick(self, now: int, engine: AlertEngine) -> None:
        """Nothing on the clock: cycles and batches are judged when their events arrive."""

    # -- cycle and batch events -----------------------------------------------------------------

    def on_events(self, events: Sequence[LineEvent], engine: AlertEngine) -> None:
        """Judge the cycles and batches of newly recorded events (after `lines.record`)."""
        ordered = sorted(events, key=lambda e: (e.ts_ms, e.event is LineEventKind.BATCH_PACKED))
        for e in ordered:
            spec = self._spec(e.device_id)
            if spec is None:
                continue
            if e.event is LineEventKind.BATCH_PACKED:
                self._judge_batch(e, spec, engine)
            else:
                cycle = self.lines.cycle(e.device_id, e.ref_id)
                if cycle is not None and cycle.start_ms is not None and cycle.end_ms is not None:
                    self._judge_and_report(cycle, spec, engine)

    def _verdict(self, cycle: Cycle, spec: LineSpec, engine: AlertEngine) -> Verdict:
        assert cycle.start_ms is not None and cycle.end_ms is not None
        limit = self.settings.methods[spec.method]
        readings = engine.store.query_readings(
            ReadingQuery(
                device_id=cycle.device_id,
                parameters=(limit.parameter,),
                start_ms=cycle.start_ms,
                end_ms=cycle.end_ms + 1,
                limit=MAX_CYCLE_READINGS,
            )
        )
        v = judge_cycle(cycle, readings, limit, self.settings.max_gap_s, self.settings.min_coverage)
        with self._lock:
            self._verdicts[(cycle.device_id, cycle.cycle_id)] = v.compliant
            if len(self._verdicts) > MAX_VERDICTS:
                # The oldest first: a verdict no longer held is judged again from the store.
                del self._verdicts[next(iter(self._verdicts))]
        return v

    def _judge_and_report(self, cycle: Cycle, spec: LineSpec, engine: AlertEngine) -> None:
        v = self._verdict(cycle, spec, engine)
        with self._lock:
            streak = self._streak[cycle.device_id] = (
                self._streak.get(cycle.device_id, 0) + 1 if v.compliant else 0
            )
        if v.compliant:
            if streak >= self.settings.clear_after_compliant:
                why = "cycles compliant again"
                engine.clear_alert(cycle.site_id, cycle.device_id, RULE_CYCLE, why)
            return
        assert cycle.end_ms is not None
        rule = RULE_SILENT if v.silent else RULE_CYCLE
        family = AlertFamily.INTEGRITY if v.silent else AlertFamily.COMPLIANCE
        cycles = self._merged(engine, cycle.site_id, cycle.device_id, rule, "cycles")
        cycles[cycle.cycle_id] = v.evidence()
        alert = _alert(
            cycle.site_id,
            cycle.device_id,
            rule,
            Severity.WARNING,
            f"line {spec.line_id} cycle {cycle.cycle_id} ({spec.method}): {v.reason}",
            cycle.end_ms,
            v.lowest,
            v.limit.as_dict(),
            {
                "cycles": _newest(cycles),
                "readings": {
                    "device_id": cycle.device_id,
                    "parameter": v.limit.parameter,
                    "from_ms": cycle.start_ms,
                    "to_ms": cycle.end_ms,
                },
            },
            v.limit.parameter,
            family,
        )
        engine.raise_alert(alert, v.lowest)

    def _judge_batch(self, batch: LineEvent, spec: LineSpec, engine: AlertEngine) -> None:
        lookback = int(self.settings.lookback_min * MINUTE_MS)
        # Twice the look-back: batches just before the window draw on cycles before it too.
        events = self.lines.events(batch.device_id, batch.ts_ms - 2 * lookback, batch.ts_ms + 1)
        cycles = [c for c in derive_cycles(events) if c.start_ms is not None and c.end_ms]
        verdicts: dict[str, Verdict] = {}
        compliant: set[str] = set()
        for c in cycles:
            with self._lock:
                known = self._verdicts.get((c.device_id, c.cycle_id))
            recent = c.end_ms is not None and c.end_ms >= batch.ts_ms - lookback
            # Judged again when unknown (after a restart), or when failed and recent: the
            # batch's evidence shows the failed cycles' curves.
            if known is None or (not known and recent):
                v = self._verdict(c, spec, engine)
                verdicts[c.cycle_id] = v
                known = v.compliant
            if known:
                compliant.add(c.cycle_id)
        cover = batch_cover(batch, events, compliant, spec.capacity_sets, lookback)
        sets = batch.sets or 0
        if cover.available >= sets:
            return
        failed = {
            cid: v.evidence()
            for cid, v in verdicts.items()
            if not v.compliant
            and v.cycle.end_ms is not None
            and batch.ts_ms - lookback <= v.cycle.end_ms <= batch.ts_ms
        }
        entry = {
            "batch_id": batch.ref_id,
            "line_id": batch.line_id,
            "packed": ms_to_iso(batch.ts_ms),
            "sets": sets,
            "production_date": batch.production_date,
            "capacity_available": cover.available,
            "cycles_drawn_on": list(cover.cycles),
        }
        since = cover.previous_ms if cover.previous_ms is not None else batch.ts_ms - lookback
        # The load that went through a failed cycle since the line's previous batch, with no
        # compliant cycle since, was not disinfected: what capacity earlier cycles had left
        # over held other tableware.
        failed_since = any(
            not v.compliant and v.cycle.end_ms and v.cycle.end_ms > since for v in verdicts.values()
        )
        compliant_since = any(
            c.cycle_id in compliant and c.end_ms and c.end_ms > since for c in cycles
        )
        if cover.available == 0 or (failed_since and not compliant_since):
            rule, what = RULE_BATCH, "with no compliant disinfection cycle behind it"
            limit = self.settings.limit("batch", lookback_minutes=self.settings.lookback_min)
        else:
            rule = RULE_CAPACITY
            what = (
                f"with {sets} sets, but the compliant cycles behind it could disinfect only"
                f" {cover.available} more (capacity {spec.capacity_sets} per cycle)"
            )
            limit = self.settings.limit(
                "batch",
                lookback_minutes=self.settings.lookback_min,
                capacity_sets=spec.capacity_sets,
            )
        batches = self._merged(engine, batch.site_id, batch.device_id, rule, "batches")
        batches[batch.ref_id] = entry
        cycles_ev = self._merged(engine, batch.site_id, batch.device_id, rule, "cycles") | failed
        alert = _alert(
            batch.site_id,
            batch.device_id,
            rule,
            Severity.CRITICAL,
            f"line {spec.line_id}: batch {batch.ref_id} packed {what}",
            batch.ts_ms,
            float(sets - cover.available),
            limit,
            {
                "batches": _newest(batches),
                "batch_ids": sorted(batches)[-MAX_EVIDENCE_ITEMS:],
                "cycles": _newest(cycles_ev),
            },
            None,
        )
        engine.raise_alert(alert, alert.last_value)

    @staticmethod
    def _merged(engine: AlertEngine, site_id: str, device_id: str, rule: str, key: str) -> dict:
        """The evidence entries of the rule's open alert on the line: the engine replaces an
        evidence key on update, so every update carries the earlier entries too."""
        for a in engine.open_alerts((rule,)):
            if a.site_id == site_id and a.device_id == device_id and a.rule_id == rule:
                return dict(a.evidence.get(key, {}))
        return {}


def _newest(entries: dict) -> dict:
    """The newest MAX_EVIDENCE_ITEMS entries (insertion order is arrival order)."""
    return dict(list(entries.items())[-MAX_EVIDENCE_ITEMS:])
