"""Readings per second through the detectors, streaming (`update`) and batch (`update_many`).

    .venv/bin/python bench/detectors_throughput.py [READINGS]

Single-series: the four detectors of SeriesDetectors on free chlorine. Event: the pool profile
over four parameters (a "reading" there is one parameter value, so rows x 4). Last line is JSON.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from alerts.detectors import EventDetector, SeriesDetectors, load_detector_settings

EVENT_PARAMETERS = ["free_chlorine", "ph", "orp", "turbidity"]
MEANS = np.array([0.6, 7.4, 700.0, 0.3])
SDS = np.array([0.03, 0.02, 5.0, 0.03])


def _rate(readings: int, seconds: float) -> float:
    return round(readings / seconds, 1)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20_000
    settings = load_detector_settings()
    rng = np.random.default_rng(0)
    ts = 1_795_334_400_000 + np.arange(n, dtype=np.int64) * 60_000
    rows = MEANS + SDS * rng.standard_normal((n, len(EVENT_PARAMETERS)))
    chlorine = rows[:, 0]

    det = SeriesDetectors("free_chlorine", settings)
    t = time.perf_counter()
    for tsi, v in zip(ts.tolist(), chlorine.tolist(), strict=True):
        det.update(tsi, v)
    series_stream = _rate(n, time.perf_counter() - t)

    t = time.perf_counter()
    SeriesDetectors("free_chlorine", settings).update_many(ts, chlorine)
    series_batch = _rate(n, time.perf_counter() - t)

    profile = settings.event_profile("pool")
    event = EventDetector(EVENT_PARAMETERS, profile)
    t = time.perf_counter()
    for tsi, row in zip(ts.tolist(), rows, strict=True):
        event.update(tsi, row)
    event_stream = _rate(rows.size, time.perf_counter() - t)

    t = time.perf_counter()
    EventDetector(EVENT_PARAMETERS, profile).update_many(ts, rows)
    event_batch = _rate(rows.size, time.perf_counter() - t)

    print(f"series detectors, streaming: {series_stream:,.0f} readings/s")
    print(f"series detectors, batch:     {series_batch:,.0f} readings/s")
    print(f"event detector, streaming:   {event_stream:,.0f} readings/s")
    print(f"event detector, batch:       {event_batch:,.0f} readings/s")
    summary = {
        "readings": n,
        "series_stream_per_s": series_stream,
        "series_batch_per_s": series_batch,
        "event_stream_per_s": event_stream,
        "event_batch_per_s": event_batch,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
