"""The store's write path alone: `write_batch` of whole batches, as ingest commits them, without
the broker, decoding or alert evaluation.

Two shapes: the ingest bench's (2,000 devices x 5 parameters, every batch one reading of each
series) and a city's (150 sites x 8 parameters, a batch a minute of sensor time). The store is
filled with `--prefill` batches first; then `--batches` more are timed. Prints readings/s, the
median and worst commit, this process's CPU a reading, and on PostgreSQL the server backends'
CPU a reading (read from /proc: the server must run on this machine). The last line is JSON.

`--database postgresql://...` runs it on a fresh database on that server; default SQLite in a
temporary directory."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fresh_pg import fresh_database

from domain.model import Reading
from store.base import Store
from store.postgres.store import PostgresStore
from store.sqlite import SqliteStore

SHAPES = {"bench": (2000, 5), "city": (150, 8)}  # devices, parameters
MINUTE = 60_000
T0 = 1_795_334_400_000  # 2026-11-22 00:00 UTC


def batch(devices: int, parameters: int, minute: int) -> list[Reading]:
    ts = T0 + minute * MINUTE
    return [
        Reading(f"dev-{d:05d}", f"site-{d:05d}", f"p{p}", ts, 7.0 + d / 1000, "N", ts, minute)
        for d in range(devices)
        for p in range(parameters)
    ]


def server_cpu_s(store: Store) -> float | None:
    """CPU seconds of the server backends serving this store's database (PostgreSQL only)."""
    if not isinstance(store, PostgresStore):
        return None
    pids = [
        pid
        for (pid,) in store.db.rows(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
    ]
    ticks = 0
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                return None  # the server runs on another machine
            fields = Path(f"/proc/{pid}/stat").read_text().split()
        except OSError:  # ended meanwhile, or no such process here
            continue
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, database: str | None) -> dict:
    devices, parameters = SHAPES[args.shape]
    work = Path(tempfile.mkdtemp(prefix="landun-store-write-"))
    store: Store = PostgresStore(database) if database else SqliteStore(work / "landun.db")
    try:
        for minute in range(args.prefill):
            store.write_batch(batch(devices, parameters, minute))
        timed = [batch(devices, parameters, args.prefill + m) for m in range(args.batches)]
        commits = []
        server0, cpu0, wall0 = server_cpu_s(store), time.process_time(), time.monotonic()
        for b in timed:
            t = time.monotonic()
            store.write_batch(b)
            commits.append(time.monotonic() - t)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        server1 = server_cpu_s(store)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    n = sum(map(len, timed))
    server = None if server0 is None or server1 is None else server1 - server0
    return {
        "store": "postgresql" if database else "sqlite",
        "shape": args.shape,
        "series": devices * parameters,
        "readings": n,
        "readings_per_s": round(n / wall),
        "commit_p50_ms": round(statistics.median(commits) * 1000, 1),
        "commit_max_ms": round(max(commits) * 1000, 1),
        "client_cpu_us_per_reading": round(cpu / n * 1e6, 2),
        "server_cpu_us_per_reading": None if server is None else round(server / n * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bench")
    ap.add_argument("--prefill", type=int, default=100, help="batches written before timing")
    ap.add_argument("--batches", type=int, default=30, help="batches timed")
    ap.add_argument("--database", help="a PostgreSQL server's URL: write to a new database there")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.prefill, args.batches = 2, 3
    if args.database:
        with fresh_database(args.database) as url:
            figures = run(args, url)
    else:
        figures = run(args, None)
    print(
        f"{figures['store']}, {args.shape} shape ({figures['series']:,} series a batch):"
        f" {figures['readings_per_s']:,} readings/s, commit p50 {figures['commit_p50_ms']} ms,"
        f" max {figures['commit_max_ms']} ms; CPU a reading: this process"
        f" {figures['client_cpu_us_per_reading']} us, server {figures['server_cpu_us_per_reading']}"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
