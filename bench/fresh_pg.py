"""A fresh PostgreSQL database for one bench run, dropped afterwards."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server at `server_url`; yield its URL; drop it."""
    name = f"landun_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        try:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except psycopg.Error as exc:  # the figures printed stand; the summary stays last
            print(f"could not drop {name}: {' '.join(str(exc).split())}", file=sys.stderr)
