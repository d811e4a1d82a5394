"""The water-quality event detectors of many devices, evaluated together.

`EventDetector` keeps one device's state and judges one row at a time; on the ingest path a batch
holds a row for each of thousands of devices, and the dozen small numpy calls per row dominate.
`EventBank` holds the same state for many devices in stacked arrays (devices x parameters x ring)
and judges a batch in rounds: round k holds row k of every device, judged with array operations
across the devices of the round.

Contract: for any interleaving of devices and rows, every device gets, row by row, the score,
active flag, z and baseline medians `EventDetector(parameters, settings).update` would give it.

The step channel keeps the same two rings per parameter as `event._StepChannel` (reference,
spread of the step) and the newest reading before the row; the ramp channel the run, ring and
last reading of `event._RampChannel`; the context channel the flows' reference rings, newest
values and rows since the last flow change of `event._ContextChannel`.

The window statistics come from `robust_rows` (the order statistics `median_last` picks, hence
bit-identical), and the baseline cache follows `event._Rings.stats`: once all of a device's rings
are full its baselines are recomputed after `refresh` pushes per parameter; while any is filling,
every row recomputes each parameter that has `min_history` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alerts.detectors.bank import robust_in_chunks, rounds
from alerts.detectors.base import DetectorResult
from alerts.detectors.event import (
    NEVER,
    event_result,
    flow_changed,
    held_due,
    returned,
    scale_floors,
    step_diff,
    z_scores,
)
from alerts.detectors.settings import EventSettings
from alerts.detectors.stacked import Stacked


class _RingBank(Stacked):
    """Per device, one unordered ring of `size` values per parameter, with the baseline cache."""

    STATE = (
        ("data", 0.0),
        ("head", 0),
        ("count", 0),
        ("pushes", 0),
        ("cached", False),
        ("med", 0.0),
        ("scale", 0.0),
    )

    def __init__(self, capacity: int, parameters: int, size: int, refresh: int = 1) -> None:
        super().__init__(capacity)
        self.size = size
        self.refresh = refresh
        self.parameters = parameters
        self.data = np.zeros((capacity, parameters, size))
        self.head = np.zeros((capacity, parameters), dtype=np.int64)
        self.count = np.zeros((capacity, parameters), dtype=np.int64)
        self.pushes = np.zeros(capacity, dtype=np.int64)  # since the baseline was last computed
        self.cached = np.zeros(capacity, dtype=bool)
        self.med = np.zeros((capacity, parameters))
        self.scale = np.zeros((capacity, parameters))

    def push(self, devices: np.ndarray, mask: np.ndarray, values: np.ndarray) -> None:
        """values[i, j] into ring j of devices[i] where mask[i, j]; devices distinct."""
        i, j = np.nonzero(mask)
        d = devices[i]
        h = self.head[d, j]
        self.data[d, j, h] = values[i, j]
        self.head[d, j] = (h + 1) % self.size
        self.count[d, j] = np.minimum(self.count[d, j] + 1, self.size)
        self.pushes[devices] += mask.sum(axis=1)

    def stats(
        self, devices: np.ndarray, floors: np.ndarray, min_history: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Median and floored MAD scale per device and parameter; NaN below `min_history`."""
        count = self.count[devices]
        full = (count == self.size).all(axis=1)
        due = full & (
            ~self.cached[devices] | (self.pushes[devices] >= self.refresh * count.shape[1])
        )
        i, j = np.nonzero(due[:, None] | (~full[:, None] & (count >= min_history)))
        med = np.full(count.shape, np.nan)
        scale = np.full(count.shape, np.nan)
        if len(i):
            d, lengths = devices[i], count[i, j]
            # A ring that has not wrapped holds its values at the front; robust_rows wants them
            # at the back.
            m, s = robust_in_chunks(
                lambda part: self.data[d[part], j[part], : int(lengths[part].max())][:, ::-1],
                lengths,
                0.0,
            )
            s = np.maximum(s, floors[j])
            refreshed = due[i]
            self.med[d[refreshed], j[refreshed]] = m[refreshed]
            self.scale[d[refreshed], j[refreshed]] = s[refreshed]
            med[i, j], scale[i, j] = m, s
        self.cached[devices[due]] = True
        self.pushes[devices[due]] = 0
        med[full], scale[full] = self.med[devices[full]], self.scale[devices[full]]
        return med, scale


@dataclass(slots=True)
class EventBatch:
    """The decisions on a batch of rows, one entry per row."""

    parameters: tuple[str, ...]
    settings: EventSettings
    ts_ms: np.ndarray
    score: np.ndarray  # NaN where the row had nothing to judge
    active: np.ndarray
    active_since_ms: np.ndarray
    z: np.ndarray  # (rows, parameters)
    med: np.ndarray

    def result(self, i: int) -> DetectorResult:
        """Row i as `EventDetector.update` reports it."""
        return event_result(
            self.parameters,
            self.settings,
            int(self.ts_ms[i]),
            float(self.score[i]),
            bool(self.active[i]),
            int(self.active_since_ms[i]),
            self.z[i].tolist(),
            self.med[i].tolist(),
        )


class EventBank(Stacked):
    """`EventDetector` state of many devices (rows 0, 1, ...)."""

    STATE = (
        ("pending", 0.0),
        ("entered", 0),
        ("raw", False),
        ("raw_head", 0),
        ("raw_sum", 0),
        ("active", False),
        ("active_since_ms", -1),
        ("held", 0),
        ("peak", 0.0),
        ("last_score", np.nan),
        ("rearm", 0.0),
        ("since_active", NEVER),
        ("prev", np.nan),
        ("ramp_run", 0),
        ("ramp_ring", 0.0),
        ("ramp_head", 0),
        ("ramp_count", 0),
        ("ctx_prev", np.nan),
        ("since_change", NEVER),
    )

    def __init__(
        self, parameters: Sequence[str], settings: EventSettings, capacity: int = 64
    ) -> None:
        super().__init__(capacity)
        self.floors = scale_floors(parameters, settings)
        self.parameters = tuple(parameters)
        self.settings = settings
        p = len(self.parameters)
        self.long = _RingBank(capacity, p, settings.window, settings.refresh_rows)
        self.short = (
            _RingBank(capacity, p, settings.short_window) if settings.short_window else None
        )
        # Readings wait `lag` rows (per parameter) before they enter the baselines: a FIFO ring
        # per parameter, slot (values entered) % lag.
        self.pending = np.zeros((capacity, p, max(settings.lag, 1)))
        self.entered = np.zeros((capacity, p), dtype=np.int64)
        self.raw = np.zeros((capacity, settings.persist_n), dtype=bool)
        self.raw_head = np.zeros(capacity, dtype=np.int64)
        self.raw_sum = np.zeros(capacity, dtype=np.int64)
        self.active = np.zeros(capacity, dtype=bool)
        self.active_since_ms = np.full(capacity, -1, dtype=np.int64)
        self.held = np.zeros((capacity, p), dtype=np.int64)
        self.peak = np.zeros(capacity)
        self.last_score = np.full(capacity, np.nan)
        self.explains = np.array([q in settings.context_explains for q in parameters], dtype=bool)
        self.rearm = np.zeros(capacity)
        self.since_active = np.full(capacity, NEVER, dtype=np.int64)
        step = settings.step_window
        # The step channel (see event._StepChannel); refresh 0: the reference exact every row.
        self.step_ref = _RingBank(capacity, p, step, refresh=0) if step else None
        self.step_spread = (
            _RingBank(capacity, p, settings.step_scale_window, settings.refresh_rows)
            if step
            else None
        )
        self.prev = np.full((capacity, p), np.nan)
        # The ramp channel; the last reading before the row is `prev` (kept for either channel).
        self.ramp_run = np.zeros((capacity, p), dtype=np.int64)
        self.ramp_ring = np.zeros((capacity, p, max(settings.ramp_rows, 1)))
        self.ramp_head = np.zeros((capacity, p), dtype=np.int64)
        self.ramp_count = np.zeros((capacity, p), dtype=np.int64)
        # The context channel (see event._ContextChannel).
        c = len(settings.context)
        self.ctx_ref = (
            _RingBank(capacity, c, settings.context_window, refresh=0)
            if settings.context_rows
            else None
        )
        self.ctx_prev = np.full((capacity, c), np.nan)
        self.since_change = np.full(capacity, NEVER, dtype=np.int64)

    def fit(self, rows: np.ndarray) -> None:
        super().fit(rows)
        for rings in (self.long, self.short, self.step_ref, self.step_spread, self.ctx_ref):
            if rings is not None:
                rings.fit(rows)

    def update(
        self,
        rows: np.ndarray,
        ts_ms: np.ndarray,
        values: np.ndarray,
        context: np.ndarray | None = None,
    ) -> EventBatch:
        """Judge a batch: row i of device rows[i] at ts_ms[i], `values` with one column per
        parameter, `context` one per context column (NaN: missing; None: none for any row). A
        device may repeat; its rows are judged in input order."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64).reshape(len(rows), len(self.parameters))
        c = len(self.settings.context)
        ctx = np.full((len(rows), c), np.nan)
        if context is not None:
            ctx = np.asarray(context, dtype=np.float64).reshape(len(rows), c)
        has_ctx = np.full(len(rows), context is not None)
        self.fit(rows)
        out = EventBatch(
            self.parameters,
            self.settings,
            ts,
            np.full(len(rows), np.nan),
            np.zeros(len(rows), dtype=bool),
            np.full(len(rows), -1, dtype=np.int64),
            np.full(v.shape, np.nan),
            np.full(v.shape, np.nan),
        )
        for idx in rounds(rows):
            self._round(idx, rows[idx], ts[idx], v[idx], (ctx[idx], has_ctx[idx]), out)
        return out

    def _round(
        self,
        idx: np.ndarray,
        devices: np.ndarray,
        ts: np.ndarray,
        v: np.ndarray,
        ctx: tuple[np.ndarray, np.ndarray],
        out: EventBatch,
    ) -> None:
        """Rows `idx` of the batch, at most one per device: score, decide, feed the baselines. A
        row with nothing in it leaves the state untouched."""
        present = ~np.isnan(v)
        judged = present.any(axis=1)
        if judged.any():
            j = judged
            context = (ctx[0][j], ctx[1][j])
            self._judge(idx[j], devices[j], ts[j], v[j], present[j], context, out)
        out.active[idx] = self.active[devices]
        out.active_since_ms[idx] = self.active_since_ms[devices]

    def _judge(
        self,
        idx: np.ndarray,
        devices: np.ndarray,
        ts: np.ndarray,
        v: np.ndarray,
        present: np.ndarray,
        context: tuple[np.ndarray, np.ndarray],
        out: EventBatch,
    ) -> None:
        s = self.settings
        med, scale = self.long.stats(devices, self.floors, s.min_history)
        short = None
        if self.short is not None:
            short = self.short.stats(devices, self.floors, min(s.min_history, s.short_window))
        level_z = z_scores(v, present, med, scale, short)
        weight = np.ones(v.shape)
        if self.ctx_ref is not None:
            explained = self._context(devices, *context)
            weight[np.ix_(explained, self.explains)] = s.context_discount
        z = level_z * weight
        score = _top_k_score(z, s.top_k)
        confirmed = np.full(len(devices), np.nan)
        if self.step_ref is not None and self.step_spread is not None:
            ref = self.step_ref.stats(devices, self.floors, self.step_ref.size)[0]
            recent = self.since_active[devices] < s.step_window
            episode = (self.active[devices] | recent)[:, None]
            back = returned(z, episode, s)
            d = np.where(present, step_diff(v, self.prev[devices], ref, back), np.nan)
            scale = self.step_spread.stats(
                devices, self.floors, min(s.min_history, s.step_scale_window)
            )[1]
            confirmed = _top_k_score(d / scale * weight, s.top_k) * s.threshold / s.step_threshold
        if s.ramp_rows:
            zr = self._ramp_z(devices, v, present) * weight
            ramp = np.nanmax(np.abs(zr), axis=1) * s.threshold / s.ramp_threshold
            confirmed = np.fmax(confirmed, ramp)
        score = np.fmax(score, confirmed)
        self._persist(devices, ts, score, confirmed)
        since = self.since_active[devices]
        self.since_active[devices] = np.where(self.active[devices], 0, since + 1)
        due = held_due(level_z, self.active[devices], s)
        held = np.where(present, np.where(due, self.held[devices] + 1, 0), self.held[devices])
        self.held[devices] = held
        # Held readings (an episode's, or suspect ones) do not become "normal".
        self._push(devices, v, present & ~(due & (held <= s.max_frozen)))
        if self.step_ref is not None:
            self._step_push(devices, v, present, d)
        if s.ramp_rows:
            self._ramp_push(devices, v, present)
        self.prev[devices] = np.where(present, v, self.prev[devices])
        out.score[idx], out.z[idx], out.med[idx] = score, z, med

    def _step_push(
        self, devices: np.ndarray, v: np.ndarray, present: np.ndarray, d: np.ndarray
    ) -> None:
        prev = self.prev[devices]
        assert self.step_ref is not None and self.step_spread is not None  # step channel on
        self.step_ref.push(devices, present & ~np.isnan(prev), prev)
        self.step_spread.push(devices, present & ~np.isnan(d), d)

    def _ramp_z(self, devices: np.ndarray, v: np.ndarray, present: np.ndarray) -> np.ndarray:
        """As `event._RampChannel.z`: advance the runs, the ramp z of each present parameter."""
        k = self.settings.ramp_rows
        with np.errstate(invalid="ignore"):
            step = np.sign(v - self.prev[devices])
        step = np.where(present & ~np.isnan(step), step, 0).astype(np.int64)
        run = self.ramp_run[devices]
        run = np.where(present, np.where(step * run > 0, run + step, step), run)
        self.ramp_run[devices] = run
        j = np.arange(v.shape[1])[None, :]
        oldest = self.ramp_ring[devices[:, None], j, self.ramp_head[devices]]
        ramp = (np.abs(run) >= k) & (self.ramp_count[devices] >= k)
        z = np.where(ramp, (v - oldest) / self.floors, 0.0)
        return np.where(present, z, np.nan)

    def _ramp_push(self, devices: np.ndarray, v: np.ndarray, present: np.ndarray) -> None:
        i, j = np.nonzero(present)
        d = devices[i]
        h = self.ramp_head[d, j]
        self.ramp_ring[d, j, h] = v[i, j]
        self.ramp_head[d, j] = (h + 1) % self.settings.ramp_rows
        self.ramp_count[d, j] = np.minimum(self.ramp_count[d, j] + 1, self.settings.ramp_rows)

    def _context(self, devices: np.ndarray, ctx: np.ndarray, given: np.ndarray) -> np.ndarray:
        """As `event._ContextChannel.explains`: advance by the rows' context values (where
        `given`); per row, whether a flow change explains it."""
        assert self.ctx_ref is not None  # called only with a context channel
        ref = self.ctx_ref.stats(devices, np.zeros(ctx.shape[1]), self.ctx_ref.size)[0]
        prev = self.ctx_prev[devices]
        changed = flow_changed(ctx, prev, ref, self.settings)
        since = self.since_change[devices]
        self.since_change[devices] = np.where(given & changed, 0, since + 1)
        present = given[:, None] & ~np.isnan(ctx)
        self.ctx_ref.push(devices, present & ~np.isnan(prev), prev)
        self.ctx_prev[devices] = np.where(present, ctx, prev)
        return self.since_change[devices] < self.settings.context_rows

    def _persist(
        self, devices: np.ndarray, ts: np.ndarray, score: np.ndarray, confirmed: np.ndarray
    ) -> None:
        """Persistence (m of the last n rows raw-positive, or at once on a confirmed channel),
        hysteresis and the clear on return."""
        s = self.settings
        below = ~(score > s.off_ratio * s.threshold)
        rearm = self.rearm[devices]
        rearm = np.where(rearm > 0, np.where(below, 0.0, np.minimum(rearm, score)), 0.0)
        raw = score - rearm > s.threshold
        at_once = s.confirmed_raise & (confirmed - rearm > s.threshold)
        h = self.raw_head[devices]
        self.raw_sum[devices] += raw.astype(np.int64) - self.raw[devices, h]
        self.raw[devices, h] = raw
        self.raw_head[devices] = (h + 1) % s.persist_n
        was = self.active[devices]
        seen = np.fmin(score, self.last_score[devices])  # confirmed by the row before
        self.last_score[devices] = score
        peak = np.where(was, np.fmax(self.peak[devices], seen), self.peak[devices])
        off = was & (below | (score < s.clear_ratio * peak))
        on = ~was & ((self.raw_sum[devices] >= s.persist_m) | at_once)
        # A new episode must earn its own m-of-n, not reuse the last one's rows.
        self.raw[devices[off]] = False
        self.raw_sum[devices[off]] = 0
        self.rearm[devices] = np.where(off, np.where(below, 0.0, score), rearm)
        self.active[devices] = (was & ~off) | on
        self.active_since_ms[devices[on]] = ts[on]
        self.peak[devices] = np.where(on, seen, peak)

    def _push(self, devices: np.ndarray, v: np.ndarray, present: np.ndarray) -> None:
        lag = self.settings.lag
        if lag:
            i, j = np.nonzero(present)
            d = devices[i]
            entered = self.entered[d, j]
            slot = entered % lag
            leaving = self.pending[d, j, slot]  # entered `lag` values ago, once the FIFO is full
            self.pending[d, j, slot] = v[i, j]
            self.entered[d, j] = entered + 1
            ready = entered >= lag
            present = np.zeros_like(present)
            present[i[ready], j[ready]] = True
            v = np.zeros_like(v)
            v[i[ready], j[ready]] = leaving[ready]
        self.long.push(devices, present, v)
        if self.short is not None:
            self.short.push(devices, present, v)


def _top_k_score(z: np.ndarray, top_k: int) -> np.ndarray:
    """Per row, sqrt(mean of the top-k z^2) over the parameters with a z; NaN when none has one.
    Sums in the order `EventDetector._score` does (largest first), so the results are identical."""
    has = ~np.isnan(z)
    k = np.minimum(has.sum(axis=1), top_k)
    z2 = -np.sort(np.where(has, -(z * z), np.inf), axis=1)  # descending; missing last (-inf)
    acc = np.zeros(len(z))
    for i in range(min(top_k, z.shape[1])):
        acc = acc + np.where(i < k, z2[:, i], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, np.sqrt(acc / k), math.nan)
