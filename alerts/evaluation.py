"""Replay a labelled water-quality CSV through the production event detector and score it.

    landun eval PATH --dataset gecco2018 [--predictions OUT.csv] [--start-frac F --end-frac G]
    python -m alerts.evaluation PATH --dataset gecco2018

Column mapping for gecco2018 (drinking-water distribution, GECCO 2018 industrial challenge):
    Cl -> free_chlorine (chlorine dioxide, mg/L)   pH -> ph        Redox -> orp (mV)
    Leit -> conductivity                            Trueb -> turbidity
    Cl_2 -> free_chlorine_2 (second chlorine dioxide measurement)
Fm, Fm_2 (flows) are operating data, not event signals: they are read as the profile's context
columns `flow`, `flow_2` (a change of flow explains a pH or ORP move). Tp is not used.
EVENT (0/1) is the label. Rows are scored one flag each; a slice can be scored after replaying
everything before it, so the detector state at the slice start is what production would have.
The settings come from the committed alerts/data/detectors.toml; nothing is learned here.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from alerts.detectors import EventDetector, load_detector_settings
from alerts.detectors.settings import EventSettings

# Rows handed to update_many at once; results are identical to row-by-row updates (tested).
CHUNK_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Dataset:
    time_column: str
    label_column: str
    columns: dict[str, str]  # CSV column -> detector parameter
    profile: str
    context: dict[str, str]  # CSV column -> context column of the profile (operating data)


DATASETS = {
    "gecco2018": Dataset(
        time_column="Time",
        label_column="EVENT",
        columns={
            "Cl": "free_chlorine",
            "pH": "ph",
            "Redox": "orp",
            "Leit": "conductivity",
            "Trueb": "turbidity",
            "Cl_2": "free_chlorine_2",
        },
        profile="drinking_water",
        context={"Fm": "flow", "Fm_2": "flow_2"},
    ),
}


@dataclass(frozen=True, slots=True)
class LabelledData:
    times: list[str]
    ts_ms: np.ndarray  # int64, ascending
    values: np.ndarray  # (rows, parameters), NaN where missing
    labels: np.ndarray  # bool
    parameters: tuple[str, ...]
    context: np.ndarray  # (rows, context columns), NaN where missing
    context_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scores:
    rows: int
    events: int
    flagged: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # empty or "NA": missing for this row


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.strip()).timestamp() * 1000)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def read_labelled_csv(path: str | Path, dataset: Dataset) -> LabelledData:
    """Read the CSV (gzip if it ends in .gz) and sort it by time (stable)."""
    times: list[str] = []
    rows: list[list[float]] = []
    context: list[list[float]] = []
    labels: list[bool] = []
    with _open_text(Path(path)) as fh:
        for rec in csv.DictReader(fh):
            times.append(rec[dataset.time_column])
            # Values are read as plain floats, nothing else. No detector looks at whether a
            # value is a whole step of its sensor's resolution: in GECCO 2018 only event rows
            # are not, so such a test would read the label (tests/test_evaluation.py checks
            # that rounding every value to its resolution leaves the decisions as they are).
            rows.append([_number(rec[c]) for c in dataset.columns])
            context.append([_number(rec[c]) for c in dataset.context])
            labels.append(_number(rec[dataset.label_column]) > 0.5)  # missing label: no event
    ts = np.array([_epoch_ms(t) for t in times], dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    values = np.array(rows, dtype=np.float64).reshape(len(times), len(dataset.columns))
    flows = np.array(context, dtype=np.float64).reshape(len(times), len(dataset.context))
    return LabelledData(
        times=[times[i] for i in order],
        ts_ms=ts[order],
        values=values[order],
        labels=np.array(labels, dtype=bool)[order],
        parameters=tuple(dataset.columns.values()),
        context=flows[order],
        context_names=tuple(dataset.context.values()),
    )


def replay(data: LabelledData, settings: EventSettings, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and flags of rows [0, stop) from a fresh production EventDetector, in time order."""
    detector = EventDetector(data.parameters, settings)
    # The profile's context columns, by name (a column the file lacks is missing: NaN).
    missing = np.full((len(data.ts_ms), 1), np.nan)
    context = np.hstack(
        [
            data.context[:, [data.context_names.index(c)]] if c in data.context_names else missing
            for c in settings.context
        ]
        or [np.empty((len(data.ts_ms), 0))]
    )
    scores = np.empty(stop)
    flags = np.empty(stop, dtype=bool)
    for start in range(0, stop, CHUNK_ROWS):
        end = min(stop, start + CHUNK_ROWS)
        out = detector.update_many(
            data.ts_ms[start:end], data.values[start:end], context[start:end]
        )
        scores[start:end] = out["score"]
        flags[start:end] = out["active"]
    return scores, flags


def score_flags(flags: np.ndarray, labels: np.ndarray) -> Scores:
    tp = int(np.sum(flags & labels))
    fp = int(np.sum(flags & ~labels))
    fn = int(np.sum(~flags & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(
        len(flags), int(labels.sum()), int(flags.sum()), tp, fp, fn, precision, recall, f1
    )


def _slice(args: argparse.Namespace, n: int) -> tuple[int, int]:
    if args.rows:
        a, _, b = args.rows.partition(":")
        start, stop = int(a or 0), int(b or n)
    else:
        start, stop = round(args.start_frac * n), round(args.end_frac * n)
    start, stop = max(0, start), min(n, stop)
    if start >= stop:
        raise SystemExit(f"empty slice {start}:{stop} of {n} rows")
    return start, stop


def _write_predictions(path: str, times: list[str], flags: np.ndarray, scores: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Time", "flag", "score"])
        for t, f, s in zip(times, flags.tolist(), scores.tolist(), strict=True):
            out.writerow([t, int(f), repr(s)])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="landun eval", description="Score the event detector on a labelled CSV."
    )
    p.add_argument("path", help="labelled CSV, optionally gzip-compressed (.gz)")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--predictions", help="write Time,flag,score of the scored rows here")
    p.add_argument("--settings", help="detector settings TOML (default: the committed file)")
    p.add_argument("--start-frac", type=float, default=0.0, help="score from this fraction")
    p.add_argument("--end-frac", type=float, default=1.0, help="score up to this fraction")
    p.add_argument("--rows", help="score rows A:B (0-based, B exclusive); overrides the fractions")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dataset = DATASETS[args.dataset]
    settings = load_detector_settings(args.settings).event_profile(dataset.profile)
    data = read_labelled_csv(args.path, dataset)
    start, stop = _slice(args, len(data.ts_ms))
    scores, flags = replay(data, settings, stop)
    result = score_flags(flags[start:stop], data.labels[start:stop])
    if args.predictions:
        _write_predictions(
            args.predictions, data.times[start:stop], flags[start:stop], scores[start:stop]
        )
    print(f"dataset {args.dataset}: scored rows {start}:{stop} of {len(data.ts_ms)}")
    print(
        f"events {result.events}, flagged {result.flagged}: "
        f"tp {result.tp}, fp {result.fp}, fn {result.fn}"
    )
    print(f"precision {result.precision:.4f}  recall {result.recall:.4f}  f1 {result.f1:.4f}")
    summary = {
        "dataset": args.dataset,
        "profile": dataset.profile,
        "start": start,
        "stop": stop,
        "rows": result.rows,
        "events": result.events,
        "flagged": result.flagged,
        "tp": result.tp,
        "fp": result.fp,
        "fn": result.fn,
        "precision": round(result.precision, 6),
        "recall": round(result.recall, 6),
        "f1": round(result.f1, 6),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
