"""`landun simulate`: simulated pools against any broker (JSON over MQTT) or HJ 212 endpoint.

Devices are `sim-pool-NNN-wq` at sites `sim-pool-NNN` unless a registry names real ones;
`--registry-out` writes a registry for the simulated devices so Landun can be told about them.
With `--speed` above 1 the run lies in the past and replays faster than real time, with
simulated timestamps; a scenario injects its fault and `--ground-truth` writes what should fire.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

from domain.mqtt_connection import BrokerUnusable, describe_failure
from domain.registry import load_registry
from domain.timeutil import ms_to_iso, now_ms
from landun import broker_options
from simulators.ground_truth import ground_truth, write_ground_truth
from simulators.hj212_logger import Hj212LoggerRunner
from simulators.pool_model import PoolModel
from simulators.runner import RunnerSettings, SimDevice, SimulatorRunner
from simulators.scenarios import list_scenarios, load_scenario

PARAMETERS = ["free_chlorine", "combined_chlorine", "ph", "turbidity", "orp", "temperature"]
UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """`90s`, `30m`, `12h`, `7d`."""
    try:
        return int(float(text[:-1]) * UNITS_MS[text[-1]])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and s, m, h or d") from None


def pool_devices(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """(site, device, HJ 212 MN) of the pools to simulate."""
    if args.registry:
        reg = load_registry(Path(args.registry))
        pools = [d for d in reg.devices.values() if reg.sites[d.site_id].kind == "pool"]
        return [(d.site_id, d.id, d.mn) for d in sorted(pools, key=lambda d: d.id)][: args.sites]
    return [
        (f"sim-pool-{i:03d}", f"sim-pool-{i:03d}-wq", f"LDSIM{i:019d}")
        for i in range(1, args.sites + 1)
    ]


def registry_toml(devices: list[tuple[str, str, str | None]], jurisdiction: str) -> str:
    out = []
    for site, device, mn in devices:
        out += [
            "[[sites]]",
            f'id = "{site}"',
            f'name = "Simulated pool {site}"',
            'kind = "pool"',
            f'jurisdiction = "{jurisdiction}"',
            "",
            "[[devices]]",
            f'id = "{device}"',
            f'site = "{site}"',
            'kind = "pool_analyzer"',
            f"parameters = {PARAMETERS!r}".replace("'", '"'),
            *([f'mn = "{mn}"'] if mn else []),
            "",
        ]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    devices = pool_devices(args)
    if args.registry_out:
        Path(args.registry_out).write_text(registry_toml(devices, args.jurisdiction))
        print(f"registry for {len(devices)} simulated devices written to {args.registry_out}")
    span = args.duration
    if span <= 0:
        return 0  # nothing to simulate: only the registry was wanted
    now = now_ms()
    # Faster than real time means simulated timestamps: the run then ends now at the latest.
    start = now - span if args.speed > 1 else now
    end = start + span
    scenario = load_scenario(args.scenario) if args.scenario else None
    models = []
    for i, (site, device, _) in enumerate(devices):
        faults = scenario.faults_for(i, start) if scenario else []
        model = PoolModel(
            device,
            args.seed + i,
            indoor=i % 4 != 3,
            interval_s=args.interval,
            faults=faults,
            start_ms=start,
        )
        models.append(SimDevice(site, device, model))
    if args.ground_truth and scenario:
        records = ground_truth(scenario, start, [(d.site_id, d.device_id) for d in models])
        write_ground_truth(args.ground_truth, records)
        print(f"ground truth ({len(records)} expected alerts) written to {args.ground_truth}")
    settings = RunnerSettings(
        interval_s=args.interval, speed=args.speed, start_ms=start, end_ms=end, seed=args.seed
    )
    runner: Hj212LoggerRunner | SimulatorRunner
    if args.hj212:
        host, port = args.hj212.rsplit(":", 1)
        runner = Hj212LoggerRunner(
            host, int(port), models, settings, mn_of={d: mn for _, d, mn in devices if mn}
        )
    else:
        secrets = None
        if args.device_secrets:
            secrets = tomllib.loads(Path(args.device_secrets).read_text("utf-8"))
        try:
            broker = broker_options.address_from_args(args)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"landun simulate: {exc}") from None
        assert broker is not None  # --broker has a default
        try:
            runner = SimulatorRunner(broker, models, settings, credentials=secrets)
        except BrokerUnusable as exc:
            raise SystemExit(f"landun simulate: cannot use the broker {exc}") from None
    print(
        f"simulating {len(models)} pools from {ms_to_iso(start)} to {ms_to_iso(end)}"
        f" at {args.speed:g}x, every {args.interval} s"
        f"{f', scenario {scenario.id}' if scenario else ''}; Ctrl-C stops",
        flush=True,
    )
    try:
        runner.start()
    except OSError as exc:
        raise SystemExit(f"landun simulate: cannot connect: {describe_failure(exc)}") from None
    try:
        while not runner.finished:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    print(f"published {runner.published} samples")
    return 0


def add_subparser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulated pools against any broker or HJ 212 endpoint")
    broker_options.add_arguments(
        p, "mqtt://host:port, mqtts://host:8883, ws:// or wss://", "mqtt://127.0.0.1:1883"
    )
    p.add_argument("--hj212", metavar="HOST:PORT", help="send HJ 212 over TCP instead of MQTT")
    p.add_argument("--device-secrets", help="TOML of device-id = password (per-device login)")
    p.add_argument("--registry", help="simulate the pools of this registry")
    p.add_argument("--registry-out", help="write a registry for the simulated devices")
    p.add_argument("--jurisdiction", default="310104", help="for --registry-out")
    p.add_argument("--sites", type=int, default=5, help="how many pools")
    p.add_argument("--scenario", choices=list_scenarios(), help="inject this fault scenario")
    p.add_argument("--ground-truth", help="write the expected alerts (JSON) here")
    p.add_argument("--speed", type=float, default=1.0, help="simulated time per wall time")
    p.add_argument("--duration", type=duration_ms, default="1d", help="e.g. 12h, 7d")
    p.add_argument("--interval", type=int, default=60, help="reporting interval, seconds")
    p.add_argument("--seed", type=int, default=1, help="same seed, same data")
    p.set_defaults(func=run)
