"""Single-series detectors that plug in: one module each, registering itself.

A plug-in detector is one module in `alerts/detectors/plugins/`. It holds its streaming
reference (a class judging one series, reading by reading), its vectorised form when it has one,
a pydantic settings model whose every field has a default, its alert family and its rule kind,
and calls `register` when imported. The engine's DetectorRule discovers every module of that
package at start, so adding a detector edits no other production file. Its settings, if any
differ from the defaults, live in detectors.toml as `[plugins.<kind>]` (checked against the
model at start); `parameters` names the parameters it judges.

The built-in detectors (implausible, stuck, spike, drift, event, ...) keep their hand-vectorised
banks and are not (yet) registered this way.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from alerts.detectors import plugins
from alerts.detectors.base import DetectorResult
from domain.model import AlertFamily


class PluginSettings(BaseModel):
    """Base of a plug-in's settings: every field with a default; unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: tuple[str, ...] = ()  # the parameters it judges (none: registered, idle)


class SeriesDetector(Protocol):
    """The streaming reference: one series, readings in time order."""

    def update(self, ts_ms: int, value: float) -> DetectorResult: ...


S = TypeVar("S", bound=PluginSettings)


@dataclass(frozen=True, slots=True)
class Plugin(Generic[S]):
    kind: str  # rule id "<family prefix>:<kind>:<parameter>"
    family: AlertFamily
    settings: type[S]
    streaming: Callable[[S], SeriesDetector]
    # The vectorised form, when there is one: the same results for many series at once.
    vectorised: Callable[[S], object] | None = None


_PLUGINS: dict[str, Plugin[Any]] = {}


def register(plugin: Plugin[S]) -> Plugin[S]:
    """Called by a plug-in module when imported."""
    if plugin.kind in _PLUGINS and _PLUGINS[plugin.kind] is not plugin:
        raise ValueError(f"two detectors registered as {plugin.kind!r}")
    _PLUGINS[plugin.kind] = plugin
    return plugin


def discovered() -> dict[str, Plugin]:
    """Every registered detector, after importing every module of the plug-in package."""
    for module in pkgutil.iter_modules(plugins.__path__):
        importlib.import_module(f"{plugins.__name__}.{module.name}")
    return dict(_PLUGINS)
