"""The built-in demo for `landun run`: the demo registry's pools, one with a failing dosing pump."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from domain.model import SiteKind
from domain.registry import Registry
from domain.waste import WASTE_SCANNER, WASTE_STORE_SENSOR
from simulators.faults import Fault, FaultKind
from simulators.hospital_model import HospitalModel
from simulators.pool_model import PoolModel
from simulators.runner import SimDevice

HOUR_MS = 3_600_000
# The demo starts with this much history (published at once, as devices flushing their buffers),
# so charts have data and the failing pool's alert is already open within the first minute.
BACKFILL_MS = 6 * HOUR_MS
FAILING_SITE = "pool-xh-03"


def demo_registry_path() -> Path:
    return Path(str(resources.files("landun").joinpath("data/demo_registry.toml")))


def demo_devices(registry: Registry, now: int, seed: int = 7) -> list[SimDevice]:
    start = now - BACKFILL_MS
    devices = []
    for i, dev in enumerate(sorted(registry.devices.values(), key=lambda d: d.id)):
        site = registry.sites[dev.site_id]
        if site.kind is not SiteKind.POOL or dev.mn is not None:
            continue  # HJ 212 loggers are simulated over TCP, not MQTT
        faults = []
        if site.id == FAILING_SITE:
            faults.append(Fault(FaultKind.DOSING_PUMP_FAILURE, start + HOUR_MS, now + 24 * HOUR_MS))
        model = PoolModel(
            dev.id,
            seed + i,
            indoor="outdoor" not in site.name.lower(),
            interval_s=dev.interval_s,
            faults=faults,
            start_ms=start,
        )
        devices.append(SimDevice(site.id, dev.id, model))
    for i, site in enumerate(s for s in registry.sites.values() if s.kind is SiteKind.MEDICAL):
        by_kind = {d.kind: d for d in registry.devices_of(site.id)}
        scanner, sensor = by_kind.get(WASTE_SCANNER), by_kind.get(WASTE_STORE_SENSOR)
        if scanner is None or sensor is None:
            continue
        hospital = HospitalModel(
            site.id, scanner.id, sensor.id, seed + 100 + i, start, interval_s=sensor.interval_s
        )
        devices.append(SimDevice(site.id, sensor.id, hospital))
        devices.append(SimDevice(site.id, scanner.id, hospital, topic="events"))
    return devices
