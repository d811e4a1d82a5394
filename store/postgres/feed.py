"""The alert feed on PostgreSQL (store/feed.py): appended by ingest in its batch's transaction,
read by the alert workers, who write alert changes and the cursor advance in one transaction.

Commit order: ingest inserts its entries unnumbered, so writers never wait for each other. A
reader numbers the entries it can see (committed ones: a transaction still running shows
nothing), per partition after the last number given (`feed_heads`), in insertion order, with
the head rows locked so that two readers never number at once. An entry committed late is
numbered when it becomes visible, after those numbered before: a reader following the numbers
never skips one. Numbers taken at insert (a sequence) would be committed in any order, and a
reader that moved past a gap would skip the entry that filled it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson
import psycopg

from domain.model import DeadLetter, Reading
from domain.timeutil import now_ms
from store.feed import Event, FeedEntry, encode_entry, partition_of, read_entry
from store.postgres.db import only_row
from store.postgres.notify import NOTIFY_FEED


class LeaseLost(RuntimeError):
    """Another worker took the partition over: this worker's write was refused."""


class FeedMismatch(RuntimeError):
    """The database was set up with another partition count than the configuration's."""


@dataclass(frozen=True, slots=True)
class PendingAction:
    id: int
    part: int
    alert_id: int
    action: str
    actor: str
    comment: str


# One write of a worker's transaction, in the order the engine made them:
# ("alerts", changes, namespace, state), ("state", namespace, items), or ("poison", dead letter)
# for an entry the worker set aside.
Write = tuple


def ensure_partitions(conn: psycopg.Connection, partitions: int) -> None:
    """Create the heads and cursors of `partitions` partitions, or refuse another count."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO feed_heads (part, pos) SELECT g, 0 FROM generate_series(0, %s) g"
            " WHERE NOT EXISTS (SELECT 1 FROM feed_heads)",
            (partitions - 1,),
        )
        conn.execute(
            "INSERT INTO feed_cursors (part, pos, epoch) SELECT part, 0, 0 FROM feed_heads"
            " ON CONFLICT DO NOTHING"
        )
        have = only_row(conn.execute("SELECT count(*) FROM feed_heads"))[0]
    if have != partitions:
        raise FeedMismatch(
            f"the database's alert feed has {have} partitions, the configuration"
            f" (store/data/feed.toml) says {partitions}: every process must use the same count"
        )


def append(
    conn: psycopg.Connection,
    partitions: int,
    readings: Sequence[Reading],
    events: Sequence[Event],
    dead: Sequence[DeadLetter],
    site_of_device: dict[str, str] | None = None,
) -> bool:
    """Append the batch's entries, one per partition it touches, in the batch's transaction
    (unnumbered: readers number them once committed); whether there were any (then send
    NOTIFY_FEED after the commit)."""
    by_part: dict[int, tuple[list, list, list]] = {}

    def slot(site_id: str) -> tuple[list, list, list]:
        return by_part.setdefault(partition_of(site_id, partitions), ([], [], []))

    for r in readings:
        slot(r.site_id)[0].append(r)
    for e in events:
        slot(e.site_id)[1].append(e)
    for d in dead:
        site = (site_of_device or {}).get(d.device_id or "")
        if site is not None:
            slot(site)[2].append(d)
    if not by_part:
        return False
    stamp = now_ms()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO feed_entries (part, body, committed_ms) VALUES (%s, %s, %s)",
            [(p, orjson.dumps(encode_entry(*by_part[p])).decode(), stamp) for p in sorted(by_part)],
        )
    return True


def append_events(
    conn: psycopg.Connection, partitions: int | None, events: Sequence[Event]
) -> None:
    """Inside the transaction of the ledger that recorded `events` as new (call last): their
    entries, so the alert workers see an event exactly when its record is committed. None: this
    process does not append to the feed."""
    if partitions is not None and events:
        append(conn, partitions, (), events, ())
        # Events are few: a wake-up inside their transaction (sent at its commit) costs nothing
        # measurable, unlike ingest's batches, which notify after their commit.
        conn.execute(NOTIFY_FEED)


def claim(conn: psycopg.Connection, part: int) -> tuple[int, int]:
    """Take a partition over (its lease already held): (cursor position, new epoch)."""
    row = only_row(
        conn.execute(
            "UPDATE feed_cursors SET epoch = epoch + 1 WHERE part = %s RETURNING pos, epoch",
            (part,),
        )
    )
    return row[0], row[1]


# Numbers the committed entries of the partitions after their heads, in insertion order, in one
# statement that never waits: a head row another reader has locked (it is numbering that
# partition) is skipped, and a head another reader moved since this statement's snapshot fails
# `h.pos = s.pos` (the row is re-read before it is updated), so this snapshot's view of which
# entries are unnumbered is never stale for a partition it numbers.
NUMBER = """
WITH seen AS (SELECT part, pos FROM feed_heads WHERE part = ANY(%(parts)s)),
fresh AS (
    SELECT seq, part, row_number() OVER (PARTITION BY part ORDER BY seq) AS n
    FROM feed_entries WHERE part = ANY(%(parts)s) AND pos IS NULL),
counts AS (SELECT part, max(n) AS n FROM fresh GROUP BY part),
bumped AS (
    UPDATE feed_heads h SET pos = s.pos + c.n
    FROM counts c JOIN seen s USING (part)
    WHERE h.part = c.part AND h.pos = s.pos AND h.part IN (
        SELECT part FROM feed_heads WHERE part IN (SELECT part FROM counts)
        FOR UPDATE SKIP LOCKED)
    RETURNING h.part, s.pos AS base)
UPDATE feed_entries f SET pos = b.base + fr.n
FROM fresh fr JOIN bumped b USING (part) WHERE f.seq = fr.seq
"""


def read_many(
    conn: psycopg.Connection, cursors: dict[int, int], limit: int
) -> dict[int, list[FeedEntry]]:
    """The next entries of several partitions, each after its own cursor, numbering what has
    been committed since the last read first (one round trip for both)."""
    parts = sorted(cursors)
    with conn.pipeline():
        conn.execute(NUMBER, {"parts": parts})
        cur = conn.execute(
            "SELECT e.part, e.pos, e.committed_ms, e.body"
            " FROM unnest(%s::integer[], %s::bigint[]) AS c(part, pos) CROSS JOIN LATERAL"
            " (SELECT part, pos, committed_ms, body FROM feed_entries f"
            "  WHERE f.part = c.part AND f.pos > c.pos ORDER BY f.pos LIMIT %s) AS e"
            " ORDER BY e.part, e.pos",
            (parts, [cursors[p] for p in parts], limit),
        )
    out: dict[int, list[FeedEntry]] = {}
    for part, pos, at, body in cur.fetchall():
        out.setdefault(part, []).append(read_entry(part, pos, at, body))
    return out


def history(
    conn: psycopg.Connection, part: int, devices: Sequence[str], since_recv_ms: int, chunk: int
) -> Iterator[list[Reading]]:
    """The stored readings of `devices` received since `since_recv_ms` that the partition's
    worker has judged, in sensor-time order, `chunk` at a time: what a worker taking the
    partition over replays into its detectors. Readings of entries after the cursor (or not
    numbered yet) are left out: they come through the feed. One snapshot for both."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor = conn.execute("SELECT pos FROM feed_cursors WHERE part = %s", (part,)).fetchone()
        rows = conn.execute(
            "SELECT body FROM feed_entries WHERE part = %s AND (pos IS NULL OR pos > %s)",
            (part, cursor[0] if cursor else 0),
        )
        ahead = {
            (r.device_id, r.parameter, r.ts_ms)
            for (body,) in rows
            for r in read_entry(part, 0, 0, body).readings
        }
        with conn.cursor(name="landun_feed_history") as cur:
            cur.itersize = chunk
            cur.execute(
                "SELECT device_id, site_id, parameter, ts_ms, value, flag, recv_ms, seq"
                " FROM readings WHERE device_id = ANY(%s) AND recv_ms >= %s"
                " ORDER BY ts_ms, recv_ms",
                (list(devices), since_recv_ms),
            )
            while batch := cur.fetchmany(chunk):
                yield [Reading(*row) for row in batch if (row[0], row[2], row[3]) not in ahead]


def advance(conn: psycopg.Connection, cursors: Sequence[tuple[int, int, int]]) -> None:
    """Inside the worker's transaction: move each (partition, epoch, position) cursor, all
    refused if one epoch is no longer its partition's; entries up to them are done with."""
    parts, epochs, positions = (list(c) for c in zip(*cursors, strict=True))
    moved = conn.execute(
        "UPDATE feed_cursors f SET pos = greatest(f.pos, c.pos)"
        " FROM unnest(%s::integer[], %s::bigint[], %s::bigint[]) AS c(part, epoch, pos)"
        " WHERE f.part = c.part AND f.epoch = c.epoch",
        (parts, epochs, positions),
    ).rowcount
    if moved != len(cursors):
        raise LeaseLost(f"one of partitions {parts} was taken over by another worker")
    conn.execute(
        "DELETE FROM feed_entries f USING unnest(%s::integer[], %s::bigint[]) AS c(part, pos)"
        " WHERE f.part = c.part AND f.pos <= c.pos",
        (parts, positions),
    )


def pending_actions(conn: psycopg.Connection, parts: Sequence[int], limit: int = 100):
    rows = conn.execute(
        "SELECT id, part, alert_id, action, actor, comment FROM alert_actions"
        " WHERE done_ms IS NULL AND part = ANY(%s) ORDER BY id LIMIT %s",
        (list(parts), limit),
    ).fetchall()
    return [PendingAction(*r) for r in rows]


def finish_action(conn: psycopg.Connection, action_id: int, error: str | None) -> None:
    conn.execute(
        "UPDATE alert_actions SET done_ms = %s, error = %s WHERE id = %s",
        (now_ms(), error, action_id),
    )


def write_changes(conn: psycopg.Connection, writes: Sequence[Write], write_alert, write_state):
    """The engine's buffered writes, in order."""
    stamp = now_ms()
    for w in writes:
        if w[0] == "alerts":
            _, changes, namespace, state = w
            for ch in changes:
                write_alert(conn, ch, stamp)
            if state:
                write_state(conn, namespace, state)
        elif w[0] == "poison":
            set_aside(conn, w[1])
        else:
            _, namespace, items = w
            write_state(conn, namespace, items)


def set_aside(conn: psycopg.Connection, d: DeadLetter) -> None:
    """A poison entry as a dead letter, in the transaction that moves the cursor past it."""
    conn.execute(
        "INSERT INTO dead_letters (recv_ms, source, topic, device_id, reason, raw)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (d.recv_ms, d.source, d.topic, d.device_id, d.reason, d.raw),
    )
