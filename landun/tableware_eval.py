"""`landun eval-scenarios --domain tableware`: replay simulated disinfection lines through the
real ingest pipeline and alert engine, then score the alerts against the scenario's ground truth
(the same scoring as the pool scenarios, landun.evaluate).

Scenario files live in `simulators/data/scenarios/tableware/`:

    id = "failing_steam_cabinet"        # must match the file name
    description = "..."
    line_index = 0                      # which line; "all" = every line
    [fault]                             # absent for the clean scenario
    kind = "failing_steam_cabinet"      # a simulators.tableware_model.LineFaultKind
    start_offset_min = 1440             # after the run start
    align_local = "08:00"               # optional: then wait for this Asia/Shanghai time
    duration_min = 240
    [fault.params]                      # kind-specific, see simulators/tableware_model.py
    [[expected]]
    kind = "noncompliant"               # the rule id after "cycle:"; "uncovered_batch" stands
    max_delay_min = 30                  # for cycle:batch_without_cycle and cycle:over_capacity,
    max_clear_delay_min = 120           # which a skipped cabinet can show as either

The run: `lines` lines (every third an infrared cabinet, the others steam; capacity 400 sets),
two per site, a fresh SQLite store, `Core.build` on the simulated clock; each simulated minute
every line's telemetry, then its events, go through `pipeline.process` as MQTT would deliver
them, followed by `engine.tick`. Runs end at 09:00 Asia/Shanghai, as the pool runs do."""

from __future__ import annotations

import json
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from domain.model import Alert, Device, Site, SiteKind
from domain.registry import Registry
from domain.tableware import LINE_CONTROLLER, Method
from domain.timeutil import now_ms
from ingest.pipeline import RawMessage
from landun.evaluate import (
    ALERT_QUERY_LIMIT,
    DELIVERY_MS,
    JITTER_MS,
    STEP_MS,
    RunSettings,
    ScenarioRun,
    SimClock,
    aligned_end_ms,
    scored_runs,
)
from landun.system import Core
from simulators.pool_model import LOCAL_OFFSET_MS, MS_PER_DAY
from simulators.runner import telemetry_record
from simulators.scenarios import SCENARIO_DIR as SIMULATED_SCENARIOS
from simulators.tableware_model import LineFault, LineFaultKind, TablewareModel
from store.base import AlertQuery

SCENARIO_DIR = SIMULATED_SCENARIOS / "tableware"
MS_PER_MIN = 60_000
CAPACITY_SETS = 400
LINES_PER_SITE = 2
INFRARED_EVERY = 3  # lines 2, 5, 8, ... are infrared cabinets
PARAMETERS = (
    "wash_temperature",
    "rinse_temperature",
    "disinfection_temperature",
    "detergent_dosing",
    "conveyor_speed",
)
# Both rules say the same thing about a skipped cabinet: output not covered by compliant cycles.
UNCOVERED = {"cycle:batch_without_cycle", "cycle:over_capacity"}
UNCOVERED_RULE = "cycle:uncovered_batch"
KINDS = ("noncompliant", "uncovered_batch", "sensors_silent")


@dataclass(frozen=True, slots=True)
class Expected:
    kind: str
    max_delay_min: float
    max_clear_delay_min: float


@dataclass(frozen=True, slots=True)
class LineScenario:
    id: str
    description: str
    line_index: int | None  # None: every line
    fault: Mapping[str, Any] | None
    expected: tuple[Expected, ...]

    def fault_for(self, index: int, run_start_ms: int) -> LineFault | None:
        if self.fault is None or (self.line_index is not None and self.line_index != index):
            return None
        f = self.fault
        start = run_start_ms + int(f["start_offset_min"] * MS_PER_MIN)
        if "align_local" in f:
            hours, minutes = (int(p) for p in str(f["align_local"]).split(":"))
            target = (hours * 60 + minutes) * MS_PER_MIN
            start += (target - (start + LOCAL_OFFSET_MS) % MS_PER_DAY) % MS_PER_DAY
        end = start + int(f["duration_min"] * MS_PER_MIN)
        return LineFault(LineFaultKind(f["kind"]), start, end, dict(f.get("params", {})))


def list_line_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_line_scenario(name: str) -> LineScenario:
    path = SCENARIO_DIR / f"{name}.toml"
    doc = tomllib.loads(path.read_text("utf-8"))
    unknown = set(doc) - {"id", "description", "line_index", "fault", "expected"}
    if unknown or doc["id"] != path.stem:
        raise ValueError(f"scenario file {path}: unknown fields {sorted(unknown)} or wrong id")
    expected = []
    for e in doc["expected"]:
        if e["kind"] not in KINDS:
            raise ValueError(f"scenario file {path}: expected kind {e['kind']!r} not in {KINDS}")
        expected.append(
            Expected(e["kind"], float(e["max_delay_min"]), float(e.get("max_clear_delay_min", 0)))
        )
    index = doc.get("line_index", 0)
    return LineScenario(
        id=doc["id"],
        description=" ".join(str(doc["description"]).split()),
        line_index=None if index == "all" else int(index),
        fault=doc.get("fault"),
        expected=tuple(expected),
    )


def line_device(index: int) -> Device:
    site = f"tw-{index // LINES_PER_SITE:03d}"
    method = Method.INFRARED if index % INFRARED_EVERY == 2 else Method.STEAM
    attributes = {"line_id": f"L{index % LINES_PER_SITE + 1}", "method": str(method)}
    return Device(
        f"{site}-line{index % LINES_PER_SITE + 1}",
        site,
        LINE_CONTROLLER,
        PARAMETERS,
        attributes=attributes | {"capacity_sets": CAPACITY_SETS},
    )


def build_registry(lines: int) -> Registry:
    registry = Registry()
    for i in range(lines):
        d = line_device(i)
        if d.site_id not in registry.sites:
            registry.add_site(
                Site(
                    d.site_id,
                    f"Simulated disinfection unit {i // LINES_PER_SITE}",
                    SiteKind.TABLEWARE,
                    "sim",
                    profile="tableware-disinfection",
                )
            )
        registry.add_device(d)
    return registry


def _scored(alert: Alert) -> Alert:
    return replace(alert, rule_id=UNCOVERED_RULE) if alert.rule_id in UNCOVERED else alert


def run_line_scenario(scenario: LineScenario, settings: RunSettings) -> ScenarioRun:
    started = time.perf_counter()
    end_ms = settings.end_ms if settings.end_ms is not None else aligned_end_ms(now_ms())
    start_ms = end_ms - int(settings.days * MS_PER_DAY)
    registry = build_registry(settings.pools)
    devices = [line_device(i) for i in range(settings.pools)]
    faults = [scenario.fault_for(i, start_ms) for i in range(len(devices))]
    models = [
        TablewareModel(
            d.id,
            d.attributes["line_id"],
            Method(d.attributes["method"]),
            CAPACITY_SETS,
            settings.seed,
            start_ms,
            faults=[f] if f is not None else [],
        )
        for d, f in zip(devices, faults, strict=True)
    ]
    rng = np.random.default_rng(settings.seed)
    clock = SimClock(start_ms)
    seq = [0] * len(devices)
    messages = 0
    with tempfile.TemporaryDirectory(prefix="landun-eval-tw-") as tmp:
        core = Core.build(registry, Path(tmp) / "landun.db", clock=clock)
        try:
            for t in range(start_ms, end_ms, STEP_MS):
                batch = []
                for i, (device, model) in enumerate(zip(devices, models, strict=True)):
                    taken = t + int(rng.integers(0, JITTER_MS))
                    recv = taken + int(rng.integers(*DELIVERY_MS))
                    sample = model.sample(taken)
                    if sample is not None:
                        seq[i] += 1
                        body = json.dumps(telemetry_record(sample, seq[i]))
                        topic = f"landun/v1/devices/{device.id}/telemetry"
                        batch.append(RawMessage(topic, body.encode(), recv))
                    events = model.events_until(t)
                    if events:
                        topic = f"landun/v1/devices/{device.id}/events"
                        batch.append(RawMessage(topic, json.dumps(events).encode(), recv + 1))
                if batch:
                    clock.now = max(m.recv_ms for m in batch)
                    core.pipeline.process(batch)
                    messages += len(batch)
                clock.now = t + STEP_MS
                core.engine.tick(clock.now)
            alerts = core.store.list_alerts(AlertQuery(limit=ALERT_QUERY_LIMIT))
            dead = core.store.dead_letters(limit=ALERT_QUERY_LIMIT)
        finally:
            core.close()
    alerts = sorted((_scored(a) for a in alerts), key=lambda a: (a.opened_ms, a.device_id or ""))
    truth = [
        {
            "scenario": scenario.id,
            "site_id": d.site_id,
            "device_id": d.id,
            "family": "cycle",
            "kind": e.kind,
            "parameter": None,
            "start_ms": f.start_ms,
            "end_ms": f.end_ms,
            "max_delay_ms": int(e.max_delay_min * MS_PER_MIN),
            "max_clear_delay_ms": int(e.max_clear_delay_min * MS_PER_MIN),
        }
        for d, f in zip(devices, faults, strict=True)
        if f is not None and f.start_ms < end_ms
        for e in scenario.expected
    ]
    return ScenarioRun(
        scenario,  # type: ignore[arg-type]  # scoring reads only its id
        start_ms,
        end_ms,
        alerts,
        truth,
        dead,
        messages,
        time.perf_counter() - started,
    )


def evaluate_line_domain(
    names: Sequence[str] | None, settings: RunSettings, report: Callable[[str], None] = print
) -> dict[str, Any]:
    """The tableware scenarios named (all of them by default), scored and summed as the pool
    scenarios are; `settings.pools` is the number of lines."""
    chosen = names or list_line_scenarios()
    unknown = set(chosen) - set(list_line_scenarios())
    if unknown:
        raise SystemExit(f"not tableware scenarios: {sorted(unknown)}")
    return scored_runs(
        chosen,
        lambda name: run_line_scenario(load_line_scenario(name), settings),
        settings,
        report,
        unit="lines",
        clean="tableware_clean",
    )
