"""Runs the streaming detectors on every valid reading and turns their decisions into alerts
through the engine: data integrity (implausible, stuck, spike, drift, ORP/chlorine
inconsistency, flagged data, gaps, tampering by replay) and water-quality events (several
parameters moving together).

An alert opens when a detector becomes active and resolves when it is no longer active; its
evidence carries the detector's score and the window statistics behind the decision."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from alerts.detectors.bank import SeriesBank
from alerts.detectors.base import DetectorResult
from alerts.detectors.consistency import InconsistencyDetector
from alerts.detectors.event import EventDetector
from alerts.detectors.settings import DetectorSettings, GapSettings, ReplaySettings
from domain.model import VALID_FLAG, Alert, AlertFamily, Reading, Severity
from domain.params import Catalogue
from domain.registry import Registry

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

MS_PER_H = 3_600_000


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
        self._banks: dict[str, SeriesBank] = {}  # per parameter, one row per device
        self._last_ts: dict[tuple[str, str], int] = {}
        self._events: dict[str, EventDetector] = {}
        self._last_row_ts: dict[str, int] = {}
        self._consistency: dict[str, InconsistencyDetector] = {}
        self._replay: dict[str, ReplayDetector] = {}
        self._gaps: dict[str, GapDetector] = {}
        # (device, kind, parameter) of the alerts this rule has raised and not yet cleared: an
        # inactive decision needs the engine only for these (most readings need nothing).
        self._raised: set[tuple[str, str, str | None]] = set()
        self._adopted = False

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        if not self._adopted:
            self._adopt(engine)
        rows: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
        sent: dict[str, set[int]] = defaultdict(set)
        ordered = sorted(readings, key=lambda r: r.ts_ms)
        moved, judged = self._judge(ordered)
        for i, r in enumerate(ordered):
            sent[r.device_id].add(r.ts_ms)
            if r.parameter in self.settings.series:
                self._flagged(engine, r)
            if i not in moved:
                continue
            for res in judged.get(i, ()):
                self._decide(engine, r.site_id, r.device_id, r.parameter, r.ts_ms, r.value, res)
            rows[(r.device_id, r.ts_ms)][r.parameter] = r.value
        for (device_id, ts), row in sorted(rows.items(), key=lambda kv: kv[0][1]):
            self._rows(engine, device_id, ts, row)
        for device_id, stamps in sent.items():
            self._sent(engine, device_id, sorted(stamps))

    def _adopt(self, engine: AlertEngine) -> None:
        """After a restart, the detector alerts still open are this rule's to clear."""
        self._adopted = True
        for a in engine.open_alerts(("integrity:", "quality:")):
            _, kind, *param = a.rule_id.split(":", 2)
            if a.device_id is not None:
                self._raised.add((a.device_id, kind, param[0] if param else None))

    def _judge(
        self, ordered: Sequence[Reading]
    ) -> tuple[set[int], dict[int, list[DetectorResult]]]:
        """Indexes of `ordered` whose valid readings move their series forward (all of them feed
        the multi-parameter detectors), and the single-series results of those that need a
        decision; judged per parameter in one vectorised bank call."""
        batches: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(ordered):
            if r.flag != VALID_FLAG or r.parameter not in self.settings.series:
                continue
            key = (r.device_id, r.parameter)
            if r.ts_ms <= self._last_ts.get(key, -1):
                continue  # redelivered or late: the detectors only move forward
            self._last_ts[key] = r.ts_ms
            batches[r.parameter].append(i)
        judged: dict[int, list[DetectorResult]] = {}
        moved = {i for idx in batches.values() for i in idx}
        raised = {(d, p) for d, _, p in self._raised}
        for parameter, idx in batches.items():
            bank = self._banks.get(parameter)
            if bank is None:
                series = self.settings.for_parameter(parameter)
                bank = self._banks[parameter] = SeriesBank(parameter, series)
            batch = [ordered[i] for i in idx]
            out = bank.update(
                np.array([bank.row(r.device_id) for r in batch], dtype=np.int64),
                np.array([r.ts_ms for r in batch], dtype=np.int64),
                np.array([r.value for r in batch], dtype=np.float64),
            )
            # Only readings with an active detector, or whose series has an alert open, need a
            # decision; the rest are judged and done.
            active = np.logical_or.reduce([k.active for k in out.kinds.values()])
            for j, i in enumerate(idx):
                if active[j] or (ordered[i].device_id, parameter) in raised:
                    judged[i] = out.detector_results(j)
        return moved, judged

    def _flagged(self, engine: AlertEngine, r: Reading) -> None:
        """Data flagged invalid (calibration, maintenance, fault) are stored but not judged; the
        inspector is told while a parameter reports only flagged data."""
        flagged = r.flag != VALID_FLAG
        if not flagged and (r.device_id, "flagged", r.parameter) not in self._raised:
            return
        res = DetectorResult("flagged", float(flagged), flagged, {"flag": r.flag})
        self._decide(engine, r.site_id, r.device_id, r.parameter, r.ts_ms, r.value, res)

    def _sent(self, engine: AlertEngine, device_id: str, stamps: list[int]) -> None:
        device = self.registry.devices[device_id]
        det = self._gaps.get(device_id)
        if det is None:
            offline = self.settings.offline
            timeout_s = max(device.interval_s * offline.timeout_factor, offline.min_timeout_s)
            det = self._gaps[device_id] = GapDetector(
                self.settings.gaps, device.interval_s * 1000, timeout_s * 1000
            )
        for ts in stamps:
            res = det.update(ts)
            if res is not None:
                self._decide(engine, device.site_id, device_id, None, ts, None, res)

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
        replay = self._replay.get(device_id)
        if replay is None:
            replay = self._replay[device_id] = ReplayDetector(
                self.settings.replay, self.registry.devices[device_id].interval_s
            )
        self._decide(engine, site_id, device_id, None, ts, None, replay.update(ts, row))

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
        key = (device_id, res.kind, parameter)
        if not res.active:
            if key in self._raised:
                self._raised.discard(key)
                rid = rule_id(res.kind, parameter)
                engine.clear_alert(site_id, device_id, rid, f"{res.kind} detector no longer active")
            return
        self._raised.add(key)
        rid = rule_id(res.kind, parameter)
        evidence = {"score": round(float(res.score), 3), "detector": res.kind} | {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.evidence.items()
        }
        engine.raise_alert(
            _alert(site_id, device_id, rid, res, parameter, ts, value, evidence), value
        )

    def tick(self, now: int, engine: AlertEngine) -> None:
        """Detectors decide on arrival; nothing to do on the clock."""


class ReplayDetector:
    """Tampering: rows whose every valid value equals a row sent `lag_h` earlier (within
    `tolerance_s`), `min_rows` times in a row. Active until a row differs.

    The last day of rows is kept as (time, 64-bit hash of the row) in two numpy rings sized for
    the device's reporting interval: ~16 bytes a row, so a province of devices keeps a day of
    history in tens of MB. A hash collision would need 2^-64 luck."""

    def __init__(self, settings: ReplaySettings, interval_s: float) -> None:
        self.lag_ms = int(settings.lag_h * MS_PER_H)
        self.tolerance_ms = int(settings.tolerance_s * 1000)
        self.min_rows = settings.min_rows
        capacity = int((self.lag_ms + 2 * self.tolerance_ms) / (interval_s * 1000)) + 16
        self._ts = np.full(capacity, -(2**62), dtype=np.int64)  # "never": far past, no overflow
        self._hash = np.zeros(capacity, dtype=np.int64)
        self._head = 0
        self._run = 0

    def update(self, ts: int, row: dict[str, float]) -> DetectorResult:
        h = hash(tuple(sorted(row.items())))
        target = ts - self.lag_ms
        hits = np.flatnonzero((np.abs(self._ts - target) <= self.tolerance_ms) & (self._hash == h))
        match = int(self._ts[hits[0]]) if len(hits) else None
        self._run = self._run + 1 if match is not None else 0
        self._ts[self._head] = ts
        self._hash[self._head] = h
        self._head = (self._head + 1) % len(self._ts)
        evidence = {"identical_rows": self._run, "lag_h": self.lag_ms / MS_PER_H}
        if match is not None:
            evidence["same_as_ms"] = match
        return DetectorResult(
            "tampering", self._run / self.min_rows, self._run >= self.min_rows, evidence
        )


class GapDetector:
    """Fraction of the last `window_min` lost in gaps longer than `slack_intervals` intervals but
    not longer than the offline timeout (a longer silence is the offline rule's). Sensor time, so
    a buffer flushed late leaves no gap. None until a gap has been seen."""

    def __init__(self, settings: GapSettings, interval_ms: float, offline_ms: float) -> None:
        self.settings = settings
        self.window_ms = settings.window_min * 60_000
        self.interval_ms = interval_ms
        self.offline_ms = offline_ms
        self._lost: deque[tuple[int, float]] = deque()
        self._last_ts: int | None = None
        self._active = False

    def update(self, ts: int) -> DetectorResult | None:
        if self._last_ts is not None and ts > self._last_ts:
            gap = ts - self._last_ts
            if self.settings.slack_intervals * self.interval_ms < gap <= self.offline_ms:
                self._lost.append((ts, gap - self.interval_ms))
        self._last_ts = max(ts, self._last_ts or ts)
        while self._lost and self._lost[0][0] < ts - self.window_ms:
            self._lost.popleft()
        if not self._lost and not self._active:
            return None
        s = self.settings
        fraction = sum(lost for _, lost in self._lost) / self.window_ms
        self._active = fraction >= (s.off_fraction if self._active else s.on_fraction)
        evidence = {"lost_fraction": fraction, "gaps": len(self._lost), "window_min": s.window_min}
        return DetectorResult("gaps", fraction / s.on_fraction, self._active, evidence)


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
