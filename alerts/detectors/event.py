"""Multivariate water-quality event score: several parameters leaving their baselines together.

Per parameter, z = (x - median) / max(1.4826 MAD, floor) against a lagged rolling baseline of its
own valid readings (the `window` readings ending `lag` readings back). With `short_window` > 0 a
second, short baseline of the newest `short_window` of those readings is judged too and the
smaller |z| of the two counts (same sign required, else 0): a step that the short baseline has
already absorbed is an old level change, not a fresh event. The row score is sqrt(mean of the
top-k z^2) over the parameters present. A row is raw-positive when the score exceeds the
threshold; the detector turns active when m of the last n scored rows are raw-positive, and stays
active while the score is above off_ratio x threshold (hysteresis).

Events must not poison the baseline: while the detector is active, and (with `hold_z`) while a
parameter's own |level z| exceeds `hold_z` (a suspect reading, alarmed or not), that parameter's
readings are held out of its level baseline, for at most `max_frozen` rows in a row; after that
they flow in again and a lasting level change becomes the new normal. Rows where every
parameter is missing leave the state untouched.

With `step_window` > 0 a step channel judges change rather than level: the newest row and the
row before it against the median of the `step_window` rows before them, the smaller of the two
differences when both lie on the same side (a step confirmed on the next row; a one-row spike
gives 0), scaled by the spread (floored MAD) of that statistic over the last `step_scale_window`
rows. A small step or a ramp of a few resolution steps a row stands out against the row-to-row
noise long before it moves the 12-hour level; its score counts as step score x threshold /
step_threshold, and the row score is the larger of the channels. In an episode, and for
`step_window` rows after it (while the reference still holds the episode's rows), a parameter
back at its level baseline has no step: the return to normal ends an event, it is not one.

With `ramp_rows` > 0 a ramp channel judges a parameter that has moved the same way on each of its
last `ramp_rows` readings by its total change over them, in scale floors (a slow ramp moves a
little every row, which noise on a quantised sensor does not do for long); it counts as the
largest such change x threshold / ramp_threshold.

With `clear_ratio` > 0 an episode also clears once its score has fallen below clear_ratio x the
episode's peak: the water has returned most of the way, or has settled at a new level that the
level channel will take hours to accept. After such a clear the next episode must rise
`threshold` above the lowest score seen since, so a recovery tail does not re-raise itself. The
peak counts a score only as far as the row before confirms it (the smaller of the two): one
broken-probe row (every analyser at 0) must not set a peak that clears the rest of the event.

With `confirmed_raise`, a step or ramp channel score above the threshold raises at once; the
level channel still needs m of the last n rows.

With `context_rows` > 0 the operating data (flows) explain moves, without being event signals:
per `context` column, the newest row and the row before it against the median of the
`context_window` rows before them (confirmed as in the step channel); a change by more than
`context_change` of that median is a flow change. For `context_rows` rows after one, the z of
the `context_explains` parameters (pH and ORP move when the flow does) counts
`context_discount` times in every channel: a move of theirs alone is explained, a move with
other parameters is still an event. Context values come with each row (`context=`); without
them no flow change is ever seen.

The detector sees values only through medians, median absolute deviations, differences
against floors of a few resolution steps and relative changes of the flows. It does not use,
and must not use, whether a value is a whole multiple of its sensor's resolution: in the GECCO
2018 file only event rows carry values that are not, so any such test would read the label from
the data.

`update` and `update_many` run the same scalar step (the baseline depends on the decisions, so a
batch cannot be vectorised across rows); the window statistics use only medians, which do not
depend on the order of the ring, so the per-parameter rings can share one 2-D array and one
`np.median` call per row. `EventBank` (event_bank.py) keeps this state for many devices at once,
sharing the settings check, the z-scores and the result built here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from alerts.detectors.base import MAD_TO_SD, DetectorResult, batch_result, median_last
from alerts.detectors.settings import EventSettings

KIND = "water_quality_event"
NEVER = 1 << 62  # rows since the last episode, for a detector that has had none


class _Rings:
    """One unordered ring of `size` values per parameter in a (parameters, size) array."""

    __slots__ = ("cached", "count", "data", "head", "pushes", "refresh", "size")

    def __init__(self, parameters: int, size: int, refresh: int = 1) -> None:
        self.size = size
        self.data = np.zeros((parameters, size))
        self.head = [0] * parameters
        self.count = [0] * parameters
        # Full rings: the baseline is recomputed every `refresh` pushes (1: every row).
        self.refresh = refresh
        self.pushes = 0
        self.cached: tuple[np.ndarray, np.ndarray] | None = None

    def push(self, j: int, value: float) -> None:
        self.pushes += 1
        h = self.head[j]
        self.data[j, h] = value
        self.head[j] = (h + 1) % self.size
        if self.count[j] < self.size:
            self.count[j] += 1

    def stats(self, floors: np.ndarray, min_history: int) -> tuple[np.ndarray, np.ndarray]:
        """Median and floored MAD scale per parameter; NaN where fewer than `min_history`."""
        if min(self.count) == self.size:  # steady state: one call for every parameter
            if self.cached is not None and self.pushes < self.refresh * len(self.count):
                return self.cached
            med = median_last(self.data)
            mad = median_last(np.abs(self.data - med[:, None])) * MAD_TO_SD
            self.cached, self.pushes = (med, np.maximum(mad, floors)), 0
            return self.cached
        med = np.full(len(self.count), np.nan)
        scale = np.full(len(self.count), np.nan)
        for j, c in enumerate(self.count):
            if c >= min_history:  # not yet wrapped: the stored values are data[j, :c]
                w = self.data[j : j + 1, :c]
                m = median_last(w)
                med[j] = m[0]
                scale[j] = max(float(median_last(np.abs(w - m[0]))[0]) * MAD_TO_SD, floors[j])
        return med, scale


def step_diff(row: np.ndarray, prev: np.ndarray, ref: np.ndarray, back: np.ndarray) -> np.ndarray:
    """The smaller of (row - ref) and (prev - ref) when both have the same sign, else 0; and 0
    where `back` (see `returned`). NaN where row or prev is missing. Elementwise: one row or a
    stack of rows."""
    a, b = row - ref, prev - ref
    with np.errstate(invalid="ignore"):
        confirmed = np.where(a * b > 0, np.sign(a) * np.minimum(abs(a), abs(b)), 0.0)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, np.where(back, 0.0, confirmed))


def returned(z: np.ndarray, episode: np.ndarray, settings: EventSettings) -> np.ndarray:
    """Parameters back at their level baseline (|level z| within the hysteresis band) in an
    episode, or while the step reference still holds its rows: their step is the return to
    normal that ends an event, not a new one."""
    with np.errstate(invalid="ignore"):
        return episode & (abs(z) <= settings.off_ratio * settings.threshold)


class _StepChannel:
    """Per parameter: the newest row and the one before it against the median of the rows
    before those, scaled by the spread of that difference over its own recent past."""

    __slots__ = ("floors", "min_history", "prev", "ref", "spread")

    def __init__(self, floors: np.ndarray, settings: EventSettings) -> None:
        p = len(floors)
        self.floors = floors
        self.ref = _Rings(p, settings.step_window, refresh=0)  # refresh 0: exact every row
        self.spread = _Rings(p, settings.step_scale_window, settings.refresh_rows)
        self.min_history = min(settings.min_history, settings.step_scale_window)
        self.prev = np.full(p, np.nan)  # the newest reading of each parameter before this row

    def diff(self, row: np.ndarray, back: np.ndarray) -> np.ndarray:
        """The confirmed step of each parameter (NaN where it cannot be judged yet)."""
        return step_diff(row, self.prev, self.ref.stats(self.floors, self.ref.size)[0], back)

    def z(self, d: np.ndarray) -> np.ndarray:
        return d / self.spread.stats(self.floors, self.min_history)[1]

    def push(self, row: np.ndarray, present: np.ndarray, d: np.ndarray) -> None:
        for j in np.flatnonzero(present).tolist():
            if not math.isnan(self.prev[j]):
                self.ref.push(j, float(self.prev[j]))
            if not math.isnan(d[j]):
                self.spread.push(j, float(d[j]))
            self.prev[j] = row[j]


class _RampChannel:
    """Per parameter: the signed number of consecutive readings that moved the same way, and the
    last `rows` readings (a ring, oldest at `head` once full)."""

    __slots__ = ("count", "floors", "head", "last", "ring", "rows", "run")

    def __init__(self, floors: np.ndarray, rows: int) -> None:
        p = len(floors)
        self.floors = floors
        self.rows = rows
        self.ring = np.zeros((p, rows))
        self.head = np.zeros(p, dtype=np.int64)
        self.count = np.zeros(p, dtype=np.int64)
        self.last = np.full(p, np.nan)
        self.run = np.zeros(p, dtype=np.int64)

    def z(self, row: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Advance the runs by this row; the ramp z of each present parameter (0: no ramp)."""
        with np.errstate(invalid="ignore"):
            step = np.sign(row - self.last)
        step = np.where(present & ~np.isnan(step), step, 0).astype(np.int64)
        same = step * self.run > 0
        self.run = np.where(present, np.where(same, self.run + step, step), self.run)
        oldest = self.ring[np.arange(len(row)), self.head]
        ramp = (np.abs(self.run) >= self.rows) & (self.count >= self.rows)
        z = np.where(ramp, (row - oldest) / self.floors, 0.0)
        return np.where(present, z, np.nan)

    def push(self, row: np.ndarray, present: np.ndarray) -> None:
        j = np.flatnonzero(present)
        self.ring[j, self.head[j]] = row[j]
        self.head[j] = (self.head[j] + 1) % self.rows
        self.count[j] = np.minimum(self.count[j] + 1, self.rows)
        self.last[j] = row[j]


def scale_floors(parameters: Sequence[str], settings: EventSettings) -> np.ndarray:
    """The scale floor of each parameter, after checking the settings can judge them."""
    unknown = set(parameters) - set(settings.scale_floor)
    if unknown:
        raise ValueError(f"no scale_floor in the event settings for {sorted(unknown)}")
    if settings.short_window and settings.short_window > settings.window:
        raise ValueError("short_window must not exceed window")
    if not 0.0 <= settings.clear_ratio < settings.off_ratio:
        raise ValueError("clear_ratio must be in [0, off_ratio)")
    return np.array([settings.scale_floor[q] for q in parameters], dtype=float)


def z_scores(
    row: np.ndarray,
    present: np.ndarray,
    med: np.ndarray,
    scale: np.ndarray,
    short: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """z of the present readings against the long baseline (median, scale) and, when given, the
    short one. Elementwise, so one row or a stack of rows."""
    with np.errstate(invalid="ignore"):
        z = np.where(present, (row - med) / scale, np.nan)
        if short is not None:
            zs = (row - short[0]) / short[1]
            # Same direction against both baselines, else 0; NaN short z: long z stands.
            both = np.where(z * zs > 0, np.sign(z) * np.minimum(abs(z), abs(zs)), 0.0)
            z = np.where(np.isnan(zs) | np.isnan(z), z, both)
    return z


def event_result(
    parameters: Sequence[str],
    settings: EventSettings,
    ts_ms: int,
    score: float,
    active: bool,
    active_since_ms: int,
    z: Sequence[float] | np.ndarray,
    med: Sequence[float] | np.ndarray,
) -> DetectorResult:
    """The decision on one row, with the z and baseline median of every parameter judged."""
    if math.isnan(score):
        return DetectorResult(KIND, math.nan, active)
    evidence = {
        "threshold": settings.threshold,
        "active_since_ms": active_since_ms if active else -1,
        "window_end_ms": ts_ms,
        **{f"z_{p}": float(z[j]) for j, p in enumerate(parameters)},
        **{f"median_{p}": float(med[j]) for j, p in enumerate(parameters) if not math.isnan(z[j])},
    }
    return DetectorResult(KIND, score, active, evidence)


def held_due(level_z: np.ndarray, active: np.ndarray | bool, settings: EventSettings) -> np.ndarray:
    """Parameters whose reading is due to be held out of the level baseline: every one while
    the detector is active, and those with |level z| above `hold_z` (suspect). Elementwise:
    `active` has the leading shape of `level_z` (one row: a scalar)."""
    s = settings
    due = np.zeros(np.shape(level_z), dtype=bool)
    if s.max_frozen:
        due |= np.asarray(active)[..., None]
        if s.hold_z:
            with np.errstate(invalid="ignore"):
                due |= abs(level_z) > s.hold_z
    return due


def _explains(parameters: Sequence[str], settings: EventSettings) -> np.ndarray:
    """Which parameters a flow change explains."""
    return np.array([p in settings.context_explains for p in parameters], dtype=bool)


def flow_changed(
    row: np.ndarray, prev: np.ndarray, ref: np.ndarray, settings: EventSettings
) -> np.ndarray:
    """Whether any context column changed, confirmed on two rows, by more than
    `context_change` of its reference median. Elementwise over leading axes; the last axis is
    the context columns."""
    d = step_diff(row, prev, ref, np.zeros(np.shape(row), dtype=bool))
    with np.errstate(invalid="ignore"):
        return np.asarray((abs(d) > settings.context_change * abs(ref)).any(axis=-1))


class _ContextChannel:
    """Rows since the last flow change, and the flows' reference rings."""

    __slots__ = ("prev", "ref", "settings", "since")

    def __init__(self, settings: EventSettings) -> None:
        c = len(settings.context)
        self.settings = settings
        self.ref = _Rings(c, settings.context_window, refresh=0)
        self.prev = np.full(c, np.nan)
        self.since = NEVER

    def explains(self, context: np.ndarray | None) -> bool:
        """Advance by this row's context values; whether a flow change explains it."""
        if context is not None:
            ref = self.ref.stats(np.zeros(len(self.prev)), self.ref.size)[0]
            changed = bool(flow_changed(context, self.prev, ref, self.settings))
            self.since = 0 if changed else self.since + 1
            for j in np.flatnonzero(~np.isnan(context)).tolist():
                if not math.isnan(self.prev[j]):
                    self.ref.push(j, float(self.prev[j]))
                self.prev[j] = context[j]
        else:
            self.since += 1
        return self.since < self.settings.context_rows


class EventDetector:
    def __init__(self, parameters: Sequence[str], settings: EventSettings) -> None:
        self.floors = scale_floors(parameters, settings)
        self.parameters = tuple(parameters)
        self.settings = settings
        p = len(self.parameters)
        self.long = _Rings(p, settings.window, settings.refresh_rows)
        self.short = _Rings(p, settings.short_window) if settings.short_window else None
        self.step = _StepChannel(self.floors, settings) if settings.step_window else None
        self.ramp = _RampChannel(self.floors, settings.ramp_rows) if settings.ramp_rows else None
        # Readings wait `lag` rows (per parameter) before they enter the baselines.
        self.pending: list[list[float]] = [[] for _ in range(p)]
        self.raw = np.zeros(settings.persist_n, dtype=bool)  # ring of recent raw-positive rows
        self.raw_head = 0
        self.raw_sum = 0
        self.active = False
        self.active_since_ms = -1
        # Per parameter: rows in a row its readings were due to be held out of its baseline.
        self.held = np.zeros(p, dtype=np.int64)
        self.peak = 0.0  # highest confirmed score of the current episode
        self.last_score = math.nan  # the score of the row before
        self.explains = _explains(self.parameters, settings)
        self.context = _ContextChannel(settings) if settings.context_rows else None
        self.rearm = 0.0  # after a clear on clear_ratio: the lowest score since (0: none)
        self.since_active = NEVER  # judged rows since the detector was last active

    def _persist_step(self, ts_ms: int, score: float, confirmed: float) -> bool:
        """Persistence, hysteresis and the clear on return (clear_ratio); `confirmed` is the
        score of the step and ramp channels (NaN: none)."""
        s = self.settings
        off = not score > s.off_ratio * s.threshold
        if self.rearm:
            self.rearm = 0.0 if off else min(self.rearm, score)
        raw = score - self.rearm > s.threshold
        at_once = s.confirmed_raise and confirmed - self.rearm > s.threshold
        self.raw_sum += int(raw) - int(self.raw[self.raw_head])
        self.raw[self.raw_head] = raw
        self.raw_head = (self.raw_head + 1) % s.persist_n
        seen = float(np.fmin(score, self.last_score))
        if self.active:
            self.peak = float(np.fmax(self.peak, seen))
            if off or score < s.clear_ratio * self.peak:
                self.active = False
                # A new episode must earn its own m-of-n, not reuse the last one's rows.
                self.raw[:] = False
                self.raw_sum = 0
                self.rearm = 0.0 if off else score
        elif self.raw_sum >= s.persist_m or at_once:
            self.active = True
            self.active_since_ms = ts_ms
            self.peak = seen
        self.last_score = score
        return self.active

    def _z(self, row: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        med, scale = self.long.stats(self.floors, s.min_history)
        short = None
        if self.short is not None:
            short = self.short.stats(self.floors, min(s.min_history, s.short_window))
        return z_scores(row, present, med, scale, short), med

    def _push(self, row: np.ndarray, present: np.ndarray) -> None:
        lag = self.settings.lag
        for j in np.flatnonzero(present).tolist():
            x = float(row[j])
            if lag:
                q = self.pending[j]
                q.append(x)
                if len(q) <= lag:
                    continue
                x = q.pop(0)
            self.long.push(j, x)
            if self.short is not None:
                self.short.push(j, x)

    def _step(
        self, ts_ms: int, row: np.ndarray, context: np.ndarray | None
    ) -> tuple[float, bool, np.ndarray, np.ndarray]:
        """One row: score against the baselines, decide, then feed the baselines."""
        present = ~np.isnan(row)
        if not present.any():
            return math.nan, self.active, np.full(len(row), np.nan), np.full(len(row), np.nan)
        s = self.settings
        level_z, med = self._z(row, present)
        weight = np.ones(len(row))
        if self.context is not None and self.context.explains(context):
            weight[self.explains] = s.context_discount
        z = level_z * weight
        score = self._score(z)
        confirmed = math.nan
        if self.step is not None:
            episode = np.asarray(self.active or self.since_active < s.step_window)
            d = np.where(present, self.step.diff(row, returned(z, episode, s)), np.nan)
            confirmed = self._score(self.step.z(d) * weight) * s.threshold / s.step_threshold
        if self.ramp is not None:
            zr = self.ramp.z(row, present) * weight
            ramp = np.nanmax(np.abs(zr)) * s.threshold / s.ramp_threshold
            confirmed = float(np.fmax(confirmed, ramp))
        score = float(np.fmax(score, confirmed))
        active = self._persist_step(ts_ms, score, confirmed)
        self.since_active = 0 if active else self.since_active + 1
        due = held_due(level_z, active, s)
        self.held = np.where(present, np.where(due, self.held + 1, 0), self.held)
        # Held readings (an episode's, or suspect ones) do not become "normal".
        self._push(row, present & ~(due & (self.held <= s.max_frozen)))
        if self.step is not None:
            self.step.push(row, present, d)
        if self.ramp is not None:
            self.ramp.push(row, present)
        return score, active, z, med

    def update(
        self,
        ts_ms: int,
        values: Sequence[float] | np.ndarray,
        context: Sequence[float] | np.ndarray | None = None,
    ) -> DetectorResult:
        """One row: `values` one per parameter, `context` one per `settings.context` column
        (NaN or None: missing)."""
        row = np.asarray(values, dtype=np.float64).reshape(len(self.parameters))
        ctx = None if context is None else np.asarray(context, dtype=np.float64)
        score, active, z, med = self._step(ts_ms, row, ctx)
        return event_result(
            self.parameters, self.settings, ts_ms, score, active, self.active_since_ms, z, med
        )

    def _score(self, z: np.ndarray) -> float:
        """sqrt(mean of the top-k z^2) over the parameters with a z; NaN when none has one."""
        z2 = sorted((v * v for v in z.tolist() if not math.isnan(v)), reverse=True)
        k = min(len(z2), self.settings.top_k)
        if k == 0:
            return math.nan
        acc = 0.0
        for v in z2[:k]:
            acc += v
        return math.sqrt(acc / k)

    def update_many(
        self, ts_ms: np.ndarray, values: np.ndarray, context: np.ndarray | None = None
    ) -> np.ndarray:
        """`values` has one column per parameter, in the constructor's order, `context` one per
        context column. Same scalar step as `update` row by row (the held baseline makes each
        row depend on earlier decisions)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        rows = np.asarray(values, dtype=np.float64).reshape(len(ts), len(self.parameters))
        ctx = None
        if context is not None:
            ctx = np.asarray(context, dtype=np.float64).reshape(len(ts), -1)
        score = np.empty(len(ts))
        active = np.zeros(len(ts), dtype=bool)
        for i, t in enumerate(ts.tolist()):
            score[i], active[i], _, _ = self._step(t, rows[i], None if ctx is None else ctx[i])
        return batch_result(score, active)
