"""The medical-waste bag ledger: every bag event as received, and each bag's custody derived
from them (the register 条例 art. 12 asks for: source, category, weight, time, destination).

`SqliteLedger` lives in the same database file as `SqliteStore`, in its own tables and on its own
connections (WAL lets them write in turn and read alongside). Events are recorded idempotently on
(device, bag, event, sensor time); after each batch every bag it touched is derived again from
all of its events, so an event arriving before its predecessor is reconciled, not lost."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from domain.timeutil import SHANGHAI
from domain.waste import Bag, WasteCategory, WasteEvent, WasteEventKind, derive_bag
from store.base import StoreUnavailable
from store.migrations import Migration
from store.sqlite_db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS waste_events (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    bag_id TEXT NOT NULL,
    event TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,          -- scanner time, UTC epoch ms
    recv_ms INTEGER NOT NULL,
    category TEXT,
    weight_kg REAL,
    department TEXT,
    manifest_id TEXT,
    carrier TEXT,
    UNIQUE (device_id, bag_id, event, ts_ms)
);
CREATE INDEX IF NOT EXISTS waste_events_by_bag ON waste_events (site_id, bag_id);
-- One row per (site, bag), derived from all of the bag's events after every batch.
CREATE TABLE IF NOT EXISTS waste_bags (
    site_id TEXT NOT NULL,
    bag_id TEXT NOT NULL,
    category TEXT,
    department TEXT,
    collected_ms INTEGER,
    collected_kg REAL,
    stored_ms INTEGER,
    stored_kg REAL,
    handed_ms INTEGER,
    handed_kg REAL,
    handed_recv_ms INTEGER,
    manifest_id TEXT,
    carrier TEXT,
    categories TEXT NOT NULL,        -- every category the chain states, comma-separated
    duplicates INTEGER NOT NULL,
    events INTEGER NOT NULL,
    produced_ms INTEGER NOT NULL,    -- first time the bag appears in the chain
    weight_kg REAL,                  -- the hospital's weight (collection, else storage)
    PRIMARY KEY (site_id, bag_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waste_bags_by_time ON waste_bags (site_id, produced_ms);
CREATE INDEX IF NOT EXISTS waste_bags_by_manifest ON waste_bags (site_id, manifest_id);
CREATE INDEX IF NOT EXISTS waste_bags_by_id ON waste_bags (bag_id);
-- Bags still held by the hospital: what the clock-driven custody rules look at.
CREATE INDEX IF NOT EXISTS waste_bags_held ON waste_bags (site_id) WHERE handed_ms IS NULL;
-- Handovers of bags with a gap in their chain, by receive time: the unrecorded-handover rule.
CREATE INDEX IF NOT EXISTS waste_bags_incomplete ON waste_bags (handed_recv_ms)
    WHERE collected_ms IS NULL OR stored_ms IS NULL;
"""

MIGRATIONS = (Migration(1, "waste events and bags (as of 2026-12)", SCHEMA),)

_BAG_COLS = (
    "site_id, bag_id, category, department, collected_ms, collected_kg, stored_ms, stored_kg,"
    " handed_ms, handed_kg, handed_recv_ms, manifest_id, carrier, categories, duplicates, events"
)
_EVENT_COLS = (
    "device_id, site_id, event, bag_id, ts_ms, recv_ms, category, weight_kg, department,"
    " manifest_id, carrier"
)


@dataclass(frozen=True, slots=True)
class BagQuery:
    site_id: str
    status: str | None = None  # domain.waste.BagStatus
    category: str | None = None
    department: str | None = None
    manifest_id: str | None = None
    start_ms: int | None = None  # on produced_ms
    end_ms: int | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class DailyTotal:
    """Bags and kilograms collected on one local day in one department and category."""

    day: date
    department: str
    category: str
    bags: int
    weight_kg: float


@dataclass(frozen=True, slots=True)
class ManifestTotal:
    site_id: str
    manifest_id: str
    bags: int
    weighed_bags: int  # bags with both a hospital and a handover weight
    hospital_kg: float  # of the weighed bags
    handed_kg: float  # of the weighed bags
    bag_ids: tuple[str, ...]

    @property
    def loss_kg(self) -> float:
        return self.hospital_kg - self.handed_kg


class WasteLedger(Protocol):
    def record(self, events: Sequence[WasteEvent]) -> list[WasteEvent]:
        """Commit events and re-derive the bags they touch, atomically; return the events that
        were new (a redelivered event is recorded once). Raises StoreUnavailable."""
        ...

    def bag(self, site_id: str, bag_id: str) -> Bag | None: ...

    def sites_of_bag(self, bag_id: str) -> list[str]: ...

    def chain(self, site_id: str, bag_id: str) -> list[WasteEvent]:
        """The bag's events in custody order (scanner time)."""
        ...

    def bags(self, q: BagQuery) -> list[Bag]:
        """Bags of a site, newest first."""
        ...

    def held_bags(self, site_id: str | None = None) -> list[Bag]:
        """Bags not handed over yet (collected or stored), oldest first."""
        ...

    def holding(self, site_id: str, start_ms: int, end_ms: int) -> list[tuple[int, int | None]]:
        """(stored, handed or None) of the bags in the store at some time in [start, end)."""
        ...

    def incomplete_handovers(self, recv_from_ms: int, recv_to_ms: int) -> list[Bag]:
        """Handed-over bags lacking a collection or storage record, by handover receive time."""
        ...

    def manifest(self, site_id: str, manifest_id: str) -> ManifestTotal | None: ...

    def daily_totals(
        self, site_id: str, first_day: date, last_day: date, tz: str = SHANGHAI
    ) -> list[DailyTotal]:
        """Collected bags and weight per local day, department and category (inclusive)."""
        ...

    def close(self) -> None: ...


# A bag's events in custody order.
CHAIN_SQL = (
    f"SELECT {_EVENT_COLS} FROM waste_events WHERE site_id = ? AND bag_id = ?"
    " ORDER BY ts_ms, recv_ms, device_id"
)


def _bag_from_row(row: tuple) -> Bag:
    (site, bag, cat, dept, c_ms, c_kg, s_ms, s_kg, h_ms, h_kg, h_recv, manifest, carrier,
     cats, dups, n) = row  # fmt: skip
    return Bag(
        site_id=site,
        bag_id=bag,
        category=WasteCategory(cat) if cat else None,
        department=dept,
        collected_ms=c_ms,
        collected_kg=c_kg,
        stored_ms=s_ms,
        stored_kg=s_kg,
        handed_ms=h_ms,
        handed_kg=h_kg,
        handed_recv_ms=h_recv,
        manifest_id=manifest,
        carrier=carrier,
        categories=tuple(WasteCategory(c) for c in cats.split(",") if c),
        duplicates=dups,
        events=n,
    )


def _bag_values(b: Bag) -> tuple:
    return (
        b.site_id, b.bag_id, b.category, b.department, b.collected_ms, b.collected_kg,
        b.stored_ms, b.stored_kg, b.handed_ms, b.handed_kg, b.handed_recv_ms, b.manifest_id,
        b.carrier, ",".join(b.categories), b.duplicates, b.events, b.produced_ms, b.weight_kg,
    )  # fmt: skip


def _event_from_row(row: tuple) -> WasteEvent:
    dev, site, kind, bag, ts, recv, cat, kg, dept, manifest, carrier = row
    return WasteEvent(
        device_id=dev,
        site_id=site,
        event=WasteEventKind(kind),
        bag_id=bag,
        ts_ms=ts,
        recv_ms=recv,
        category=WasteCategory(cat) if cat else None,
        weight_kg=kg,
        department=dept,
        manifest_id=manifest,
        carrier=carrier,
    )


def _event_values(e: WasteEvent) -> tuple:
    return (
        e.device_id, e.site_id, e.event, e.bag_id, e.ts_ms, e.recv_ms, e.category, e.weight_kg,
        e.department, e.manifest_id, e.carrier,
    )  # fmt: skip


def local_day_bounds(first_day: date, last_day: date, tz: str) -> tuple[int, int]:
    """UTC ms of the start of `first_day` and of the day after `last_day`, in zone `tz`."""
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, time(), zone)
    end = datetime.combine(last_day + timedelta(days=1), time(), zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def local_day(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


class LedgerReads:
    """The ledger's queries, in SQL both backends run (`?` placeholders); a backend supplies
    `_rows`."""

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def chain(self, site_id: str, bag_id: str) -> list[WasteEvent]:
        return [_event_from_row(r) for r in self._rows(CHAIN_SQL, (site_id, bag_id))]

    def bag(self, site_id: str, bag_id: str) -> Bag | None:
        rows = self._rows(
            f"SELECT {_BAG_COLS} FROM waste_bags WHERE site_id = ? AND bag_id = ?",
            (site_id, bag_id),
        )
        return _bag_from_row(rows[0]) if rows else None

    def sites_of_bag(self, bag_id: str) -> list[str]:
        rows = self._rows(
            "SELECT site_id FROM waste_bags WHERE bag_id = ? ORDER BY site_id", (bag_id,)
        )
        return [r[0] for r in rows]

    def bags(self, q: BagQuery) -> list[Bag]:
        where: list[str] = ["site_id = ?"]
        args: list[str | int] = [q.site_id]
        status_sql = {
            "collected": "stored_ms IS NULL AND handed_ms IS NULL",
            "stored": "stored_ms IS NOT NULL AND handed_ms IS NULL",
            "handed_over": "handed_ms IS NOT NULL",
        }
        if q.status is not None:
            where.append(status_sql[q.status])
        for col, val in (
            ("category", q.category),
            ("department", q.department),
            ("manifest_id", q.manifest_id),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if q.start_ms is not None:
            where.append("produced_ms >= ?")
            args.append(q.start_ms)
        if q.end_ms is not None:
            where.append("produced_ms < ?")
            args.append(q.end_ms)
        rows = self._rows(
            f"SELECT {_BAG_COLS} FROM waste_bags WHERE {' AND '.join(where)}"
            " ORDER BY produced_ms DESC, bag_id LIMIT ?",
            (*args, q.limit),
        )
        return [_bag_from_row(r) for r in rows]

    def held_bags(self, site_id: str | None = None) -> list[Bag]:
        sql = f"SELECT {_BAG_COLS} FROM waste_bags WHERE handed_ms IS NULL"
        args: tuple = ()
        if site_id is not None:
            sql += " AND site_id = ?"
            args = (site_id,)
        rows = self._rows(sql + " ORDER BY produced_ms", args)
        return [_bag_from_row(r) for r in rows]

    def holding(self, site_id: str, start_ms: int, end_ms: int) -> list[tuple[int, int | None]]:
        rows = self._rows(
            "SELECT stored_ms, handed_ms FROM waste_bags WHERE site_id = ?"
            " AND stored_ms IS NOT NULL AND stored_ms < ? AND (handed_ms IS NULL OR handed_ms > ?)",
            (site_id, end_ms, start_ms),
        )
        return [(s, h) for s, h in rows]

    def incomplete_handovers(self, recv_from_ms: int, recv_to_ms: int) -> list[Bag]:
        rows = self._rows(
            f"SELECT {_BAG_COLS} FROM waste_bags WHERE handed_recv_ms >= ? AND handed_recv_ms < ?"
            " AND (collected_ms IS NULL OR stored_ms IS NULL) ORDER BY handed_recv_ms",
            (recv_from_ms, recv_to_ms),
        )
        return [_bag_from_row(r) for r in rows]

    def manifest(self, site_id: str, manifest_id: str) -> ManifestTotal | None:
        rows = self._rows(
            "SELECT bag_id, weight_kg, handed_kg FROM waste_bags"
            " WHERE site_id = ? AND manifest_id = ? ORDER BY bag_id",
            (site_id, manifest_id),
        )
        if not rows:
            return None
        weighed = [(w, h) for _, w, h in rows if w is not None and h is not None]
        return ManifestTotal(
            site_id=site_id,
            manifest_id=manifest_id,
            bags=len(rows),
            weighed_bags=len(weighed),
            hospital_kg=sum(w for w, _ in weighed),
            handed_kg=sum(h for _, h in weighed),
            bag_ids=tuple(r[0] for r in rows),
        )

    def daily_totals(
        self, site_id: str, first_day: date, last_day: date, tz: str = SHANGHAI
    ) -> list[DailyTotal]:
        start_ms, end_ms = local_day_bounds(first_day, last_day, tz)
        rows = self._rows(
            "SELECT produced_ms, coalesce(department, ''), coalesce(category, ''), weight_kg"
            " FROM waste_bags WHERE site_id = ? AND produced_ms >= ? AND produced_ms < ?",
            (site_id, start_ms, end_ms),
        )
        # Grouped here rather than in SQL: local days follow the zone's rules (zoneinfo), and a
        # site's day holds a few hundred bags at most.
        totals: dict[tuple[date, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        for produced, dept, cat, kg in rows:
            acc = totals[(local_day(produced, tz), dept, cat)]
            acc[0] += 1
            acc[1] += kg or 0.0
        return [
            DailyTotal(day, dept, cat, int(n), round(kg, 3))
            for (day, dept, cat), (n, kg) in sorted(totals.items())
        ]


class SqliteLedger(SqliteDatabase, LedgerReads):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "ledger", MIGRATIONS)

    # -- writes -------------------------------------------------------------------------------

    def record(self, events: Sequence[WasteEvent]) -> list[WasteEvent]:
        fresh: list[WasteEvent] = []
        try:
            with self._tx() as conn:
                for e in events:
                    cur = conn.execute(
                        f"INSERT OR IGNORE INTO waste_events ({_EVENT_COLS})"
                        f" VALUES ({','.join('?' * 11)})",
                        _event_values(e),
                    )
                    if cur.rowcount:
                        fresh.append(e)
                for site_id, bag_id in dict.fromkeys((e.site_id, e.bag_id) for e in fresh):
                    chain = conn.execute(CHAIN_SQL, (site_id, bag_id))
                    bag = derive_bag(_event_from_row(r) for r in chain)
                    conn.execute(
                        f"INSERT OR REPLACE INTO waste_bags ({_BAG_COLS}, produced_ms, weight_kg)"
                        f" VALUES ({','.join('?' * 18)})",
                        _bag_values(bag),
                    )
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite ledger: {exc}") from exc
        return fresh

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self._reader().execute(sql, args).fetchall()
