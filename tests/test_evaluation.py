"""The evaluation CLI on small synthetic GECCO-shaped files (never the real 140k-row file)."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from alerts.detectors import load_detector_settings
from alerts.evaluation import main, score_flags

HEADER = ["Time", "Tp", "Cl", "pH", "Redox", "Leit", "Trueb", "Cl_2", "Fm", "Fm_2", "EVENT"]
ROWS = 1500
# (start row, length): strong two-parameter steps, after the detector's warm-up.
EVENTS = [(400, 20), (800, 25), (1200, 30)]


def _rows(seed: int = 1) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    t0 = datetime(2016, 8, 3, 9, 49, tzinfo=UTC)
    cl = np.round(0.17 + 0.005 * rng.standard_normal(ROWS), 2)
    ph = np.round(8.35 + 0.01 * rng.standard_normal(ROWS), 2)
    redox = np.round(750 + 2 * rng.standard_normal(ROWS))
    leit = np.round(211 + 1 * rng.standard_normal(ROWS))
    trueb = np.round(0.02 + 0.002 * rng.standard_normal(ROWS), 3)
    cl2 = np.round(0.11 + 0.002 * rng.standard_normal(ROWS), 3)
    label = np.zeros(ROWS, dtype=int)
    for start, length in EVENTS:
        sl = slice(start, start + length)
        ph[sl] -= 1.3  # like the GECCO pH/Redox events: far beyond any floor
        redox[sl] -= 300
        label[sl] = 1
    out = []
    for i in range(ROWS):
        ts = (t0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            [
                ts,
                "6.5",
                f"{cl[i]:g}",
                f"{ph[i]:g}",
                f"{redox[i]:g}",
                f"{leit[i]:g}",
                f"{trueb[i]:g}",
                f"{cl2[i]:g}",
                "1500",
                "900",
                str(label[i]),
            ]
        )
    for i in (100, 101, 650, 651, 652):  # rows with missing values, as in the real file
        out[i][2:10] = [""] * 8
    out[700][3] = ""  # one missing parameter only
    return out


def _write(path: Path, rows: list[list[str]]) -> Path:
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    return _rows()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _predictions(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))[1:]


def test_cli_summary_matches_hand_count(tmp_path, rows, capsys) -> None:
    src = _write(tmp_path / "small.csv.gz", rows)
    pred = tmp_path / "pred.csv"
    summary = _run(capsys, str(src), "--dataset", "gecco2018", "--predictions", str(pred))
    assert {"rows", "events", "precision", "recall", "f1", "tp", "fp", "fn", "flagged"} <= set(
        summary
    )
    # Every event row is far above threshold, so with m-of-n persistence the first m-1 rows of
    # each event are missed, the rest caught, and the flag drops on the first normal row.
    m = load_detector_settings().event_profile("drinking_water").persist_m
    events = sum(length for _, length in EVENTS)
    assert summary["rows"] == ROWS
    assert summary["events"] == events
    assert summary["fn"] == len(EVENTS) * (m - 1)
    assert summary["tp"] == events - summary["fn"]
    assert summary["fp"] == 0
    assert summary["flagged"] == summary["tp"]
    assert summary["precision"] == 1.0
    assert summary["recall"] == pytest.approx(summary["tp"] / events, abs=1e-6)
    flags = [int(r[1]) for r in _predictions(pred)]
    assert len(flags) == ROWS and sum(flags) == summary["flagged"]


def test_score_flags_by_hand() -> None:
    s = score_flags(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (s.tp, s.fp, s.fn, s.flagged, s.events) == (2, 1, 1, 3, 3)
    assert s.precision == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)


def test_prefix_flags_do_not_depend_on_later_rows(tmp_path, rows, capsys) -> None:
    whole = _write(tmp_path / "whole.csv.gz", rows)
    prefix = _write(tmp_path / "prefix.csv.gz", rows[:1000])
    out_whole, out_prefix = tmp_path / "whole.csv", tmp_path / "prefix.csv"
    _run(capsys, str(whole), "--dataset", "gecco2018", "--predictions", str(out_whole))
    _run(capsys, str(prefix), "--dataset", "gecco2018", "--predictions", str(out_prefix))
    assert _predictions(out_prefix) == _predictions(out_whole)[:1000]


def test_slice_is_scored_after_replaying_the_start(tmp_path, rows, capsys) -> None:
    src = _write(tmp_path / "small.csv.gz", rows)
    full_pred, part_pred = tmp_path / "full.csv", tmp_path / "part.csv"
    _run(capsys, str(src), "--dataset", "gecco2018", "--predictions", str(full_pred))
    part = _run(
        capsys,
        str(src),
        "--dataset",
        "gecco2018",
        "--rows",
        "1000:1500",
        "--predictions",
        str(part_pred),
    )
    assert part["rows"] == 500 and part["events"] == 30
    assert _predictions(part_pred) == _predictions(full_pred)[1000:]
    frac = _run(capsys, str(src), "--dataset", "gecco2018", "--start-frac", "0.5")
    assert frac["rows"] == 750


def test_runs_as_a_module(tmp_path, rows) -> None:
    src = _write(tmp_path / "small.csv.gz", rows[:300])
    done = subprocess.run(
        [sys.executable, "-m", "alerts.evaluation", str(src), "--dataset", "gecco2018"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["rows"] == 300


def test_values_off_the_resolution_grid_change_no_decision(tmp_path, rows, capsys) -> None:
    """The leak of GECCO 2018 (only event rows hold values that are not whole steps of the
    sensor's resolution) must not be read: nudging every event row off the grid, far below any
    scale floor, leaves every flag as it was."""
    nudged = [list(r) for r in rows]
    for start, length in EVENTS:
        for r in nudged[start : start + length]:
            r[2:8] = [f"{float(v) + 1e-6:.7f}" if v else v for v in r[2:8]]
    flags = {}
    for name, data in (("grid", rows), ("nudged", nudged)):
        src = _write(tmp_path / f"{name}.csv.gz", data)
        pred = tmp_path / f"{name}.pred.csv"
        _run(capsys, str(src), "--dataset", "gecco2018", "--predictions", str(pred))
        flags[name] = [r[1] for r in _predictions(pred)]
    assert flags["grid"] == flags["nudged"]
    assert "1" in flags["grid"]
