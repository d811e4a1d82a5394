"""Separate Landun roles as OS processes over one PostgreSQL database and one Mosquitto, for
tests/test_roles.py and bench/roles.py: start, kill -9, restart, and read what they stored."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from store.postgres.lease import PARTITION_KEY

REPO = Path(__file__).resolve().parent.parent
MINUTE = 60_000
T0 = 1_795_334_400_000  # 2026-11-22 00:00 UTC


class Role:
    """One `landun <role>` process, its output in `<workdir>/<name>.log`."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Role:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "landun.cli", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        return self

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.text()[-2000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no {text!r} in {timeout} s: {self.text()[-2000:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def single_run(workdir: Path, database: str, broker: str, registry: Path, port: int) -> Role:
    """A reference `landun run` over its own database: what separate roles must equal."""
    return Role(
        "single",
        ["run", "--database", database, "--broker", broker, "--registry", str(registry),
         "--data-dir", str(workdir / "single"), "--no-simulators", "--port", str(port),
         "--client-id", "single"],
        workdir,
    )  # fmt: skip


def login(port: int, workdir: Path) -> httpx.Client:
    """An admin session on the api at `port` (its password in the roles' data directory)."""
    password = (workdir / "data" / "admin-password.txt").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": "admin", "password": password})
    r.raise_for_status()
    return httpx.Client(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {r.json()['token']}"}
    )


@dataclass
class Deployment:
    """Roles over one database and broker; `registry` is the TOML they all read."""

    workdir: Path
    database: str
    broker: str
    registry: Path
    roles: list[Role] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # given to every role (e.g. --config-dir)

    def common(self) -> list[str]:
        return ["--database", self.database, "--broker", self.broker, "--registry",
                str(self.registry), "--data-dir", str(self.workdir / "data"), *self.extra]  # fmt: skip

    def ingest(self, n: int, metrics_port: int | None = None) -> Role:
        extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
        return self._role(f"ingest{n}", ["ingest", *self.common(), "--worker", str(n), *extra],
                          "Landun ingest is running")  # fmt: skip

    def alerts(self, n: int, metrics_port: int | None = None) -> Role:
        extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
        return self._role(f"alerts{n}", ["alerts", *self.common(), "--worker", str(n), *extra],
                          "Landun alerts is running")  # fmt: skip

    def api(self, n: int, port: int) -> Role:
        return self._role(f"api{n}", ["api", *self.common(), "--port", str(port)],
                          "Landun api is running")  # fmt: skip

    def _role(self, name: str, args: list[str], ready: str) -> Role:
        role = Role(name, args, self.workdir)
        role.start().wait_for(ready)
        self.roles.append(role)
        return role

    def stop(self) -> None:
        for role in reversed(self.roles):
            role.stop()

    def logs(self) -> str:
        return "\n".join(r.text() for r in self.roles)


def write_registry(path: Path, devices: int) -> list[str]:
    ids = [f"dev-{i:03d}" for i in range(devices)]
    lines = []
    for i, dev in enumerate(ids):
        lines += ["[[sites]]", f'id = "site-{i:03d}"', f'name = "Pool {i}"', 'kind = "pool"',
                  f'jurisdiction = "{310100 + i % 5}"', "", "[[devices]]", f'id = "{dev}"',
                  f'site = "site-{i:03d}"', 'kind = "pool_analyzer"', "interval_s = 60", ""]  # fmt: skip
    path.write_text("\n".join(lines))
    return ids


def messages(
    devices: list[str], total: int, over: set[str], episodes: list[tuple[int, int]], seed: int = 7
) -> list[tuple[str, bytes]]:
    """`total` telemetry messages, a minute apart per device, devices in turn; the devices in
    `over` have free chlorine far below the limit during each (first, end) minute range."""
    rng = random.Random(seed)
    out = []
    for k in range(total // len(devices)):
        for seq, dev in enumerate(devices):
            low = dev in over and any(a <= k < b for a, b in episodes)
            values = {
                "free_chlorine": 0.1 if low else round(rng.gauss(0.6, 0.03), 2),
                "ph": round(rng.gauss(7.4, 0.02), 2),
                "turbidity": round(abs(rng.gauss(0.3, 0.03)), 2),
                "orp": round(rng.gauss(710, 4)),
                "temperature": round(rng.gauss(27.0, 0.1), 1),
            }
            body = {"ts": T0 + k * MINUTE, "seq": k * len(devices) + seq, "values": values}
            out.append((dev, json.dumps(body, separators=(",", ":")).encode()))
    return out


class Paced:
    """Publishes QoS 1 at a steady rate, bounded in flight; calls `at(i)` before message i."""

    def __init__(self, broker_port: int, client_id: str = "roles-publisher") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.max_inflight_messages_set(1000)
        self.c.connect("127.0.0.1", broker_port)
        self.c.loop_start()
        self.sent_at: dict[int, float] = {}

    def run(self, msgs: list[tuple[str, bytes]], rate: float, at=lambda i: None) -> float:
        started = time.perf_counter()
        pending = []
        for i, (dev, body) in enumerate(msgs):
            at(i)
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.sent_at[i] = time.time()
            pending.append(self.c.publish(f"landun/v1/devices/{dev}/telemetry", body, qos=1))
            if len(pending) >= 5000:
                for info in pending:
                    info.wait_for_publish(60)
                pending = []
        for info in pending:
            info.wait_for_publish(60)
        return len(msgs) / (time.perf_counter() - started)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def query(url: str, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def readings_stored(url: str) -> int:
    return query(url, "SELECT count(*) FROM readings")[0][0]


def feed_behind(url: str) -> int:
    """Entries appended and not yet evaluated, over all partitions."""
    rows = query(url, "SELECT count(*) FROM feed_entries")  # evaluated ones are deleted
    return int(rows[0][0])


def partition_holders(url: str) -> tuple[int, int]:
    """(partitions held, by how many workers)."""
    rows = query(
        url,
        "SELECT count(*), count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s::oid AND objsubid = 2"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (PARTITION_KEY,),
    )
    return rows[0][0], rows[0][1]


def range_alerts(url: str) -> set[tuple[str, str, int]]:
    sql = "SELECT device_id, rule_id, first_ms FROM alerts WHERE rule_id LIKE %s"
    return set(query(url, sql, ("range:%",)))


def alerts_written_twice(url: str) -> list[tuple]:
    """Alerts of one (device, rule) opened at one sensor time more than once, and alerts with
    more than one 'opened' audit entry."""
    twice = query(
        url,
        "SELECT device_id, rule_id, first_ms, count(*) FROM alerts"
        " GROUP BY device_id, rule_id, first_ms HAVING count(*) > 1",
    )
    opened = query(
        url,
        "SELECT alert_id, count(*) FROM alert_audit WHERE action = 'opened'"
        " GROUP BY alert_id HAVING count(*) > 1",
    )
    return twice + opened


def wait_until(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


class Watch(threading.Thread):
    """Times, from `start_timer()`, until `predicate()` holds (polled every 50 ms)."""

    def __init__(self, predicate) -> None:
        super().__init__(daemon=True)
        self.predicate = predicate
        self.t0: float | None = None
        self.took: float | None = None
        self._go = threading.Event()

    def start_timer(self) -> None:
        self.t0 = time.monotonic()
        self._go.set()
        self.start()

    def run(self) -> None:
        while self.t0 is not None and time.monotonic() - self.t0 < 120:
            if self.predicate():
                self.took = time.monotonic() - self.t0
                return
            time.sleep(0.05)
