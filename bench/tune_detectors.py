"""Rolling-origin tuning of the drinking-water event profile on the GECCO 2018 training file.

    .venv/bin/python bench/tune_detectors.py [PATH] [--jobs N] [--grid JSON]

Time-ordered folds with a rolling origin: fold k validates one block of rows after replaying
everything before it, as production would have seen it. The first sixth is the first origin
only (the detector has nothing before it to learn from); the blocks after it cover the rest of
the file, and the last third is one fold of its own:

    F1 rows n/6:n/3    F2 n/3:n/2    F3 n/2:2n/3    F4 2n/3:n

One replay of the whole file per candidate gives every fold. The script prints every candidate
with its F1 per fold, then ranks them by the worst fold (the headline), with the mean and the
worst fold of the candidate's grid neighbours (one grid step away in one setting): prefer a
candidate whose neighbourhood is as good as itself (a flat region) over a lone peak.
The chosen settings are the committed [event_profiles.drinking_water]; `landun eval PATH
--dataset gecco2018 --rows A:B` scores any one fold with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from concurrent.futures import ProcessPoolExecutor

from alerts.detectors import load_detector_settings
from alerts.detectors.settings import EventSettings
from alerts.evaluation import (
    DATASETS,
    LabelledData,
    Scores,
    read_labelled_csv,
    replay,
    score_flags,
)

DEFAULT_PATH = "/work/shared/data/gecco2018_water_quality_train.csv.gz"

# Display resolution of each GECCO signal; floors are multiples of it.
RESOLUTION = {
    "free_chlorine": 0.01,
    "ph": 0.01,
    "orp": 1.0,
    "conductivity": 1.0,
    "turbidity": 0.002,
    "free_chlorine_2": 0.002,
}

# The grid: every combination is replayed. Keys are EventSettings fields, plus "persist"
# (persist_m, persist_n), "floor" (x RESOLUTION) and "drop" (parameters left out).
GRID: dict[str, tuple] = {
    "threshold": (7.0, 8.0, 9.0),
    "step_threshold": (8.0,),
    "ramp_rows": (4, 5, 6),
    "ramp_threshold": (2.0, 2.5, 3.0),
    "clear_ratio": (0.1, 0.15, 0.2),
    "max_frozen": (0, 360),
}

_DATA: LabelledData | None = None


def folds(n: int) -> dict[str, tuple[int, int]]:
    """fold name -> (validation start, validation stop); each fold's origin is its start."""
    cuts = [n // 6, n // 3, n // 2, 2 * n // 3, n]
    return {f"F{k + 1}": (a, b) for k, (a, b) in enumerate(itertools.pairwise(cuts))}


def candidate(base: EventSettings, point: dict) -> EventSettings:
    s = base
    for name, value in point.items():
        if name == "persist":
            s = dataclasses.replace(s, persist_m=value[0], persist_n=value[1])
        elif name == "floor":
            s = dataclasses.replace(
                s, scale_floor={p: RESOLUTION[p] * value for p in s.scale_floor}
            )
        elif name == "drop":
            kept = tuple(p for p in s.parameters if p not in value)
            s = dataclasses.replace(
                s, parameters=kept, scale_floor={p: s.scale_floor[p] for p in kept}
            )
        else:
            s = dataclasses.replace(s, **{name: value})
    return s


def evaluate(settings: EventSettings) -> dict[str, Scores]:
    """The scores of each fold, from one replay of the whole file."""
    data = _DATA
    assert data is not None
    n = len(data.ts_ms)
    if settings.parameters != data.parameters:
        cols = [data.parameters.index(p) for p in settings.parameters]
        data = dataclasses.replace(
            data, values=data.values[:, cols], parameters=settings.parameters
        )
    flags = replay(data, settings, n)[1]
    return {
        name: score_flags(flags[v0:v1], data.labels[v0:v1]) for name, (v0, v1) in folds(n).items()
    }


def _init(path: str) -> None:
    global _DATA
    _DATA = read_labelled_csv(path, DATASETS["gecco2018"])


def _run(args: tuple[EventSettings, dict]) -> tuple[dict, dict[str, Scores]]:
    settings, point = args
    return point, evaluate(settings)


def _fmt(point: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


def _neighbours(point: dict, grid: dict[str, tuple]) -> list[dict]:
    """The grid points one step away from `point` in one setting."""
    out = []
    for name, values in grid.items():
        i = values.index(point[name])
        out += [point | {name: values[j]} for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return out


def _key(point: dict) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?", default=DEFAULT_PATH)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--grid", help="JSON object overriding GRID, e.g. '{\"threshold\": [8, 10]}'")
    args = ap.parse_args(argv)
    grid = dict(GRID)
    if args.grid:
        grid.update(
            {
                k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                for k, v in json.loads(args.grid).items()
            }
        )
    base = load_detector_settings().event_profile(DATASETS["gecco2018"].profile)
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    work = [(candidate(base, p), p) for p in points]
    _init(args.path)
    assert _DATA is not None
    n = len(_DATA.ts_ms)
    print(f"rows {n}; folds (start, stop): {folds(n)}; {len(points)} candidates", flush=True)
    results: dict[str, dict[str, float]] = {}
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(args.path,)) as pool:
        for point, scores in pool.map(_run, work):
            f1 = {k: v.f1 for k, v in scores.items()}
            results[_key(point)] = f1
            figures = " ".join(f"{k} {v:.3f}" for k, v in f1.items())
            print(f"{figures} | {_fmt(point)}", flush=True)
            if len(work) == 1:  # one candidate: every fold in full
                for k, v in scores.items():
                    print(
                        f"  {k} rows {folds(n)[k]}: f1 {v.f1:.3f} precision {v.precision:.3f}"
                        f" recall {v.recall:.3f} false/true alarm rows {v.fp}/{v.tp}"
                    )
    print("\n# ranked by the worst fold; nbr = worst fold over the grid neighbours")
    rows = []
    for point in points:
        f1 = results[_key(point)]
        near = [min(results[_key(q)].values()) for q in _neighbours(point, grid)]
        rows.append((min(f1.values()), sum(f1.values()) / len(f1), min(near, default=0.0), point))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    for worst, mean, nbr, point in rows[:25]:
        print(f"worst {worst:.3f} mean {mean:.3f} nbr {nbr:.3f} | {_fmt(point)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
