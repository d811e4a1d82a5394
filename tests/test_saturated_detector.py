"""The saturated detector: one new file in alerts/detectors/plugins, discovered everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from alerts.detectors.bank import SeriesBank
from alerts.detectors.plugins.saturated import SaturatedSettings
from alerts.detectors.settings import SeriesSettings
from alerts.settings_files import SettingsError
from alerts.startup_settings import load_settings
from domain.model import Reading
from domain.registry import load_registry
from landun.demo import demo_registry_path
from landun.system import Core
from store.base import AlertQuery
from tests.test_detector_bank import SETTINGS, check_interleaved, series_times, series_values

T0 = 1_780_000_000_000
MINUTE = 60_000
DEVICE, SITE = "pool-xh-01-wq", "pool-xh-01"
RULE = "integrity:saturated:free_chlorine"
# A 0-5 mg/L chlorine analyser, its display resolution 0.01.
TABLE = "[series.free_chlorine.saturated]\nlow = 0.0\nhigh = 5.0\ntolerance = 0.005\n"


@pytest.fixture(autouse=True)
def packaged_settings_after() -> Iterator[None]:
    yield
    load_settings(None)


def _config_dir(tmp_path: Path, extra: str) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    text = resources.files("alerts").joinpath("data/detectors.toml").read_text("utf-8")
    (etc / "detectors.toml").write_text(text + "\n" + extra, "utf-8")
    return etc


@pytest.mark.parametrize("seed", range(6))
def test_bank_equals_streaming_and_fires(seed: int) -> None:
    band = SETTINGS.for_parameter("free_chlorine").implausible
    # The plausible band's middle is the rail, so the noisy series sits on it now and then.
    mid = (band.low + band.high) / 2
    settings = SaturatedSettings(low=mid - 0.1, high=mid + 0.1, min_readings=3)
    series = SeriesSettings("free_chlorine", {"implausible": band, "saturated": settings})
    check_interleaved(series, seed, n_series=5, max_len=160)
    rng = np.random.default_rng(seed)
    x = series_values(rng, 300, series)
    out = SeriesBank("free_chlorine", series).update(
        np.zeros(300, np.int64), series_times(rng, 300), x
    )
    assert out.kinds["saturated"].active.any()


def test_bad_settings_fail_at_start_with_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_config_dir(tmp_path, TABLE + "min_reading = 3\n"))
    assert info.value.key == "series.free_chlorine.saturated.min_reading"
    assert info.value.file.endswith("detectors.toml")


def test_pinned_analyser_raises_and_clears_through_the_engine(tmp_path: Path) -> None:
    load_settings(_config_dir(tmp_path, TABLE))
    now = [T0]
    core = Core.build(
        load_registry(demo_registry_path()), tmp_path / "landun.db", clock=lambda: now[0]
    )
    try:
        # Chlorine at the analyser's 5.00 ceiling for 6 readings, then a reading below it.
        for k, value in enumerate([0.8, 0.82] + [5.0] * 6 + [4.2]):
            now[0] = T0 + k * MINUTE
            core.engine.on_readings(
                [Reading(DEVICE, SITE, "free_chlorine", now[0], value, recv_ms=now[0])]
            )
            if k == 6:
                (alert,) = core.store.list_alerts(AlertQuery(rule_id=RULE))
                assert alert.status == "open" and alert.first_ms == T0 + 6 * MINUTE
                assert alert.evidence["rail_readings"] == 5 and alert.evidence["high"] == 5.0
        (alert,) = core.store.list_alerts(AlertQuery(rule_id=RULE))
        assert alert.status == "resolved"
    finally:
        core.close()
