"""Readings per second through the detectors, streaming (`update`) and batch (`update_many`).

    .venv/bin/python bench/detectors_throughput.py [READINGS]

Single-series: the registered detectors of SeriesDetectors on free chlorine (its `update_many` is
`update` reading by reading). Event: the pool profile over four parameters (a "reading" there is
one parameter value, so rows x 4). Bank: SeriesBank (the detectors' vectorised forms)
over five pool parameters in the backlog shape (BANK_SERIES series, one reading each per batch,
every series past its day-long drift buffer), against SeriesDetectors.update on the same state;
and one series with many readings in one batch. Last line is JSON.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from alerts.detectors import (
    DetectorSettings,
    EventDetector,
    SeriesDetectors,
    load_detector_settings,
)
from alerts.detectors.bank import SeriesBank

EVENT_PARAMETERS = ["free_chlorine", "ph", "orp", "turbidity"]
MEANS = np.array([0.6, 7.4, 700.0, 0.3])
SDS = np.array([0.03, 0.02, 5.0, 0.03])
# Pool parameters of one analyzer: (mean, sd); drift is switched off for the last two.
BANK_POOL = {
    "free_chlorine": (0.6, 0.03),
    "ph": (7.4, 0.02),
    "orp": (700.0, 5.0),
    "turbidity": (0.3, 0.03),
    "temperature": (27.0, 0.05),
}
BANK_SERIES = 2000
BANK_BATCHES = 5
HISTORY = 1800  # readings before timing: past the 1680 of the drift buffer
T0 = 1_795_334_400_000
MINUTE = 60_000


def _rate(readings: int, seconds: float) -> float:
    return round(readings / seconds, 1)


def _primed(parameter: str, settings: DetectorSettings, history: np.ndarray) -> SeriesBank:
    """A bank of BANK_SERIES series that all saw `history`. Feeding 2000 x 1800 readings would
    take minutes, so one series is fed and its row copied to the others (state only, no logic)."""
    bank = SeriesBank(parameter, settings.for_parameter(parameter), capacity=BANK_SERIES)
    for key in range(BANK_SERIES):
        bank.row(key)
    ts = T0 + np.arange(len(history), dtype=np.int64) * MINUTE
    bank.update(np.zeros(len(history), dtype=np.int64), ts, history)
    for state in (s for _, detector in bank.detectors for s in vars(detector).values()):
        lanes = not isinstance(state, np.ndarray) and hasattr(state, "end")
        for array in (state.data, state.end) if lanes else (state,):
            if isinstance(array, np.ndarray) and len(array) == BANK_SERIES:
                array[1:] = array[0]
    return bank


def _bank_figures(settings: DetectorSettings, rng: np.random.Generator) -> dict[str, float]:
    """Readings/s: bank and SeriesDetectors in the backlog shape, and the bank on one series."""
    banks, streams, batches = [], [], []
    for parameter, (mean, sd) in BANK_POOL.items():
        history = np.round(mean + sd * rng.standard_normal(HISTORY), 2)
        banks.append(_primed(parameter, settings, history))
        stream = SeriesDetectors(parameter, settings)
        for k, v in enumerate(history.tolist()):
            stream.update(T0 + k * MINUTE, v)
        streams.append(stream)
        batches.append(mean + sd * rng.standard_normal((BANK_BATCHES, BANK_SERIES)))
    rows = np.arange(BANK_SERIES, dtype=np.int64)
    t = time.perf_counter()
    for b in range(BANK_BATCHES):
        ts = np.full(BANK_SERIES, T0 + (HISTORY + b) * MINUTE, dtype=np.int64)
        for bank, values in zip(banks, batches, strict=True):
            bank.update(rows, ts, values[b])
    bank_backlog = _rate(BANK_BATCHES * BANK_SERIES * len(banks), time.perf_counter() - t)
    # SeriesDetectors on the same shape: every series costs the same, so one primed series per
    # parameter judging a batch's worth of readings stands for the whole batch.
    t = time.perf_counter()
    for stream, values in zip(streams, batches, strict=True):
        for k, v in enumerate(values[0].tolist()):
            stream.update(T0 + (HISTORY + k) * MINUTE, v)
    series_backlog = _rate(BANK_SERIES * len(streams), time.perf_counter() - t)
    one = SeriesBank("free_chlorine", settings.for_parameter("free_chlorine"))
    one.row("a")
    n = HISTORY + 600
    values = np.round(0.6 + 0.03 * rng.standard_normal(n), 2)
    t = time.perf_counter()
    one.update(np.zeros(n, dtype=np.int64), T0 + np.arange(n, dtype=np.int64) * MINUTE, values)
    bank_one_series = _rate(n, time.perf_counter() - t)
    return {
        "bank_backlog_per_s": bank_backlog,
        "series_backlog_per_s": series_backlog,
        "bank_one_series_per_s": bank_one_series,
    }


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

    bank = _bank_figures(settings, rng)

    print(f"series detectors, streaming: {series_stream:,.0f} readings/s")
    print(f"series detectors, batch:     {series_batch:,.0f} readings/s")
    print(f"event detector, streaming:   {event_stream:,.0f} readings/s")
    print(f"event detector, batch:       {event_batch:,.0f} readings/s")
    print(
        f"backlog shape, {BANK_SERIES} series x {len(BANK_POOL)} parameters, one reading each: "
        f"bank {bank['bank_backlog_per_s']:,.0f} readings/s, "
        f"SeriesDetectors {bank['series_backlog_per_s']:,.0f} readings/s"
    )
    print(f"bank, one series, {HISTORY + 600} readings: {bank['bank_one_series_per_s']:,.0f}/s")
    summary = {
        "readings": n,
        "series_stream_per_s": series_stream,
        "series_batch_per_s": series_batch,
        "event_stream_per_s": event_stream,
        "event_batch_per_s": event_batch,
        **bank,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
