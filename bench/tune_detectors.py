"""Inner-split tuning of the drinking-water event profile on the FIRST TWO THIRDS of GECCO 2018.

    .venv/bin/python bench/tune_detectors.py [PATH] [--jobs N]

Only rows [0, 2n/3) are read; the last third is never used for any choice. Inside them, two
time-ordered folds (every slice is scored after replaying everything before it, as production):

    fold A: tune rows 0:4n/9        validate rows 4n/9:2n/3
    fold B: tune rows 0:3n/9        validate rows 3n/9:5n/9

One replay of rows [0, 2n/3) per candidate gives all four figures. The script prints the grid
(every candidate with its tune and validation F1 per fold), then the candidates ranked by the
mean validation F1 of the two folds, with the worst tune-validation gap. Choose by validation,
preferring a flat region of the grid (neighbours score alike) and small gaps over a single peak.
The chosen settings are the committed [event_profiles.drinking_water]; the last third is scored
once, afterwards, with
    .venv/bin/python -m alerts.evaluation PATH --dataset gecco2018 --start-frac 0.6666667
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
from alerts.evaluation import DATASETS, LabelledData, read_labelled_csv, replay, score_flags

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
    "window": (720, 1440),
    "short_window": (0, 120),
    "max_frozen": (0, 360),
    "threshold": (6.0, 8.0, 10.0),
    "floor": (1.5, 2.0),
    "top_k": (1, 2),
    "persist": ((1, 1), (2, 3)),
}

_DATA: LabelledData | None = None


def folds(n: int) -> dict[str, tuple[int, int, int]]:
    """fold name -> (tune stop, validation start, validation stop); tuning starts at row 0."""
    return {"A": (4 * n // 9, 4 * n // 9, 2 * n // 3), "B": (3 * n // 9, 3 * n // 9, 5 * n // 9)}


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


def evaluate(settings: EventSettings) -> dict[str, float]:
    """Tune and validation F1 of each fold, from one replay of the first two thirds."""
    data = _DATA
    assert data is not None
    n = len(data.ts_ms)
    stop = 2 * n // 3
    if settings.parameters != data.parameters:
        cols = [data.parameters.index(p) for p in settings.parameters]
        data = dataclasses.replace(
            data, values=data.values[:, cols], parameters=settings.parameters
        )
    flags = replay(data, settings, stop)[1]
    out = {}
    for name, (tune_stop, v0, v1) in folds(n).items():
        out[f"{name}_tune"] = score_flags(flags[:tune_stop], data.labels[:tune_stop]).f1
        out[f"{name}_val"] = score_flags(flags[v0:v1], data.labels[v0:v1]).f1
    return out


def _init(path: str) -> None:
    global _DATA
    _DATA = read_labelled_csv(path, DATASETS["gecco2018"])


def _run(args: tuple[EventSettings, dict]) -> tuple[dict, dict[str, float]]:
    settings, point = args
    return point, evaluate(settings)


def _fmt(point: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


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
    n = len(_DATA.ts_ms)
    print(
        f"rows {n}; only 0:{2 * n // 3} read; folds (tune stop, val start, val stop): "
        f"{folds(n)}; {len(points)} candidates",
        flush=True,
    )
    results = []
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(args.path,)) as pool:
        for point, f1 in pool.map(_run, work):
            results.append((point, f1))
            print(
                f"A tune {f1['A_tune']:.3f} val {f1['A_val']:.3f} | "
                f"B tune {f1['B_tune']:.3f} val {f1['B_val']:.3f} | {_fmt(point)}",
                flush=True,
            )
    print("\n# ranked by mean validation F1 (gap = worst |tune - val| of the two folds)")
    ranked = sorted(results, key=lambda r: -(r[1]["A_val"] + r[1]["B_val"]))
    for point, f1 in ranked[:25]:
        mean_val = (f1["A_val"] + f1["B_val"]) / 2
        gap = max(abs(f1["A_tune"] - f1["A_val"]), abs(f1["B_tune"] - f1["B_val"]))
        print(f"val {mean_val:.3f} gap {gap:.3f} | {_fmt(point)}")
    best_point, best = ranked[0]
    print(
        json.dumps(
            {
                "best": {k: list(v) if isinstance(v, tuple) else v for k, v in best_point.items()},
                **{k: round(float(v), 4) for k, v in best.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
