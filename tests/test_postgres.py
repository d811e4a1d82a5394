"""PostgreSQL specifics on a real server: versioned migrations from an empty database and from
the previous schema, monthly partitions, the whole system selecting PostgreSQL, and the CLI's
one-line answer to a wrong database URL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from domain.model import Alert, AlertFamily, Reading, Severity
from domain.timeutil import now_ms
from landun.broker import free_port
from store.base import AlertChange, AlertQuery, ReadingQuery
from store.migrations import Migration, pending
from store.migrations.postgres import MIGRATIONS
from store.postgres.db import connect, redact, schema_version, upgrade
from store.postgres.store import (
    HYPERTABLE,
    PARTITIONS,
    PostgresStore,
    month_start_ms,
    partition_name,
)
from store.retention import HOUR_MS, RetentionSettings
from tests.conftest import Publisher, demo_config, start_system, wait_for
from tests.postgres import fresh_database, require_server
from tests.test_end_to_end import DEVICE, MINUTE, record
from tests.test_sqlite_migrations import LAST_SEEN_BEFORE, LEGACY_STATE, assert_moved, typed_steps

T0 = 1_795_334_400_000  # 2026-11-22 00:00 UTC
DAY = 86_400_000


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def test_migrations_from_an_empty_database(pg_url: str) -> None:
    with connect(pg_url) as conn:
        assert schema_version(conn) == 0
        applied = upgrade(conn)
        assert [m.version for m in applied] == list(range(1, len(MIGRATIONS) + 1))
        assert schema_version(conn) == len(MIGRATIONS)
        assert upgrade(conn) == [], "a second upgrade has nothing to do"
    assert {"readings", "alerts", "waste_bags", "schema_migrations"} <= _tables(pg_url)


def test_migrations_from_the_previous_schema_keep_the_data(pg_url: str) -> None:
    with connect(pg_url) as conn:
        upgrade(conn, MIGRATIONS[:-1])
        assert schema_version(conn) == len(MIGRATIONS) - 1
        conn.execute(
            "INSERT INTO users (name, password_hash, role, jurisdictions, created_ms)"
            " VALUES ('ann', 'h', 'admin', '[]', 0)"
        )
    store = PostgresStore(pg_url)  # opening the store applies what is pending
    try:
        with connect(pg_url) as conn:
            assert schema_version(conn) == len(MIGRATIONS)
        assert store.get_user("ann")[1] == "h"
    finally:
        store.close()


def test_engine_state_of_the_previous_schema_moves_to_typed_tables(pg_url: str) -> None:
    first = MIGRATIONS.index(typed_steps(MIGRATIONS)[0])
    with connect(pg_url) as conn:
        upgrade(conn, MIGRATIONS[:first])
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO engine_state VALUES (%s, %s, %s)", LEGACY_STATE)
            cur.executemany("INSERT INTO device_last_seen VALUES (%s, %s)", LAST_SEEN_BEFORE)
    store = PostgresStore(pg_url)  # opening the store applies what is pending
    try:
        with connect(pg_url) as conn:
            left = {ns for (ns,) in conn.execute("SELECT DISTINCT namespace FROM engine_state")}
        assert_moved(store, left)
    finally:
        store.close()


def test_migration_steps_must_be_known_and_in_order() -> None:
    steps = (Migration(1, "a", ""), Migration(2, "b", ""))
    assert pending(steps, {1}) == [steps[1]]
    with pytest.raises(RuntimeError, match="newer Landun"):
        pending(steps, {1, 2, 3})
    with pytest.raises(ValueError, match=r"1\.\.n"):
        pending((steps[1],), set())


def test_readings_go_to_monthly_partitions_created_on_demand(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        now = now_ms()
        assert partition_name(month_start_ms(now)) in _tables(pg_url), "created ahead"
        # Two readings a month apart, across the end of November 2026 (UTC).
        old = Reading("d1", "s1", "ph", T0, 7.0, recv_ms=T0)
        new = Reading("d1", "s1", "ph", T0 + 10 * DAY, 7.1, recv_ms=T0 + 10 * DAY)
        assert store.write_batch([old, new]) == 2
        assert {"readings_y2026m11", "readings_y2026m12"} <= _tables(pg_url)
        assert store.query_readings(ReadingQuery(device_id="d1")) == [old, new]
    finally:
        store.close()
    reopened = PostgresStore(pg_url)  # finds the partitions it made
    try:
        assert reopened.write_batch([old]) == 0
    finally:
        reopened.close()


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "secret" not in redact("postgresql://h/db?password=secret&sslmode=require")
    assert redact("postgresql://[::1") == "postgresql://[::1"


def test_the_running_system_keeps_everything_in_postgresql(broker, pg_url, tmp_path) -> None:
    cfg = demo_config(
        broker.url, tmp_path / "var", f"landun-pg-{tmp_path.name}", database_url=pg_url
    )
    running = start_system(cfg)
    try:
        publisher = Publisher(broker.url, f"dev-{tmp_path.name}")
        start = now_ms() - 30 * MINUTE
        for i in range(21):  # 20 minutes of free chlorine below its limit
            publisher.publish(DEVICE, record(start + i * MINUTE, i, 0.12))
        publisher.close()
        params = {"device": DEVICE, "parameter": "free_chlorine"}
        wait_for(
            lambda: len(running.http.get("/api/v1/readings", params=params).json()) == 21,
            what="21 readings",
        )
        alerts = wait_for(lambda: running.http.get("/api/v1/alerts").json(), what="an alert")
        assert [a["rule_id"] for a in alerts] == ["range:free_chlorine"]
    finally:
        running.stop()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 21 * 5
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1
    assert not (tmp_path / "var" / "landun.db").exists(), "no SQLite file beside PostgreSQL"


def _landun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landun.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).parent.parent,
    )


def _wrong_password() -> str:
    server = urlsplit(require_server())
    netloc = f"{server.username}:wrong-pw@{server.hostname}:{server.port or 5432}"
    return urlunsplit(server._replace(netloc=netloc))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (_wrong_password, "password authentication failed"),
        (lambda: f"postgresql://u:wrong-pw@127.0.0.1:{free_port()}/db", "Connection refused"),
        (lambda: "postgresql://[::1", "bad PostgreSQL URL"),
        (lambda: "mysql://root:wrong-pw@localhost/landun", "not a PostgreSQL URL"),
    ],
    ids=["wrong-password", "nothing-listening", "malformed", "not-postgresql"],
)
@pytest.mark.parametrize(
    "command",
    [("run", "--no-simulators", "--port", "0"), ("db", "upgrade"), ("db", "retain")],
    ids=["run", "db-upgrade", "db-retain"],
)
def test_a_wrong_database_url_is_one_line_and_a_nonzero_exit(
    url: Callable[[], str], says: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    done = _landun(*command, "--database", url(), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("landun: "), done.stderr
    assert says in lines[0]
    assert "wrong-pw" not in lines[0], "the password is not shown"


def test_db_upgrade_brings_a_new_database_to_the_latest_version(pg_url: str) -> None:
    first = _landun("db", "upgrade", "--database", pg_url)
    assert first.returncode == 0, first.stderr
    assert f"from version 0 to {len(MIGRATIONS)}" in first.stdout
    assert ":***@" in first.stdout, "no password in the output"
    again = _landun("db", "upgrade", "--database", pg_url)
    assert f"already at version {len(MIGRATIONS)}" in again.stdout


def test_db_upgrade_on_sqlite(tmp_path: Path) -> None:
    done = _landun("db", "upgrade", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "landun.db").exists()


def test_a_pg_dump_restored_into_a_fresh_database_has_every_reading_and_alert(
    pg_url: str, tmp_path: Path
) -> None:
    """The backup in docs/deployment.md: pg_dump (custom format), pg_restore into an empty
    database, and the store opened on the copy finds everything."""
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed (postgresql-client)")
    store = PostgresStore(pg_url)
    readings = [
        Reading(f"d{d}", "s1", p, T0 + i * MINUTE + month * 31 * DAY, 7.0 + i / 100, recv_ms=T0)
        for d in range(3)
        for p in ("ph", "orp")
        for i in range(50)
        for month in (0, 1)  # two partitions
    ]
    alert = Alert("s1", "d1", "range:ph", AlertFamily.COMPLIANCE, Severity.WARNING, "ph",
                  "pH 9.1 above 8.5", T0, T0, evidence={"readings": {"from_ms": T0}})  # fmt: skip
    try:
        store.write_batch(readings)
        store.save_alerts([AlertChange(alert, "opened")])
    finally:
        store.close()
    dump = tmp_path / "landun.dump"
    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", pg_url], check=True)
    with fresh_database() as copy_url:
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={copy_url}", str(dump)],
            check=True,
        )
        copy = PostgresStore(copy_url)
        try:
            got = copy.query_readings(ReadingQuery(limit=len(readings) + 1))
            assert sorted(got) == sorted(readings)
            assert copy.list_alerts(AlertQuery()) == [alert]
            assert [e.action for e in copy.audit_trail(alert.id)] == ["opened"]
        finally:
            copy.close()


def test_db_retain_on_postgresql_and_sqlite(pg_url: str, tmp_path: Path) -> None:
    for where in (["--database", pg_url], ["--data-dir", str(tmp_path)]):
        done = _landun("db", "retain", *where)
        assert done.returncode == 0, done.stderr
        assert "0 raw readings older than 400 days" in done.stdout


def test_readings_layout_follows_the_timescaledb_extension(pg_url: str) -> None:
    """Monthly partitions where TimescaleDB is absent (as on Debian's postgresql-15 here); a
    hypertable where it is available, with the same writes, queries and retention."""
    with psycopg.connect(pg_url) as conn:
        available = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        ).fetchone()[0]
    store = PostgresStore(pg_url)
    try:
        assert store.layout == (HYPERTABLE if available else PARTITIONS)
        old = [Reading("d1", "s1", "ph", T0 + i * MINUTE, 7.0, recv_ms=T0) for i in range(30)]
        store.write_batch(old)
        assert store.query_readings(ReadingQuery(device_id="d1")) == old
        report = store.apply_retention(T0 + 500 * DAY, RetentionSettings(raw_days=400))
        assert (report.removed, report.kept_as_evidence) == (30, 0)
        assert store.query_readings(ReadingQuery(device_id="d1")) == []
        [hour] = store.downsample("d1", ["ph"], T0, T0 + HOUR_MS, HOUR_MS)
        assert hour.count == 30
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'readings'::regclass")
        assert kind.fetchone()[0] == ("r" if available else "p")


def test_a_batch_with_stored_readings_stores_only_the_new_ones(pg_url: str) -> None:
    """The direct COPY refuses the whole batch; the staging path then skips what is stored."""
    store = PostgresStore(pg_url)
    try:
        first = [Reading("d1", "s1", "ph", T0 + i * MINUTE, 7.0, recv_ms=T0) for i in range(3)]
        assert store.write_batch(first) == 3
        later = [Reading("d1", "s1", "ph", T0 + i * MINUTE, 7.0, recv_ms=T0) for i in range(1, 5)]
        assert store.write_batch(later) == 2
        assert store.query_readings(ReadingQuery(device_id="d1")) == first + later[2:]
        assert store.query_readings(ReadingQuery(site_id="s1")) == first + later[2:]
    finally:
        store.close()
