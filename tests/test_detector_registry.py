"""Registered single-series detectors: discovered, their settings checked, and alerts through the
real engine. (Bank against streaming reference for every one: tests/test_detector_bank.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from alerts.detectors import load_detector_settings
from alerts.detectors.plugins.zero_run import ZeroRunSettings
from alerts.detectors.registry import discovered
from alerts.settings_files import SettingsError
from alerts.startup_settings import load_settings
from domain.model import Reading
from domain.registry import load_registry
from landun.demo import demo_registry_path
from landun.system import Core
from store.base import AlertQuery

T0 = 1_780_000_000_000
MINUTE = 60_000
DEVICE, SITE = "pool-xh-01-wq", "pool-xh-01"


@pytest.fixture(autouse=True)
def packaged_settings_after() -> Iterator[None]:
    yield
    load_settings(None)


def _detectors_toml(tmp_path: Path, extra: str) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    text = resources.files("alerts").joinpath("data/detectors.toml").read_text("utf-8")
    (etc / "detectors.toml").write_text(text + "\n" + extra, "utf-8")
    return etc


def test_every_single_series_detector_is_discovered_and_zero_run_idle() -> None:
    registered = discovered()
    assert {"implausible", "stuck", "spike", "drift", "zero_run"} <= set(registered)
    settings = load_detector_settings()
    # Registered, judges nothing until a parameter is given a zero_run table.
    assert all("zero_run" not in s.detectors for s in settings.series.values())
    assert ZeroRunSettings() == ZeroRunSettings(min_readings=10, epsilon=1e-9)
    assert all(s.detectors.keys() >= {"implausible", "stuck"} for s in settings.series.values())


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (
            "[series.combined_chlorine.zero_run]\nmin_reading = 3\n",
            "series.combined_chlorine.zero_run.min_reading",
        ),
        (
            '[series.combined_chlorine.zero_run]\nmin_readings = "three"\n',
            "series.combined_chlorine.zero_run.min_readings",
        ),
        ("[series_defaults.no_such_detector]\nx = 1\n", "series_defaults.no_such_detector"),
        ("[series.ph.no_such_detector]\nx = 1\n", "series.ph.no_such_detector"),
    ],
)
def test_detector_settings_are_checked_at_start(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_detectors_toml(tmp_path, table))
    assert info.value.key == key
    assert info.value.file.endswith("detectors.toml")


def test_configured_plugin_raises_and_clears_through_the_engine(tmp_path: Path) -> None:
    table = "[series.combined_chlorine.zero_run]\nmin_readings = 5\n"
    load_settings(_detectors_toml(tmp_path, table))
    now = [T0]
    core = Core.build(
        load_registry(demo_registry_path()), tmp_path / "landun.db", clock=lambda: now[0]
    )
    try:
        rule = "integrity:zero_run:combined_chlorine"
        # Combined chlorine exactly 0 (inside its limit, not yet "stuck"): 8 readings, then 0.1.
        for k, value in enumerate([0.0] * 8 + [0.1]):
            now[0] = T0 + k * MINUTE
            core.engine.on_readings(
                [Reading(DEVICE, SITE, "combined_chlorine", now[0], value, recv_ms=now[0])]
            )
            if k == 6:
                (alert,) = core.store.list_alerts(AlertQuery(rule_id=rule))
                assert alert.status == "open" and alert.first_ms == T0 + 4 * MINUTE
                assert alert.evidence["zero_readings"] == 7  # the newest reading's evidence
        (alert,) = core.store.list_alerts(AlertQuery(rule_id=rule))
        assert alert.status == "resolved"
    finally:
        core.close()
