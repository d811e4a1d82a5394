"""Ground truth of a simulated run: which alerts the system should raise, where and when.

One record per expected alert, device and alert window:
`{scenario, site_id, device_id, family, kind, parameter, start_ms, end_ms, max_delay_ms,
max_clear_delay_ms}`. The window is the fault's, except for `analyzer_off` with
`opening_hours_only`, where the device is silent only while the pool is open, so each opening
period is its own window. An alert matches a record when it opens within
`[start_ms, start_ms + max_delay_ms]` and clears by `end_ms + max_clear_delay_ms`: physical faults
take time to show (chlorine decays over hours) and to heal (acid can only lower pH).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from domain.timeutil import ms_to_iso
from simulators.faults import Fault, FaultKind
from simulators.pool_model import opening_intervals
from simulators.scenarios import MS_PER_MIN, Scenario


def alert_windows(fault: Fault) -> list[tuple[int, int]]:
    """The periods during which the fault's alerts are due."""
    if fault.kind is FaultKind.ANALYZER_OFF and fault.params["opening_hours_only"]:
        return opening_intervals(fault.start_ms, fault.end_ms)
    return [(fault.start_ms, fault.end_ms)]


def ground_truth(
    scenario: Scenario, run_start_ms: int, devices: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Expected alerts for `devices` ((site_id, device_id), in the order the run numbers them)."""
    records = []
    for index, (site_id, device_id) in enumerate(devices):
        for fault in scenario.faults_for(index, run_start_ms):
            for start_ms, end_ms in alert_windows(fault):
                for expected in scenario.expected:
                    records.append(
                        {
                            "scenario": scenario.id,
                            "site_id": site_id,
                            "device_id": device_id,
                            "family": expected.family,
                            "kind": expected.kind,
                            "parameter": expected.parameter,
                            "start_ms": start_ms,
                            "end_ms": end_ms,
                            "max_delay_ms": int(expected.max_delay_min * MS_PER_MIN),
                            "max_clear_delay_ms": int(expected.max_clear_delay_min * MS_PER_MIN),
                        }
                    )
    return records


def write_ground_truth(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """A JSON array; each record keeps its epoch-ms times and gains `start` and `end` as ISO 8601
    UTC with `Z`, for people reading the file."""
    rows = [
        {**record, "start": ms_to_iso(record["start_ms"]), "end": ms_to_iso(record["end_ms"])}
        for record in records
    ]
    Path(path).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
