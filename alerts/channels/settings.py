"""The channel settings an operator gives, checked at start.

- alerts/data/channels.toml: the delivery policy per channel (retries, backoff, rate limit from
  the vendor's published limits, queue size). A config dir's channels.toml replaces it.
- DIR/notify.toml (`landun run --config-dir DIR`): which channels are on and their robots,
  SMTP server and SMS account, one table per channel (`[wecom]`, `[dingtalk]`, `[email]`,
  `[sms]`, `[webhook]`, as each channel module's config model says). Every credential is a
  `{ env = "VAR" }` or `{ file = "/run/secrets/x" }`, never a value in the file or on the
  command line. No notify.toml: no channel is on, and notices are recorded as undeliverable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alerts.channels.outbox import ChannelPolicy, OutboxService
from alerts.channels.registry import ChannelConfig, Secret, discovered
from alerts.settings_files import SettingsError, checked, config_file, parse_toml, read_toml
from store.base import NoticeStore

NOTIFY_FILE = "notify.toml"


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(ge=1, le=20)
    backoff_s: float = Field(gt=0)
    backoff_max_s: float = Field(gt=0)
    per_minute: float = Field(ge=0)
    burst: int = Field(ge=1)
    queue_max: int = Field(ge=1, le=100_000)
    source: str
    confidence: str


class _Outbox(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets_max: int = Field(ge=1, le=100_000)
    keys_remembered: int = Field(ge=1)


class _ChannelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    outbox: _Outbox
    channels: dict[str, _Policy]


@dataclass(frozen=True)
class ChannelSettings:
    policies: dict[str, ChannelPolicy]
    targets_max: int = 1000
    keys_remembered: int = 100_000
    configs: dict[str, ChannelConfig] = field(default_factory=dict)  # the channels that are on
    notify_file: str = ""  # where `configs` came from


def load_channel_settings() -> ChannelSettings:
    """channels.toml and the config dir's notify.toml, checked, every secret read once
    (SettingsError naming the file and key of the first problem)."""
    file, doc = read_toml("channels.toml")
    data = checked(_ChannelsFile, doc, file)
    policies = {
        name: ChannelPolicy(
            p.max_attempts, p.backoff_s, p.backoff_max_s, p.per_minute, p.burst, p.queue_max
        )
        for name, p in data.channels.items()
    }
    specs = discovered()
    unknown = sorted(set(policies) - set(specs))
    if unknown:
        raise SettingsError(file, f"channels.{unknown[0]}", "no such channel")
    configs: dict[str, ChannelConfig] = {}
    path = config_file(NOTIFY_FILE)
    if path is not None:
        notify = parse_toml(str(path), path.read_text("utf-8"))
        for name, section in notify.items():
            if name not in specs:
                raise SettingsError(str(path), name, f"no such channel (known: {sorted(specs)})")
            configs[name] = checked(specs[name].config, section, str(path), name)
            for key, secret in _secrets(configs[name], name):
                try:
                    secret.reveal()
                except ValueError as exc:
                    raise SettingsError(str(path), key, str(exc)) from None
    return ChannelSettings(
        policies, data.outbox.targets_max, data.outbox.keys_remembered, configs, str(path or "")
    )


def build_outbox(settings: ChannelSettings, store: NoticeStore) -> OutboxService:
    """The outbox with every channel `settings` turns on (call start() and, at the end, stop())."""
    specs = discovered()
    channels = {name: specs[name].build(config) for name, config in settings.configs.items()}
    return OutboxService(
        channels,
        store,
        settings.policies,
        targets_max=settings.targets_max,
        keys_remembered=settings.keys_remembered,
    )


def _secrets(value: Any, key: str) -> Iterator[tuple[str, Secret]]:
    if isinstance(value, Secret):
        yield key, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name), f"{key}.{name}")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _secrets(item, f"{key}.{name}")
