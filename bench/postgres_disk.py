"""PostgreSQL disk per reading: writes `--days` of a city's readings (`--sites` pools, five
parameters a minute) through PostgresStore.write_batch into a new database on the server at
`--url`, then reports the readings partitions' size (table and primary key) and the write rate.
The database is dropped at the end. The last line is a JSON object."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from fresh_pg import fresh_database

from domain.model import Reading
from store.postgres.db import only_row
from store.postgres.store import PostgresStore

T0 = 1_795_334_400_000  # 2026-11-22 00:00 UTC
PARAMETERS = ("free_chlorine", "ph", "turbidity", "orp", "temperature")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="postgresql://landun:landun@127.0.0.1:5432/postgres")
    ap.add_argument("--sites", type=int, default=150)
    ap.add_argument("--days", type=float, default=1.0)
    args = ap.parse_args()
    with fresh_database(args.url) as url:
        store = PostgresStore(url)
        written, started = 0, time.perf_counter()
        for minute in range(int(args.days * 1440)):
            ts = T0 + minute * 60_000
            batch = [
                Reading(f"pool-{s:04d}-wq", f"pool-{s:04d}", p, ts, 0.5, "N", ts + 900, minute)
                for s in range(args.sites)
                for p in PARAMETERS
            ]
            written += store.write_batch(batch)
        elapsed = time.perf_counter() - started
        store.close()
        with psycopg.connect(url) as conn:
            size = only_row(
                conn.execute(
                    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                    " WHERE inhparent = 'readings'::regclass"
                )
            )[0]
    per_reading = int(size) / written
    year = args.sites * len(PARAMETERS) * 1440 * 365
    print(f"{written} readings in {elapsed:.1f} s ({written / elapsed:,.0f} readings/s)")
    print(f"{int(size):,} bytes: {per_reading:.0f} bytes a reading")
    print(f"a year of {args.sites} sites: {year * per_reading / 1e9:.0f} GB")
    print(
        json.dumps(
            {
                "readings": written,
                "bytes": int(size),
                "bytes_per_reading": round(per_reading, 1),
                "readings_per_s": round(written / elapsed),
                "year_gb": round(year * per_reading / 1e9, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
