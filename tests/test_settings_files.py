"""Settings files checked at start (file, key, reason) and an operator's --config-dir."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from alerts.custody import default_custody_settings
from alerts.detectors import load_detector_settings
from alerts.engine import EngineSettings
from alerts.settings_files import SettingsError
from alerts.standards import builtin_profiles
from alerts.startup_settings import load_settings

DATA = resources.files("alerts").joinpath("data")


@pytest.fixture(autouse=True)
def packaged_settings_after() -> Iterator[None]:
    yield
    load_settings(None)  # later tests in this process read the packaged files again


def _packaged(name: str) -> str:
    return DATA.joinpath(name).read_text("utf-8")


def _config_dir(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return tmp_path / "etc"


def _error(config_dir: Path) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings(config_dir)
    return info.value


def test_packaged_settings_load() -> None:
    load_settings(None)
    assert "drinking_water" in load_detector_settings().event_profiles
    assert EngineSettings.load().max_gap_s > 0
    assert "cj244-pool" in builtin_profiles()


def test_detectors_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    text = _packaged("detectors.toml").replace("top_k = 2", "top_k = 2\ntop_kk = 3", 1)
    err = _error(_config_dir(tmp_path, "detectors.toml", text))
    assert err.file == str(tmp_path / "etc" / "detectors.toml")
    assert (err.key, err.reason) == ("event_profiles.pool.top_kk", "unknown key")
    assert str(err).startswith(f"{err.file}: event_profiles.pool.top_kk: unknown key")


def test_detectors_wrong_type_names_the_merged_key(tmp_path: Path) -> None:
    text = _packaged("detectors.toml").replace(
        "spike = { scale_floor = 0.02 }   # 2 x the 0.01 pH",
        'spike = { scale_floor = "two steps" }   # 2 x the 0.01 pH',
    )
    err = _error(_config_dir(tmp_path, "detectors.toml", text))
    assert err.key == "series.ph.spike.scale_floor"
    assert "number" in err.reason


def test_engine_wrong_type(tmp_path: Path) -> None:
    text = _packaged("engine.toml").replace("max_gap_s = 900", 'max_gap_s = "15 min"')
    err = _error(_config_dir(tmp_path, "engine.toml", text))
    assert (err.file, err.key) == (str(tmp_path / "etc" / "engine.toml"), "max_gap_s")
    assert "integer" in err.reason


def test_custody_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    text = _packaged("custody.toml").replace("max_hours = 48", "max_hours = 48\nmax_days = 2")
    assert _error(_config_dir(tmp_path, "custody.toml", text)).key == "storage.max_days"
    text = _packaged("custody.toml").replace("max_hours = 48", 'max_hours = "two days"')
    err = _error(_config_dir(tmp_path, "custody.toml", text))
    assert (err.key, err.reason) == ("storage.max_hours", "expected a number")


def test_standards_profile_wrong_key_and_type(tmp_path: Path) -> None:
    text = _packaged("standards/cj244-pool.toml")
    bad_key = text.replace("hysteresis = 0.05", "hysteresys = 0.05", 1)
    err = _error(_config_dir(tmp_path, "standards/cj244-pool.toml", bad_key))
    assert (err.key, err.reason) == ("limits.free_chlorine.hysteresys", "unknown key")
    bad_type = text.replace("pending_s = 600", 'pending_s = "ten minutes"', 1)
    err = _error(_config_dir(tmp_path, "standards/cj244-pool.toml", bad_type))
    assert err.key == "limits.free_chlorine.pending_s"


def test_config_dir_overrides_packaged_files(tmp_path: Path) -> None:
    profile = _packaged("standards/cj244-pool.toml").replace("min = 0.3", "min = 0.4", 1)
    etc = _config_dir(tmp_path, "standards/cj244-pool.toml", profile)
    engine = _packaged("engine.toml").replace("max_gap_s = 900", "max_gap_s = 600")
    _config_dir(tmp_path, "engine.toml", engine)
    load_settings(etc)
    assert builtin_profiles()["cj244-pool"].limits["free_chlorine"].min == 0.4
    assert EngineSettings.load().max_gap_s == 600
    # Files the directory does not hold stay the packaged ones.
    assert builtin_profiles()["gb37488-2019-pool"].limits
    assert default_custody_settings().storage_max_h == 48.0
    load_settings(None)
    assert builtin_profiles()["cj244-pool"].limits["free_chlorine"].min == 0.3


def test_landun_run_refuses_a_wrong_settings_file_at_start(tmp_path: Path) -> None:
    text = _packaged("engine.toml").replace("renotify_s = 3600", "renotify_s = 3600\nrenotify = 1")
    etc = _config_dir(tmp_path, "engine.toml", text)
    # Fails before it opens a store or a broker: the data dir stays empty.
    argv = ["run", "--config-dir", str(etc), "--data-dir", str(tmp_path / "var")]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from landun.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert f"{etc / 'engine.toml'}: renotify: unknown key" in proc.stderr
    assert not (tmp_path / "var").exists()
