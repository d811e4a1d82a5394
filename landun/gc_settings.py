"""Garbage-collector settings for Landun's long-running processes (`landun run`,
`landun hj212-gateway`), applied once their modules are loaded.

CPython collects its youngest generation every 700 net allocations. Ingest allocates several
objects per reading (the decoded document, the Reading, its row for SQLite), so a batch in flight
outlives a few collections and is promoted to the oldest generation. That generation then grew
fast enough that full collections ran several times a second during a backlog drain, each
holding every thread, and freed nothing. With a young generation of 50,000 objects a batch dies
young and full collections become rare (README, Benchmarks, "Memory settings": the figures).
Objects alive at startup (modules, the API app) are frozen: full collections no longer walk them.
"""

from __future__ import annotations

import gc

YOUNG_OBJECTS = 50_000
# Collections of a generation before the next older one is collected too (CPython: 10).
OLDER_EVERY = 20


def settle() -> None:
    """Freeze what exists now and enlarge the young generation; call once, after imports."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, OLDER_EVERY, OLDER_EVERY)
