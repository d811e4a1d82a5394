"""The alert feed's vocabulary: which partition a site belongs to, its settings, and one entry.

Ingest appends, in the transaction that commits a batch, one entry per partition the batch
touches; within a partition the entries are numbered in commit order (store.postgres.feed). The
alert stage reads them after its partition's cursor and writes its alert changes together with
the cursor advance."""

from __future__ import annotations

import tomllib
import zlib
from dataclasses import dataclass
from importlib import resources

from domain.model import DeadLetter, Reading
from domain.waste import WasteCategory, WasteEvent, WasteEventKind

# The action an API records when a site changes: its partition is rebuilt with the edit.
SITE_EDITED = "site_edited"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    partitions: int
    lease_check_s: float
    keepalive_idle_s: int
    keepalive_interval_s: int
    keepalive_count: int
    batch_entries: int
    poll_s: float
    hold_ms: int
    judge_every_ms: int
    replay_h: float


def load_feed_settings() -> FeedSettings:
    text = resources.files("store").joinpath("data/feed.toml").read_text("utf-8")
    s = FeedSettings(**tomllib.loads(text)["feed"])
    if s.partitions < 1 or s.batch_entries < 1:
        raise ValueError("store/data/feed.toml: partitions and batch_entries must be positive")
    return s


def partition_of(site_id: str, partitions: int) -> int:
    """A stable hash (the same in every process and release, unlike `hash`) of the site: the
    site-level rules (custody, site alerts) need all of a site's devices in one partition, so a
    device's partition is its site's."""
    return zlib.crc32(site_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """What one committed batch brought to one partition: the readings newly stored (never a
    duplicate), the waste events the ledger had not seen, and the dead letters."""

    part: int
    pos: int
    committed_ms: int
    readings: list[Reading]
    events: list[WasteEvent]
    dead: list[DeadLetter]


def encode_entry(readings: list[Reading], events: list[WasteEvent], dead: list[DeadLetter]) -> dict:
    """A JSON-ready form (the raw bytes of dead letters stay in their table)."""
    return {
        "r": [list(r) for r in readings],
        "e": [
            [
                e.device_id,
                e.site_id,
                str(e.event),
                e.bag_id,
                e.ts_ms,
                e.recv_ms,
                None if e.category is None else str(e.category),
                e.weight_kg,
                e.department,
                e.manifest_id,
                e.carrier,
            ]
            for e in events
        ],
        "d": [[d.topic, d.device_id, d.recv_ms, d.reason, d.source] for d in dead],
    }


def decode_entry(part: int, pos: int, committed_ms: int, doc: dict) -> FeedEntry:
    return FeedEntry(
        part,
        pos,
        committed_ms,
        [Reading(*r) for r in doc.get("r", ())],
        [
            WasteEvent(
                d,
                s,
                WasteEventKind(k),
                b,
                ts,
                recv,
                None if c is None else WasteCategory(c),
                w,
                dep,
                man,
                car,
            )
            for d, s, k, b, ts, recv, c, w, dep, man, car in doc.get("e", ())
        ],
        [DeadLetter(t, dev, recv, why, b"", src) for t, dev, recv, why, src in doc.get("d", ())],
    )
