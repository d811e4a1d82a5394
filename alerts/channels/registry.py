"""Notification channels that plug in: one module each in this package, registering itself.

A channel module holds its `Channel` class, a pydantic model of its section of the operator's
notify.toml (every secret a `Secret`: from the environment or a file, never the file itself or
the command line), and calls `register` when imported. `discovered()` imports every module of
the package, so adding a channel is one new file and edits nothing else."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from alerts import channels
from alerts.channels.base import Channel


class ChannelConfig(BaseModel):
    """Base of a channel's section of notify.toml: unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(ChannelConfig):
    """A credential named, not written: `{ env = "VAR" }` or `{ file = "/run/secrets/x" }`."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret is { env = NAME } or { file = PATH }, exactly one")
        return self

    def reveal(self) -> str:
        """The secret's value; ValueError naming the variable or file when it is not there."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ValueError(f"the environment variable {self.env} is not set")
            return value
        try:
            value = Path(self.file or "").read_text("utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the secret file {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"the secret file {self.file} is empty")
        return value


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str  # Recipient.channel
    config: type[ChannelConfig]  # its section [<name>] of notify.toml
    build: Callable[[Any], Channel]  # config -> a ready channel (reveals its secrets)


_SPECS: dict[str, ChannelSpec] = {}


def register(spec: ChannelSpec) -> ChannelSpec:
    """Called by a channel module when imported."""
    if spec.name in _SPECS and _SPECS[spec.name] is not spec:
        raise ValueError(f"two channels registered as {spec.name!r}")
    _SPECS[spec.name] = spec
    return spec


def discovered() -> dict[str, ChannelSpec]:
    """Every registered channel, after importing every module of this package."""
    for module in pkgutil.iter_modules(channels.__path__):
        importlib.import_module(f"{channels.__name__}.{module.name}")
    return dict(_SPECS)
