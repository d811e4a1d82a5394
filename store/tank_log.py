"""The tank cleaning and disinfection register: the records of each site's tanks (table
`tank_records`, store.records_sql), and each tank's state derived from them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import TYPE_CHECKING

from domain.tanks import Tank, TankEvent, derive_tank
from store.base import TankStore

if TYPE_CHECKING:
    from store.postgres.store import PostgresStore

# Records kept per tank: at two jobs a half-year, 25 years of them; older ones are dropped.
MAX_RECORDS = 100


class TankLog:
    def __init__(self, store: TankStore) -> None:
        self.store = store

    def record(self, events: Sequence[TankEvent]) -> list[TankEvent]:
        """Add the events to their tanks' records; return those that were new (a redelivered
        record is kept once). Raises StoreUnavailable."""
        return self.store.add_tank_records(events, MAX_RECORDS)

    def tanks(self, site_id: str | None = None) -> list[tuple[Tank, list[TankEvent]]]:
        """Each tank (of one site, or of all) with its records, oldest first."""
        records = self.store.tank_records(site_id)
        out = []
        for (site, tank_id), group in groupby(records, key=lambda r: (r.site_id, r.tank_id)):
            kept = list(group)
            out.append((derive_tank(site, tank_id, kept), kept))
        return sorted(out, key=lambda t: _key(t[0].site_id, t[0].tank_id))


class PostgresTankLog(TankLog):
    """The register of a deployment with separate roles: the records of a batch are written in
    one transaction with the alert feed's entries of the new ones (store.postgres.feed)."""

    def __init__(self, store: PostgresStore, partitions: int) -> None:
        super().__init__(store)
        self.pg = store
        self.partitions = partitions

    def record(self, events: Sequence[TankEvent]) -> list[TankEvent]:
        from store.postgres.feed import append_events
        from store.postgres.store import add_tank_records

        with self.pg.db.tx() as conn:
            fresh = add_tank_records(conn, events, MAX_RECORDS)
            if fresh:
                append_events(conn, self.partitions, fresh)
        return fresh


def _key(site_id: str, tank_id: str) -> str:
    """The order tanks are listed in (as when the register was kept under these keys)."""
    return f"{site_id}|{tank_id}"
