"""API query latency on a store of stated size: one week of 1-minute readings, raw (in pages
of 10,000) and downsampled to hourly, and an alert list with filters, through the real HTTP API.

Fills a SQLite store through the real ingest pipeline (no broker: the subject here is the
query path), serves the real app with uvicorn, and times requests with httpx. Prints the
figures; the last line is a JSON object. `--quick` is a small run for the tests."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from fresh_pg import fresh_database
from ingest_throughput import machine, payload, write_registry

from api.app import create_app
from api.context import AppContext
from domain.model import Alert, AlertFamily, Severity
from domain.timeutil import ms_to_iso, now_ms
from ingest.pipeline import RawMessage
from landun.system import Core, RunConfig, ensure_admin
from store.base import AlertChange
from store.postgres.db import only_row

MINUTE = 60_000
WEEK = 7 * 24 * 60


def fill(core: Core, devices: list[str], minutes: int, rng: random.Random) -> int:
    start = now_ms() - minutes * MINUTE
    batch: list[RawMessage] = []
    recv = now_ms()
    for k in range(minutes):
        for d in devices:
            batch.append(
                RawMessage(
                    f"landun/v1/devices/{d}/telemetry", payload(start + k * MINUTE, k, rng), recv
                )
            )
            if len(batch) == 5000:
                core.pipeline.process(batch)
                batch = []
    if batch:
        core.pipeline.process(batch)
    return start


def add_alerts(core: Core, devices: list[str], n: int, start: int) -> None:
    changes = []
    for i in range(n):
        d = devices[i % len(devices)]
        site = core.registry.devices[d].site_id
        t = start + i * 7 * MINUTE
        alert = Alert(
            site_id=site, device_id=d, rule_id=f"bench:{i}", family=AlertFamily.COMPLIANCE,
            severity=Severity.WARNING if i % 3 else Severity.CRITICAL, parameter="free_chlorine",
            message="bench", first_ms=t, last_ms=t + 20 * MINUTE, opened_ms=t,
        )  # fmt: skip
        changes.append(AlertChange(alert, "opened"))
    core.store.save_alerts(changes)


def fetch_all(client: httpx.Client, url: str, params: dict) -> int:
    """Items of every page, following X-Next-Start (JSON readings come 10,000 a page)."""
    items = 0
    while True:
        r = client.get(url, params=params)
        r.raise_for_status()
        items += len(r.json())
        if "X-Next-Start" not in r.headers:
            return items
        params = params | {"start": r.headers["X-Next-Start"]}


def timed(client: httpx.Client, url: str, params: dict, repeat: int) -> tuple[float, float, int]:
    fetch_all(client, url, params)  # warm caches once
    samples = []
    size = 0
    for _ in range(repeat):
        t = time.perf_counter()
        size = fetch_all(client, url, params)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--minutes", type=int, default=WEEK)
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--database", help="a PostgreSQL server's URL: query a new database there")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.minutes, args.alerts, args.repeat = 3, WEEK, 500, 5
    if args.database:
        with fresh_database(args.database) as url:
            return run(args, url)
    return run(args, None)


def database_mb(work: Path, database: str | None) -> float:
    if database is None:
        return sum(p.stat().st_size for p in (work / "var").glob("landun*.db*")) / 2**20
    with psycopg.connect(database) as conn:
        return only_row(conn.execute("SELECT pg_database_size(current_database())"))[0] / 2**20


def run(args: argparse.Namespace, database: str | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="landun-query-"))
    devices = write_registry(work / "registry.toml", args.devices)
    core = Core.open(
        RunConfig(
            data_dir=work / "var", registry_path=work / "registry.toml", database_url=database
        )
    )
    # The bench is about queries: no detector or alert work while filling.
    core.pipeline.listener = None
    rng = random.Random(1)
    t = time.perf_counter()
    start = fill(core, devices, args.minutes, rng)
    add_alerts(core, devices, args.alerts, start)
    fill_s = time.perf_counter() - t
    ensure_admin(core.store, work, "bench-password")
    ctx = AppContext(core.store, core.registry, core.catalogue, core.engine, core.pipeline.metrics)
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    rows = args.devices * args.minutes * 5
    db_mb = database_mb(work, database)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            token = c.post(
                "/api/v1/auth/login", json={"username": "admin", "password": "bench-password"}
            ).json()["token"]
            c.headers["Authorization"] = f"Bearer {token}"
            week = {"start": ms_to_iso(start), "end": ms_to_iso(now_ms())}
            dev = devices[len(devices) // 2]
            site = core.registry.site_of(dev)
            assert site is not None
            raw = timed(
                c, "/api/v1/readings",
                {"device": dev, "parameter": "free_chlorine", "limit": 10_000} | week, args.repeat,
            )  # fmt: skip
            hourly = timed(
                c, "/api/v1/readings/downsampled",
                {"device": dev, "parameter": "free_chlorine", "every": "1h"} | week, args.repeat,
            )  # fmt: skip
            alerts = timed(
                c, "/api/v1/alerts",
                {"severity": "critical", "family": "compliance", "status": "open",
                 "jurisdiction": site.jurisdiction, "limit": 500},
                args.repeat,
            )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(10)
        core.close()
    print(f"machine: {machine()}")
    print(
        f"store: {rows:,} readings ({args.devices} devices x {args.minutes} min x 5),"
        f" {args.alerts:,} alerts, {db_mb:.0f} MB {'PostgreSQL' if database else 'SQLite'};"
        f" filled in {fill_s:.0f} s"
    )
    for name, (p50, p95, n) in (("week raw", raw), ("week hourly", hourly), ("alerts", alerts)):
        print(f"{name:12s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  ({n} items)")
    print(
        json.dumps(
            {
                "store": "postgresql" if database else "sqlite",
                "readings": rows,
                "alerts": args.alerts,
                "db_mb": round(db_mb, 1),
                "week_raw_p50_ms": round(raw[0], 1),
                "week_raw_rows": raw[2],
                "week_hourly_p50_ms": round(hourly[0], 1),
                "week_hourly_p95_ms": round(hourly[1], 1),
                "week_hourly_buckets": hourly[2],
                "alert_list_p50_ms": round(alerts[0], 1),
                "machine": machine(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
