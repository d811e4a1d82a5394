"""One ingest worker as its own process, for tests/test_reliability.py to kill, starve and share.

It wires exactly the production ingest path (SqliteStore, or PostgresStore when --db is a
postgresql:// URL, + IngestPipeline + MqttSubscriber) and
nothing else: no API, no alert engine, no simulators. That keeps the start fast and the failures
the tests provoke attributable to ingest alone. Every 0.1 s it writes its state (metrics, queue
depth, connection) as JSON to --status, atomically, so the test can read it even after a kill -9.
SIGTERM stops it the way `landun run` stops: finish the batch in hand, disconnect, close.

    python -m tests.reliability_worker --broker mqtt://127.0.0.1:1883 --db DB --status STATUS
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import threading
from pathlib import Path

from domain.mqtt_connection import BrokerAddress
from domain.params import default_catalogue
from domain.registry import load_registry
from ingest.kinds import standard_decoders
from ingest.mqtt import MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestPipeline
from landun.demo import demo_registry_path
from store.base import Store
from store.postgres.store import PostgresStore
from store.sqlite import SqliteStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    p.add_argument("--db", required=True, help="SQLite file, or a postgresql:// URL")
    p.add_argument("--status", required=True, type=Path, help="JSON state file to keep current")
    p.add_argument("--registry", type=Path, default=demo_registry_path())
    p.add_argument("--client-id", default="landun-ingest")
    p.add_argument("--shared-group")
    p.add_argument("--queue-max", type=int, default=SubscriberSettings().queue_max)
    p.add_argument(
        "--busy-timeout-ms",
        type=int,
        help="SQLite busy timeout of the writer (store/sqlite.py fixes 5000 ms and has no setting)",
    )
    return p.parse_args(argv)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_status(path: Path, sub: MqttSubscriber, stopped: bool) -> None:
    state = {
        "pid": os.getpid(),
        "connected": sub.connected,
        "subscribed": sub.subscribed,
        "queue_depth": sub.queue_depth,
        "queue_max": sub.settings.queue_max,
        "rss_kb": rss_kb(),
        "stopped": stopped,
        "metrics": dataclasses.asdict(sub.pipeline.metrics),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # A short busy timeout lets the store-outage test see failures fast instead of waiting
    # out the default 5 s on every attempt.
    if args.db.startswith("postgresql://"):
        store: Store = PostgresStore(args.db)
    else:
        store = SqliteStore(args.db, busy_timeout_ms=args.busy_timeout_ms or 5000)
    pipeline = IngestPipeline(
        store, load_registry(args.registry), standard_decoders(default_catalogue())
    )
    settings = SubscriberSettings(
        client_id=args.client_id, shared_group=args.shared_group, queue_max=args.queue_max
    )
    sub = MqttSubscriber(pipeline, BrokerAddress.parse(args.broker), settings)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sub.start(wait_s=0)
    while not stop.wait(0.1):
        write_status(args.status, sub, stopped=False)
    sub.stop()
    store.close()
    write_status(args.status, sub, stopped=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
