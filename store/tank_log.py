"""The tank cleaning and disinfection register, kept in the store's key-value state (namespace
`tanks.records`, one entry per site and tank holding its newest records), so it needs no schema
of its own and every backend keeps it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from domain.tanks import Tank, TankEvent, derive_tank
from store.base import Store

NS = "tanks.records"
# Records kept per tank: at two jobs a half-year, 25 years of them; older ones are dropped.
MAX_RECORDS = 100


class TankLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, events: Sequence[TankEvent]) -> list[TankEvent]:
        """Add the events to their tanks' records; return those that were new (a redelivered
        record is kept once). Raises StoreUnavailable."""
        current = self.store.load_state(NS)
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
        if fresh:
            self.store.save_state(
                NS,
                {
                    key: json.dumps(
                        [r.as_dict() for r in sorted(records, key=_order)[-MAX_RECORDS:]],
                        ensure_ascii=False,
                    )
                    for key, records in changed.items()
                },
            )
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


def _key(site_id: str, tank_id: str) -> str:
    return f"{site_id}|{tank_id}"


def _order(e: TankEvent) -> tuple[int, str]:
    return (e.ts_ms, str(e.event))
