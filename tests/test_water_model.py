"""The drinking-water simulator: deterministic, realistic ranges, and faults with the effect
their ground truth promises."""

from __future__ import annotations

import pytest

from simulators.faults import Fault, FaultKind
from simulators.water_model import PARAMETERS, SUBTYPES, WaterModel

HOUR = 3_600_000
START = 1_796_000_400_000 - 1_796_000_400_000 % (24 * HOUR) - 8 * HOUR  # a local midnight


def series(model: WaterModel, hours: float, parameter: str) -> list[float]:
    out = []
    for t in range(START, START + int(hours * HOUR), 60_000):
        sample = model.sample(t)
        assert sample is not None
        out.append(sample.values[parameter])
    return out


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_a_clean_week_stays_within_gb5749_and_reports_its_parameters(subtype: str):
    model = WaterModel(f"w-{subtype}", 3, subtype=subtype, start_ms=START)
    first = model.sample(START)
    assert first is not None and tuple(first.values) == PARAMETERS[subtype]
    disinfectant = series(model, 7 * 24, model.disinfectant)
    minimum = 0.02 if model.disinfectant == "chlorine_dioxide" else 0.05
    assert minimum < min(disinfectant) and max(disinfectant) < 0.8


def test_the_tank_refills_several_times_a_day():
    level = series(
        WaterModel("w-sec", 1, subtype="secondary_supply", start_ms=START), 24, "tank_level"
    )
    rises = sum(
        1 for a, b, c in zip(level, level[10:], level[20:], strict=False) if a < b < c - 0.1
    )
    assert max(level) - min(level) > 0.8 and rises > 60  # minutes of refilling in the day


def test_same_seed_same_samples_and_a_dosing_failure_empties_a_small_supply():
    a = series(WaterModel("w-small", 5, subtype="small_supply", start_ms=START), 12, "ph")
    b = series(WaterModel("w-small", 5, subtype="small_supply", start_ms=START), 12, "ph")
    assert a == b
    failed = Fault(FaultKind.DOSING_PUMP_FAILURE, START + HOUR, START + 48 * HOUR)
    model = WaterModel("w-small", 5, subtype="small_supply", faults=[failed], start_ms=START)
    chlorine = series(model, 16, "free_chlorine")
    assert chlorine[0] > 0.3 and max(chlorine[13 * 60 :]) < 0.05


def test_a_turbidity_event_passes_the_limit():
    event = Fault(
        FaultKind.FILTRATION_FAILURE, START + HOUR, START + 5 * HOUR, {"release_ntu_per_h": 0.6}
    )
    model = WaterModel("w-sec", 2, subtype="secondary_supply", faults=[event], start_ms=START)
    turbidity = series(model, 6, "turbidity")
    assert max(turbidity[:60]) < 0.5 and max(turbidity) > 1.0


def test_an_unknown_subtype_is_refused():
    with pytest.raises(ValueError, match="unknown drinking-water subtype"):
        WaterModel("w", 1, subtype="spring")
