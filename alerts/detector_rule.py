"""Runs the streaming detectors on every valid reading and turns their decisions into alerts
through the engine: data integrity (implausible, stuck, spike, drift, ORP/chlorine
inconsistency) and water-quality events (several parameters moving together).

An alert opens when a detector becomes active and resolves when it is no longer active; its
evidence carries the detector's score and the window statistics behind the decision."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from alerts.detectors.base import DetectorResult
from alerts.detectors.consistency import InconsistencyDetector
from alerts.detectors.event import EventDetector
from alerts.detectors.series import SeriesDetectors
from alerts.detectors.settings import DetectorSettings
from domain.model import VALID_FLAG, Alert, AlertFamily, Reading, Severity
from domain.params import Catalogue
from domain.registry import Registry

if TYPE_CHECKING:
    from alerts.engine import AlertEngine


def rule_id(kind: str, parameter: str | None) -> str:
    family = "quality" if kind == "water_quality_event" else "integrity"
    return f"{family}:{kind}" + (f":{parameter}" if parameter else "")


class DetectorRule:
    def __init__(
        self,
        registry: Registry,
        catalogue: Catalogue,
        settings: DetectorSettings,
        event_profile: str = "pool",
    ) -> None:
        self.registry = registry
        self.catalogue = catalogue
        self.settings = settings
        self.event_settings = settings.event_profile(event_profile)
        self._series: dict[tuple[str, str], SeriesDetectors] = {}
        self._last_ts: dict[tuple[str, str], int] = {}
        self._events: dict[str, EventDetector] = {}
        self._last_row_ts: dict[str, int] = {}
        self._consistency: dict[str, InconsistencyDetector] = {}

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        rows: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
        for r in sorted(readings, key=lambda r: r.ts_ms):
            if r.flag != VALID_FLAG or r.parameter not in self.settings.series:
                continue
            key = (r.device_id, r.parameter)
            if r.ts_ms <= self._last_ts.get(key, -1):
                continue  # redelivered or late: the detectors only move forward
            self._last_ts[key] = r.ts_ms
            det = self._series.get(key)
            if det is None:
                det = self._series[key] = SeriesDetectors(r.parameter, self.settings)
            for res in det.update(r.ts_ms, r.value):
                self._decide(engine, r.site_id, r.device_id, r.parameter, r.ts_ms, r.value, res)
            rows[(r.device_id, r.ts_ms)][r.parameter] = r.value
        for (device_id, ts), row in sorted(rows.items(), key=lambda kv: kv[0][1]):
            self._rows(engine, device_id, ts, row)

    def _rows(self, engine: AlertEngine, device_id: str, ts: int, row: dict[str, float]) -> None:
        if ts <= self._last_row_ts.get(device_id, -1):
            return
        self._last_row_ts[device_id] = ts
        site_id = self.registry.devices[device_id].site_id
        params = self.event_settings.parameters
        if any(p in row for p in params):
            ev = self._events.get(device_id)
            if ev is None:
                ev = self._events[device_id] = EventDetector(params, self.event_settings)
            res = ev.update(ts, [row.get(p, math.nan) for p in params])
            self._decide(engine, site_id, device_id, None, ts, None, res)
        cs = self.settings.inconsistency
        if cs.orp in row and cs.chlorine in row:
            det = self._consistency.get(device_id)
            if det is None:
                det = self._consistency[device_id] = InconsistencyDetector(cs)
            res = det.update(ts, row[cs.orp], row[cs.chlorine])
            self._decide(engine, site_id, device_id, None, ts, None, res)

    def _decide(
        self,
        engine: AlertEngine,
        site_id: str,
        device_id: str,
        parameter: str | None,
        ts: int,
        value: float | None,
        res: DetectorResult,
    ) -> None:
        rid = rule_id(res.kind, parameter)
        if not res.active:
            if engine.is_open(site_id, device_id, rid):
                engine.clear_alert(site_id, device_id, rid, f"{res.kind} detector no longer active")
            return
        evidence = {"score": round(float(res.score), 3), "detector": res.kind} | {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.evidence.items()
        }
        engine.raise_alert(
            _alert(site_id, device_id, rid, res, parameter, ts, value, evidence), value
        )

    def tick(self, now: int, engine: AlertEngine) -> None:
        """Detectors decide on arrival; nothing to do on the clock."""


def _alert(
    site_id: str,
    device_id: str,
    rid: str,
    res: DetectorResult,
    parameter: str | None,
    ts: int,
    value: float | None,
    evidence: dict,
) -> Alert:
    quality = res.kind == "water_quality_event"
    what = f"{parameter} " if parameter else ""
    return Alert(
        site_id=site_id,
        device_id=device_id,
        rule_id=rid,
        family=AlertFamily.QUALITY if quality else AlertFamily.INTEGRITY,
        severity=Severity.WARNING,
        parameter=parameter,
        message=f"{what}{res.kind.replace('_', ' ')} (score {res.score:.2f})",
        first_ms=ts,
        last_ms=ts,
        first_value=value,
        last_value=value,
        worst_value=value,
        worst_ms=ts,
        evidence=evidence,
    )
