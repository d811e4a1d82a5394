"""One SQLite database file in WAL mode: a single writer connection behind a lock, and a reader
connection per thread, which WAL lets run alongside the writer. The store and the waste ledger
share the file, each with its own tables and this connection handling. Other files may be
attached read-only: a write transaction then locks this file only. Each user of a file keeps its
tables by versioned steps (store.migrations), recorded per component in `schema_migrations`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from domain.timeutil import now_ms
from store.base import StoreUnavailable
from store.migrations import Migration, pending

# The database holds password and token hashes: only its owner may read it. SQLite gives the
# WAL and shared-memory files the database file's permissions.
PRIVATE_MODE = 0o600


def make_private(path: Path) -> None:
    """Create the database file owner-only, or make an existing one (and its WAL and shared
    memory files, from a release that left them readable) owner-only."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE))
    except FileExistsError:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                if file.stat().st_mode & 0o777 != PRIVATE_MODE:
                    file.chmod(PRIVATE_MODE)


def connect(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path.resolve(),  # absolute: with URIs on, only a name starting with "file:" is a URI
        timeout=busy_timeout_ms / 1000,
        check_same_thread=False,
        isolation_level=None,
        uri=True,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against process crashes (what at-least-once needs); a power
    # cut may lose the last transactions, which the broker then redelivers as they were not acked.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # Checkpoint the WAL every ~40 MB instead of every 4 MB: fewer stalls on the ingest path.
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    # A big transaction (a migration) grows the WAL past that; cut it back once reset.
    conn.execute("PRAGMA journal_size_limit=67108864")
    return conn


def readonly_uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def attach_readonly(conn: sqlite3.Connection, path: Path, name: str) -> None:
    """Attach another database file read-only. BEGIN IMMEDIATE takes the write lock of every
    writable attached file, but only a read snapshot of a read-only one, taken after the write
    lock of this connection's own file."""
    conn.execute("ATTACH DATABASE ? AS " + name, (readonly_uri(path),))


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade(conn: sqlite3.Connection, component: str, migrations: Sequence[Migration]) -> None:
    """Apply `component`'s pending steps, each in its own write transaction with its record."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL,"
        " version INTEGER NOT NULL, name TEXT NOT NULL, applied_ms INTEGER NOT NULL,"
        " PRIMARY KEY (component, version))"
    )
    rows = conn.execute("SELECT version FROM schema_migrations WHERE component = ?", (component,))
    for step in pending(tuple(migrations), {v for (v,) in rows}):
        record = (
            "INSERT OR IGNORE INTO schema_migrations (component, version, name, applied_ms)"
            f" VALUES ({_quoted(component)}, {step.version}, {_quoted(step.name)}, {now_ms()})"
        )
        try:
            # A script, as a step may hold several statements; OR IGNORE: a step's statements
            # are idempotent, and another process may have applied it meanwhile.
            conn.executescript(f"BEGIN IMMEDIATE;\n{step.sql}\n;{record};\nCOMMIT;")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class SqliteDatabase:
    def __init__(
        self,
        path: Path | str,
        component: str,
        migrations: Sequence[Migration],
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(self.path)
        self._writer = connect(self.path, busy_timeout_ms)
        upgrade(self._writer, component, migrations)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; any SQLite failure is StoreUnavailable (retry later)."""
        with self._lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"sqlite: cannot begin a write: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may already have rolled back (disk full, I/O error): a failing ROLLBACK
                # must not hide the error that matters.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"sqlite: {exc}") from exc
                raise

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()
