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
        now: int,
    ) -> None:
        self.registry = registry
        self.monitor = OfflineMonitor(settings, capacity=max(64, len(registry.devices)))
        for dev in registry.devices.values():
            # A device never heard of gets one timeout of grace from startup.
            self.monitor.register(dev.id, dev.interval_s, now)
            if dev.id in last_seen:
                self.monitor.last_seen_ms[self.monitor.index[dev.id]] = last_seen[dev.id]
        # Devices that have never reported: their alert says so, rather than "silent since" a
        # time that is only when monitoring began.
        self._never: set[str] = set(registry.devices) - last_seen.keys()
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
                self._never.discard(device_id)

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
            never = device_id in self._never
            silent = "has never reported; watched since" if never else "silent since"
            engine.raise_alert(
                Alert(
                    site_id=site,
                    device_id=device_id,
                    rule_id=RULE_ID,
                    family=AlertFamily.INTEGRITY,
                    severity=Severity.WARNING,
                    parameter=None,
                    message=(
                        f"device {device_id} {silent} {ms_to_iso(last)}"
                        f" (timeout {res.evidence['timeout_s']:g} s)"
                    ),
                    first_ms=last,
                    last_ms=now,
                    evidence={k: v for k, v in res.evidence.items() if k != "device_id"}
                    | {"score": res.score, "never_reported": never},
                )
            )
