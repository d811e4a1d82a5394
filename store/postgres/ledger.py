"""The medical-waste ledger on PostgreSQL: the same tables and queries as store.ledger's SQLite
ledger (its reads are shared), writes in one transaction per batch, with the alert feed's entries
of the new events when the feed is enabled (store.postgres.feed.append_events)."""

from __future__ import annotations

from collections.abc import Sequence

from domain.waste import WasteEvent, derive_bag
from store.ledger import (
    _BAG_COLS,
    _EVENT_COLS,
    CHAIN_SQL,
    LedgerReads,
    _bag_values,
    _event_from_row,
    _event_values,
)
from store.postgres.db import PostgresDatabase
from store.postgres.feed import append_events

# Every column but the key (site_id, bag_id).
_BAG_UPDATES = ", ".join(
    f"{c} = excluded.{c}"
    for c in [*(c.strip() for c in _BAG_COLS.split(",")[2:]), "produced_ms", "weight_kg"]
)


def _pg(sql: str) -> str:
    """The shared queries' `?` placeholders as psycopg's (none of them has a literal `?`)."""
    return sql.replace("?", "%s")


class PostgresLedger(LedgerReads):
    def __init__(self, url: str, max_connections: int = 2) -> None:
        self.db = PostgresDatabase(url, max_connections)
        self.feed_partitions: int | None = None  # None: no feed entries (landun run)

    def enable_feed(self, partitions: int) -> None:
        """Append the new events to the alert feed, in the transaction that records them."""
        self.feed_partitions = partitions

    def record(self, events: Sequence[WasteEvent]) -> list[WasteEvent]:
        fresh: list[WasteEvent] = []
        with self.db.tx() as conn:
            for e in events:
                cur = conn.execute(
                    f"INSERT INTO waste_events ({_EVENT_COLS}) VALUES ({', '.join(['%s'] * 11)})"
                    " ON CONFLICT DO NOTHING",
                    _event_values(e),
                )
                if cur.rowcount:
                    fresh.append(e)
            for site_id, bag_id in dict.fromkeys((e.site_id, e.bag_id) for e in fresh):
                chain = conn.execute(_pg(CHAIN_SQL), (site_id, bag_id)).fetchall()
                bag = derive_bag(_event_from_row(r) for r in chain)
                conn.execute(
                    f"INSERT INTO waste_bags ({_BAG_COLS}, produced_ms, weight_kg)"
                    f" VALUES ({', '.join(['%s'] * 18)})"
                    f" ON CONFLICT (site_id, bag_id) DO UPDATE SET {_BAG_UPDATES}",
                    _bag_values(bag),
                )
            append_events(conn, self.feed_partitions, fresh)
        return fresh

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self.db.rows(_pg(sql), args)

    def close(self) -> None:
        self.db.close()
