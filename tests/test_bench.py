"""The benchmark scripts in their --quick form, so they never rot. Figures are printed, not
judged: speed is measured by the benchmarks, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from landun.broker import free_port
from tests.brokers import have_mosquitto
from tests.postgres import require_server

BENCH = Path(__file__).parent.parent / "bench"


def run_quick(script: str, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed (CI installs it)")
def test_ingest_throughput_quick_reports_every_figure():
    figures = run_quick("ingest_throughput.py")
    for key in ("msgs_per_s", "readings_per_s", "bare_paho_msgs_per_s", "ratio", "peak_rss_mb"):
        assert figures[key] > 0, key
    assert figures["alerts_timed"] == 5
    assert figures["unmeasured"] == [] and figures["steady_rate_offered"] > 0
    assert figures["p50_alert_ms"] <= figures["p99_alert_ms"]


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed (CI installs it)")
def test_ingest_throughput_quick_with_two_workers_on_a_shared_subscription():
    figures = run_quick("ingest_throughput.py", "--workers", "2")
    assert figures["workers"] == 2
    assert figures["readings_stored"] == figures["messages"] * 5  # each stored once, by one worker
    assert figures["msgs_per_s"] > 0 and figures["p99_alert_ms"] is None


def test_hj212_flood_quick_reports_every_figure():
    figures = run_quick("hj212_flood.py")
    for flood in ("hashes", "broken_frames"):
        assert figures[flood]["logger_replies"] >= 1, flood
    # The flood's dead letters are bounded per connection: 20 each, one summary each, plus the
    # logger connections' none.
    assert figures["dead_letters_stored"] <= 2 * 21
    assert figures["ten_packets_with_pbkdf2_s"] > 0


def test_query_quick_reports_every_figure():
    figures = run_quick("query.py")
    assert figures["week_raw_rows"] == 7 * 24 * 60
    assert figures["week_hourly_buckets"] in (168, 169)  # a week, aligned to whole hours
    assert figures["week_hourly_p50_ms"] > 0


def test_detector_throughput_runs_on_a_small_series():
    out = subprocess.run(
        [sys.executable, str(BENCH / "detectors_throughput.py"), "2000"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures and all(v > 0 for v in figures.values() if isinstance(v, int | float))


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed (CI installs it)")
def test_ingest_throughput_quick_on_postgresql():
    figures = run_quick("ingest_throughput.py", "--database", require_server())
    assert figures["store"] == "postgresql"
    assert figures["readings_stored"] >= figures["messages"] * 5  # the steady load's too
    assert figures["alerts_timed"] == 5
    # The server's sessions are counted; a quick drain can end within one /proc clock tick
    # (10 ms) of the first sample, so their share may round to nothing.
    assert figures["cpu_us_per_msg"]["postgres_for_landun"] >= 0
    assert figures["cores_for_target"] > 0 and len(figures["load_avg_1min"]["landun"]) == 2


def test_postgres_disk_reports_bytes_per_reading():
    out = subprocess.run(
        [sys.executable, str(BENCH / "postgres_disk.py"), "--url", require_server(),
         "--sites", "3", "--days", "0.01"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )  # fmt: skip
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["readings"] == 3 * 5 * 14
    assert figures["bytes_per_reading"] > 0


def test_query_quick_on_postgresql():
    figures = run_quick("query.py", "--database", require_server())
    assert figures["store"] == "postgresql"
    assert figures["week_raw_rows"] == 7 * 24 * 60
    assert figures["week_hourly_buckets"] in (168, 169)


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed (CI installs it)")
def test_ingest_throughput_without_its_database_still_ends_with_the_summary():
    url = f"postgresql://nobody:wrong-pw@127.0.0.1:{free_port()}/postgres"
    out = subprocess.run(
        [sys.executable, str(BENCH / "ingest_throughput.py"), "--quick", "--database", url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["store"] == "postgresql" and "Connection refused" in figures["unmeasured"][0]


@pytest.mark.parametrize("on", ["sqlite", "postgresql"])
def test_store_write_quick_reports_every_figure(on: str):
    database = ("--database", require_server()) if on == "postgresql" else ()
    figures = run_quick("store_write.py", *database)
    assert figures["store"] == on and figures["readings"] == 3 * 10_000
    assert figures["readings_per_s"] > 0 and figures["commit_p50_ms"] <= figures["commit_max_ms"]
    assert (figures["server_cpu_us_per_reading"] is None) == (on == "sqlite")
