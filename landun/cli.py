"""The `landun` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path

from alerts.notify_webhook import WebhookTarget
from alerts.settings_files import SettingsError
from alerts.startup_settings import load_settings
from domain.logtext import EscapingFilter
from domain.mqtt_connection import BrokerUnusable
from landun import accounts, broker_options, gc_settings
from landun import db as database
from landun.mosquitto_export import add_subparser as add_devices_subparser
from landun.simulate import add_subparser as add_simulate_subparser
from landun.system import RunConfig, StartupError, System, run_hj212_gateway
from store.base import StoreUnavailable
from store.factory import DatabaseUrlError


def _run(args: argparse.Namespace) -> int:
    try:
        broker = broker_options.address_from_args(args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"landun run: {exc}") from None
    try:
        load_settings(args.config_dir)
    except SettingsError as e:
        raise SystemExit(f"settings: {e}") from None
    cfg = RunConfig(
        host=args.host,
        port=args.port,
        broker=broker,
        broker_port=args.broker_port,
        data_dir=Path(args.data_dir),
        database_url=args.database,
        registry_path=Path(args.registry) if args.registry else None,
        simulators=not args.no_simulators,
        sim_interval_s=args.sim_interval,
        client_id=args.client_id,
        worker=args.worker,
        shared_group=args.shared_group,
        hj212_port=args.hj212_port,
        hj212_host=args.hj212_host,
        webhooks=_webhooks(args.webhook),
    )
    database.prepare(cfg.database_url)
    gc_settings.settle()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(System(cfg).run())
    except StartupError as exc:
        print(f"landun: {exc}", file=sys.stderr, flush=True)
        return 2
    except BrokerUnusable as exc:
        print(f"landun run: cannot use the broker {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def _webhooks(urls: list[str] | None) -> list[WebhookTarget]:
    if not urls:
        return []
    secret = os.environ.get("LANDUN_WEBHOOK_SECRET")
    if not secret:
        raise SystemExit("--webhook needs LANDUN_WEBHOOK_SECRET (the HMAC-SHA256 signing key)")
    return [WebhookTarget(url, secret) for url in urls]


def _hj212_gateway(args: argparse.Namespace) -> int:
    cfg = RunConfig(
        data_dir=Path(args.data_dir),
        database_url=args.database,
        registry_path=Path(args.registry) if args.registry else None,
        hj212_port=args.hj212_port,
        hj212_host=args.hj212_host,
    )
    database.prepare(cfg.database_url)
    gc_settings.settle()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_hj212_gateway(cfg))
    return 0


def _role(args: argparse.Namespace) -> int:
    """`landun ingest`, `landun alerts`, `landun api`: one role each, over PostgreSQL."""
    from landun import roles

    try:
        broker = broker_options.address_from_args(args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"landun {args.command}: {exc}") from None
    try:
        load_settings(getattr(args, "config_dir", None))
    except SettingsError as e:
        raise SystemExit(f"settings: {e}") from None
    cfg = roles.RoleConfig(
        database_url=args.database,
        broker=broker,
        registry_path=Path(args.registry) if args.registry else None,
        data_dir=Path(args.data_dir),
        host=args.host,
        port=args.port,
        worker=args.worker,
        client_id=getattr(args, "client_id", None),
        hj212_port=getattr(args, "hj212_port", None),
        hj212_host=getattr(args, "hj212_host", "127.0.0.1"),
        webhooks=_webhooks(getattr(args, "webhook", None)),
        tick_s=getattr(args, "tick", 5.0),
    )
    run = {"ingest": roles.run_ingest, "alerts": roles.run_alerts, "api": roles.run_api}
    database.prepare(cfg.database_url)
    gc_settings.settle()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run[args.command](cfg))
    except StartupError as exc:
        print(f"landun {args.command}: {exc}", file=sys.stderr, flush=True)
        return 2
    except BrokerUnusable as exc:
        print(f"landun {args.command}: cannot use the broker {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def _add_role_parsers(sub: argparse._SubParsersAction) -> None:
    helps = {
        "ingest": "run only ingest (MQTT, HJ 212 -> store); any number, on one shared subscription",
        "alerts": "run only an alert worker (partitions by lease); any number",
        "api": "run only the API and dashboard; any number",
    }
    for name, what in helps.items():
        p = sub.add_parser(name, help=what)
        database.add_database_argument(p)
        broker_options.add_arguments(p, "the broker: mqtt://host:1883, mqtts://host:8883, ...")
        p.add_argument("--registry", help="registry TOML (default: the demo registry)")
        p.add_argument("--config-dir", help="settings files replacing the packaged ones")
        p.add_argument("--data-dir", default="var", help="where the admin password file goes")
        if name == "api":
            p.add_argument("--host", default="127.0.0.1", help="API bind address")
            p.add_argument("--port", type=int, default=8000, help="API port")
        else:
            p.add_argument("--metrics-host", dest="host", default="127.0.0.1")
            p.add_argument(
                "--metrics-port",
                dest="port",
                type=int,
                help="serve /metrics and /healthz on this port (default: none)",
            )
        p.add_argument(
            "--worker",
            type=int,
            default=0,
            help="this process's number among its role's processes on one host: its MQTT client"
            " id, its own per process",
        )
        if name == "ingest":
            p.add_argument("--client-id", help="the MQTT client id (default: from --worker)")
            p.add_argument("--hj212-port", type=int, help="also take HJ 212 loggers on this port")
            p.add_argument("--hj212-host", default="127.0.0.1", help="HJ 212 bind address")
        if name == "alerts":
            p.add_argument("--webhook", action="append", help="POST alert changes here")
            p.add_argument(
                "--tick", type=float, default=5.0, help="seconds between time-driven rule runs"
            )
        p.set_defaults(func=_role)


# Commands whose options belong to another module's `main(argv)`.
DELEGATED = {
    "eval": ("alerts.evaluation", "score the detectors on a labelled CSV (GECCO 2018)"),
    "eval-scenarios": ("landun.evaluate", "score alerts on simulated fault scenarios"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="landun", description="Landun online monitoring")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole system in one process")
    run.add_argument("--host", default="127.0.0.1", help="API bind address")
    run.add_argument("--port", type=int, default=8000, help="API port")
    broker_options.add_arguments(
        run, "external broker: mqtt://host:1883, mqtts://host:8883, ws:// or wss://"
    )
    run.add_argument("--broker-port", type=int, default=1883, help="embedded broker port")
    run.add_argument("--data-dir", default="var", help="where the SQLite database lives")
    database.add_database_argument(run)
    run.add_argument("--registry", help="registry TOML (default: the demo registry)")
    run.add_argument(
        "--config-dir",
        help="settings files (detectors.toml, engine.toml, custody.toml, channels.toml, "
        "standards/*.toml) that replace the packaged ones of the same name, and notify.toml "
        "(notification channels and their credentials, named by environment variable or file)",
    )
    run.add_argument("--no-simulators", action="store_true", help="do not run simulators")
    run.add_argument("--sim-interval", type=int, help="simulated reporting interval, seconds")
    run.add_argument("--client-id", help="ingest's MQTT client id (default: from --worker)")
    run.add_argument(
        "--worker",
        type=int,
        default=0,
        help="this worker's number: client id landun-ingest-<host>-<worker>, its own per worker",
    )
    run.add_argument(
        "--shared-group",
        help="share the subscription with other workers (each judges alerts only on its share)",
    )
    run.add_argument(
        "--webhook",
        action="append",
        help="POST alert changes here (repeatable); signed with $LANDUN_WEBHOOK_SECRET",
    )
    run.add_argument("--hj212-port", type=int, help="also take HJ 212 loggers on this TCP port")
    run.add_argument("--hj212-host", default="127.0.0.1", help="HJ 212 bind address")
    run.set_defaults(func=_run)

    _add_role_parsers(sub)
    accounts.add_subparsers(sub)
    database.add_subparser(sub)
    add_devices_subparser(sub)
    add_simulate_subparser(sub)
    for name, (_, what) in DELEGATED.items():
        sub.add_parser(name, help=f"{what} (`landun {name} --help`)")

    gw = sub.add_parser("hj212-gateway", help="run only the HJ 212 TCP gateway")
    gw.add_argument(
        "--host",
        dest="hj212_host",
        default="127.0.0.1",
        help="bind address (default: this machine only; 0.0.0.0 takes loggers from the network)",
    )
    gw.add_argument("--port", dest="hj212_port", type=int, default=9212, help="TCP port")
    gw.add_argument("--data-dir", default="var", help="where the SQLite database lives")
    database.add_database_argument(gw)
    gw.add_argument("--registry", help="registry TOML (default: the demo registry)")
    gw.set_defaults(func=_hj212_gateway)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(EscapingFilter())  # a newline or NUL from outside cannot forge a line
    try:
        return args.func(args)
    except (StoreUnavailable, DatabaseUrlError) as exc:
        print(f"landun: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
