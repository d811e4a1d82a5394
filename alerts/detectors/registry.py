"""Single-series detectors: one module each, registering itself.

A single-series detector is one module in `alerts/detectors/plugins/`, built-in or new. It holds
its streaming reference (a class judging one series, reading by reading), its vectorised form
when one is worth having (the same decisions for many series at once, `VectorisedDetector`), a
settings model checked by pydantic with unknown keys refused, its alert family and its rule kind,
and calls `register` when imported. Everything that runs them discovers every module of that
package (`discovered`): the settings loader, the per-series facade (`SeriesDetectors`), the
many-series bank (`SeriesBank`) and so the alert rule. Adding a detector edits no other
production file.

Settings live in detectors.toml under the detector's `section`: `[series_defaults.<section>]`
for every parameter, `series.<parameter>.<section>` per parameter, merged key by key. A detector
judges the parameters that have a table of its section (through the defaults or their own).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from alerts.detectors import plugins
from alerts.detectors.base import DetectorResult
from domain.model import AlertFamily

if TYPE_CHECKING:
    from alerts.detectors.bank import KindBatch


class PluginSettings(BaseModel):
    """A convenient base of a detector's settings: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesDetector(Protocol):
    """The streaming reference: one series, readings in time order."""

    def update(self, ts_ms: int, value: float) -> DetectorResult: ...


class VectorisedDetector(Protocol):
    """One detector's state for many series (row r: one series) and its decisions for a round
    of readings, at most one per row: for each series, reading by reading, what the streaming
    reference gives."""

    enabled: bool  # False: never active (score NaN, no evidence), as a switched-off drift

    def grow(self, capacity: int) -> None: ...

    def empty(self, ts: np.ndarray, values: np.ndarray) -> KindBatch:
        """The decisions of a batch before any is made (its evidence arrays allocated)."""
        ...

    def judge(
        self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, out: KindBatch
    ) -> None:
        """Decide readings `idx` of the batch (of rows `rows`, distinct) into `out`."""
        ...


@dataclass(frozen=True, slots=True)
class Detector:
    kind: str  # rule id "<family prefix>:<kind>:<parameter>"
    family: AlertFamily
    settings: type  # a pydantic model or pydantic dataclass; unknown keys refused
    streaming: Callable[[Any], SeriesDetector]
    # The vectorised form (settings, capacity), when there is one; without it the bank runs
    # one streaming reference per series.
    vectorised: Callable[[Any, int], VectorisedDetector] | None = None
    section: str = ""  # its table in detectors.toml; "" is the kind
    order: int = 100  # rank among a series' detectors: results come in this order
    # Which values the detectors after this one may judge (settings, values -> mask); the
    # others are withheld from them as missing (the streaming form passes one float). None: all.
    passes: Callable[[Any, Any], Any] | None = None

    @property
    def table(self) -> str:
        return self.section or self.kind


_DETECTORS: dict[str, Detector] = {}


def register(detector: Detector) -> Detector:
    """Called by a detector module when imported."""
    known = _DETECTORS.get(detector.kind)
    if known is not None and known is not detector:
        raise ValueError(f"two detectors registered as {detector.kind!r}")
    if any(d.table == detector.table and d is not known for d in _DETECTORS.values()):
        raise ValueError(f"two detectors with the settings table {detector.table!r}")
    _DETECTORS[detector.kind] = detector
    return detector


def discovered() -> dict[str, Detector]:
    """Every registered detector by kind, in `order`, after importing every module of the
    detector package."""
    for module in pkgutil.iter_modules(plugins.__path__):
        importlib.import_module(f"{plugins.__name__}.{module.name}")
    return dict(sorted(_DETECTORS.items(), key=lambda kv: (kv[1].order, kv[0])))
