"""The disinfection-line ledger: every cycle and batch event of a tableware disinfection line as
received (domain.tableware). Cycles are derived from their events when read, so an end arriving
before its start is reconciled, not lost; events are recorded idempotently on (device, event,
cycle or batch id, controller time).

`SqliteLineLedger` lives in the same database file as the store, in its own table and on its own
connections, as the waste ledger does; `PostgresLineLedger` keeps the same table on PostgreSQL
(store.migrations.postgres), with the alert feed's entries of the new events in the recording
transaction when the feed is enabled. Both read with the same SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from domain.tableware import Cycle, LineEvent, LineEventKind, Method, derive_cycles
from store.base import StoreUnavailable
from store.migrations import Migration
from store.sqlite_db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS line_events (
    device_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    line_id TEXT NOT NULL,
    event TEXT NOT NULL,             -- cycle_start, cycle_end, batch_packed
    ref_id TEXT NOT NULL,            -- the cycle id or the batch id
    ts_ms INTEGER NOT NULL,          -- controller time, UTC epoch ms
    recv_ms INTEGER NOT NULL,
    method TEXT,
    sets INTEGER,
    production_date TEXT,
    UNIQUE (device_id, event, ref_id, ts_ms)
);
CREATE INDEX IF NOT EXISTS line_events_by_time ON line_events (device_id, ts_ms);
CREATE INDEX IF NOT EXISTS line_events_by_ref ON line_events (device_id, ref_id);
"""

MIGRATIONS = (Migration(1, "disinfection-line cycle and batch events", SCHEMA),)

_COLS = "device_id, site_id, line_id, event, ref_id, ts_ms, recv_ms, method, sets, production_date"
_CYCLE_KINDS = (str(LineEventKind.CYCLE_START), str(LineEventKind.CYCLE_END))


class LineLedger(Protocol):
    def record(self, events: Sequence[LineEvent]) -> list[LineEvent]:
        """Commit events; return those that were new (a redelivered event is recorded once).
        Raises StoreUnavailable."""
        ...

    def events(
        self, device_id: str, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> list[LineEvent]:
        """A line controller's events with controller time in [start, end), oldest first."""
        ...

    def cycle(self, device_id: str, cycle_id: str) -> Cycle | None: ...

    def close(self) -> None: ...


def _event_from_row(row: tuple) -> LineEvent:
    dev, site, line, kind, ref, ts, recv, method, sets, day = row
    return LineEvent(
        device_id=dev,
        site_id=site,
        line_id=line,
        event=LineEventKind(kind),
        ref_id=ref,
        ts_ms=ts,
        recv_ms=recv,
        method=Method(method) if method else None,
        sets=sets,
        production_date=day,
    )


def _event_values(e: LineEvent) -> tuple:
    return (
        e.device_id, e.site_id, e.line_id, str(e.event), e.ref_id, e.ts_ms, e.recv_ms,
        None if e.method is None else str(e.method), e.sets, e.production_date,
    )  # fmt: skip


class LineReads:
    """The ledger's queries, in SQL both backends run (`?` placeholders); a backend supplies
    `_rows`."""

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def events(
        self, device_id: str, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> list[LineEvent]:
        rows = self._rows(
            f"SELECT {_COLS} FROM line_events WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ?"
            " ORDER BY ts_ms, recv_ms LIMIT ?",
            (device_id, start_ms, end_ms, limit),
        )
        return [_event_from_row(r) for r in rows]

    def cycle(self, device_id: str, cycle_id: str) -> Cycle | None:
        rows = self._rows(
            f"SELECT {_COLS} FROM line_events WHERE device_id = ? AND ref_id = ?"
            " AND event IN (?, ?)",
            (device_id, cycle_id, *_CYCLE_KINDS),
        )
        cycles = derive_cycles(_event_from_row(r) for r in rows)
        return cycles[0] if cycles else None


class SqliteLineLedger(SqliteDatabase, LineReads):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "lines", MIGRATIONS)

    def record(self, events: Sequence[LineEvent]) -> list[LineEvent]:
        fresh: list[LineEvent] = []
        try:
            with self._tx() as conn:
                for e in events:
                    cur = conn.execute(
                        f"INSERT OR IGNORE INTO line_events ({_COLS})"
                        f" VALUES ({','.join('?' * 10)})",
                        _event_values(e),
                    )
                    if cur.rowcount:
                        fresh.append(e)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite line ledger: {exc}") from exc
        return fresh

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self._reader().execute(sql, args).fetchall()


class PostgresLineLedger(LineReads):
    def __init__(self, url: str, max_connections: int = 2) -> None:
        from store.postgres.db import PostgresDatabase

        self.db = PostgresDatabase(url, max_connections)
        self.feed_partitions: int | None = None  # None: no feed entries (landun run)

    def enable_feed(self, partitions: int) -> None:
        """Append the new events to the alert feed, in the transaction that records them."""
        self.feed_partitions = partitions

    def record(self, events: Sequence[LineEvent]) -> list[LineEvent]:
        from store.postgres.feed import append_events

        fresh: list[LineEvent] = []
        with self.db.tx() as conn:
            for e in events:
                cur = conn.execute(
                    f"INSERT INTO line_events ({_COLS}) VALUES ({', '.join(['%s'] * 10)})"
                    " ON CONFLICT DO NOTHING",
                    _event_values(e),
                )
                if cur.rowcount:
                    fresh.append(e)
            append_events(conn, self.feed_partitions, fresh)
        return fresh

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self.db.rows(sql.replace("?", "%s"), args)

    def close(self) -> None:
        self.db.close()
