"""Which store a process opens: PostgreSQL when given a database URL, else the embedded SQLite
file. The imports are lazy: a SQLite deployment never loads psycopg, and the other way round."""

from __future__ import annotations

from pathlib import Path

from store.base import Store
from store.ledger import WasteLedger
from store.lines import LineLedger

DATABASE_URL_ENV = "LANDUN_DATABASE_URL"


class DatabaseUrlError(ValueError):
    """The database URL is not one Landun can use."""


def open_store(db_path: Path, database_url: str | None) -> Store:
    if database_url:
        from store.postgres.store import PostgresStore

        return PostgresStore(database_url)
    from store.sqlite import SqliteStore

    return SqliteStore(db_path)


def open_ledger(db_path: Path, database_url: str | None) -> WasteLedger:
    if database_url:
        from store.postgres.ledger import PostgresLedger

        return PostgresLedger(database_url)
    from store.ledger import SqliteLedger

    return SqliteLedger(db_path)


def open_line_ledger(db_path: Path, database_url: str | None) -> LineLedger:
    if database_url:
        from store.lines import PostgresLineLedger

        return PostgresLineLedger(database_url)
    from store.lines import SqliteLineLedger

    return SqliteLineLedger(db_path)


def describe(db_path: Path, database_url: str | None) -> str:
    """Where the data lives, for people (no password)."""
    if database_url:
        from store.postgres.db import redact

        return redact(database_url)
    return str(db_path.resolve())
