"""Partition leases on PostgreSQL: session advisory locks on one connection of their own.

A worker holds a member lock (so workers can count each other) and one lock per partition it
evaluates. The locks live as long as the connection: a killed worker's connection closes and
its locks are free at once; a machine gone silent loses them when TCP keepalive gives up on its
connection. The feed's epoch (store.postgres.feed) fences the writes of a worker that lost a
lease without noticing."""

from __future__ import annotations

import psycopg

from store.base import StoreUnavailable
from store.feed import FeedSettings
from store.postgres.db import redact

MEMBER_KEY = 0x4C414E44  # "LAND": (MEMBER_KEY, slot) is a live worker
PARTITION_KEY = 0x4C414E45  # (PARTITION_KEY, part) is the lease of a partition
MAX_WORKERS = 1024


class Leases:
    def __init__(self, url: str, settings: FeedSettings) -> None:
        self.url = url
        self.settings = settings
        self.slot: int | None = None
        self._conn: psycopg.Connection | None = None

    def connect(self) -> int:
        """(Re)connect and join as a member; the member slot, which spreads first choices."""
        self.close()
        s = self.settings
        try:
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=s.keepalive_idle_s,
                keepalives_interval=s.keepalive_interval_s,
                keepalives_count=s.keepalive_count,
            )
            for slot in range(MAX_WORKERS):
                if self._try(MEMBER_KEY, slot):
                    self.slot = slot
                    return slot
        except psycopg.OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"leases at {redact(self.url)}: {exc}") from exc
        raise StoreUnavailable(f"more than {MAX_WORKERS} alert workers on one database")

    def members(self) -> int:
        """Live workers on this database (this one included)."""
        return self._one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::oid AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (MEMBER_KEY,),
        )

    def held(self) -> set[int]:
        """The partitions this connection holds, as the server sees it."""
        rows = self._rows(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::oid AND objsubid = 2 AND pid = pg_backend_pid()",
            (PARTITION_KEY,),
        )
        return {int(r[0]) for r in rows}

    def take(self, part: int) -> bool:
        return self._try(PARTITION_KEY, part)

    def release(self, part: int) -> None:
        self._one("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_KEY, part))

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self.slot = None

    def _try(self, key: int, n: int) -> bool:
        return bool(self._one("SELECT pg_try_advisory_lock(%s, %s)", (key, n)))

    def _one(self, sql: str, args: tuple):
        return self._rows(sql, args)[0][0]

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        if self._conn is None:
            raise StoreUnavailable("leases: not connected")
        try:
            return self._conn.execute(sql, args).fetchall()
        except psycopg.OperationalError as exc:
            self.close()
            raise StoreUnavailable(f"leases: {exc}") from exc
