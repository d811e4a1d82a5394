"""Every alert settings file read and checked once at start, from the config dir if given."""

from __future__ import annotations

from pathlib import Path

from alerts.channels.settings import load_channel_settings
from alerts.custody import default_custody_settings
from alerts.detectors.settings import load_detector_settings
from alerts.engine import EngineSettings
from alerts.escalation.policy import EscalationSettings
from alerts.settings_files import use_config_dir
from alerts.standards import builtin_profiles


def load_settings(config_dir: str | Path | None) -> None:
    """Read every settings file (SettingsError on the first wrong one); later reads in this
    process see the same files."""
    use_config_dir(config_dir)
    builtin_profiles.cache_clear()
    default_custody_settings.cache_clear()
    load_detector_settings()
    EngineSettings.load()
    default_custody_settings()
    builtin_profiles()
    load_channel_settings()
    EscalationSettings.load()
