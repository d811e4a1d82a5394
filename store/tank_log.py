"""The tank cleaning and disinfection register, kept in the store's key-value state (namespace
`tanks.records`, one entry per site and tank holding its newest records), so it needs no schema
of its own and every backend keeps it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from domain.tanks import Tank, TankEvent, derive_tank
from store.base import Store

if TYPE_CHECKING:
    from store.postgres.store import PostgresStore

NS = "tanks.records"
# Records kept per tank: at two jobs a half-year, 25 years of them; older ones are dropped.
MAX_RECORDS = 100
# pg_advisory_xact_lock key of the register: records are rare, one lock for all tanks will do.
TANKS_LOCK = 0x54414E4B53  # "TANKS"


class TankLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, events: Sequence[TankEvent]) -> list[TankEvent]:
        """Add the events to their tanks' records; return those that were new (a redelivered
        record is kept once). Raises StoreUnavailable."""
        changes, fresh = _merged(self.store.load_state(NS), events)
        if fresh:
            self.store.save_state(NS, changes)
        return fresh

    def tanks(self, site_id: str | None = None) -> list[tuple[Tank, list[TankEvent]]]:
        """Each tank (of one site, or of all) with its records, oldest first."""
        out = []
        for key, text in sorted(self.store.load_state(NS).items()):
            site, _, tank_id = key.partition("|")
            if site_id is not None and site != site_id:
                continue
            records = [TankEvent.from_dict(d) for d in json.loads(text)]
            out.append((derive_tank(site, tank_id, records), records))
        return out


class PostgresTankLog(TankLog):
    """The register of a deployment with separate roles: the records of a batch are read and
    written in one transaction under a lock (two ingest processes never lose each other's
    record), with the alert feed's entries of the new ones (store.postgres.feed)."""

    def __init__(self, store: PostgresStore, partitions: int) -> None:
        super().__init__(store)
        self.pg = store
        self.partitions = partitions

    def record(self, events: Sequence[TankEvent]) -> list[TankEvent]:
        from store.postgres.feed import append_events
        from store.postgres.store import _write_state

        keys = sorted({_key(e.site_id, e.tank_id) for e in events})
        with self.pg.db.tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (TANKS_LOCK,))
            current = conn.execute(
                "SELECT key, value FROM engine_state WHERE namespace = %s AND key = ANY(%s)",
                (NS, keys),
            ).fetchall()
            changes, fresh = _merged(dict(current), events)
            if fresh:
                _write_state(conn, NS, changes)
                append_events(conn, self.partitions, fresh)
        return fresh


def _merged(
    current: dict[str, str], events: Sequence[TankEvent]
) -> tuple[dict[str, str | None], list[TankEvent]]:
    """The tanks' records with the events added (the new state of each tank touched), and the
    events that were new."""
    changed: dict[str, list[TankEvent]] = {}
    fresh = []
    for e in events:
        key = _key(e.site_id, e.tank_id)
        if key not in changed:
            changed[key] = [TankEvent.from_dict(d) for d in json.loads(current.get(key, "[]"))]
        records = changed[key]
        if any(r.key == e.key for r in records):
            continue
        records.append(e)
        fresh.append(e)
    changes: dict[str, str | None] = {
        key: json.dumps(
            [r.as_dict() for r in sorted(records, key=_order)[-MAX_RECORDS:]], ensure_ascii=False
        )
        for key, records in changed.items()
    }
    return changes, fresh


def _key(site_id: str, tank_id: str) -> str:
    return f"{site_id}|{tank_id}"


def _order(e: TankEvent) -> tuple[int, str]:
    return (e.ts_ms, str(e.event))
