"""The multi-device banks of DetectorRule equal the per-device detectors they replaced.

EventBank and InconsistencyBank are compared with EventDetector and InconsistencyDetector; the
replay and gap banks with the per-device ReplayDetector and GapDetector the rule used before
(kept below as the reference). Last, the whole rule is compared, alert call by alert call, with
the rule as it was: one detector object per device, rows judged one at a time."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from alerts.detector_rule import DetectorRule
from alerts.detectors import EventDetector, InconsistencyDetector, load_detector_settings
from alerts.detectors import bank as bank_module
from alerts.detectors.bank import SeriesBank
from alerts.detectors.base import DetectorResult
from alerts.detectors.consistency import InconsistencyBank
from alerts.detectors.event_bank import EventBank
from alerts.detectors.gaps import GapBank
from alerts.detectors.replay import ReplayBank, row_hashes
from alerts.detectors.settings import (
    DetectorSettings,
    EventSettings,
    GapSettings,
    ReplaySettings,
)
from domain.model import VALID_FLAG, Reading

MINUTE = 60_000
MS_PER_H = 3_600_000
T0 = 1_795_334_400_000
SETTINGS = load_detector_settings()
EVENT_PARAMETERS = ["free_chlorine", "ph", "orp", "turbidity"]
POOL = {  # mean, sd, resolution
    "free_chlorine": (0.6, 0.03, 0.01),
    "ph": (7.4, 0.02, 0.01),
    "orp": (700.0, 5.0, 1.0),
    "turbidity": (0.3, 0.03, 0.01),
    "temperature": (27.0, 0.05, 0.1),
}


# -- the per-device detectors the banks replaced, as they were -----------------------------------


class ReplayDetector:
    def __init__(self, settings: ReplaySettings, interval_s: float) -> None:
        self.lag_ms = int(settings.lag_h * MS_PER_H)
        self.tolerance_ms = int(settings.tolerance_s * 1000)
        self.min_rows = settings.min_rows
        capacity = int((self.lag_ms + 2 * self.tolerance_ms) / (interval_s * 1000)) + 16
        self._ts = np.full(capacity, -(2**62), dtype=np.int64)
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


class ReferenceRule(DetectorRule):
    """DetectorRule.observe as it was: per-device detectors, rows as dicts, one at a time. The
    decision itself (`_decide`, `_flagged`) is the rule's own."""

    def __init__(self, registry, settings: DetectorSettings) -> None:
        super().__init__(registry, None, settings)
        self._ref_banks: dict[str, SeriesBank] = {}
        self._ref_last_ts: dict[tuple[str, str], int] = {}
        self._ref_last_row_ts: dict[str, int] = {}
        self._ref_events: dict[str, EventDetector] = {}
        self._ref_consistency: dict[str, InconsistencyDetector] = {}
        self._ref_replay: dict[str, ReplayDetector] = {}
        self._ref_gaps: dict[str, GapDetector] = {}

    def observe(self, readings: Sequence[Reading], engine) -> None:
        if not self._adopted:
            self._adopt(engine)
        rows: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
        sent: dict[str, set[int]] = defaultdict(set)
        ordered = sorted(readings, key=lambda r: r.ts_ms)
        moved, judged = self._ref_judge(ordered)
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
            self._ref_rows(engine, device_id, ts, row)
        for device_id, stamps in sent.items():
            self._ref_sent(engine, device_id, sorted(stamps))

    def _ref_judge(self, ordered):
        batches: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(ordered):
            if r.flag != VALID_FLAG or r.parameter not in self.settings.series:
                continue
            key = (r.device_id, r.parameter)
            if r.ts_ms <= self._ref_last_ts.get(key, -1):
                continue
            self._ref_last_ts[key] = r.ts_ms
            batches[r.parameter].append(i)
        judged = {}
        moved = {i for idx in batches.values() for i in idx}
        raised = {(d, p) for d, _, p in self._raised}
        for parameter, idx in batches.items():
            bank = self._ref_banks.get(parameter)
            if bank is None:
                series = self.settings.for_parameter(parameter)
                bank = self._ref_banks[parameter] = SeriesBank(parameter, series)
            batch = [ordered[i] for i in idx]
            out = bank.update(
                np.array([bank.row(r.device_id) for r in batch], dtype=np.int64),
                np.array([r.ts_ms for r in batch], dtype=np.int64),
                np.array([r.value for r in batch], dtype=np.float64),
            )
            active = np.logical_or.reduce([k.active for k in out.kinds.values()])
            for j, i in enumerate(idx):
                if active[j] or (ordered[i].device_id, parameter) in raised:
                    judged[i] = out.detector_results(j)
        return moved, judged

    def _ref_sent(self, engine, device_id: str, stamps: list[int]) -> None:
        device = self.registry.devices[device_id]
        det = self._ref_gaps.get(device_id)
        if det is None:
            offline = self.settings.offline
            timeout_s = max(device.interval_s * offline.timeout_factor, offline.min_timeout_s)
            det = self._ref_gaps[device_id] = GapDetector(
                self.settings.gaps, device.interval_s * 1000, timeout_s * 1000
            )
        for ts in stamps:
            res = det.update(ts)
            if res is not None:
                self._decide(engine, device.site_id, device_id, None, ts, None, res)

    def _ref_rows(self, engine, device_id: str, ts: int, row: dict[str, float]) -> None:
        if ts <= self._ref_last_row_ts.get(device_id, -1):
            return
        self._ref_last_row_ts[device_id] = ts
        site_id = self.registry.devices[device_id].site_id
        params = self.event_settings.parameters
        if any(p in row for p in params):
            ev = self._ref_events.get(device_id)
            if ev is None:
                ev = self._ref_events[device_id] = EventDetector(params, self.event_settings)
            res = ev.update(ts, [row.get(p, math.nan) for p in params])
            self._decide(engine, site_id, device_id, None, ts, None, res)
        cs = self.settings.inconsistency
        if cs.orp in row and cs.chlorine in row:
            det = self._ref_consistency.get(device_id)
            if det is None:
                det = self._ref_consistency[device_id] = InconsistencyDetector(cs)
            res = det.update(ts, row[cs.orp], row[cs.chlorine])
            self._decide(engine, site_id, device_id, None, ts, None, res)
        replay = self._ref_replay.get(device_id)
        if replay is None:
            replay = self._ref_replay[device_id] = ReplayDetector(
                self.settings.replay, self.registry.devices[device_id].interval_s
            )
        self._decide(engine, site_id, device_id, None, ts, None, replay.update(ts, row))


# -- comparing results ---------------------------------------------------------------------------


def assert_same_result(ref: DetectorResult, got: DetectorResult, where: object) -> None:
    assert (got.kind, got.active) == (ref.kind, ref.active), where
    if math.isnan(ref.score):
        assert math.isnan(got.score), where
    else:
        assert got.score == pytest.approx(ref.score, rel=1e-12, abs=1e-12), where
    assert list(got.evidence) == list(ref.evidence), where  # same keys, same order
    for key, want in ref.evidence.items():
        have = got.evidence[key]
        assert type(have) is type(want), (where, key)
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(have), (where, key)
        elif isinstance(want, float):
            assert have == pytest.approx(want, rel=1e-12, abs=1e-12), (where, key)
        else:
            assert have == want, (where, key)


def interleaved(
    rng: np.random.Generator, lengths: np.ndarray, batch: int
) -> list[list[tuple[int, int]]]:
    """Batches of (device, k): row k of device, each device's rows in order, devices shuffled,
    a batch holding several rows of one device or none of some."""
    order = rng.permutation(np.repeat(np.arange(len(lengths)), lengths))
    position = np.zeros(len(lengths), dtype=int)
    cuts = np.unique(rng.integers(0, len(order) + 1, size=max(len(order) // batch, 1)))
    out = []
    for part in np.split(order, cuts):
        rows = []
        for d in part.tolist():
            rows.append((d, int(position[d])))
            position[d] += 1
        out.append(rows)
    return out


def event_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pool readings of the event parameters with events, missing values and empty rows."""
    mean = np.array([POOL[p][0] for p in EVENT_PARAMETERS])
    sd = np.array([POOL[p][1] for p in EVENT_PARAMETERS])
    x = np.round(mean + sd * rng.standard_normal((n, len(mean))), 2)
    for _ in range(rng.integers(1, 5)):
        a = int(rng.integers(0, max(n, 1)))
        cols = rng.choice(len(mean), size=int(rng.integers(1, 3)), replace=False)
        x[a : a + int(rng.integers(1, 60)), cols] += sd[cols] * rng.choice([-1, 1]) * 20
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(n) < 0.03] = np.nan
    return x


# -- the banks -----------------------------------------------------------------------------------

POOL_EVENTS = SETTINGS.event_profile("pool")
EVENT_VARIANTS = {
    "pool, small windows": dataclasses.replace(
        POOL_EVENTS, window=60, lag=5, min_history=20, refresh_rows=3
    ),
    "no lag, no cache": dataclasses.replace(
        POOL_EVENTS, window=60, lag=0, min_history=20, refresh_rows=1
    ),
    "short baseline, frozen, top-3": dataclasses.replace(
        POOL_EVENTS,
        window=50,
        lag=7,
        min_history=10,
        short_window=20,
        max_frozen=15,
        top_k=3,
        refresh_rows=2,
    ),
    "step channel, clear on return": dataclasses.replace(
        POOL_EVENTS,
        window=60,
        min_history=20,
        threshold=4.0,
        step_window=12,
        step_scale_window=40,
        step_threshold=3.0,
        ramp_rows=3,
        ramp_threshold=2.0,
        clear_ratio=0.5,
        max_frozen=10,
        refresh_rows=3,
    ),
    "held suspects, confirmed raise, flow context": dataclasses.replace(
        POOL_EVENTS,
        window=60,
        min_history=20,
        threshold=4.0,
        step_window=12,
        step_scale_window=40,
        step_threshold=3.0,
        ramp_rows=3,
        ramp_threshold=2.0,
        clear_ratio=0.5,
        max_frozen=10,
        hold_z=3.0,
        confirmed_raise=True,
        context=("flow", "flow_2"),
        context_explains=("ph", "orp"),
        context_window=10,
        context_change=0.05,
        context_rows=30,
        context_discount=0.3,
        refresh_rows=3,
    ),
}


def flow_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two flows with noise, a few lasting changes and missing values."""
    level = 1000.0 * (1 + np.cumsum(rng.random((n, 2)) < 0.02, axis=0) % 3 * 0.2)
    x = np.round(level * (1 + 0.01 * rng.standard_normal((n, 2))))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def check_event_bank(settings: EventSettings, seed: int, lengths: list[int], batch: int) -> int:
    """Devices of the given lengths through one EventBank and through an EventDetector each,
    rows interleaved in batches; the number of active rows."""
    rng = np.random.default_rng(seed)
    data = [event_rows(rng, n) for n in lengths]
    flows = [flow_rows(rng, n) for n in lengths] if settings.context else None
    bank = EventBank(EVENT_PARAMETERS, settings, capacity=2)
    refs = [EventDetector(EVENT_PARAMETERS, settings) for _ in lengths]
    actives = 0
    for rows in interleaved(rng, np.array(lengths), batch):
        if not rows:
            continue
        ts = [T0 + k * MINUTE for _, k in rows]
        values = np.array([data[d][k] for d, k in rows]).reshape(len(rows), -1)
        context = None
        if flows is not None:
            context = np.array([flows[d][k] for d, k in rows]).reshape(len(rows), -1)
        out = bank.update(np.array([d for d, _ in rows]), np.array(ts), values, context)
        for i, (d, k) in enumerate(rows):
            ref = refs[d].update(ts[i], values[i], None if context is None else context[i])
            assert_same_result(ref, out.result(i), (d, k))
            actives += ref.active
    if settings.window < min(lengths):
        assert bank.long.cached[: len(lengths)].all()  # past warm-up: cached baselines
    return actives


@pytest.mark.parametrize("variant", sorted(EVENT_VARIANTS))
@pytest.mark.parametrize("seed", range(3))
def test_event_bank_equals_event_detectors(variant: str, seed: int) -> None:
    lengths = np.random.default_rng(seed).integers(0, 400, size=7).tolist()
    # The persistence, hysteresis (and freezing) paths ran.
    assert check_event_bank(EVENT_VARIANTS[variant], seed, lengths, 7)


def test_event_baselines_judged_in_chunks_give_the_same_results(monkeypatch) -> None:
    monkeypatch.setattr(bank_module, "CHUNK_ROWS", 9)
    lengths = np.random.default_rng(5).integers(0, 400, size=20).tolist()
    check_event_bank(EVENT_VARIANTS[sorted(EVENT_VARIANTS)[0]], 5, lengths, 20)


def test_event_bank_committed_profile_past_the_full_window() -> None:
    """The 720-row pool baseline: warm-up, the first full window and cached refreshes."""
    check_event_bank(POOL_EVENTS, 7, [1000, 950, 900], 40)


@pytest.mark.parametrize("seed", range(3))
def test_inconsistency_bank_equals_inconsistency_detectors(seed: int) -> None:
    settings = SETTINGS.inconsistency
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 400, size=6)
    data = []
    for n in lengths.tolist():
        orp = np.round(700 + 5 * rng.standard_normal(n))
        cl = np.round(0.6 + 0.03 * rng.standard_normal(n), 2)
        a = int(rng.integers(0, max(n, 1)))
        orp[a:] -= np.minimum(np.arange(n - a), 60) * rng.uniform(0.5, 2)  # fouling ORP probe
        if rng.random() < 0.5:
            cl[a:] -= np.minimum(np.arange(n - a), 60) * 0.005  # the chlorine fell too
        orp[rng.random(n) < 0.05] = np.nan
        cl[rng.random(n) < 0.05] = np.nan
        data.append((orp, cl))
    bank = InconsistencyBank(settings, capacity=1)
    refs = [InconsistencyDetector(settings) for _ in lengths]
    actives = 0
    for batch in interleaved(rng, lengths, 7):
        if not batch:
            continue
        ts = [T0 + k * MINUTE for _, k in batch]
        orp = [float(data[d][0][k]) for d, k in batch]
        cl = [float(data[d][1][k]) for d, k in batch]
        out = bank.update(np.array([d for d, _ in batch]), np.array(ts), orp, cl)
        for i, (d, k) in enumerate(batch):
            ref = refs[d].update(ts[i], orp[i], cl[i])
            assert_same_result(ref, out.result(i), (d, k))
            actives += ref.active
    assert actives


def replay_rows(rng: np.random.Generator, n: int, lag_rows: int) -> list[dict[str, float]]:
    """Rows of varying parameters; stretches replayed `lag_rows` back, and a frozen stretch (all
    rows equal) repeated `lag_rows` later, whose matches tie within the tolerance."""
    rows = []
    for _ in range(n):
        row = {p: round(float(m + s * rng.standard_normal()), 2) for p, (m, s, _) in POOL.items()}
        for p in POOL:
            if rng.random() < 0.05:
                del row[p]
        rows.append(row)
    for _ in range(3):
        a = int(rng.integers(lag_rows, max(n, lag_rows + 1)))
        for k in range(a, min(n, a + int(rng.integers(5, 30)))):
            rows[k] = dict(rows[k - lag_rows])
    a = int(rng.integers(0, max(n - 60, 1)))
    for k in range(a, min(n, a + 60)):
        rows[k] = dict(rows[a])
    for k in range(a + lag_rows, min(n, a + lag_rows + 60)):
        rows[k] = dict(rows[a])
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_replay_bank_equals_replay_detectors(seed: int) -> None:
    settings = dataclasses.replace(SETTINGS.replay, lag_h=1.0)
    rng = np.random.default_rng(seed)
    intervals = [60.0, 60.0, 120.0, 60.0, 30.0]  # ring sizes differ
    lengths = rng.integers(100, 400, size=len(intervals))
    columns = sorted(POOL)
    data = []
    for interval, n in zip(intervals, lengths.tolist(), strict=True):
        data.append(replay_rows(rng, n, int(3600 / interval)))
    # Jittered times around the device's interval, ascending.
    times = [
        T0 + np.cumsum(rng.integers(int(0.8 * iv * 1000), int(1.2 * iv * 1000), size=n))
        for iv, n in zip(intervals, lengths.tolist(), strict=True)
    ]
    bank = ReplayBank(settings, capacity=1)
    bank.register(np.arange(len(intervals)), np.array(intervals))
    refs = [ReplayDetector(settings, iv) for iv in intervals]
    actives = 0
    for batch in interleaved(rng, lengths, 9):
        if not batch:
            continue
        rows = [data[d][k] for d, k in batch]
        values = np.array([[r.get(p, np.nan) for p in columns] for r in rows])
        present = np.array([[p in r for p in columns] for r in rows])
        ts = [int(times[d][k]) for d, k in batch]
        out = bank.update(
            np.array([d for d, _ in batch]), np.array(ts), row_hashes(values, present)
        )
        for i, (d, k) in enumerate(batch):
            ref = refs[d].update(ts[i], rows[i])
            assert_same_result(ref, out.result(i), (d, k))
            actives += ref.active
    assert actives


def test_replay_bank_reports_the_lowest_ring_slot_of_equal_rows() -> None:
    """A frozen analyzer: each row equals the three rows within the tolerance of its time an hour
    back. The lowest slot of the ring is reported, which is not the oldest row when the three
    straddle the end of the ring."""
    settings = dataclasses.replace(SETTINGS.replay, lag_h=1.0)
    ref = ReplayDetector(settings, 60.0)
    bank = ReplayBank(settings)
    bank.register(np.array([0]), np.array([60.0]))
    row = {"ph": 7.4, "orp": 700.0}
    h = row_hashes(np.array([[7.4, 700.0]]), np.ones((1, 2), dtype=bool))
    not_oldest = 0
    for k in range(400):
        ts = T0 + k * MINUTE
        want = ref.update(ts, row)
        assert_same_result(want, bank.update(np.array([0]), np.array([ts]), h).result(0), k)
        not_oldest += want.evidence.get("same_as_ms", 0) > ts - MS_PER_H - MINUTE
    assert not_oldest


def test_row_hashes_equal_for_equal_rows_only() -> None:
    values = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0], [-0.0, np.nan, 3.0], [3.0, 0.0, 1.0]])
    present = ~np.isnan(values)
    again = values.copy()
    again[2, 0] = 0.0  # -0.0 == 0.0
    h, h2 = row_hashes(values, present), row_hashes(again, present)
    assert (h == h2).all()
    assert len(set(h.tolist())) == len(h)
    missing = present.copy()
    missing[1, 1] = False  # a missing value is not any value
    assert row_hashes(values, missing)[1] != h[1]


@pytest.mark.parametrize("seed", range(3))
def test_gap_bank_equals_gap_detectors(seed: int) -> None:
    settings = SETTINGS.gaps
    rng = np.random.default_rng(seed)
    intervals = [60, 60, 300, 30]
    n = 400
    stamps = []
    for iv in intervals:
        steps = rng.choice([1, 1, 1, 1, 2, 3, 5, 0], size=n) * iv * 1000  # gaps, repeats
        t = T0 + np.cumsum(steps)
        late = rng.random(n) < 0.05
        t[late] -= rng.integers(1, 10 * iv * 1000, size=int(late.sum()))  # late flushes
        stamps.append(t)
    bank = GapBank(settings, capacity=1)
    refs = []
    for d, iv in enumerate(intervals):
        timeout_s = max(iv * SETTINGS.offline.timeout_factor, SETTINGS.offline.min_timeout_s)
        bank.register(np.array([d]), np.array([iv * 1000]), np.array([timeout_s * 1000]))
        refs.append(GapDetector(settings, iv * 1000, timeout_s * 1000))
    decided = 0
    for start in range(0, n, 13):
        rows, ts, expected = [], [], []
        for d in rng.permutation(len(intervals)).tolist():
            for t in sorted(set(stamps[d][start : start + 13].tolist())):
                rows.append(d)
                ts.append(t)
                expected.append(refs[d].update(t))
        got = {g.index: g.result for g in bank.update(np.array(rows), np.array(ts))}
        for i, ref in enumerate(expected):
            if ref is None:
                assert i not in got
            else:
                assert_same_result(ref, got[i], i)
                decided += ref.active
    assert decided


# -- the whole rule ------------------------------------------------------------------------------


class RecordingEngine:
    """What the rule asks of the alert engine, in order."""

    def __init__(self, open_alerts: Sequence = ()) -> None:
        self.calls: list[tuple] = []
        self._open = list(open_alerts)

    def open_alerts(self, prefixes: tuple[str, ...]) -> list:
        return [a for a in self._open if a.rule_id.startswith(prefixes)]

    def raise_alert(self, alert, value=None) -> None:
        self.calls.append(
            (
                "raise",
                alert.site_id,
                alert.device_id,
                alert.rule_id,
                alert.parameter,
                alert.message,
                alert.first_ms,
                alert.first_value,
                value,
                json.dumps(alert.evidence),  # NaN equal to NaN, key order kept
            )
        )

    def clear_alert(self, site_id, device_id, rule_id, why) -> None:
        self.calls.append(("clear", site_id, device_id, rule_id, why))


def small_settings() -> DetectorSettings:
    """Short windows and a 1-hour replay lag, so events, inconsistency, replay and gaps all
    happen (and end) within a few hundred rows."""
    return dataclasses.replace(
        SETTINGS,
        event_profiles={"pool": dataclasses.replace(POOL_EVENTS, window=60, lag=5, min_history=20)},
        replay=dataclasses.replace(SETTINGS.replay, lag_h=1.0),
        inconsistency=dataclasses.replace(SETTINGS.inconsistency, window=20),
    )


def pool_messages(rng: np.random.Generator, device: int, n: int = 480) -> list[list[Reading]]:
    """n minutes of one device's messages (each a list of readings of one time) with, in turn: a
    short outage, a water-quality event, flagged data, a replay of the rows an hour back, a frozen
    analyzer and an ORP probe fouling while chlorine holds; and missing readings, skipped minutes
    and jittered times throughout."""
    site, device_id = f"site-{device}", f"dev-{device}"
    x = {p: np.round((m + s * rng.standard_normal(n)) / r) * r for p, (m, s, r) in POOL.items()}
    keep = rng.random((n, len(POOL))) >= 0.04
    skipped = rng.random(n) < 0.02
    a = int(rng.integers(20, 60))
    skipped[a : a + 8] = True
    a = int(rng.integers(80, 150))
    for p in ("free_chlorine", "orp"):  # a chlorine demand surge
        x[p][a : a + 30] -= 20 * POOL[p][1]
    flagged = np.zeros(n, dtype=bool)
    a = int(rng.integers(160, 180))
    flagged[a : a + int(rng.integers(1, 20))] = True
    a, length = int(rng.integers(250, 280)), int(rng.integers(25, 40))
    for p in POOL:
        x[p][a : a + length] = x[p][a - 60 : a - 60 + length]
    keep[a - 60 : a + length] = True
    skipped[a - 60 : a + length] = False
    a = int(rng.integers(330, 360))
    for p in POOL:
        x[p][a : a + 40] = x[p][a]
    a = int(rng.integers(400, 430))
    x["orp"][a:] -= np.minimum(np.arange(n - a), 20) * 3.0
    messages = []
    for k in np.flatnonzero(~skipped).tolist():
        ts = T0 + k * MINUTE + int(rng.integers(0, 500))
        readings = []
        for j, p in enumerate(POOL):
            if keep[k, j]:
                flag = "M" if flagged[k] and p in ("free_chlorine", "ph") else VALID_FLAG
                readings.append(Reading(device_id, site, p, ts, float(x[p][k]), flag))
        messages.append(readings)
    return messages


def delivered(rng: np.random.Generator, per_device: list[list[list[Reading]]]) -> list[list]:
    """The messages as ingest would commit them: batches of whole messages, devices mixed and
    shuffled; some messages redelivered (at once or much later), some late, some split across
    batches."""
    stream: list[list[Reading]] = []
    cursors = [0] * len(per_device)
    while any(c < len(m) for c, m in zip(cursors, per_device, strict=True)):
        for d in rng.permutation(len(per_device)).tolist():
            if cursors[d] < len(per_device[d]):
                stream.append(per_device[d][cursors[d]])
                cursors[d] += 1
    batches: list[list[Reading]] = []
    held: list[Reading] = []
    cuts = np.cumsum(rng.integers(1, 12, size=len(stream)))
    for i, j in itertools.pairwise([0, *cuts[cuts < len(stream)].tolist(), len(stream)]):
        batch, held = held, []
        for message in stream[i:j]:
            match rng.integers(0, 40):
                case 0:
                    held.extend(message)  # late: comes with the next batch
                case 1 if len(message) > 1:
                    cut = int(rng.integers(1, len(message)))
                    batch.extend(message[:cut])
                    held.extend(message[cut:])  # the rest of the row comes later
                case 2:
                    batch.extend(message + message)  # redelivered at once
                case 3:
                    batch.extend(message + stream[int(rng.integers(0, i + 1))])  # and an old one
                case _:
                    batch.extend(message)
        batches.append([batch[j] for j in rng.permutation(len(batch))])
    batches.append(held)
    return batches


@pytest.mark.parametrize("seed", range(3))
def test_rule_raises_and_clears_as_the_per_device_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    settings = small_settings()
    intervals = [60, 60, 60, 120, 60]
    registry = SimpleNamespace(
        devices={
            f"dev-{d}": SimpleNamespace(site_id=f"site-{d}", interval_s=iv)
            for d, iv in enumerate(intervals)
        },
        sites={},
    )
    batches = delivered(rng, [pool_messages(rng, d) for d in range(len(intervals))])
    ref_engine, new_engine = RecordingEngine(), RecordingEngine()
    ref, new = ReferenceRule(registry, settings), DetectorRule(registry, None, settings)
    for batch in batches:
        ref.observe(batch, ref_engine)
        new.observe(batch, new_engine)
    assert new_engine.calls == ref_engine.calls
    assert new._raised == ref._raised
    raised = {call[3].split(":")[1] for call in ref_engine.calls if call[0] == "raise"}
    cleared = {call[3].split(":")[1] for call in ref_engine.calls if call[0] == "clear"}
    want = {"water_quality_event", "inconsistent", "tampering", "gaps", "flagged"}
    assert want <= raised and want <= cleared, (raised, cleared)


def test_rule_clears_alerts_it_adopted_after_a_restart() -> None:
    rng = np.random.default_rng(11)
    settings = small_settings()
    registry = SimpleNamespace(
        devices={"dev-0": SimpleNamespace(site_id="site-0", interval_s=60)}, sites={}
    )
    open_alerts = [
        SimpleNamespace(device_id="dev-0", rule_id=f"integrity:{kind}")
        for kind in ("tampering", "gaps", "inconsistent")
    ] + [
        SimpleNamespace(device_id="dev-0", rule_id="quality:water_quality_event"),
        SimpleNamespace(device_id="dev-0", rule_id="integrity:flagged:ph"),
        SimpleNamespace(device_id="dev-9", rule_id="integrity:tampering"),  # not seen since
    ]
    batches = delivered(rng, [pool_messages(rng, 0)])
    ref_engine, new_engine = RecordingEngine(open_alerts), RecordingEngine(open_alerts)
    ref, new = ReferenceRule(registry, settings), DetectorRule(registry, None, settings)
    for batch in batches:
        ref.observe(batch, ref_engine)
        new.observe(batch, new_engine)
    assert new_engine.calls == ref_engine.calls
    assert sum(call[0] == "clear" for call in ref_engine.calls) >= 4
