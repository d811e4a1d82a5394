"""Clock skew: a device whose readings are refused because their sensor time lies ahead of the
receive time. Its data never reach the store, so this rule reads the dead letters; the alert
clears when the device's readings are accepted again (its clock was set right)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from alerts.detectors.settings import ClockSkewSettings
from domain.model import FUTURE_TS, Alert, AlertFamily, DeadLetter, Reading, Severity
from domain.registry import Registry

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

RULE_ID = "integrity:clock_skew"


class ClockSkewRule:
    def __init__(self, registry: Registry, settings: ClockSkewSettings) -> None:
        self.registry = registry
        self.settings = settings
        self._refused: dict[str, int] = {}  # consecutive refusals per device

    def dead_letters(self, dead: Sequence[DeadLetter], engine: AlertEngine) -> None:
        for d in dead:
            device = self.registry.devices.get(d.device_id or "")
            if device is None or FUTURE_TS not in d.reason:
                continue
            n = self._refused[device.id] = self._refused.get(device.id, 0) + 1
            if n < self.settings.min_refused:
                continue
            engine.raise_alert(
                Alert(
                    site_id=device.site_id,
                    device_id=device.id,
                    rule_id=RULE_ID,
                    family=AlertFamily.INTEGRITY,
                    severity=Severity.WARNING,
                    parameter=None,
                    message=f"device {device.id}: sensor clock ahead, {n} messages refused",
                    first_ms=d.recv_ms,
                    last_ms=d.recv_ms,
                    evidence={"refused_in_a_row": n, "last_reason": d.reason},
                )
            )

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        for device_id in {r.device_id for r in readings}:
            if self._refused.pop(device_id, 0) >= self.settings.min_refused:
                site_id = self.registry.devices[device_id].site_id
                engine.clear_alert(site_id, device_id, RULE_ID, "readings accepted again")

    def tick(self, now: int, engine: AlertEngine) -> None:
        """Decided on arrival (refusals and acceptances); nothing to do on the clock."""
