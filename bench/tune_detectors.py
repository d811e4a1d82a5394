"""Coordinate search of the drinking-water event profile on the FIRST TWO THIRDS of GECCO 2018.

    .venv/bin/python bench/tune_detectors.py [PATH]

Replays rows [0, 2n/3) through the production EventDetector (alerts.evaluation.replay) for each
candidate, varying one setting at a time over a small grid and keeping the best F1; two passes.
The last third is never read for tuning: score it afterwards with
    .venv/bin/python -m alerts.evaluation PATH --dataset gecco2018 --start-frac 0.6666667
Prints every grid point, then the chosen settings as a TOML snippet for alerts/data/detectors.toml.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from alerts.detectors import load_detector_settings
from alerts.detectors.settings import EventSettings
from alerts.evaluation import DATASETS, read_labelled_csv, replay, score_flags

DEFAULT_PATH = "/work/shared/data/gecco2018_water_quality_train.csv.gz"
# Multiplier on every parameter's scale floor (floors start at ~1 x display resolution).
FLOOR_SCALES = (1.0, 1.5, 2.0)
GRID: dict[str, tuple] = {
    "window": (240, 480, 720),
    "lag": (0, 30, 60),
    "top_k": (1, 2, 3),
    "threshold": (6.0, 8.0, 10.0, 12.0),
    "persist": ((1, 1), (2, 2), (2, 3), (3, 4)),
    "off_ratio": (0.5, 0.8, 1.0),
    "floor_scale": FLOOR_SCALES,
}


def candidate(base: EventSettings, base_floor: dict[str, float], name: str, value) -> EventSettings:
    if name == "persist":
        return dataclasses.replace(base, persist_m=value[0], persist_n=value[1])
    if name == "floor_scale":
        return dataclasses.replace(base, scale_floor={k: v * value for k, v in base_floor.items()})
    return dataclasses.replace(base, **{name: value})


def main(argv: list[str]) -> int:
    path = argv[0] if argv else DEFAULT_PATH
    dataset = DATASETS["gecco2018"]
    data = read_labelled_csv(path, dataset)
    stop = 2 * len(data.ts_ms) // 3  # tuning rows: [0, stop); the rest is held out
    labels = data.labels[:stop]
    best = load_detector_settings().event_profile(dataset.profile)
    base_floor = best.scale_floor
    chosen = {"floor_scale": 1.0}
    best_f1 = score_flags(replay(data, best, stop)[1], labels).f1
    print(f"tuning rows 0:{stop} of {len(data.ts_ms)}; start f1 {best_f1:.4f}", flush=True)
    for sweep in (1, 2):
        for name, values in GRID.items():
            # Every value of this coordinate is tried against the same current best settings.
            results = []
            for value in values:
                settings = candidate(best, base_floor, name, value)
                f1 = score_flags(replay(data, settings, stop)[1], labels).f1
                print(f"pass {sweep} {name}={value}: f1 {f1:.4f}", flush=True)
                results.append((f1, value, settings))
            f1, value, settings = max(results, key=lambda r: r[0])
            if f1 > best_f1 + 1e-9:
                best_f1, best = f1, settings
                chosen[name] = value
    print("\n# chosen for [event_profiles.drinking_water]")
    for key in ("window", "lag", "top_k", "threshold", "persist_m", "persist_n", "off_ratio"):
        print(f"{key} = {getattr(best, key)}")
    print(f"scale_floor = {best.scale_floor}")
    print(json.dumps({"rows": stop, "f1": round(best_f1, 6), "floor_scale": chosen["floor_scale"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
