"""The single-series detectors of many series of one parameter, evaluated together.

`SeriesDetectors` keeps one state per series and judges one reading at a time; a backlog drain
delivers one reading for each of thousands of series per batch, so per-series batching does not
help and the per-reading Python and copy overhead dominates. `SeriesBank` holds, for each
registered detector (alerts/detectors/registry.py) that judges the parameter, its vectorised
form: the same state for many series in arrays (one row per series), judging a whole round with
array operations. A detector without a vectorised form runs its streaming reference per series.

Contract: for any interleaving of series and readings, every series gets, reading by reading, the
scores and active flags `SeriesDetectors(parameter, settings).update` would give it. A batch may
hold several readings of one series: occurrence k of every series is judged in round k, so each
series sees its readings in order.

Shared here for the vectorised forms: per-row buffers (`Lanes`) and robust window statistics
identical to `robust_stats`. Each window is sorted once (numpy's row sort is SIMD and much faster
than `np.median`'s partition on many short rows); the median is read off the sorted row, and the
MAD's order statistics are found by a binary search over the two runs of deviations below and
above the median, which are already sorted. Medians are functions of the multiset of values, so
the results are bit-identical to the streaming detectors.

One deliberate difference: a detector switched off (`enabled` False: drift with an infinite
threshold) is never active, so the bank skips it entirely: score NaN, no evidence, no buffer.
`SeriesDetectors` still computes a finite score there that nothing acts on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alerts.detectors.base import MAD_TO_SD, DetectorResult, robust_stats
from alerts.detectors.registry import Detector, VectorisedDetector, discovered
from alerts.detectors.stacked import grown

if TYPE_CHECKING:
    from alerts.detectors.settings import SeriesSettings

# Up to this many windows, np.median row by row beats the fixed cost of the vectorised search
# (a series flushing its offline buffer is judged one reading per round).
FEW_ROWS = 8
# Windows are judged this many rows at a time. The windows, their sort and the unfilled mask are
# temporaries of rows x up to 1,680 values: made for a whole round at once they are large enough
# for glibc to serve from thread arenas that then stay grown; a chunk's are small, reused from
# one chunk to the next, and stay in cache (README, Benchmarks, "Memory settings": the figures).
CHUNK_ROWS = 256
# Per evidence key: an array with a value per reading, or one value for the whole batch. Any,
# because the detectors write into the arrays by index, which a union would forbid.
Evidence = dict[str, Any]


@dataclass(slots=True)
class KindBatch:
    """One detector's decisions on a batch, one entry per reading; the evidence arrays are
    filled where the detector judged the reading (always where it is active). A detector run
    through its streaming reference keeps each reading's whole result in `records` instead."""

    score: np.ndarray
    active: np.ndarray
    evidence: Evidence
    records: list[DetectorResult | None] | None = None


def kind_batch(n: int, evidence: Evidence) -> KindBatch:
    """A batch of `n` readings not judged yet (score NaN, inactive)."""
    return KindBatch(np.full(n, np.nan), np.zeros(n, bool), evidence)


def floats(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def ints(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


@dataclass(slots=True)
class BankResult:
    kinds: dict[str, KindBatch]

    def detector_results(self, i: int) -> list[DetectorResult]:
        """Reading i as `SeriesDetectors.update` reports it, detector by detector in order.

        Evidence only for active decisions, the only ones an alert carries: building it for every
        reading would cost more than judging it.
        """
        out = []
        for kind, b in self.kinds.items():
            record = b.records[i] if b.records is not None else None
            if record is not None:
                kept = record.evidence if record.active else {}
                out.append(DetectorResult(kind, record.score, record.active, kept))
                continue
            evidence: dict[str, float | int | str] = {}
            if b.active[i]:
                evidence = {
                    k: v[i].item() if isinstance(v, np.ndarray) else v
                    for k, v in b.evidence.items()
                }
            out.append(DetectorResult(kind, float(b.score[i]), bool(b.active[i]), evidence))
        return out


class Lanes:
    """Per-row buffers of the newest `keep` values, each row's values contiguous so the windows of
    many rows are gathered in one fancy index over a strided view.

    A row is written left to right; when it reaches the end, its newest `keep` values move back
    to the front (one copy of `keep` values per `width - keep` pushes). `end` starts at `keep`,
    so a window slice never falls off the front of a young row; callers mask the slots the row
    has not filled yet.
    """

    def __init__(self, keep: int, capacity: int, dtype: type) -> None:
        self.keep = keep
        # Slack of keep/16: a copy of `keep` values every keep/16 pushes is ~16 values a push,
        # and the drift lanes (the largest state) are 6 % over `keep` rather than 25 %.
        self.width = keep + max(keep // 16, 8)
        self.data: np.ndarray = np.zeros((capacity, self.width), dtype=dtype)
        self.end = np.full(capacity, keep, dtype=np.int64)  # index after each row's newest value

    def grow(self, capacity: int) -> None:
        self.data = grown(self.data, capacity, 0)
        self.end = grown(self.end, capacity, self.keep)

    def push(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Append one value to each of `rows` (distinct)."""
        at_end = rows[self.end[rows] == self.width]
        if len(at_end):
            self.data[at_end, : self.keep] = self.data[at_end, self.width - self.keep :]
            self.end[at_end] = self.keep
        self.data[rows, self.end[rows]] = values
        self.end[rows] += 1

    def windows(self, rows: np.ndarray, back: int, length: int) -> np.ndarray:
        """Per row, the `length` slots ending `back` slots before its newest value (a copy)."""
        starts = rows * self.width + self.end[rows] - back - length
        return sliding_window_view(self.data.reshape(-1), length)[starts]

    def at(self, rows: np.ndarray, back: np.ndarray | int) -> np.ndarray:
        """Per row, the value `back` slots before the newest (0 = newest)."""
        return self.data[rows, self.end[rows] - 1 - back]


def _kth_deviation(s: np.ndarray, med: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The k-th smallest |x - med| (0-based) per row over the first n values of sorted rows `s`.

    Below the split p = n // 2 the deviations med - s[p-1-i] rise with i, above it s[p+j] - med
    rise with j: two sorted runs, so binary-search how many of the k+1 smallest come from the
    lower run. (m - x is exactly -(x - m) in IEEE arithmetic, so the values equal np.abs(x - m).)
    Probes index the flattened rows (one `take` instead of a 2-D fancy index per probe). A probe
    stays within [-1, width) of its row; a -1 reads a value the masks ignore.
    """
    flat = s.reshape(-1)
    p = n // 2
    split = np.arange(len(s)) * s.shape[1] + p  # flat index of each row's s[p]
    lo = np.maximum(0, k + 1 - (n - p))
    hi = np.minimum(p, k + 1)
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        # mid values from the lower run against the (k + 1 - mid)-th of the upper run
        lower = med - flat.take(split - 1 - mid)
        upper = flat.take(split + k - mid) - med
        enough = (mid >= p) | (mid > k) | (lower >= upper)
        hi = np.where(enough, mid, hi)  # a closed row has mid == hi
        lo = np.where(open_ & ~enough, mid + 1, lo)
    lower = np.where(lo > 0, med - flat.take(split - lo), -np.inf)
    upper = np.where(lo <= k, flat.take(split + k - lo) - med, -np.inf)
    return np.maximum(lower, upper)


def robust_rows(
    windows: np.ndarray, lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """`robust_stats` of every row, over its last `lengths` values (the rest is not yet filled).

    Overwrites `windows`.
    """
    width = windows.shape[1]
    if len(windows) <= FEW_ROWS:
        pairs = zip(windows, lengths.tolist(), strict=True)
        stats = np.array([robust_stats(w[width - n :], scale_floor) for w, n in pairs])
        return stats[:, 0], stats[:, 1]
    if (lengths < width).any():
        unfilled = np.arange(width) < (width - lengths)[:, None]
        windows[unfilled] = np.inf  # sorts to the end, out of reach of the order statistics
    s = np.sort(windows, axis=1)
    rows = np.arange(len(s))
    lo, hi = (lengths - 1) // 2, lengths // 2
    # np.median averages the one or two middle values: (a + b) / 2, which is a when they coincide.
    med = (s[rows, lo] + s[rows, hi]) / 2
    mad_lo = _kth_deviation(s, med, lengths, lo)
    # Odd lengths (full spike windows) have one middle deviation: (a + a) / 2 == a.
    mad = mad_lo if (lo == hi).all() else (mad_lo + _kth_deviation(s, med, lengths, hi)) / 2
    return med, np.maximum(mad * MAD_TO_SD, scale_floor)


def robust_in_chunks(
    windows_of: Callable[[slice], np.ndarray], lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """`robust_rows` CHUNK_ROWS rows at a time; `windows_of(part)` builds the windows of the rows
    `part` (it may overwrite them)."""
    med, scale = np.empty(len(lengths)), np.empty(len(lengths))
    for start in range(0, len(lengths), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        med[part], scale[part] = robust_rows(windows_of(part), lengths[part], scale_floor)
    return med, scale


def lane_stats(
    lanes: Lanes, rows: np.ndarray, back: int, lengths: np.ndarray, scale_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Robust stats of each row's window of `lengths` values ending `back` before its newest."""
    return robust_in_chunks(
        lambda part: lanes.windows(rows[part], back, int(lengths[part].max())),
        lengths,
        scale_floor,
    )


def rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Reading indices per round: round k holds occurrence k of every row, in input order; no
    rounds for no rows."""
    n = len(rows)
    if not n:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - group_start
    by_round = np.lexsort((np.arange(n), occurrence))
    counts = np.bincount(occurrence)
    return np.split(by_round, np.cumsum(counts)[:-1])


def enabled(threshold: float) -> bool:
    """A threshold of +inf switches a detector off."""
    return not (math.isinf(threshold) and threshold > 0)


class StreamingBank:
    """The vectorised shape over a detector that has only its streaming reference: one reference
    per row, judged reading by reading (for detectors where vectorising is not worth it)."""

    enabled = True

    def __init__(self, detector: Detector, settings: Any) -> None:
        self.detector = detector
        self.settings = settings
        self.states: dict[int, Any] = {}

    def grow(self, capacity: int) -> None:
        """Nothing to grow: a row's reference is made when it is first judged."""

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        out = kind_batch(len(values), {})
        out.records = [None] * len(values)
        return out

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, out: KindBatch
    ) -> None:
        assert out.records is not None
        judged = zip(idx.tolist(), rows.tolist(), ts.tolist(), values.tolist(), strict=True)
        for i, r, t, v in judged:
            state = self.states.get(r)
            if state is None:
                state = self.states[r] = self.detector.streaming(self.settings)
            res = state.update(t, v)
            out.score[i], out.active[i], out.records[i] = res.score, res.active, res


def vectorised(detector: Detector, settings: Any, capacity: int) -> VectorisedDetector:
    """The detector's vectorised form, or its streaming reference per row."""
    if detector.vectorised is None:
        return StreamingBank(detector, settings)
    return detector.vectorised(settings, capacity)


class SeriesBank:
    """Every registered detector judging one parameter, over many series of it."""

    def __init__(self, parameter: str, settings: SeriesSettings, capacity: int = 64) -> None:
        self.parameter = parameter
        self.settings = settings
        self.keys: dict[Hashable, int] = {}
        self.capacity = capacity
        self.detectors = [
            (d, vectorised(d, settings.detectors[d.table], capacity))
            for d in discovered().values()
            if d.table in settings.detectors
        ]

    def enabled(self, kind: str) -> bool:
        return any(d.kind == kind and v.enabled for d, v in self.detectors)

    def row(self, key: Hashable) -> int:
        """The row of series `key`, registering it on first sight."""
        r = self.keys.get(key)
        if r is None:
            r = self.keys[key] = len(self.keys)
            if r == self.capacity:
                self.capacity *= 2
                for _, v in self.detectors:
                    v.grow(self.capacity)
        return r

    def update(self, rows: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> BankResult:
        """Judge a batch; rows may repeat (each series' readings in input order)."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        out = {d.kind: vec.empty(ts, v) for d, vec in self.detectors}
        for idx in rounds(rows):
            self._round(idx, rows[idx], ts[idx], v[idx], out)
        return BankResult(out)

    def _round(
        self,
        idx: np.ndarray,
        rows: np.ndarray,
        ts: np.ndarray,
        v: np.ndarray,
        out: dict[str, KindBatch],
    ) -> None:
        """Readings `idx` (of the batch), at most one per row, through the detectors in order;
        values a detector does not pass (out of the plausible band) are withheld from the
        detectors after it, as missing values are from all."""
        keep: np.ndarray | None = ~np.isnan(v)
        for d, vec in self.detectors:
            if keep is not None and not keep.all():
                idx, rows, ts, v = idx[keep], rows[keep], ts[keep], v[keep]
            if not len(idx):
                return
            if vec.enabled:
                vec.judge(idx, rows, ts, v, out[d.kind])
            keep = None if d.passes is None else d.passes(self.settings.detectors[d.table], v)
