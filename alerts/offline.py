"""Deadman rule: a device silent for longer than its timeout gets an integrity alert, raised on
the clock (a silent device sends nothing to react to) and resolved when it reports again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from alerts.detectors.offline import OfflineMonitor
from alerts.detectors.settings import OfflineSettings
from domain.model import FUTURE_TS, Alert, AlertFamily, DeadLetter, Reading, Severity
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
        self._heard((r.device_id, r.recv_ms) for r in readings)

    def _heard(self, arrivals: Iterable[tuple[str, int]]) -> None:
        """(device id, receive time) of messages that show a device's link works."""
        newest: dict[str, int] = {}
        for device_id, recv_ms in arrivals:
            if recv_ms > newest.get(device_id, -1):
                newest[device_id] = recv_ms
        for device_id, recv_ms in newest.items():
            if device_id in self.monitor.index:
                self.monitor.seen(device_id, recv_ms)
                self._back.add(device_id)
                self._never.discard(device_id)

    def dead_letters(self, dead: Sequence[DeadLetter], engine: object = None) -> None:
        """A device whose readings are refused because its clock runs ahead is heard: its link
        works, and the clock-skew rule says what is wrong. Other refusals do not count (a device
        sending only garbage would otherwise never show as offline)."""
        self._heard(
            (d.device_id, d.recv_ms)
            for d in dead
            if d.device_id is not None and FUTURE_TS in d.reason
        )

    def tick(self, now: int, engine) -> None:
        overdue = {str(res.evidence["device_id"]): res for res in self.monitor.overdue(now)}
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
