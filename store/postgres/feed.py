"""The alert feed on PostgreSQL (store/feed.py): appended by ingest in its batch's transaction,
read by the alert workers, who write alert changes and the cursor advance in one transaction.

Commit order: each partition's next number comes from its row in `feed_heads`, updated as the
last statement of the committing transaction. The row lock is held until that commit, so the
next writer of the partition waits and then takes the number after it (READ COMMITTED re-reads
the row). A reader therefore never sees number n+1 before n is committed: it cannot skip an
entry, which a sequence (numbers taken at insert, committed in any order) would allow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import psycopg

from domain.model import DeadLetter, Reading
from domain.timeutil import now_ms
from domain.waste import WasteEvent
from store.feed import FeedEntry, decode_entry, encode_entry, partition_of
from store.postgres.db import only_row


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
# ("alerts", changes, namespace, state) or ("state", namespace, items).
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
    events: Sequence[WasteEvent],
    dead: Sequence[DeadLetter],
    site_of_device: dict[str, str] | None = None,
) -> None:
    """Append the batch's entries, one per partition it touches (call last in the batch's
    transaction: the head rows stay locked until it commits)."""
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
        return
    parts = sorted(by_part)
    # Locked in partition order: two batches touching the same partitions cannot deadlock.
    heads: dict[int, int] = dict(
        conn.execute(
            "SELECT part, pos FROM feed_heads WHERE part = ANY(%s) ORDER BY part FOR UPDATE",
            (parts,),
        ).fetchall()
    )
    stamp = now_ms()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO feed_entries (part, pos, body, committed_ms) VALUES (%s, %s, %s, %s)",
            [(p, heads[p] + 1, orjson.dumps(encode_entry(*by_part[p])).decode(), stamp)
             for p in parts],
        )  # fmt: skip
        cur.execute("UPDATE feed_heads SET pos = pos + 1 WHERE part = ANY(%s)", (parts,))


def claim(conn: psycopg.Connection, part: int) -> tuple[int, int]:
    """Take a partition over (its lease already held): (cursor position, new epoch)."""
    row = only_row(
        conn.execute(
            "UPDATE feed_cursors SET epoch = epoch + 1 WHERE part = %s RETURNING pos, epoch",
            (part,),
        )
    )
    return row[0], row[1]


def read_many(
    conn: psycopg.Connection, cursors: dict[int, int], limit: int
) -> dict[int, list[FeedEntry]]:
    """The next entries of several partitions, each after its own cursor, in one round trip."""
    parts = sorted(cursors)
    rows = conn.execute(
        "SELECT e.part, e.pos, e.committed_ms, e.body"
        " FROM unnest(%s::integer[], %s::bigint[]) AS c(part, pos) CROSS JOIN LATERAL"
        " (SELECT part, pos, committed_ms, body FROM feed_entries f"
        "  WHERE f.part = c.part AND f.pos > c.pos ORDER BY f.pos LIMIT %s) AS e"
        " ORDER BY e.part, e.pos",
        (parts, [cursors[p] for p in parts], limit),
    ).fetchall()
    out: dict[int, list[FeedEntry]] = {}
    for part, pos, at, body in rows:
        out.setdefault(part, []).append(decode_entry(part, pos, at, orjson.loads(body)))
    return out


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
        else:
            _, namespace, items = w
            write_state(conn, namespace, items)
