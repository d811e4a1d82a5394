"""The alert feed on PostgreSQL: entries are numbered in commit order per partition, so a reader
following a cursor never skips one, however many writers commit at once and in whatever order
their transactions began, and however many readers number at once; a writer never waits for
another's commit; a worker whose partition was taken over can no longer write."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from domain.model import Reading
from store.feed import partition_of
from store.postgres import feed
from store.postgres.feed import LeaseLost
from store.postgres.store import PostgresStore

T0 = 1_795_334_400_000  # 2026-11-22 00:00 UTC
PARTS = 4
WRITERS = 6
BATCHES = 40


def _batch(writer: int, n: int) -> list[Reading]:
    # Each batch touches a random few sites: writers contend on some partitions, not all.
    sites = random.Random(writer * 1000 + n).sample(range(12), 3)
    return [
        Reading(f"dev-{s}", f"site-{s}", "ph", T0 + (writer * BATCHES + n) * 1000, 7.2, "N", T0)
        for s in sites
    ]


def test_no_entry_is_skipped_under_concurrent_writers(pg_url: str) -> None:
    sites = {f"dev-{s}": f"site-{s}" for s in range(12)}
    writers = [PostgresStore(pg_url, max_connections=2) for _ in range(WRITERS)]
    reader = PostgresStore(pg_url)
    for w in writers:
        w.enable_feed(PARTS, sites)
    seen: dict[int, list] = {p: [] for p in range(PARTS)}
    cursors = {p: reader.feed_claim(p) for p in range(PARTS)}
    done = threading.Event()

    def write(i: int) -> None:
        for n in range(BATCHES):
            writers[i].write_batch(_batch(i, n))
            time.sleep(random.random() * 0.003)

    def follow() -> None:
        while True:
            finished = done.is_set()
            for p, (pos, epoch) in list(cursors.items()):
                for entry in reader.feed_read(p, pos, 50):
                    assert entry.pos == pos + 1, f"partition {p}: {entry.pos} after {pos}"
                    seen[p].extend((r.device_id, r.ts_ms) for r in entry.readings)
                    pos = entry.pos
                if pos != cursors[p][0]:
                    reader.feed_commit(p, epoch, pos, [])
                    cursors[p] = (pos, epoch)
            if finished:
                return

    def number() -> None:
        # Another reader (a worker that lost its lease and has not noticed) numbers too.
        while not done.is_set():
            for p in range(PARTS):
                assert rival.feed_read(p, 2**62, 1) == []

    rival = PostgresStore(pg_url)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    follower = threading.Thread(target=follow)
    numberer = threading.Thread(target=number)
    follower.start()
    numberer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    follower.join(timeout=60)
    numberer.join(timeout=60)
    try:
        expected: dict[int, set] = {p: set() for p in range(PARTS)}
        for i in range(WRITERS):
            for n in range(BATCHES):
                for r in _batch(i, n):
                    expected[partition_of(r.site_id, PARTS)].add((r.device_id, r.ts_ms))
        for p in range(PARTS):
            assert len(seen[p]) == len(set(seen[p])), f"partition {p} saw a reading twice"
            assert set(seen[p]) == expected[p], f"partition {p} missed readings"
        # Consumed entries are gone.
        assert all(reader.feed_read(p, 0, 10) == [] for p in range(PARTS))
    finally:
        for s in [*writers, reader, rival]:
            s.close()


def test_a_taken_over_partition_refuses_the_old_workers_write(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        store.feed_partitions(PARTS)
        store.enable_feed(PARTS, {"dev-1": "site-1"})
        store.write_batch([Reading("dev-1", "site-1", "ph", T0, 7.2, "N", T0)])
        part = partition_of("site-1", PARTS)
        pos, old = store.feed_claim(part)
        entries = store.feed_read(part, pos, 10)
        assert [e.pos for e in entries] == [1]
        _, new = store.feed_claim(part)  # another worker takes it over
        with pytest.raises(LeaseLost):
            store.feed_commit(part, old, 1, [])
        store.feed_commit(part, new, 1, [])
        assert store.feed_read(part, 1, 10) == []
    finally:
        store.close()


def test_a_redelivered_batch_adds_nothing_to_the_feed(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        store.enable_feed(PARTS, {})
        batch = [Reading("dev-1", "site-1", "ph", T0, 7.2, "N", T0)]
        assert store.write_batch(batch) == 1
        assert store.write_batch(batch + batch) == 0
        part = partition_of("site-1", PARTS)
        entries = store.feed_read(part, 0, 10)
        assert [len(e.readings) for e in entries] == [1]
    finally:
        store.close()


def test_an_entry_committed_late_comes_after_and_blocks_no_writer(pg_url: str) -> None:
    """A batch whose transaction began first but commits last: the writers after it do not
    wait for it, the reader is given their entries meanwhile, and the late one after them."""
    store = PostgresStore(pg_url)
    store.enable_feed(PARTS, {"dev-1": "site-1"})
    part = partition_of("site-1", PARTS)
    late = psycopg.connect(pg_url, autocommit=True)
    try:
        with late.transaction():
            feed.append(late, PARTS, [Reading("dev-1", "site-1", "ph", T0, 7.2, "N", T0)], (), ())
            # Same partition, committed while the first is open (it would wait on a lock).
            for n in (1, 2):
                store.write_batch([Reading("dev-1", "site-1", "ph", T0 + n, 7.2, "N", T0)])
            pos, epoch = store.feed_claim(part)
            first = store.feed_read(part, pos, 10)
            assert [(e.pos, e.readings[0].ts_ms) for e in first] == [(1, T0 + 1), (2, T0 + 2)]
            store.feed_commit(part, epoch, 2, [])
            assert store.feed_read(part, 2, 10) == []
        after = store.feed_read(part, 2, 10)
        assert [(e.pos, e.readings[0].ts_ms) for e in after] == [(3, T0)]
    finally:
        late.close()
        store.close()


def test_an_aborted_batch_leaves_no_entry_nor_gap(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.enable_feed(PARTS, {"dev-1": "site-1"})
    part = partition_of("site-1", PARTS)
    try:
        batch = [Reading("dev-1", "site-1", "ph", T0, 7.2, "N", T0)]
        conn = psycopg.connect(pg_url, autocommit=True)
        with conn, pytest.raises(RuntimeError), conn.transaction():
            feed.append(conn, PARTS, batch, (), ())
            raise RuntimeError("the batch's commit failed")
        store.write_batch([Reading("dev-1", "site-1", "ph", T0 + 1, 7.2, "N", T0)])
        entries = store.feed_read(part, 0, 10)
        assert [(e.pos, e.readings[0].ts_ms) for e in entries] == [(1, T0 + 1)]
    finally:
        store.close()
