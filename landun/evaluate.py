"""`landun eval-scenarios`: replay simulated pools (or drinking-water supplies, for scenarios of
domain drinking_water) through the real ingest pipeline and alert engine, then score the alerts
against the scenario's ground truth.

Drinking-water scenarios run N supplies (small, secondary and school in turn; profile
gb5749-2022) on the same clock, delivery and scoring as the pools.

For each scenario: an in-memory registry of N pools (pools 1, 5, 9, ... outdoor, the others
heated indoor pools; profile gb37488-2019-pool; 60 s interval), a fresh SQLite store in a temporary
directory, and the store, pipeline, engine and rules wired as `landun.system.Core.open` wires
them, except that the engine and the offline rule run on the simulated clock (Core.open takes
the wall clock and a registry file). The run covers the `days` before its end, which is the
latest 09:00 Asia/Shanghai at or before now: in the past, so ingest's time checks accept it, and
aligned to the day, so a seed gives the same alerts whatever the hour it is run. Each simulated
minute every device's sample is sent as MQTT would deliver it (`RawMessage` with the JSON wire
payload, received a fraction of a second after it was taken), one batch per minute through
`pipeline.process`, followed by `engine.tick` so time-driven rules (offline) fire.

Scoring, per expected record of `simulators.ground_truth` (device, kind, parameter, window):
- An alert maps to a kind by its rule id: `range:<p>` -> `range:<p>`, `integrity:offline` ->
  `offline`, `integrity:<kind>[:<p>]` -> `<kind>` (stuck, drift, flagged, tampering, gaps, spike,
  implausible), `integrity:inconsistent` -> `drift` of ORP (ORP falling while chlorine holds is
  how an ORP electrode drift shows; the sensor_drift scenario accepts either),
  `quality:water_quality_event` -> `water_quality_event`.
- A record is detected (recall) when an alert of its device, kind and parameter opens within
  `[start, start + max_delay]`; time to detect = opened - start (engine clock = simulated time).
  It is cleared in time when that alert is resolved by `end + max_clear_delay` (or the run end).
- An alert is explained when it matches a record's device, kind and parameter and opened within
  `[start, end + max_clear_delay]` (a late detection is late, not false). Precision per kind =
  explained / raised. Every unexplained alert is a false positive; those on the faulted device
  during its fault window are counted apart as "secondary" (a real effect of the fault, reported
  under another kind, e.g. a chlorine drift alert when the dosing pump stops).
- Clock skew: ingest refuses readings more than 5 min in the future, so a clock 30 min ahead is
  dead-lettered with the reason "in the future" and never reaches the alert stage. That is
  scored apart, as `dead_letter_detected`: the data are refused and visible to the inspector in
  the dead-letter list, but no alert of kind clock_skew is raised (recall stays 0).

The last line on stdout is one JSON object with the figures per scenario and overall.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domain.model import Alert, AlertFamily, DeadLetter, Device, Site, SiteKind
from domain.registry import Registry
from domain.timeutil import ms_to_iso, now_ms
from ingest.pipeline import RawMessage
from landun.system import Core
from simulators.faults import POOL_PARAMETERS
from simulators.ground_truth import ground_truth
from simulators.pool_model import LOCAL_OFFSET_MS, MS_PER_DAY, MS_PER_H, PoolModel
from simulators.runner import telemetry_record
from simulators.scenarios import Scenario, list_scenarios, load_scenario
from simulators.water_model import PARAMETERS as WATER_MODEL_PARAMETERS
from simulators.water_model import WaterModel, subtype_of
from store.base import AlertQuery

INTERVAL_S = 60
STEP_MS = INTERVAL_S * 1000
RUN_END_LOCAL_HOUR = 9  # runs end (and so start) at 09:00 local time: reproducible per seed
OUTDOOR_EVERY = 4  # pools 1, 5, 9, ... are outdoor: sun and a daily temperature cycle
JITTER_MS = 2000  # when in the minute a logger samples, as simulators.runner draws it
DELIVERY_MS = (100, 1500)  # sample to broker to ingest, a fraction of a second
PROFILE = "gb37488-2019-pool"
WATER_PROFILE = "gb5749-2022"
CLOCK_SKEW_REASON = "in the future"
ALERT_QUERY_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class RunSettings:
    pools: int = 20
    days: float = 7.0
    seed: int = 1
    end_ms: int | None = None  # None: the latest 09:00 Asia/Shanghai at or before now


@dataclass(slots=True)
class ScenarioRun:
    scenario: Scenario
    start_ms: int
    end_ms: int
    alerts: list[Alert]
    truth: list[dict[str, Any]]
    dead_letters: list[DeadLetter]
    messages: int
    elapsed_s: float


@dataclass(slots=True)
class SimClock:
    """The simulated 'now' the engine and the offline rule read."""

    now: int

    def __call__(self) -> int:
        return self.now


def aligned_end_ms(now: int) -> int:
    """The latest RUN_END_LOCAL_HOUR:00 Asia/Shanghai at or before `now`."""
    offset = RUN_END_LOCAL_HOUR * MS_PER_H - LOCAL_OFFSET_MS
    return (now - offset) // MS_PER_DAY * MS_PER_DAY + offset


def pool_id(index: int) -> str:
    return f"pool-{index:03d}"


def is_outdoor(index: int) -> bool:
    return index % OUTDOOR_EVERY == 1


def build_registry(pools: int) -> Registry:
    registry = Registry()
    for i in range(pools):
        site = pool_id(i)
        kind = "outdoor" if is_outdoor(i) else "indoor"
        registry.add_site(
            Site(site, f"Simulated {kind} pool {i}", SiteKind.POOL, "sim", profile=PROFILE)
        )
        registry.add_device(
            Device(f"{site}-wq", site, "pool_analyzer", POOL_PARAMETERS, interval_s=INTERVAL_S)
        )
    return registry


def build_water_registry(supplies: int) -> Registry:
    """Drinking-water supplies: small, secondary and school in turn (water_model.subtype_of)."""
    registry = Registry()
    for i in range(supplies):
        site, subtype = f"water-{i:03d}", subtype_of(i)
        registry.add_site(
            Site(
                site,
                f"Simulated {subtype} {i}",
                SiteKind.DRINKING_WATER,
                "sim",
                profile=WATER_PROFILE,
                subtype=subtype,
            )
        )
        parameters = WATER_MODEL_PARAMETERS[subtype]
        registry.add_device(
            Device(f"{site}-wq", site, "water_analyzer", parameters, interval_s=INTERVAL_S)
        )
    return registry


def build_models(
    scenario: Scenario, settings: RunSettings, start_ms: int
) -> tuple[Registry, list[PoolModel]]:
    """The scenario's registry and one model per device, in device-id order."""
    water = scenario.domain == "drinking_water"
    registry = (build_water_registry if water else build_registry)(settings.pools)
    devices = sorted(registry.devices.values(), key=lambda d: d.id)
    models: list[PoolModel] = []
    for i, d in enumerate(devices):
        faults = scenario.faults_for(i, start_ms)
        if water:
            subtype = registry.sites[d.site_id].subtype
            models.append(
                WaterModel(d.id, settings.seed, subtype=subtype, faults=faults, start_ms=start_ms)
            )
        else:
            models.append(
                PoolModel(
                    d.id,
                    settings.seed,
                    indoor=not is_outdoor(i),
                    interval_s=INTERVAL_S,
                    faults=faults,
                    start_ms=start_ms,
                )
            )
    return registry, models


def run_scenario(scenario: Scenario, settings: RunSettings) -> ScenarioRun:
    started = time.perf_counter()
    end_ms = settings.end_ms if settings.end_ms is not None else aligned_end_ms(now_ms())
    start_ms = end_ms - int(settings.days * MS_PER_DAY)
    registry, models = build_models(scenario, settings, start_ms)
    devices = sorted(registry.devices.values(), key=lambda d: d.id)
    rng = np.random.default_rng(settings.seed)
    clock = SimClock(start_ms)
    seq = [0] * len(devices)
    messages = 0
    with tempfile.TemporaryDirectory(prefix="landun-eval-") as tmp:
        core = Core.build(registry, Path(tmp) / "landun.db", clock=clock)
        store, engine, pipeline = core.store, core.engine, core.pipeline
        try:
            for t in range(start_ms, end_ms, STEP_MS):
                batch = []
                for i, (device, model) in enumerate(zip(devices, models, strict=True)):
                    taken = t + int(rng.integers(0, JITTER_MS))
                    delay = int(rng.integers(*DELIVERY_MS))
                    sample = model.sample(taken)
                    if sample is None:
                        continue
                    seq[i] += 1
                    payload = json.dumps(telemetry_record(sample, seq[i]), separators=(",", ":"))
                    topic = f"landun/v1/devices/{device.id}/telemetry"
                    batch.append(RawMessage(topic, payload.encode(), taken + delay))
                batch.sort(key=lambda m: m.recv_ms)
                if batch:
                    clock.now = batch[-1].recv_ms
                    pipeline.process(batch)
                    messages += len(batch)
                clock.now = t + STEP_MS
                engine.tick(clock.now)
            alerts = store.list_alerts(AlertQuery(limit=ALERT_QUERY_LIMIT))
            dead = store.dead_letters(limit=ALERT_QUERY_LIMIT)
        finally:
            core.close()
    alerts.sort(key=lambda a: (a.opened_ms, a.device_id or "", a.rule_id))
    # A fault may outlast the run (analyzer_off for two days in a one-day run): windows that
    # start after the end cannot be seen and are not expected.
    truth = [
        record
        for record in ground_truth(scenario, start_ms, [(d.site_id, d.id) for d in devices])
        if record["start_ms"] < end_ms
    ]
    return ScenarioRun(
        scenario,
        start_ms,
        end_ms,
        alerts,
        truth,
        dead,
        messages,
        time.perf_counter() - started,
    )


# -- scoring ----------------------------------------------------------------------------------


def alert_kind(rule_id: str, inconsistency_orp: str = "orp") -> tuple[str, str | None]:
    """(ground-truth kind, parameter) an alert's rule id stands for."""
    family, _, rest = rule_id.partition(":")
    if family == "range":
        return rule_id, rest
    kind, _, parameter = rest.partition(":")
    if kind == "inconsistent":
        return "drift", inconsistency_orp
    return kind, parameter or None


def _matches(alert: Alert, record: dict[str, Any]) -> bool:
    kind, parameter = alert_kind(alert.rule_id)
    return (
        alert.device_id == record["device_id"]
        and kind == record["kind"]
        and (record["parameter"] is None or parameter == record["parameter"])
    )


def _explained(alert: Alert, records: Sequence[dict[str, Any]]) -> bool:
    return any(
        _matches(alert, r)
        and r["start_ms"] <= alert.opened_ms <= r["end_ms"] + r["max_clear_delay_ms"]
        for r in records
    )


def _secondary(alert: Alert, run: ScenarioRun) -> bool:
    """On a faulted device while its fault (and recovery allowance) lasts."""
    return any(
        alert.device_id == r["device_id"]
        and r["start_ms"] <= alert.opened_ms <= r["end_ms"] + r["max_clear_delay_ms"]
        for r in run.truth
    )


@dataclass(slots=True)
class KindFigures:
    raised: int = 0
    explained: int = 0
    expected: int = 0
    detected: int = 0
    cleared_in_time: int = 0
    dead_letter_detected: int = 0
    delays_min: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "raised": self.raised,
            "explained": self.explained,
            "precision": _ratio(self.explained, self.raised),
            "expected": self.expected,
            "detected": self.detected,
            "recall": _ratio(self.detected, self.expected),
            "cleared_in_time": self.cleared_in_time,
            "median_ttd_min": round(statistics.median(self.delays_min), 1)
            if self.delays_min
            else None,
            "dead_letter_detected": self.dead_letter_detected,
        }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def _detection(record: dict[str, Any], alerts: Sequence[Alert]) -> Alert | None:
    due = record["start_ms"] + record["max_delay_ms"]
    hits = [a for a in alerts if _matches(a, record) and record["start_ms"] <= a.opened_ms <= due]
    return min(hits, key=lambda a: a.opened_ms, default=None)


def _dead_letter_detection(record: dict[str, Any], dead: Sequence[DeadLetter]) -> bool:
    if record["kind"] != "clock_skew":
        return False
    due = record["start_ms"] + record["max_delay_ms"]
    return any(
        d.device_id == record["device_id"]
        and CLOCK_SKEW_REASON in d.reason
        and record["start_ms"] <= d.recv_ms <= due
        for d in dead
    )


def _cleared_in_time(alert: Alert, record: dict[str, Any], run_end_ms: int) -> bool:
    """Resolved by end + max_clear_delay; a deadline after the run's end is not yet missed."""
    clear_by = record["end_ms"] + record["max_clear_delay_ms"]
    if clear_by >= run_end_ms:
        return True
    return alert.resolved_ms is not None and alert.resolved_ms <= clear_by


def score(run: ScenarioRun) -> dict[str, Any]:
    kinds: dict[str, KindFigures] = {}
    false_positives: dict[str, int] = {}
    secondary: dict[str, int] = {}
    advisory: dict[str, int] = {}
    for alert in run.alerts:
        if alert.family is AlertFamily.QUALITY and alert.rule_id.startswith("range:"):
            # Outside an advisory band (water temperature): information, counted apart.
            advisory[alert.rule_id] = advisory.get(alert.rule_id, 0) + 1
            continue
        kind = alert_kind(alert.rule_id)[0]
        fig = kinds.setdefault(kind, KindFigures())
        fig.raised += 1
        if _explained(alert, run.truth):
            fig.explained += 1
        elif _secondary(alert, run):
            secondary[alert.rule_id] = secondary.get(alert.rule_id, 0) + 1
        else:
            false_positives[alert.rule_id] = false_positives.get(alert.rule_id, 0) + 1
    for record in run.truth:
        fig = kinds.setdefault(record["kind"], KindFigures())
        fig.expected += 1
        fig.dead_letter_detected += _dead_letter_detection(record, run.dead_letters)
        hit = _detection(record, run.alerts)
        if hit is None:
            continue
        fig.detected += 1
        fig.delays_min.append((hit.opened_ms - record["start_ms"]) / 60_000)
        fig.cleared_in_time += _cleared_in_time(hit, record, run.end_ms)
    return {
        "scenario": run.scenario.id,
        "start": ms_to_iso(run.start_ms),
        "end": ms_to_iso(run.end_ms),
        "messages": run.messages,
        "dead_letters": len(run.dead_letters),
        "elapsed_s": round(run.elapsed_s, 1),
        "kinds": {k: f.as_dict() for k, f in sorted(kinds.items())},
        "false_positives": sum(false_positives.values()),
        "false_positives_by_rule": dict(sorted(false_positives.items())),
        "secondary": sum(secondary.values()),
        "secondary_by_rule": dict(sorted(secondary.items())),
        "advisory": sum(advisory.values()),
        "advisory_by_rule": dict(sorted(advisory.items())),
    }


def overall(results: Sequence[dict[str, Any]], clean: str = "clean") -> dict[str, Any]:
    """Sums over scenarios; the median time to detect is the median of the scenarios' medians."""
    total: dict[str, dict[str, Any]] = {}
    for result in results:
        for kind, fig in result["kinds"].items():
            acc = total.setdefault(
                kind, {"raised": 0, "explained": 0, "expected": 0, "detected": 0, "ttd": []}
            )
            for key in ("raised", "explained", "expected", "detected"):
                acc[key] += fig[key]
            if fig["median_ttd_min"] is not None:
                acc["ttd"].append(fig["median_ttd_min"])
    kinds = {
        kind: {
            "precision": _ratio(acc["explained"], acc["raised"]),
            "recall": _ratio(acc["detected"], acc["expected"]),
            "raised": acc["raised"],
            "expected": acc["expected"],
            "median_ttd_min": statistics.median(acc["ttd"]) if acc["ttd"] else None,
        }
        for kind, acc in sorted(total.items())
    }
    return {
        "kinds": kinds,
        "false_positives": sum(r["false_positives"] for r in results),
        "secondary": sum(r["secondary"] for r in results),
        "advisory": sum(r["advisory"] for r in results),
        "clean_false_positives": sum(
            r["false_positives"] for r in results if r["scenario"] == clean
        ),
    }


# -- command line -----------------------------------------------------------------------------


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"== {result['scenario']}  {result['start']} .. {result['end']}"
        f"  ({result['messages']} messages, {result['dead_letters']} dead letters,"
        f" {result['elapsed_s']} s)"
    ]
    lines.append(f"   {'kind':<24}{'raised':>7}{'prec':>7}{'expect':>7}{'recall':>7}{'ttd_min':>9}")
    for kind, fig in result["kinds"].items():
        lines.append(
            f"   {kind:<24}{fig['raised']:>7}{_fmt(fig['precision']):>7}{fig['expected']:>7}"
            f"{_fmt(fig['recall']):>7}{_fmt(fig['median_ttd_min']):>9}"
            + (f"  (dead-lettered: {fig['dead_letter_detected']})" if fig["expected"] else "")
        )
    lines.append(
        f"   false positives: {result['false_positives']} {result['false_positives_by_rule']}"
    )
    lines.append(f"   secondary (faulted device): {result['secondary_by_rule']}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="landun eval-scenarios",
        description="Replay simulated pool scenarios through ingest and alerts; score the alerts",
    )
    from landun.tableware_eval import list_line_scenarios

    p.add_argument(
        "--scenario",
        action="append",
        choices=list_scenarios() + list_line_scenarios(),
        help="scenario to run (repeatable; default: all of the domain)",
    )
    p.add_argument(
        "--domain",
        choices=("pool", "tableware"),
        default="pool",
        help="pools, or tableware disinfection lines (landun/tableware_eval.py)",
    )
    p.add_argument("--lines", type=int, default=6, help="simulated lines (--domain tableware)")
    p.add_argument(
        "--pools", type=int, default=20, help="simulated pools (or water supplies) per scenario"
    )
    p.add_argument("--days", type=float, default=7.0, help="simulated days per scenario")
    p.add_argument("--seed", type=int, default=1, help="simulation seed")
    p.add_argument("--json-out", type=Path, help="also write the JSON figures to this file")
    return p


def evaluate(
    names: Sequence[str], settings: RunSettings, report: Callable[[str], None] = print
) -> dict[str, Any]:
    return scored_runs(
        names, lambda name: run_scenario(load_scenario(name), settings), settings, report
    )


def scored_runs(
    names: Sequence[str],
    run: Callable[[str], ScenarioRun],
    settings: RunSettings,
    report: Callable[[str], None],
    unit: str = "pools",
    clean: str = "clean",
) -> dict[str, Any]:
    """Each named scenario run, scored and reported, and the figures summed over them."""
    results = []
    for name in names:
        result = score(run(name))
        report(format_result(result))
        results.append(result)
    return {
        unit: settings.pools,
        "days": settings.days,
        "seed": settings.seed,
        "scenarios": {r["scenario"]: r for r in results},
        "overall": overall(results, clean=clean),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # One dead letter per skewed reading would flood the report; they are counted in the figures.
    logging.getLogger("landun.ingest").setLevel(logging.WARNING)
    if args.domain == "tableware":
        from landun.tableware_eval import evaluate_line_domain

        lines = RunSettings(pools=args.lines, days=args.days, seed=args.seed)
        figures = evaluate_line_domain(args.scenario, lines)
    else:
        settings = RunSettings(pools=args.pools, days=args.days, seed=args.seed)
        figures = evaluate(args.scenario or list_scenarios(), settings)
    line = json.dumps(figures, separators=(",", ":"))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
