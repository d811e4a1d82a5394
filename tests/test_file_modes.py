"""The SQLite files hold password and token hashes: owner-only (0600), WAL and shared-memory
files included, and so is the generated admin password."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from domain.model import DeadLetter
from landun.system import ensure_admin
from store.ledger import SqliteLedger
from store.sqlite import SqliteStore

TOPIC = "landun/v1/devices/x/telemetry"


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


def test_database_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        data = tmp_path / "var"
        store = SqliteStore(data / "landun.db")
        ledger = SqliteLedger(data / "landun.db")
        store.write_batch([], [DeadLetter(TOPIC, None, 1, "empty payload", b"")], [])
        note = ensure_admin(store, data, None)
        found = modes(data)
        assert {"landun.db", "landun.db-wal", "landun.db-shm", "admin-password.txt"} <= set(found)
        assert set(found.values()) == {0o600}, found
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert "admin / " in note
        ledger.close()
        store.close()
    finally:
        os.umask(old)


def test_an_existing_readable_database_is_made_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "landun.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    SqliteStore(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
