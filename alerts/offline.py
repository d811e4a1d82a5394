"""Deadman rule: a device silent for longer than its timeout gets an integrity alert, raised on
the clock (a silent device sends nothing to react to) and resolved when it reports again."""

from __future__ import annotations

from collections.abc import Iterable

from alerts.detectors.offline import OfflineMonitor
from alerts.detectors.settings import OfflineSettings
from domain.model import Alert, AlertFamily, Reading, Severity
from domain.registry import Registry
from domain.timeutil import ms_to_iso

RULE_ID = "integrity:offline"


class OfflineRule:
    def __init__(
        self,
        registry: Registry,
        settings: OfflineSettings,
        last_seen: dict[str, int],
    ) -> None:
        self.registry = registry
        self.monitor = OfflineMonitor(settings, capacity=max(64, len(registry.devices)))
        # A device is watched from its first report: one that never reported is not "offline
        # since start-up" but never commissioned, which the API shows as such.
        for device_id, seen_ms in last_seen.items():
            if device_id in registry.devices:
                self.monitor.register(device_id, registry.devices[device_id].interval_s, seen_ms)
        self._back: set[str] = set()

    def observe(self, readings: Iterable[Reading], engine: object = None) -> None:
        newest: dict[str, int] = {}
        for r in readings:
            if r.recv_ms > newest.get(r.device_id, -1):
                newest[r.device_id] = r.recv_ms
        for device_id, recv_ms in newest.items():
            if device_id in self.monitor.index:
                self.monitor.seen(device_id, recv_ms)
                self._back.add(device_id)
            elif device_id in self.registry.devices:
                self.monitor.register(
                    device_id, self.registry.devices[device_id].interval_s, recv_ms
                )

    def tick(self, now: int, engine) -> None:
        overdue = {res.evidence["device_id"]: res for res in self.monitor.overdue(now)}
        for device_id in self._back - overdue.keys():
            site = self.registry.devices[device_id].site_id
            if engine.is_open(site, device_id, RULE_ID):
                engine.clear_alert(site, device_id, RULE_ID, "device reported again")
        self._back.clear()
        for device_id, res in overdue.items():
            site = self.registry.devices[device_id].site_id
            if engine.is_open(site, device_id, RULE_ID):
                continue
            last = int(res.evidence["last_seen_ms"])
            engine.raise_alert(
                Alert(
                    site_id=site,
                    device_id=device_id,
                    rule_id=RULE_ID,
                    family=AlertFamily.INTEGRITY,
                    severity=Severity.WARNING,
                    parameter=None,
                    message=(
                        f"device {device_id} silent since {ms_to_iso(last)}"
                        f" (timeout {res.evidence['timeout_s']:g} s)"
                    ),
                    first_ms=last,
                    last_ms=now,
                    evidence={k: v for k, v in res.evidence.items() if k != "device_id"}
                    | {"score": res.score},
                )
            )
