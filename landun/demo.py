"""The built-in demo for `landun run`: the demo registry's pools, one with a failing dosing pump,
its hospital, its drinking-water supplies, one with a failed chlorine doser, and its tableware
disinfection unit, one line with a failing steam cabinet.

The demo's past is fixed by an anchor, the time of its first start, kept in the data directory.
The simulated devices are deterministic from the anchor, so a restart replays the same past
silently and publishes only what the store does not hold yet: the data continue where they
stopped instead of a second, different history being sent over the first."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from domain.model import SiteKind
from domain.registry import Registry
from domain.tableware import line_spec
from domain.waste import WASTE_SCANNER, WASTE_STORE_SENSOR
from simulators.faults import Fault, FaultKind
from simulators.hospital_model import HospitalModel
from simulators.pool_model import PoolModel
from simulators.runner import RunnerSettings, SimDevice
from simulators.tableware_model import LineFault, LineFaultKind, TablewareModel
from simulators.water_model import SECONDARY, WaterModel
from store.base import Store

HOUR_MS = 3_600_000
# The demo starts with this much history (published at once, as devices flushing their buffers),
# so charts have data and the failing pool's alert is already open within the first minute.
BACKFILL_MS = 6 * HOUR_MS
FAILING_SITE = "pool-xh-03"
# The small drinking-water supply whose chlorine doser failed when the pool's pump did: its
# chlorine has decayed below the GB 5749 tap minimum long before the backfill starts.
FAILING_WATER_SITE = "water-cn-01"
WATER = SiteKind.DRINKING_WATER
# The water models' seeds start here: where they stood when the supplies joined the demo, so
# tests/test_demo.py's figures for them hold.
WATER_SEED_BASE = 8
FAILING_LINE = "tw-xh-01-line1"  # its steam cabinet sags below 100 °C in every cycle
# The failing pool's dosing pump broke the day before the anchor. Chlorine falls fast only while
# bathers are in the water; 26 h always hold a full opening day, so the whole backfill is below
# the 0.3 mg/L limit whatever the hour the demo first starts (tests/test_demo.py checks every
# half hour of a week).
PUMP_FAILED_BEFORE_MS = 26 * HOUR_MS
# The models run this long before the pump fails, so the water starts from a settled state.
WARMUP_MS = HOUR_MS
# A demo stopped for longer than this starts a new past rather than replaying days of it.
MAX_REPLAY_MS = 7 * 24 * HOUR_MS
ANCHOR_FILE = "demo-anchor.txt"
NEVER_MS = 2**62  # the demo's pump is never repaired


def demo_registry_path() -> Path:
    return Path(str(resources.files("landun").joinpath("data/demo_registry.toml")))


def demo_anchor(data_dir: Path, now: int) -> int:
    """The demo's anchor: read from the data directory, or `now` (and written) on a first start
    or when the old one is too old to replay."""
    path = data_dir / ANCHOR_FILE
    try:
        anchor = int(path.read_text().strip())
    except (OSError, ValueError):
        anchor = None
    if anchor is None or not now - MAX_REPLAY_MS <= anchor <= now:
        anchor = now
        path.write_text(f"{anchor}\n")
    return anchor


def newest_sensor_time(store: Store, device_ids: Iterable[str]) -> int | None:
    """The newest sensor time the store holds for any of the devices."""
    times = [r.ts_ms for d in device_ids for r in store.latest_readings(d)]
    return max(times, default=None)


def demo_devices(registry: Registry, anchor: int, seed: int = 7) -> list[SimDevice]:
    """The demo's devices that speak MQTT, their models starting `WARMUP_MS` before the pump
    fails."""
    start = model_start(anchor)
    devices = [d for d in _pools(registry, start, seed) if registry.devices[d.device_id].mn is None]
    devices += _water(registry, start, seed)
    for i, site in enumerate(s for s in registry.sites.values() if s.kind == SiteKind.MEDICAL):
        by_kind = {d.kind: d for d in registry.devices_of(site.id)}
        scanner, sensor = by_kind.get(WASTE_SCANNER), by_kind.get(WASTE_STORE_SENSOR)
        if scanner is None or sensor is None:
            continue
        hospital = HospitalModel(
            site.id, scanner.id, sensor.id, seed + 100 + i, start, interval_s=sensor.interval_s
        )
        devices.append(SimDevice(site.id, sensor.id, hospital))
        devices.append(SimDevice(site.id, scanner.id, hospital, topic="events"))
    return devices + demo_lines(registry, anchor - BACKFILL_MS, seed)


def demo_lines(registry: Registry, start: int, seed: int = 7) -> list[SimDevice]:
    """The demo's disinfection lines, around the clock, their first cycle at `start` (the start
    of the backfill: no cycle is cut in half by it); the failing line's steam supply sags
    mid-hold in every cycle. Telemetry comes before events, so a cycle's readings are stored
    when its end is judged."""
    devices = []
    for i, dev in enumerate(sorted(registry.devices.values(), key=lambda d: d.id)):
        spec = line_spec(dev)
        if spec is None:
            continue
        faults = []
        if dev.id == FAILING_LINE:
            faults.append(LineFault(LineFaultKind.FAILING_STEAM_CABINET, start, NEVER_MS))
        model = TablewareModel(
            dev.id,
            spec.line_id,
            spec.method,
            spec.capacity_sets,
            seed + 200 + i,
            start,
            faults=faults,
            hours=(0.0, 24.0),
        )
        devices.append(SimDevice(dev.site_id, dev.id, model))
        devices.append(SimDevice(dev.site_id, dev.id, model, topic="events"))
    return devices


def demo_loggers(registry: Registry, anchor: int, seed: int = 7) -> list[SimDevice]:
    """The demo's pools whose analyzers report through an HJ 212 logger (registry `mn`)."""
    pools = _pools(registry, model_start(anchor), seed)
    return [d for d in pools if registry.devices[d.device_id].mn is not None]


def _pools(registry: Registry, start: int, seed: int) -> list[SimDevice]:
    devices = []
    for i, dev in enumerate(sorted(registry.devices.values(), key=lambda d: d.id)):
        site = registry.sites[dev.site_id]
        if site.kind != SiteKind.POOL:
            continue
        faults = []
        if site.id == FAILING_SITE:
            faults.append(Fault(FaultKind.DOSING_PUMP_FAILURE, start + WARMUP_MS, NEVER_MS))
        model = PoolModel(
            dev.id,
            seed + i,
            indoor="outdoor" not in site.name.lower(),
            interval_s=dev.interval_s,
            faults=faults,
            start_ms=start,
        )
        devices.append(SimDevice(site.id, dev.id, model))
    return devices


def _water(registry: Registry, start: int, seed: int) -> list[SimDevice]:
    devices = []
    # Seeded by place among the water devices, so other kinds added to the demo change nothing.
    water = [d for d in registry.devices.values() if registry.sites[d.site_id].kind == WATER]
    for i, dev in enumerate(sorted(water, key=lambda d: d.id)):
        site = registry.sites[dev.site_id]
        faults = []
        if site.id == FAILING_WATER_SITE:
            faults.append(Fault(FaultKind.DOSING_PUMP_FAILURE, start + WARMUP_MS, NEVER_MS))
        model = WaterModel(
            dev.id,
            seed + WATER_SEED_BASE + i,
            subtype=site.subtype or SECONDARY,
            interval_s=dev.interval_s,
            faults=faults,
            start_ms=start,
        )
        devices.append(SimDevice(site.id, dev.id, model))
    return devices


def model_start(anchor: int) -> int:
    return anchor - PUMP_FAILED_BEFORE_MS - WARMUP_MS


def demo_settings(
    anchor: int, now: int, newest_stored_ms: int | None, interval_s: int = 60
) -> RunnerSettings:
    """Simulate from the models' start; publish from the backfill's start, or from just after
    the newest reading an earlier run stored; send everything up to `now` at once."""
    publish_from = anchor - BACKFILL_MS
    if newest_stored_ms is not None:
        publish_from = max(publish_from, newest_stored_ms + 1)
    return RunnerSettings(
        interval_s=interval_s,
        start_ms=model_start(anchor),
        backfill_until_ms=now,
        publish_from_ms=publish_from,
    )
