"""Runs the streaming detectors on every valid reading and turns their decisions into alerts
through the engine: data integrity (implausible, stuck, spike, drift, ORP/chlorine
inconsistency, flagged data, gaps, tampering by replay) and water-quality events (several
parameters moving together).

An alert opens when a detector becomes active and resolves when it is no longer active; its
evidence carries the detector's score and the window statistics behind the decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np

from alerts.detectors.bank import BankResult, SeriesBank, rounds
from alerts.detectors.base import DetectorResult
from alerts.detectors.consistency import KIND as INCONSISTENT
from alerts.detectors.consistency import InconsistencyBank
from alerts.detectors.event import KIND as EVENT
from alerts.detectors.event import NEVER
from alerts.detectors.event_bank import EventBank
from alerts.detectors.gaps import GapBank
from alerts.detectors.plugins.shift import KIND as DRIFT
from alerts.detectors.plugins.shift import ShiftSettings
from alerts.detectors.registry import discovered
from alerts.detectors.replay import KIND as TAMPERING
from alerts.detectors.replay import ReplayBank, row_hashes
from alerts.detectors.settings import DetectorSettings, EventSettings
from alerts.detectors.stacked import Stacked
from domain.kinds import DEFAULT_EVENT_PROFILE, site_kinds
from domain.model import VALID_FLAG, Alert, AlertFamily, Reading, Severity
from domain.params import Catalogue
from domain.registry import Registry
from domain.strict_json import finite

if TYPE_CHECKING:
    from alerts.engine import AlertEngine


def rule_id(kind: str, parameter: str | None, family: AlertFamily | None = None) -> str:
    """The alert's rule id; `family` for a registered single-series detector, else known from
    the kind."""
    quality = family is AlertFamily.QUALITY if family else kind == "water_quality_event"
    prefix = "quality" if quality else "integrity"
    return f"{prefix}:{kind}" + (f":{parameter}" if parameter else "")


@dataclass(slots=True)
class _Batch:
    """A batch of readings as arrays, in the order the rule takes them: by sensor time (stable).
    `column` is the parameter's column among the judged series (-1: a parameter not judged)."""

    order: np.ndarray  # position -> index in the readings
    device: np.ndarray
    column: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    valid: np.ndarray


@dataclass(slots=True)
class _Rows:
    """The rows (a device's valid readings of one sensor time) a batch moves forward, in time
    order; `values` has a column per judged series (NaN where `present` is False)."""

    device: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    present: np.ndarray


class _EventProfile:
    """An event profile's bank and its parameters' columns among the judged series. The first
    profile's bank has a row per device row (most devices are its); another keeps its own row
    for each device row it has seen, so it holds only its profile's devices."""

    def __init__(
        self, columns: dict[str, int], settings: EventSettings, capacity: int, shared: bool
    ) -> None:
        params = settings.parameters
        self.bank = EventBank(params, settings, capacity)
        self.columns = np.array([columns.get(p, -1) for p in params], dtype=np.int64)
        self._rows: dict[int, int] | None = None if shared else {}

    def rows(self, devices: np.ndarray) -> np.ndarray:
        rows = self._rows
        if rows is None:
            return devices
        ids = devices.tolist()
        for d in ids:
            if d not in rows:
                rows[d] = len(rows)
        return np.fromiter(map(rows.__getitem__, ids), dtype=np.int64, count=len(ids))


class _Devices(Stacked):
    """Row numbers of the devices the rule has seen and their per-device progress."""

    STATE = (
        ("last_ts", -1),
        ("last_row_ts", -1),
        ("bank_rows", -1),
        ("drift_since", NEVER),
        ("drift_run", 0),
        ("range_since", NEVER),
        ("drift_latched", False),
    )

    def __init__(self, columns: int, capacity: int = 64) -> None:
        super().__init__(capacity)
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        # Newest reading judged, per device and series: the detectors only move forward.
        self.last_ts = np.full((capacity, columns), -1, dtype=np.int64)
        self.last_row_ts = np.full(capacity, -1, dtype=np.int64)
        self.bank_rows = np.full((capacity, columns), -1, dtype=np.int64)  # row in SeriesBank
        # Per device and series: readings since its drift score was last at least
        # partner_share of its threshold, and readings in a row its drift has been active with
        # the device's other series quiet.
        self.drift_since = np.full((capacity, columns), NEVER, dtype=np.int64)
        self.drift_run = np.zeros((capacity, columns), dtype=np.int64)
        # Per device and series: its readings since the device last had a parameter outside its
        # limits (a compliance range alert open), and whether its drift has been explained by
        # that since it became active.
        self.range_since = np.full((capacity, columns), NEVER, dtype=np.int64)
        self.drift_latched = np.zeros((capacity, columns), dtype=bool)

    def rows(self, ids: list[str]) -> np.ndarray:
        """The row of each device id, registering those not seen before."""
        try:
            return np.fromiter(map(self.index.__getitem__, ids), dtype=np.int64, count=len(ids))
        except KeyError:
            for device_id in dict.fromkeys(ids):  # in the order the batch names them
                if device_id not in self.index:
                    self.index[device_id] = len(self.ids)
                    self.ids.append(device_id)
            self.fit(np.array([len(self.ids) - 1]))
            return self.rows(ids)


class DetectorRule:
    """Judges a batch as arrays, every detector holding one row of state per device: the
    single-series detectors per parameter (SeriesBank), the multi-parameter ones per row
    (EventBank, InconsistencyBank, ReplayBank) and gaps (GapBank). Only decisions that may need
    the engine run one by one, in the order the readings are judged: per reading (flagged data,
    then the single-series detectors), then per row (event, inconsistency, tampering), then the
    gaps per device."""

    def __init__(
        self,
        registry: Registry,
        catalogue: Catalogue,
        settings: DetectorSettings,
        event_profile: str = DEFAULT_EVENT_PROFILE,
    ) -> None:
        self.registry = registry
        self.catalogue = catalogue
        self.settings = settings
        self.event_settings = settings.event_profile(event_profile)
        self._series = tuple(settings.series)
        self._columns = {p: j for j, p in enumerate(self._series)}
        # A row for every registered device from the start: growing a bank copies its arrays,
        # and the copy makes every row it writes resident. Rows never written cost no memory.
        rows = max(64, len(registry.devices))
        self._devices = _Devices(len(self._series), rows)
        self._banks: list[SeriesBank | None] = [None] * len(self._series)  # per column
        # One event bank per event profile: `event_profile` for devices of no known site or of a
        # kind whose profile the settings lack, then each other profile a site kind names
        # (domain/data/site_kinds.toml). Only the first is sized for every device at once.
        named = [k.event_profile for k in site_kinds().values()]
        names = dict.fromkeys([event_profile, *filter(settings.event_profiles.__contains__, named)])
        self._event_profiles = [
            _EventProfile(self._columns, settings.event_profile(name), 64 if i else rows, i == 0)
            for i, name in enumerate(names)
        ]
        self._profile_index = {name: i for i, name in enumerate(names)}
        self._device_profile = np.zeros(0, dtype=np.int64)  # per device row: its profile
        self._consistency = InconsistencyBank(settings.inconsistency, rows)
        self._replay = ReplayBank(settings.replay, rows)
        self._gaps = GapBank(settings.gaps, rows)
        # The family of each registered single-series detector (alerts/detectors/registry.py).
        self._families = {kind: d.family for kind, d in discovered().items()}
        # (device, kind, parameter) of the alerts this rule has raised and not yet cleared: an
        # inactive decision needs the engine only for these (most readings need nothing).
        self._raised: set[tuple[str, str, str | None]] = set()
        self._adopted = False

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        if not self._adopted:
            self._adopt(engine)
        if not readings:
            return
        batch = self._batch(readings)
        moved = self._moved(batch)
        judged = self._judge(batch, moved, self._out_of_range(engine))
        flagged = set(self._maybe_flagged(batch).tolist())
        for i in sorted(flagged.union(judged)):
            r = readings[batch.order[i]]
            if i in flagged:
                self._flagged(engine, r)
            if i in judged:
                out, j = judged[i]
                for res in out.detector_results(j):
                    self._decide(engine, r.site_id, r.device_id, r.parameter, r.ts_ms, r.value, res)
        if moved.any():
            self._rows(engine, self._gather_rows(batch, moved))
        self._sent(engine, batch)

    def _adopt(self, engine: AlertEngine) -> None:
        """After a restart, the detector alerts still open are this rule's to clear."""
        self._adopted = True
        for a in engine.open_alerts(("integrity:", "quality:")):
            _, kind, *param = a.rule_id.split(":", 2)
            if a.device_id is not None:
                self._raised.add((a.device_id, kind, param[0] if param else None))

    def _batch(self, readings: Sequence[Reading]) -> _Batch:
        n = len(readings)
        ts = np.fromiter(map(attrgetter("ts_ms"), readings), dtype=np.int64, count=n)
        order = np.argsort(ts, kind="stable")
        device = self._devices.rows(list(map(attrgetter("device_id"), readings)))
        parameters = map(attrgetter("parameter"), readings)
        column = np.fromiter(map(self._columns.get, parameters, [-1] * n), dtype=np.int64, count=n)
        value = np.fromiter(map(attrgetter("value"), readings), dtype=np.float64, count=n)
        flags = list(map(attrgetter("flag"), readings))
        if flags.count(VALID_FLAG) == n:  # the usual batch: counting is quicker than comparing
            valid = np.ones(n, dtype=bool)
        else:
            valid = np.fromiter(map(VALID_FLAG.__eq__, flags), dtype=bool, count=n)
        return _Batch(order, device[order], column[order], ts[order], value[order], valid[order])

    def _moved(self, b: _Batch) -> np.ndarray:
        """Which readings move their series forward: valid, of a judged series, and newer than any
        reading of that series before (redelivered or late ones are not judged again)."""
        moved = np.zeros(len(b.ts), dtype=bool)
        judged = np.flatnonzero(b.valid & (b.column >= 0))
        if not len(judged):
            return moved
        key = b.device[judged] * len(self._series) + b.column[judged]
        by_key = np.argsort(key, kind="stable")  # each series in time order
        key, ts = key[by_key], b.ts[judged][by_key]
        same = key[1:] == key[:-1]
        repeat = np.concatenate(([False], same & (ts[1:] == ts[:-1])))
        last = self._devices.last_ts.reshape(-1)
        moved[judged[by_key[~repeat & (ts > last[key])]]] = True
        newest = np.concatenate((~same, [True]))  # the newest reading of each series
        last[key[newest]] = np.maximum(last[key[newest]], ts[newest])
        return moved

    def _out_of_range(self, engine: AlertEngine) -> np.ndarray:
        """Per device row: a parameter of the device is outside its limits (a compliance range
        alert open, as the engine knew it before this batch)."""
        out = np.zeros(self._devices.capacity, dtype=bool)
        for a in engine.open_alerts(("range:",)):
            d = self._devices.index.get(a.device_id or "")
            if d is not None and a.family is AlertFamily.COMPLIANCE:
                out[d] = True
        return out

    def _judge(
        self, b: _Batch, moved: np.ndarray, out_of_range: np.ndarray
    ) -> dict[int, tuple[BankResult, int]]:
        """The single-series results of the moved readings that need a decision, judged per
        parameter in one vectorised bank call: by position in the batch, the bank's result and
        the reading's index in it."""
        raised = self._series_mask([(d, p) for d, _, p in self._raised])
        judged: dict[int, tuple[BankResult, int]] = {}
        outs: list[tuple[int, np.ndarray, BankResult]] = []
        for j, parameter in enumerate(self._series):
            idx = np.flatnonzero(moved & (b.column == j))
            if not len(idx):
                continue
            bank = self._banks[j]
            if bank is None:
                series = self.settings.for_parameter(parameter)
                bank = self._banks[j] = SeriesBank(parameter, series, self._devices.capacity)
            out = bank.update(self._bank_rows(bank, j, b.device[idx]), b.ts[idx], b.value[idx])
            drift = out.kinds.get(DRIFT)
            if drift is not None:
                shift = bank.settings.detectors["shift"]
                self._drift_seen(j, b.device[idx], drift.score, shift, out_of_range)
            outs.append((j, idx, out))
        for j, idx, out in outs:
            if DRIFT in out.kinds:
                self._partnered(j, b.device[idx], out.kinds[DRIFT].active)
            # Only readings with an active detector, or whose series has an alert open, need a
            # decision; the rest are judged and done.
            active = np.logical_or.reduce([k.active for k in out.kinds.values()])
            for m in np.flatnonzero(active | raised[b.device[idx], j]).tolist():
                judged[int(idx[m])] = (out, m)
        return judged

    def _drift_seen(
        self,
        column: int,
        devices: np.ndarray,
        score: np.ndarray,
        shift: ShiftSettings,
        out_of_range: np.ndarray,
    ) -> None:
        """Count, per device, the readings since series `column` last drifted at least
        `partner_share` of its threshold, and since the device was last out of its limits."""
        high = score >= shift.partner_share * shift.threshold  # False for NaN (not judged)
        since = self._devices.drift_since[:, column]
        range_since = self._devices.range_since[:, column]
        for idx in rounds(devices):  # a device's readings in order, one per round
            d = devices[idx]
            since[d] = np.where(high[idx] & (shift.partner_share > 0), 0, since[d] + 1)
            range_since[d] = np.where(out_of_range[d], 0, range_since[d] + 1)

    def _partnered(self, column: int, devices: np.ndarray, active: np.ndarray) -> None:
        """Keep a drift decision of series `column` active only once it has been active for
        `partner_rows` readings in a row while no other series of its device drifted at least
        `partner_share` of its threshold in the last `partner_memory` readings (as of the end
        of the batch): parameters moving together are the water (and its recovery, while the
        lagged drift reference still holds it), not one drifting sensor; and a partner may
        cross a little later than the first.

        A drift that becomes active while, or within `partner_memory` readings after, a
        parameter of the device was outside its limits is the water's for as long as it stays
        active: ORP follows pH back for many hours after a pH runaway, and against a reference
        that still holds the runaway that return looked like an ORP drift."""
        shift = self.settings.for_parameter(self._series[column]).detectors["shift"]
        if not shift.partner_share:
            return
        since = self._devices.drift_since[devices].copy()
        since[:, column] = NEVER
        quiet = since.min(axis=1) >= shift.partner_memory
        in_episode = self._devices.range_since[devices, column] < shift.partner_memory
        run = self._devices.drift_run[:, column]
        latched = self._devices.drift_latched[:, column]
        for idx in rounds(devices):  # a device's readings in order, one per round
            d = devices[idx]
            latched[d] = active[idx] & (latched[d] | in_episode[idx])
            run[d] = np.where(active[idx] & quiet[idx] & ~latched[d], run[d] + 1, 0)
            active[idx] = run[d] >= shift.partner_rows

    def _series_mask(self, pairs: list[tuple[str, str | None]]) -> np.ndarray:
        """(device id, parameter) pairs as a devices x columns mask; pairs of a device not seen
        or a parameter not judged are left out."""
        mask = np.zeros(self._devices.last_ts.shape, dtype=bool)
        for device_id, parameter in pairs:
            d, j = self._devices.index.get(device_id), self._columns.get(parameter or "")
            if d is not None and j is not None:
                mask[d, j] = True
        return mask

    def _bank_rows(self, bank: SeriesBank, column: int, devices: np.ndarray) -> np.ndarray:
        rows = self._devices.bank_rows[:, column]
        for d in np.unique(devices[rows[devices] < 0]).tolist():
            rows[d] = bank.row(self._devices.ids[d])
        return rows[devices]

    def _maybe_flagged(self, b: _Batch) -> np.ndarray:
        """Positions of the readings `_flagged` may act on: those of a judged series that are
        flagged, or whose series has been flagged in this batch or has a flagged alert open."""
        series = b.column >= 0
        invalid = series & ~b.valid
        open_ = [(d, p) for d, kind, p in self._raised if kind == "flagged"]
        if not invalid.any() and not open_:
            return np.zeros(0, dtype=np.int64)
        marked = self._series_mask(open_)
        marked[b.device[invalid], b.column[invalid]] = True
        return np.flatnonzero(series & marked[b.device, np.maximum(b.column, 0)])

    def _flagged(self, engine: AlertEngine, r: Reading) -> None:
        """Data flagged invalid (calibration, maintenance, fault) are stored but not judged; the
        inspector is told while a parameter reports only flagged data."""
        flagged = r.flag != VALID_FLAG
        if not flagged and (r.device_id, "flagged", r.parameter) not in self._raised:
            return
        res = DetectorResult("flagged", float(flagged), flagged, {"flag": r.flag})
        self._decide(engine, r.site_id, r.device_id, r.parameter, r.ts_ms, r.value, res)

    def _gather_rows(self, b: _Batch, moved: np.ndarray) -> _Rows:
        """The moved readings as rows, newer than the device's last row (a late reading of a
        parameter missing from a row already judged does not reopen it)."""
        m = np.flatnonzero(moved)
        by_row = m[np.lexsort((b.ts[m], b.device[m]))]  # each row's readings in batch order
        device, ts = b.device[by_row], b.ts[by_row]
        first = np.concatenate(([True], (device[1:] != device[:-1]) | (ts[1:] != ts[:-1])))
        starts = by_row[first]
        rank = np.empty(len(starts), dtype=np.int64)
        rank[np.argsort(starts)] = np.arange(len(starts))  # rows in time order, as they came
        row = rank[np.cumsum(first) - 1]
        n, columns = len(starts), len(self._series)
        values = np.full((n, columns), np.nan)
        present = np.zeros((n, columns), dtype=bool)
        values[row, b.column[by_row]] = b.value[by_row]
        present[row, b.column[by_row]] = True
        device, ts = np.empty_like(starts), np.empty_like(starts)
        device[rank], ts[rank] = b.device[starts], b.ts[starts]
        last = self._devices.last_row_ts
        keep = ts > last[device]
        np.maximum.at(last, device[keep], ts[keep])
        return _Rows(device[keep], ts[keep], values[keep], present[keep])

    def _rows(self, engine: AlertEngine, rows: _Rows) -> None:
        """The multi-parameter detectors on each row: water-quality event (when the row has an
        event parameter), ORP/chlorine inconsistency (when it has both) and replay (always)."""
        if not len(rows.ts):
            return
        judged = []
        profiles = self._profiles(rows.device)
        for k, ep in enumerate(self._event_profiles):
            cols = np.maximum(ep.columns, 0)
            present = rows.present[:, cols] & (ep.columns >= 0) & (profiles == k)[:, None]
            ev_rows = np.flatnonzero(present.any(axis=1))
            if not len(ev_rows) and k:
                continue
            ev_values = np.where(present[ev_rows], rows.values[ev_rows][:, cols], np.nan)
            events = ep.bank.update(ep.rows(rows.device[ev_rows]), rows.ts[ev_rows], ev_values)
            judged.append((EVENT, ev_rows, events.active, events.result))
        cs = self.settings.inconsistency
        orp, cl = self._columns.get(cs.orp, -1), self._columns.get(cs.chlorine, -1)
        cs_rows = np.zeros(0, dtype=np.int64)
        if orp >= 0 and cl >= 0:
            cs_rows = np.flatnonzero(rows.present[:, orp] & rows.present[:, cl])
        consistency = self._consistency.update(
            rows.device[cs_rows],
            rows.ts[cs_rows],
            rows.values[cs_rows, orp],
            rows.values[cs_rows, cl],
        )
        new = np.unique(rows.device[~self._replay.registered(rows.device)])
        if len(new):
            self._replay.register(new, self._intervals_s(new))
        replays = self._replay.update(rows.device, rows.ts, row_hashes(rows.values, rows.present))
        every = np.arange(len(rows.ts))
        self._decide_rows(
            engine,
            rows,
            [
                *judged,
                (INCONSISTENT, cs_rows, consistency.active, consistency.result),
                (TAMPERING, every, replays.active, replays.result),
            ],
        )

    def _decide_rows(
        self,
        engine: AlertEngine,
        rows: _Rows,
        kinds: list[tuple[str, np.ndarray, np.ndarray, Callable[[int], DetectorResult]]],
    ) -> None:
        """Decide, row by row in time order and per row in the order of `kinds` (kind, the rows
        it judged, its active flags, its results), where a detector is active or its alert is
        open: only rows of devices with such an alert open, or turning active in this batch."""
        todo: dict[int, list[tuple[str, bool, Callable[[], DetectorResult]]]] = {}
        for kind, at, active, result in kinds:
            watch = np.zeros(len(self._devices.ids), dtype=bool)
            watch[rows.device[at[active]]] = True
            for d, k, p in self._raised:
                i = self._devices.index.get(d)
                if k == kind and p is None and i is not None:
                    watch[i] = True
            for m in np.flatnonzero(watch[rows.device[at]]).tolist():
                todo.setdefault(int(at[m]), []).append((kind, bool(active[m]), partial(result, m)))
        for r in sorted(todo):
            device_id = self._devices.ids[rows.device[r]]
            site_id = self.registry.devices[device_id].site_id
            ts = int(rows.ts[r])
            for kind, is_active, judged in todo[r]:
                if is_active or (device_id, kind, None) in self._raised:
                    self._decide(engine, site_id, device_id, None, ts, None, judged())

    def _profiles(self, devices: np.ndarray) -> np.ndarray:
        """The event profile of each device row, looked up once per device."""
        known = len(self._device_profile)
        if known < len(self._devices.ids):
            new = [self._profile_of(d) for d in self._devices.ids[known:]]
            self._device_profile = np.concatenate((self._device_profile, new)).astype(np.int64)
        return self._device_profile[devices]

    def _profile_of(self, device_id: str) -> int:
        site = self.registry.sites.get(self.registry.devices[device_id].site_id)
        kind = site_kinds().get(site.kind) if site is not None else None
        return self._profile_index.get(kind.event_profile, 0) if kind is not None else 0

    def _sent(self, engine: AlertEngine, b: _Batch) -> None:
        """Gaps, per device (in the order the batch first names it) over its distinct sensor
        times, every reading counted (flagged or not judged too)."""
        by_device = np.lexsort((b.ts, b.device))  # positions ascend within a device
        device, ts = b.device[by_device], b.ts[by_device]
        new = np.concatenate(([True], (device[1:] != device[:-1]) | (ts[1:] != ts[:-1])))
        device, ts, position = device[new], ts[new], by_device[new]
        first = np.concatenate(([True], device[1:] != device[:-1]))
        first_seen = position[first][np.cumsum(first) - 1]
        order = np.argsort(first_seen, kind="stable")  # a device's times stay in order
        device, ts = device[order], ts[order]
        new = np.unique(device[~self._gaps.registered(device)])
        if len(new):
            interval_s = self._intervals_s(new)
            offline = self.settings.offline
            timeout_s = np.maximum(interval_s * offline.timeout_factor, offline.min_timeout_s)
            self._gaps.register(new, interval_s * 1000, timeout_s * 1000)
        for g in self._gaps.update(device, ts):
            device_id = self._devices.ids[device[g.index]]
            site_id = self.registry.devices[device_id].site_id
            self._decide(engine, site_id, device_id, None, int(ts[g.index]), None, g.result)

    def _intervals_s(self, devices: np.ndarray) -> np.ndarray:
        """The reporting interval of each device, as the registry has it now."""
        ids = self._devices.ids
        return np.array([self.registry.devices[ids[d]].interval_s for d in devices.tolist()])

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
        family = self._families.get(res.kind)
        if not res.active:
            if key in self._raised:
                self._raised.discard(key)
                rid = rule_id(res.kind, parameter, family)
                engine.clear_alert(site_id, device_id, rid, f"{res.kind} detector no longer active")
            return
        self._raised.add(key)
        rid = rule_id(res.kind, parameter, family)
        # A statistic a detector could not compute (too little history) is NaN: null in JSON.
        evidence = finite(
            {"score": round(float(res.score), 3), "detector": res.kind}
            | {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.evidence.items()}
        )
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
    quality = rid.startswith("quality:")
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
