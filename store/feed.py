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

import orjson

from domain.model import DeadLetter, Reading
from domain.tableware import LineEvent, LineEventKind, Method
from domain.tanks import TankEvent
from domain.waste import WasteCategory, WasteEvent, WasteEventKind

# The action an API records when a site changes: its partition is rebuilt with the edit.
SITE_EDITED = "site_edited"

# A poison entry set aside (alerts/feed.py) is a dead letter of this source, named by its place
# in the feed; at most this much of its body is kept, as ingest keeps of a raw payload.
POISON_SOURCE = "alert-feed"
POISON_RAW_MAX = 64 * 1024

# Every kind of event a ledger records and the alert rules judge (bag scans, a disinfection
# line's cycles and batches, tank cleaning records).
Event = WasteEvent | LineEvent | TankEvent


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
    duplicate), the events a ledger had not seen, and the dead letters. An entry that cannot be
    decoded comes empty with `poison` saying why and `body` as stored."""

    part: int
    pos: int
    committed_ms: int
    readings: list[Reading]
    events: list[Event]
    dead: list[DeadLetter]
    poison: str | None = None
    body: str = ""


def encode_entry(readings: list[Reading], events: list[Event], dead: list[DeadLetter]) -> dict:
    """A JSON-ready form (the raw bytes of dead letters stay in their table)."""
    waste = [e for e in events if isinstance(e, WasteEvent)]
    lines = [e for e in events if isinstance(e, LineEvent)]
    tanks = [e for e in events if isinstance(e, TankEvent)]
    doc = {
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
            for e in waste
        ],
        "d": [[d.topic, d.device_id, d.recv_ms, d.reason, d.source] for d in dead],
    }
    # Written only when present: entries of readings alone stay as they were.
    if lines:
        doc["l"] = [
            [e.device_id, e.site_id, e.line_id, str(e.event), e.ref_id, e.ts_ms, e.recv_ms,
             None if e.method is None else str(e.method), e.sets, e.production_date]
            for e in lines
        ]  # fmt: skip
    if tanks:
        doc["t"] = [e.as_dict() for e in tanks]
    return doc


def read_entry(part: int, pos: int, committed_ms: int, body: str) -> FeedEntry:
    """The entry stored as `body`; one that cannot be decoded (written by another release, or
    damaged) comes back as poison with the reason, for the worker to set aside."""
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise TypeError(f"a JSON {type(doc).__name__}, not an object")
        return decode_entry(part, pos, committed_ms, doc)
    except Exception as exc:  # anything in a stored body: the entry alone is refused
        why = f"cannot be decoded: {type(exc).__name__}: {exc}"
        return FeedEntry(part, pos, committed_ms, [], [], [], poison=why[:500], body=body)


def decode_entry(part: int, pos: int, committed_ms: int, doc: dict) -> FeedEntry:
    events: list[Event] = [
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
    ]
    events += [
        LineEvent(d, s, line, LineEventKind(k), ref, ts, recv,
                  None if m is None else Method(m), sets, day)
        for d, s, line, k, ref, ts, recv, m, sets, day in doc.get("l", ())
    ]  # fmt: skip
    events += [TankEvent.from_dict(t) for t in doc.get("t", ())]
    return FeedEntry(
        part,
        pos,
        committed_ms,
        [Reading(*r) for r in doc.get("r", ())],
        events,
        [DeadLetter(t, dev, recv, why, b"", src) for t, dev, recv, why, src in doc.get("d", ())],
    )


def poison_letter(entry: FeedEntry, reason: str, at_ms: int) -> DeadLetter:
    """The dead letter of an entry the alert worker could not decode or evaluate."""
    if entry.poison is not None:
        raw = entry.body.encode()
    else:
        raw = orjson.dumps(encode_entry(entry.readings, entry.events, entry.dead))
    device = next((x.device_id for x in [*entry.readings, *entry.events]), None)
    return DeadLetter(
        f"feed/{entry.part}/{entry.pos}", device, at_ms, reason, raw[:POISON_RAW_MAX], POISON_SOURCE
    )
