"""At-least-once ingest, proved on real parts: nothing lost, nothing stored twice.

A real Mosquitto with persistence, ingest as a separate process (tests/reliability_worker.py:
the production SqliteStore + IngestPipeline + MqttSubscriber, nothing else), and a publisher on
QoS 1 with a persistent session. A message counts as delivered once the broker PUBACKed it; every
test waits for all of them to be, then counts the rows in SQLite directly and compares them, key
by key and value by value, with what was published. Run with -s to see the figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.kinds import standard_decoders
from ingest.metrics import IngestMetrics, render_prometheus
from ingest.pipeline import IngestListener, IngestPipeline, RawMessage
from landun.demo import demo_registry_path
from store.sqlite import SqliteStore, connect_readonly
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.conftest import wait_for
from tests.postgres import URL_ENV as PG_URL_ENV
from tests.postgres import fresh_database

needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="needs mosquitto on PATH")

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("pool-xh-01-wq", "pool-xh-02-wq", "pool-xh-03-wq", "pool-cn-01-wq", "pool-cn-02-wq")
PER_MESSAGE = 5  # readings in each message
DAY_MS = 86_400_000
# Bounds on hangs only; nothing here asserts speed.
STORE_TIMEOUT_S = 60.0


# -- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """n telemetry messages round-robin over the demo pools, one second apart per device.
    free_chlorine carries the message number, so a reading stored from the wrong message shows."""

    n: int
    base_ms: int = field(default_factory=lambda: now_ms() - DAY_MS)

    @property
    def readings(self) -> int:
        return self.n * PER_MESSAGE

    def device(self, i: int) -> str:
        return DEVICES[i % len(DEVICES)]

    def ts(self, i: int) -> int:
        return self.base_ms + (i // len(DEVICES)) * 1000

    def chlorine(self, i: int) -> float:
        return (i % 1000) / 100

    def message(self, i: int) -> tuple[str, bytes]:
        values = {
            "free_chlorine": self.chlorine(i),
            "ph": 7.3,
            "turbidity": 0.3,
            "orp": 700,
            "temperature": 27.0,
        }
        doc = {"ts": self.ts(i), "seq": i, "values": values}
        return f"landun/v1/devices/{self.device(i)}/telemetry", json.dumps(doc).encode()


def _query(db: Path | str, sql: str) -> list[tuple]:
    """Rows of `sql` on the SQLite store at path `db`, or the PostgreSQL database at URL `db`."""
    if isinstance(db, str):
        try:
            with psycopg.connect(db, connect_timeout=5) as conn:
                return conn.execute(sql).fetchall()
        except psycopg.OperationalError:  # restarting, in the PostgreSQL outage test
            return []
    with closing(connect_readonly(db)) as conn:
        return conn.execute(sql).fetchall()


def count_rows(db: Path | str) -> int:
    if isinstance(db, Path) and not db.exists():  # not created yet
        return 0
    counted = _query(db, "SELECT count(*) FROM readings_all")
    return counted[0][0] if counted else 0


def assert_stored_exactly(db: Path | str, stream: Stream) -> int:
    """Every published reading is in the store once, with its own value; nothing else is."""
    rows = _query(db, "SELECT device_id, parameter, ts_ms, value FROM readings_all")
    [(dead,)] = _query(db, "SELECT count(*) FROM dead_letters")
    assert dead == 0
    keys = {(d, p, t) for d, p, t, _ in rows}
    assert len(keys) == len(rows), "the primary key let a duplicate through"
    expected_chlorine = {
        (stream.device(i), stream.ts(i)): stream.chlorine(i) for i in range(stream.n)
    }
    got_chlorine = {(d, t): v for d, p, t, v in rows if p == "free_chlorine"}
    missing = expected_chlorine.keys() - got_chlorine.keys()
    extra = got_chlorine.keys() - expected_chlorine.keys()
    assert not missing, f"{len(missing)} messages missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected messages, e.g. {sorted(extra)[:3]}"
    assert got_chlorine == expected_chlorine
    assert len(rows) == stream.readings
    return len(rows)


# -- the parts ---------------------------------------------------------------------------------


class Publisher:
    """Devices' side: QoS 1 on a persistent session, so paho resends what the broker has not
    PUBACKed, across a broker restart too. Only PUBACKed messages count as delivered."""

    def __init__(self, url: str, client_id: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(500)
        self.client.reconnect_delay_set(0.1, 1)
        # PUBACKs by packet id (20,000 messages stay below the 65,535 ids): a message published
        # while the broker was away keeps its NO_CONN info forever, even once paho has resent it
        # and the broker acknowledged it, so MQTTMessageInfo cannot tell.
        self.acked: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.mids: list[int] = []
        self._thread: threading.Thread | None = None

    def stream(self, stream: Stream, per_second: int) -> None:
        """Publish the whole stream in the background at about per_second messages a second."""

        def run() -> None:
            chunk = max(1, per_second // 20)
            for start in range(0, stream.n, chunk):
                for i in range(start, min(start + chunk, stream.n)):
                    topic, payload = stream.message(i)
                    self.mids.append(self.client.publish(topic, payload, qos=1).mid)
                time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait_acked(self, n: int, timeout: float = STORE_TIMEOUT_S) -> int:
        if self._thread is not None:
            self._thread.join(timeout)
        wait_for(
            lambda: len(self.mids) == n and self.acked.issuperset(self.mids),
            timeout,
            "every message PUBACKed by the broker",
        )
        return len(self.acked.intersection(self.mids))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Worker:
    """tests/reliability_worker.py as a subprocess; its state is read from the JSON it keeps."""

    def __init__(
        self, tmp: Path, broker: MosquittoBroker, db: Path | str, client_id: str, *extra: str
    ):
        self.tmp = tmp
        self.argv = [
            sys.executable, "-m", "tests.reliability_worker", "--broker", broker.url,
            "--db", str(db), "--client-id", client_id, *extra,
        ]  # fmt: skip
        self.client_id = client_id
        self.starts = 0
        self.proc: subprocess.Popen | None = None
        self.status_path = tmp / "unset.json"

    def start(self) -> Worker:
        self.starts += 1
        self.status_path = self.tmp / f"{self.client_id}-{self.starts}.json"
        log = open(self.tmp / f"{self.client_id}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.argv, "--status", str(self.status_path)], cwd=ROOT, stderr=log
        )
        return self

    def status(self) -> dict:
        """Its last written state; fails the test at once if the process died unasked."""
        assert self.proc is not None
        if self.proc.returncode is None and self.proc.poll() is not None:
            log = (self.tmp / f"{self.client_id}-{self.starts}.log").read_text()
            raise AssertionError(f"{self.client_id} exited {self.proc.returncode}:\n{log}")
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def metrics(self) -> dict:
        return self.status().get("metrics", {})

    def wait_subscribed(self) -> None:
        wait_for(lambda: self.status().get("subscribed"), 20, f"{self.client_id} subscribed")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> dict:
        """Stop it cleanly; its final metrics."""
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(30) == 0
        final = self.status()
        assert final["stopped"]
        return final["metrics"]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path):
    b = MosquittoBroker(tmp_path, persistence=True)
    b.start()
    yield b
    b.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[Path | str]:
    """Where ingest stores: a SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "postgres":
        with fresh_database() as url:
            yield url
    else:
        yield tmp_path / "landun.db"


@pytest.fixture
def cleanup():
    """Closes what a test opened, in reverse order, even when it fails half-way."""
    items: list = []
    yield items.append
    for item in reversed(items):
        item.close()


def report(name: str, **figures: object) -> None:
    shown = ", ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[reliability] {name}: {shown}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the tests ---------------------------------------------------------------------------------


@needs_mosquitto
def test_ingest_killed_mid_stream_resumes_and_stores_every_reading_once(
    tmp_path, broker, cleanup, db
):
    stream = Stream(20_000)
    worker = Worker(tmp_path, broker, db, "rel-kill")
    cleanup(worker)
    worker.start().wait_subscribed()
    pub = Publisher(broker.url, "rel-kill-pub")
    cleanup(pub)
    pub.stream(stream, per_second=8000)

    wait_for(lambda: count_rows(db) >= stream.readings // 3, STORE_TIMEOUT_S, "a third stored")
    worker.kill()
    at_kill = count_rows(db)  # committed before the kill; the dead process can add nothing
    assert 0 < at_kill < stream.readings, "the kill must land mid-stream"

    restarted = time.monotonic()
    worker.start().wait_subscribed()
    resubscribed_s = time.monotonic() - restarted
    wait_for(lambda: count_rows(db) >= stream.readings, STORE_TIMEOUT_S, "all readings stored")
    recovered_s = time.monotonic() - restarted
    acked = pub.wait_acked(stream.n)
    m = worker.terminate()

    stored = assert_stored_exactly(db, stream)
    assert acked == stream.n
    # The restarted worker wrote exactly what the killed one had not committed; the rest of what
    # it was given were redeliveries of committed-but-unacknowledged messages, ignored as such.
    assert m["readings_stored"] == stream.readings - at_kill
    assert m["readings_stored"] + m["readings_duplicate"] == m["received"] * PER_MESSAGE
    report(
        "kill -9 of ingest mid-stream",
        messages=stream.n,
        puback=acked,
        readings_expected=stream.readings,
        stored_before_kill=at_kill,
        stored_after_restart=m["readings_stored"],
        duplicates_ignored=m["readings_duplicate"],
        redelivered_msgs=m["redelivered"],
        rows=stored,
        resubscribed_s=resubscribed_s,
        all_stored_after_restart_s=recovered_s,
    )


@needs_mosquitto
def test_broker_restart_mid_stream_loses_nothing_and_stores_once(tmp_path, broker, cleanup, db):
    stream = Stream(20_000)
    worker = Worker(tmp_path, broker, db, "rel-restart")
    cleanup(worker)
    worker.start().wait_subscribed()
    pub = Publisher(broker.url, "rel-restart-pub")
    cleanup(pub)
    pub.stream(stream, per_second=6000)

    wait_for(lambda: count_rows(db) >= stream.readings // 4, STORE_TIMEOUT_S, "a quarter stored")
    # SIGTERM: Mosquitto writes sessions, subscriptions and queued messages to its persistence
    # file. The publisher keeps publishing into paho's queue; ingest keeps retrying.
    broker.stop()
    at_stop = count_rows(db)
    wait_for(lambda: not worker.status().get("connected"), 10, "ingest to notice")
    time.sleep(0.5)
    broker.start()
    restarted = time.monotonic()
    wait_for(
        lambda: worker.status().get("subscribed") and worker.metrics()["connects"] >= 2,
        STORE_TIMEOUT_S,
        "ingest reconnected and resubscribed",
    )
    reconnected_s = time.monotonic() - restarted
    assert worker.metrics()["sessions_lost"] == 0, "the broker must have restored ingest's session"
    wait_for(lambda: count_rows(db) >= stream.readings, STORE_TIMEOUT_S, "all readings stored")
    recovered_s = time.monotonic() - restarted
    acked = pub.wait_acked(stream.n)
    m = worker.terminate()

    stored = assert_stored_exactly(db, stream)
    assert acked == stream.n
    assert 0 < at_stop < stream.readings, "the restart must land mid-stream"
    assert m["connects"] == 2
    assert m["readings_stored"] == stream.readings
    report(
        "broker restarted mid-stream",
        messages=stream.n,
        puback=acked,
        readings_expected=stream.readings,
        stored_before_stop=at_stop,
        duplicates_ignored=m["readings_duplicate"],
        redelivered_msgs=m["redelivered"],
        rows=stored,
        reconnected_s=reconnected_s,
        all_stored_after_restart_s=recovered_s,
    )


@needs_mosquitto
def test_store_locked_mid_stream_holds_the_backlog_in_the_broker(tmp_path, broker, cleanup):
    db = tmp_path / "landun.db"
    stream = Stream(10_000)
    queue_max = 500  # below the broker's window of 1000, so the bound itself is what holds
    worker = Worker(
        tmp_path, broker, db, "rel-lock", "--queue-max", str(queue_max), "--busy-timeout-ms", "200"
    )
    cleanup(worker)
    worker.start().wait_subscribed()
    pid = worker.status()["pid"]
    pub = Publisher(broker.url, "rel-lock-pub")
    cleanup(pub)
    pub.stream(stream, per_second=4000)

    wait_for(lambda: count_rows(db) >= stream.readings // 5, STORE_TIMEOUT_S, "a fifth stored")
    rss_before = rss_kb(pid)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    at_lock = count_rows(db)
    wait_for(lambda: worker.metrics()["store_retries"] >= 3, 20, "writes to fail and be retried")
    # Hold the lock until the queue is full: from then on only the broker holds the backlog.
    # However long filling takes on a loaded machine: the bound is a hang check, not a speed.
    peak_depth, peak_rss = 0, rss_before
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while peak_depth < queue_max and time.monotonic() < deadline:
        peak_depth = max(peak_depth, worker.status().get("queue_depth", 0))
        peak_rss = max(peak_rss, rss_kb(pid))
        time.sleep(0.05)
    for _ in range(20):  # a second more at the bound, watching it hold
        peak_depth = max(peak_depth, worker.status().get("queue_depth", 0))
        peak_rss = max(peak_rss, rss_kb(pid))
        time.sleep(0.05)
    assert count_rows(db) == at_lock, "nothing can be committed while the lock is held"
    lock.execute("ROLLBACK")
    lock.close()
    released = time.monotonic()

    wait_for(lambda: count_rows(db) >= stream.readings, STORE_TIMEOUT_S, "all readings stored")
    recovered_s = time.monotonic() - released
    acked = pub.wait_acked(stream.n)
    rss_after = rss_kb(pid)
    m = worker.terminate()

    stored = assert_stored_exactly(db, stream)
    assert acked == stream.n
    assert peak_depth == queue_max, "the queue filled up to its bound and no further"
    assert m["queue_depth_max"] == queue_max
    assert m["readings_stored"] == stream.readings
    assert m["readings_duplicate"] == 0
    report(
        "store locked mid-stream",
        messages=stream.n,
        puback=acked,
        readings_expected=stream.readings,
        stored_before_lock=at_lock,
        store_retries=m["store_retries"],
        queue_peak=peak_depth,
        queue_bound=queue_max,
        rss_kb_before=rss_before,
        rss_kb_peak_locked=peak_rss,
        rss_kb_after=rss_after,
        rows=stored,
        all_stored_after_unlock_s=recovered_s,
    )


def _restartable_cluster(url: str) -> tuple[str, str]:
    """(version, name) of the local Debian PostgreSQL cluster serving `url`; skips the test
    unless the run owns that server (LANDUN_TEST_PG_RESTART=1: a restart breaks every other
    user's connections) and this process can restart it (root and pg_ctlcluster)."""
    if os.environ.get("LANDUN_TEST_PG_RESTART") != "1":
        pytest.skip("restarting the shared server needs LANDUN_TEST_PG_RESTART=1")
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        pytest.skip("restarting PostgreSQL needs root and Debian's pg_ctlcluster")
    port = urlsplit(url).port or 5432
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name
    pytest.skip(f"no local cluster listens on port {port}")


@contextmanager
def _database_down(url: str, how: str) -> Iterator[None]:
    """The test database unavailable meanwhile. "cut": its connections are refused and those
    open are terminated, as a server restart does to its clients, without touching the server
    or any other database; "restart": the server itself stops and starts again."""
    if how == "restart":
        version, cluster = _restartable_cluster(url)
        subprocess.run(["pg_ctlcluster", version, cluster, "stop", "-m", "fast"], check=True)
        try:
            yield
        finally:
            subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True)
        return
    name = urlsplit(url).path.lstrip("/")
    server = os.environ[PG_URL_ENV]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        yield
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


@needs_mosquitto
@pytest.mark.parametrize("how", ["cut", "restart"])
def test_postgresql_down_mid_stream_acknowledges_nothing_meanwhile_and_loses_nothing(
    tmp_path, broker, cleanup, pg_url, how
):
    stream = Stream(10_000)
    worker = Worker(tmp_path, broker, pg_url, "rel-pg", "--queue-max", "500")
    cleanup(worker)
    worker.start().wait_subscribed()
    pub = Publisher(broker.url, "rel-pg-pub")
    cleanup(pub)
    pub.stream(stream, per_second=4000)

    wait_for(lambda: count_rows(pg_url) >= stream.readings // 5, STORE_TIMEOUT_S, "a fifth")
    with _database_down(pg_url, how):
        assert count_rows(pg_url) == 0, "the database is out of reach"
        wait_for(lambda: worker.metrics()["store_retries"] >= 1, 30, "a write to fail")
        acked_down = worker.metrics()["acked"]
        time.sleep(1.0)
        assert worker.metrics()["acked"] == acked_down, "nothing acknowledged while down"
    started = time.monotonic()
    wait_for(lambda: count_rows(pg_url) >= stream.readings, STORE_TIMEOUT_S, "all stored")
    recovered_s = time.monotonic() - started
    acked = pub.wait_acked(stream.n)
    m = worker.terminate()

    stored = assert_stored_exactly(pg_url, stream)
    assert acked == stream.n
    assert m["readings_stored"] == stream.readings
    report(
        f"PostgreSQL down mid-stream ({how})",
        messages=stream.n,
        puback=acked,
        store_retries=m["store_retries"],
        rows=stored,
        all_stored_after_return_s=recovered_s,
    )


@needs_mosquitto
def test_two_workers_on_a_shared_subscription_store_each_message_once(tmp_path, broker, cleanup):
    db = tmp_path / "landun.db"  # one file: both workers write through WAL, as one tier would
    stream = Stream(10_000)
    shared = ("--shared-group", "landun-ingest")
    a = Worker(tmp_path, broker, db, "rel-share-a", *shared)
    b = Worker(tmp_path, broker, db, "rel-share-b", *shared)
    cleanup(a)
    cleanup(b)
    a.start().wait_subscribed()  # one after the other: both create the schema on open
    b.start().wait_subscribed()
    pub = Publisher(broker.url, "rel-share-pub")
    cleanup(pub)
    pub.stream(stream, per_second=8000)

    wait_for(lambda: count_rows(db) >= stream.readings, STORE_TIMEOUT_S, "all readings stored")
    acked = pub.wait_acked(stream.n)
    ma, mb = a.terminate(), b.terminate()

    stored = assert_stored_exactly(db, stream)
    assert acked == stream.n
    assert ma["received"] > 0 and mb["received"] > 0, "the broker must share the load"
    # Each message went to one worker only: their counts add up with nothing seen twice.
    assert ma["received"] + mb["received"] == stream.n
    assert ma["readings_duplicate"] == mb["readings_duplicate"] == 0
    assert ma["readings_stored"] + mb["readings_stored"] == stream.readings
    report(
        "two workers, one shared subscription",
        messages=stream.n,
        puback=acked,
        worker_a_msgs=ma["received"],
        worker_b_msgs=mb["received"],
        duplicates=ma["readings_duplicate"] + mb["readings_duplicate"],
        store_retries=ma["store_retries"] + mb["store_retries"],
        rows=stored,
    )


@needs_mosquitto
def test_clean_stop_mid_stream_leaves_nothing_to_redeliver_twice(tmp_path, broker, cleanup, db):
    """SIGTERM mid-stream (what `docker stop` sends) with the broker still sending: every
    committed message's ack reaches the broker before the socket closes (see _flush_acks), so
    the next worker gets only what was not stored yet."""
    stream = Stream(5_000)
    worker = Worker(tmp_path, broker, db, "rel-term")
    cleanup(worker)
    worker.start().wait_subscribed()
    pub = Publisher(broker.url, "rel-term-pub")
    cleanup(pub)
    pub.stream(stream, per_second=8000)
    wait_for(lambda: count_rows(db) >= stream.readings // 3, STORE_TIMEOUT_S, "a third stored")
    first = worker.terminate()
    worker.start().wait_subscribed()
    wait_for(lambda: count_rows(db) >= stream.readings, STORE_TIMEOUT_S, "all readings stored")
    acked = pub.wait_acked(stream.n)
    second = worker.terminate()

    stored = assert_stored_exactly(db, stream)
    assert second["readings_duplicate"] == 0
    assert first["readings_stored"] + second["readings_stored"] == stream.readings
    report(
        "clean stop (SIGTERM) mid-stream, then restart",
        messages=stream.n,
        puback=acked,
        first_acked_msgs=first["acked"],
        second_redelivered_msgs=second["redelivered"],
        duplicates=second["readings_duplicate"],
        rows=stored,
    )


def test_metrics_render_as_prometheus_text():
    m = IngestMetrics(received=1_234_567, readings_duplicate=5, lag_ms_last=1500)
    for size in (1, 3, 2000):
        m.observe_batch(size)
    text = render_prometheus(m)
    lines = text.splitlines()
    assert "landun_ingest_messages_received_total 1234567" in lines
    assert "# TYPE landun_ingest_readings_duplicate_total counter" in lines
    assert "landun_ingest_sensor_lag_seconds 1.5" in lines
    # Histogram buckets are cumulative and end in +Inf = count.
    assert 'landun_ingest_batch_size_bucket{le="1"} 1' in lines
    assert 'landun_ingest_batch_size_bucket{le="4"} 2' in lines
    assert 'landun_ingest_batch_size_bucket{le="1024"} 2' in lines
    assert 'landun_ingest_batch_size_bucket{le="4096"} 3' in lines
    assert 'landun_ingest_batch_size_bucket{le="+Inf"} 3' in lines
    assert "landun_ingest_batch_size_sum 2004" in lines
    assert "landun_ingest_batch_size_count 3" in lines
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert all(len(ln.rsplit(" ", 1)) == 2 for ln in samples)
    assert text.endswith("\n")


def test_a_failing_alert_hook_does_not_stop_ingest(tmp_path):
    """The hook runs after the commit: its failure is counted and logged, the batch still counts
    as committed (so it is acknowledged), and the next batch goes through."""
    store = SqliteStore(tmp_path / "landun.db")
    calls: list[int] = []

    def hook(readings: list) -> None:
        calls.append(len(readings))
        raise RuntimeError("alert store down")

    pipeline = IngestPipeline(
        store,
        load_registry(demo_registry_path()),
        standard_decoders(default_catalogue()),
        listener=IngestListener(stored=hook),
    )
    stream = Stream(2)
    for i in range(stream.n):
        topic, payload = stream.message(i)
        assert pipeline.process([RawMessage(topic, payload, now_ms())])
    store.close()
    assert calls == [PER_MESSAGE, PER_MESSAGE]
    assert pipeline.metrics.hook_errors == 2
    assert pipeline.metrics.readings_stored == stream.readings
