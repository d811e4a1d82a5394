"""A fresh PostgreSQL database per test, on the server named by LANDUN_TEST_DATABASE_URL
(.ci/run starts one and sets it). Without a server the PostgreSQL tests skip, saying why; in CI
(CI=true) they fail instead: there the server is part of the test bed."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

URL_ENV = "LANDUN_TEST_DATABASE_URL"


@functools.cache
def _why_not() -> str | None:
    """None if the test server answers, else the reason it cannot be used."""
    url = os.environ.get(URL_ENV)
    if not url:
        return f"{URL_ENV} is not set: no PostgreSQL server to test against"
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {URL_ENV} does not answer: {' '.join(str(exc).split())}"
    return None


def require_server() -> str:
    """The server's URL; skips the test (fails it in CI) when there is none."""
    why = _why_not()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs a PostgreSQL server: {why}")
        pytest.skip(why)
    return os.environ[URL_ENV]


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database with a random name; yield its URL; drop it afterwards."""
    server = require_server()
    name = f"landun_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
