"""The PostgreSQL connection pool (store/postgres/db.py): a connection idle for a while is checked
before it is handed out, so one broken by a server restart meanwhile is replaced unseen; one
used moments ago is handed out unchecked (no round trip more on a busy process's path), so a
break in between fails that one use, and the next gets a new connection."""

from __future__ import annotations

import psycopg
import pytest

from store.base import StoreUnavailable
from store.postgres.db import PostgresDatabase


def _cut(server_url: str, pid: int) -> None:
    """End the backend as a server restart would (and wait until it is gone)."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_an_idle_connection_is_checked_and_a_broken_one_replaced(pg_url: str) -> None:
    db = PostgresDatabase(pg_url, max_connections=1, check_idle_s=0.0)
    try:
        (pid,) = db.only("SELECT pg_backend_pid()")
        _cut(pg_url, pid)
        (again,) = db.only("SELECT pg_backend_pid()")
        assert again != pid
    finally:
        db.close()


def test_a_connection_used_moments_ago_is_not_checked_and_a_break_fails_one_use(
    pg_url: str,
) -> None:
    db = PostgresDatabase(pg_url, max_connections=1, check_idle_s=3600.0)
    try:
        (pid,) = db.only("SELECT pg_backend_pid()")
        _cut(pg_url, pid)
        with pytest.raises(StoreUnavailable):
            db.only("SELECT pg_backend_pid()")
        (again,) = db.only("SELECT pg_backend_pid()")
        assert again != pid
    finally:
        db.close()
