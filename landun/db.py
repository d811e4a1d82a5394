"""`landun db upgrade`, and the `--database` option of every command that opens the store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from store.factory import DATABASE_URL_ENV, describe


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        default=os.environ.get(DATABASE_URL_ENV) or None,
        metavar="URL",
        help=f"PostgreSQL, postgresql://user:password@host:5432/dbname (default:"
        f" ${DATABASE_URL_ENV}; unset: the SQLite file in --data-dir)",
    )


def prepare(database_url: str | None) -> None:
    """Before a process starts its stages: reach PostgreSQL and bring its schema up to date, so
    a wrong URL stops it at once with one line (StoreUnavailable or DatabaseUrlError)."""
    if database_url:
        from store.postgres.db import connect, upgrade

        with connect(database_url) as conn:
            upgrade(conn)


def _upgrade(args: argparse.Namespace) -> int:
    db_path = Path(args.data_dir) / "landun.db"
    where = describe(db_path, args.database)
    if args.database:
        from store.postgres.db import connect, schema_version, upgrade

        with connect(args.database) as conn:
            before = schema_version(conn)
            steps = upgrade(conn)
            after = schema_version(conn)
        if steps:
            print(f"{where}: schema upgraded from version {before} to {after}")
        else:
            print(f"{where}: schema already at version {after}")
        return 0
    from store.ledger import SqliteLedger
    from store.lines import SqliteLineLedger
    from store.sqlite import SqliteStore

    # The SQLite files bring their schema up to date when they open.
    SqliteStore(db_path).close()
    SqliteLedger(db_path).close()
    SqliteLineLedger(db_path).close()
    print(f"{where}: schema up to date")
    return 0


def _retain(args: argparse.Namespace) -> int:
    from domain.timeutil import now_ms
    from store.factory import open_store
    from store.retention import RetainingStore, RetentionSettings, load_retention_settings

    settings = RetentionSettings(args.raw_days) if args.raw_days else load_retention_settings()
    db_path = Path(args.data_dir) / "landun.db"
    store = open_store(db_path, args.database)
    assert isinstance(store, RetainingStore)  # both relational stores keep their own readings
    try:
        report = store.apply_retention(now_ms(), settings)
    finally:
        store.close()
    print(
        f"{describe(db_path, args.database)}: {report.removed} raw readings older than"
        f" {settings.raw_days} days rolled up into {report.hours} hourly aggregates and removed;"
        f" {report.kept_as_evidence} kept as alert evidence"
    )
    return 0


def add_subparser(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="apply pending schema migrations (also done on start)")
    add_database_argument(up)
    up.add_argument("--data-dir", default="var", help="where the SQLite database lives")
    up.set_defaults(func=_upgrade)
    retain = db.add_parser(
        "retain",
        help="remove raw readings past retention (store/data/retention.toml) now; a running"
        " Landun does it every every_hours",
    )
    add_database_argument(retain)
    retain.add_argument("--data-dir", default="var", help="where the SQLite database lives")
    retain.add_argument("--raw-days", type=int, help="override the configured raw_days")
    retain.set_defaults(func=_retain)
