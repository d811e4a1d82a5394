"""One PostgreSQL database behind a psycopg connection pool: connections in autocommit for
reads, explicit transactions for writes, connection failures as StoreUnavailable, and the
schema brought up to date when it opens."""

from __future__ import annotations

import logging
import math
import re
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from domain.timeutil import now_ms
from store.base import StoreUnavailable
from store.factory import DatabaseUrlError
from store.migrations import Migration, pending
from store.migrations.postgres import MIGRATIONS

log = logging.getLogger("landun.store")

# pg_advisory_xact_lock key: one process at a time upgrades the schema or changes partitions.
SCHEMA_LOCK = 0x4C414E44554E  # "LANDUN"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs (parsed or not)."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url, count=1)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def connect(url: str, connect_timeout_s: int = 10) -> psycopg.Connection:
    """One connection in autocommit; a bad or unreachable URL raises a one-line error."""
    if not is_postgres_url(url):
        raise DatabaseUrlError(f"not a PostgreSQL URL (postgresql://...): {redact(url)}")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout_s)
    except psycopg.ProgrammingError as exc:  # the URL itself is malformed
        raise DatabaseUrlError(f"bad PostgreSQL URL {redact(url)}: {_one_line(exc)}") from exc
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)}: {_one_line(exc)}"
        ) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def only_row(cur: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a statement that always yields one (an aggregate, an UPDATE ... RETURNING
    of a row that exists): its absence is a broken schema, not a result."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("the statement yielded no row")
    return row


def schema_version(conn: psycopg.Connection) -> int:
    exists = only_row(conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL"))[0]
    if not exists:
        return 0
    return only_row(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]


def upgrade(
    conn: psycopg.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """Apply the pending steps in one transaction (DDL is transactional here: all or none);
    returns them. Concurrent upgrades wait for each other on an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_ms bigint NOT NULL)"
        )
        applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        steps = pending(tuple(migrations), applied)
        for step in steps:
            log.info("schema: applying %d (%s)", step.version, step.name)
            conn.execute(step.sql)  # no parameters: several statements may run
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (%s, %s, %s)",
                (step.version, step.name, now_ms()),
            )
    return steps


class PostgresDatabase:
    """`lock_timeout_ms` bounds how long a statement waits for a lock before the write is
    reported unavailable (and retried by its caller); `pool_timeout_s` how long a caller waits
    for a connection. A connection idle in the pool for `check_idle_s` or longer is checked
    (a round trip) before it is handed out; one used more recently is handed out as it is."""

    def __init__(
        self,
        url: str,
        max_connections: int = 4,
        lock_timeout_ms: int = 5000,
        pool_timeout_s: float = 10.0,
        connect_timeout_s: int = 10,
        configure: Callable[[psycopg.Connection], None] | None = None,
        check_idle_s: float = 1.0,
    ) -> None:
        self.url = url
        self.check_idle_s = check_idle_s
        # connection -> when it last finished a piece of work without a connection failure
        self._used: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        with connect(url, connect_timeout_s) as conn:
            upgrade(conn)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout_s,
                "options": f"-c lock_timeout={int(lock_timeout_ms)}",
            },
            configure=configure,  # run on each new connection
            # A connection broken by a server restart is replaced, not handed out.
            check=self._check,
            timeout=pool_timeout_s,
            name="landun",
            open=False,
        )
        self._pool.open(wait=False)

    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's check at every checkout, skipped for a connection that worked moments
        ago: a busy process (an alert worker's round, an ingest batch) checks out several
        times a second, and each check was a round trip more on the alert latency's path. A
        server restarted meanwhile fails that one use, which every caller retries; the pool
        then discards the broken connection."""
        if time.monotonic() - self._used.get(conn, -math.inf) >= self.check_idle_s:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit; a connection failure is StoreUnavailable."""
        try:
            with self._pool.connection() as conn:
                yield conn
                self._used[conn] = time.monotonic()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"postgresql: {_one_line(exc)}") from exc

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection]:
        """One write transaction: committed at the end, rolled back on any error."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence = ()) -> tuple | None:
        with self.connection() as conn:
            return conn.execute(sql, args).fetchone()

    def only(self, sql: str, args: Sequence = ()) -> tuple[Any, ...]:
        """The row of a statement that always yields one (see only_row)."""
        with self.connection() as conn:
            return only_row(conn.execute(sql, args))

    def close(self) -> None:
        self._pool.close()
