"""Separate roles on this machine: Mosquitto, PostgreSQL and `landun ingest` / `alerts` / `api`
as OS processes (tests/roles_rig.py). Three phases, each on fresh databases:

1. failover: 20,000 messages (100,000 readings) at a steady rate with 50 devices below the
   free chlorine limit for longer than the pending time, 2 ingest, 2 alert workers, 1 api;
   one ingest and one alert worker killed with SIGKILL mid-stream (the ingest restarted, as an
   orchestrator would). Checks: every reading once, the range alerts equal a single
   `landun run` listening to the same messages, no alert twice, the take-over time.
2. throughput: a backlog drained by 1 and by 2 ingest processes, against a bare paho subscriber
   draining the same backlog in the same run.
3. latency: a steady load (default 2,000 msgs/s) through 2 ingest and 2 alert workers; p99 from
   publishing the reading that completes an alert's pending time to receiving its announcement.

Peak RSS (VmHWM) of every role process. Always ends with one JSON line; a figure that could not
be measured is null, with the reason under "errors".

    python bench/roles.py --database postgresql://landun:landun@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from fresh_pg import fresh_database  # noqa: E402
from ingest_throughput import bare_drain, machine  # noqa: E402

from landun.broker import free_port  # noqa: E402
from store.feed import load_feed_settings  # noqa: E402
from tests.brokers import MosquittoBroker  # noqa: E402
from tests.roles_rig import (  # noqa: E402
    MINUTE,
    T0,
    Deployment,
    Paced,
    Role,
    Watch,
    alerts_written_twice,
    feed_behind,
    messages,
    partition_holders,
    query,
    range_alerts,
    readings_stored,
    wait_until,
    write_registry,
)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def rss_of(d: Deployment) -> dict[str, float | None]:
    return {r.name: peak_rss_mb(r.pid) for r in d.roles if r.proc and r.proc.poll() is None}


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(d: Deployment, url: str, broker: MosquittoBroker) -> dict[str, float]:
    """CPU seconds so far of each role, of the PostgreSQL backends serving the database (as one;
    a backend gone meanwhile is missed) and of the broker."""
    out = {r.name: cpu_s(r.pid) for r in d.roles if r.proc and r.proc.poll() is None}
    sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    backends = [pid for (pid,) in query(url, sql)]
    out["postgres"] = sum(cpu_s(pid) for pid in backends if Path(f"/proc/{pid}").exists())
    if broker.proc is not None:
        out["mosquitto"] = cpu_s(broker.proc.pid)
    return out


# -- 1. failover ----------------------------------------------------------------------------------


def failover(work: Path, server: str, broker: MosquittoBroker, args) -> dict:
    parts = load_feed_settings().partitions
    devices = write_registry(work / "registry.toml", args.devices)
    per = args.messages // len(devices)
    episodes = [(5, 5 + per // 4), (per // 2 + per // 5, per)]
    msgs = messages(devices, args.messages, set(devices[: args.over]), episodes)
    out: dict = {"messages": len(msgs), "devices": len(devices), "over": args.over}
    with fresh_database(server) as url, fresh_database(server) as single_url:
        d = Deployment(work, url, broker.url, work / "registry.toml")
        single_args = ["run", "--database", single_url, "--broker", broker.url, "--registry",
                       str(work / "registry.toml"), "--data-dir", str(work / "single"),
                       "--no-simulators", "--port", str(free_port()), "--client-id",
                       "bench-single"]  # fmt: skip
        single = Role("single", single_args, work)
        publisher = None
        try:
            single.start().wait_for("Landun is running")
            ingest = [d.ingest(1), d.ingest(2)]
            workers = [d.alerts(1), d.alerts(2)]
            d.api(1, free_port())
            wait_until(lambda: partition_holders(url) == (parts, 2), 60, "two workers sharing")
            takeover = Watch(lambda: partition_holders(url) == (parts, 1))

            def at(i: int) -> None:
                # Between the episodes (tests/test_roles.py says why).
                if i == len(msgs) * 45 // 100:
                    ingest[0].kill()
                elif i == len(msgs) * 50 // 100:
                    workers[0].kill()
                    takeover.start_timer()
                elif i == len(msgs) * 55 // 100:
                    d.ingest(1)

            publisher = Paced(broker.port, "bench-failover-publisher")
            out["rate_offered"] = round(publisher.run(msgs, args.failover_rate, at))
            wait_until(lambda: readings_stored(url) >= len(msgs) * 5, 300, "readings")
            wait_until(lambda: feed_behind(url) == 0, 300, "the feed evaluated")
            wait_until(lambda: readings_stored(single_url) >= len(msgs) * 5, 300, "single run")
            takeover.join(timeout=120)
            time.sleep(2)
            ours, theirs = range_alerts(url), range_alerts(single_url)
            logs = d.logs()
            out |= {
                "readings_stored": readings_stored(url),
                "readings_expected": len(msgs) * 5,
                "range_alerts": len(ours),
                "range_alerts_single_run": len(theirs),
                "same_alerts_as_single_run": ours == theirs,
                "alerts_written_twice": len(alerts_written_twice(url)),
                "integrity_errors_in_logs": logs.count("IntegrityError"),
                "hook_failed_in_logs": logs.count("hook failed"),
                "takeover_s": None if takeover.took is None else round(takeover.took, 2),
                "peak_rss_mb": rss_of(d) | {"single": peak_rss_mb(single.pid)},
            }
        finally:
            if publisher is not None:
                publisher.close()
            d.stop()
            single.stop()
    return out


# -- 2. throughput --------------------------------------------------------------------------------


def _session(port: int, client_id: str, topic: str) -> None:
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def throughput(work: Path, server: str, broker: MosquittoBroker, args, n_ingest: int) -> dict:
    devices = write_registry(work / "registry.toml", args.devices)
    msgs = messages(devices, args.backlog, set(), [], seed=n_ingest)
    with fresh_database(server) as url:
        d = Deployment(work, url, broker.url, work / "registry.toml")
        try:
            # Persistent sessions first, so the backlog waits in the broker for each.
            _session(broker.port, "bench-bare", "landun/v1/devices/+/telemetry")
            for n in range(1, n_ingest + 1):
                d.ingest(10 + n)
            for role in d.roles:
                role.stop()
            d.roles.clear()
            publisher = Paced(broker.port, "bench-backlog-publisher")
            publisher.run(msgs, 1e9)
            publisher.close()
            bare = bare_drain(broker.port, len(msgs))
            started = time.perf_counter()
            for n in range(1, n_ingest + 1):
                d.ingest(10 + n)
            wait_until(lambda: readings_stored(url) > 0, 120, "first reading", 0.05)
            first = time.perf_counter()
            wait_until(lambda: readings_stored(url) >= len(msgs) * 5, 600, "backlog", 0.2)
            took = time.perf_counter() - first
            rate = len(msgs) / took
            return {
                "ingest_processes": n_ingest,
                "backlog": len(msgs),
                "bare_paho_msgs_s": round(bare),
                "landun_msgs_s": round(rate),
                "ratio_to_bare": round(rate / bare, 3),
                "start_to_first_s": round(first - started, 2),
                "peak_rss_mb": rss_of(d),
            }
        finally:
            d.stop()


# -- 3. latency -----------------------------------------------------------------------------------


class AlertWatcher:
    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-roles-watcher")
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe("landun/v1/alerts/+", qos=1)
        ready.wait(10)

    def _on_message(self, c, u, m) -> None:
        at = time.time()
        body = json.loads(m.payload)
        alert = body["alert"]
        if body["action"] == "opened" and alert["rule_id"] == "range:free_chlorine":
            self.arrived.setdefault(alert["device_id"], at)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def latency(work: Path, server: str, broker: MosquittoBroker, args) -> dict:
    devices = write_registry(work / "registry.toml", args.latency_devices)
    steps = int(args.steady_s * args.rate / len(devices))
    rng = random.Random(11)
    over = rng.sample(devices, min(args.triggers, len(devices)))
    # Each over device goes below the limit at a random step; its alert opens with the reading
    # 10 minutes of sensor time later (the pending time).
    start = {dev: rng.randrange(2, max(3, steps - 12)) for dev in over}
    msgs: list[tuple[str, bytes]] = []
    trigger_index: dict[int, str] = {}
    for k in range(steps):
        for dev in devices:
            low = dev in start and k >= start[dev]
            if dev in start and k == start[dev] + 10:
                trigger_index[len(msgs)] = dev
            values = {
                "free_chlorine": 0.1 if low else round(rng.gauss(0.6, 0.03), 2),
                "ph": round(rng.gauss(7.4, 0.02), 2),
                "turbidity": round(abs(rng.gauss(0.3, 0.03)), 2),
                "orp": round(rng.gauss(710, 4)),
                "temperature": round(rng.gauss(27.0, 0.1), 1),
            }
            body = {"ts": T0 + k * MINUTE, "seq": k, "values": values}
            msgs.append((dev, json.dumps(body, separators=(",", ":")).encode()))
    with fresh_database(server) as url:
        d = Deployment(work, url, broker.url, work / "registry.toml")
        watcher = AlertWatcher(broker.port)
        try:
            d.ingest(21)
            d.ingest(22)
            d.alerts(21)
            d.alerts(22)
            parts = load_feed_settings().partitions
            wait_until(lambda: partition_holders(url) == (parts, 2), 60, "two workers sharing")
            publisher = Paced(broker.port, "bench-steady-publisher")
            cpu_before, load_before = cpu_of(d, url, broker), os.getloadavg()[0]
            offered = publisher.run(msgs, args.rate)
            publisher.close()
            cpu_after = cpu_of(d, url, broker)
            cpu_steady = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(watcher.arrived) < len(trigger_index):
                time.sleep(0.2)
            lat = sorted(
                (watcher.arrived[dev] - publisher.sent_at[i]) * 1000
                for i, dev in trigger_index.items()
                if dev in watcher.arrived
            )
            steady_s = len(msgs) / offered
            return {
                "rate_asked": args.rate,
                "rate_offered": round(offered),
                "devices": len(devices),
                "alerts_timed": len(lat),
                "alerts_expected": len(trigger_index),
                "p50_ms": _pct(lat, 0.5),
                "p99_ms": _pct(lat, 0.99),
                "max_ms": round(lat[-1]) if lat else None,
                "stages_ms": stages(url, msgs, trigger_index, publisher.sent_at, watcher.arrived),
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                # CPU used while the load was offered, as cores: the roles, their PostgreSQL
                # backends and the broker together below 2 cores could carry this rate here.
                "cpu_cores_used": {k: round(v / steady_s, 2) for k, v in cpu_steady.items()},
                "cpu_ms_per_msg": round(sum(cpu_steady.values()) * 1000 / len(msgs), 3),
                "peak_rss_mb": rss_of(d),
            }
        finally:
            watcher.close()
            d.stop()


def stages(url: str, msgs, trigger_index, sent_at, arrived) -> dict:
    """p50/p99 of each stage of the timed alerts: publish to ingest (the reading's recv_ms),
    ingest to the alert opened (its opened_ms: stored, fed, evaluated), opened to announced."""
    timed = {dev: i for i, dev in trigger_index.items() if dev in arrived}
    ts = [json.loads(msgs[i][1])["ts"] for i in timed.values()]
    sql = (
        "SELECT r.device_id, r.recv_ms FROM readings r JOIN unnest(%s::text[], %s::bigint[])"
        " t(d, ts) ON r.device_id = t.d AND r.ts_ms = t.ts AND r.parameter = 'free_chlorine'"
    )
    recv = dict(query(url, sql, (list(timed), ts)))
    sql = "SELECT device_id, min(opened_ms) FROM alerts WHERE rule_id = %s GROUP BY device_id"
    opened = dict(query(url, sql, ("range:free_chlorine",)))
    spans: dict[str, list[float]] = {"to_ingest": [], "ingest_to_opened": [], "to_announced": []}
    for dev, i in timed.items():
        if dev in recv and dev in opened:
            spans["to_ingest"].append(recv[dev] - sent_at[i] * 1000)
            spans["ingest_to_opened"].append(opened[dev] - recv[dev])
            spans["to_announced"].append(arrived[dev] * 1000 - opened[dev])
    return {k: {"p50": _pct(sorted(v), 0.5), "p99": _pct(sorted(v), 0.99)}
            for k, v in spans.items()}  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", required=True, help="a PostgreSQL server URL (fresh DBs)")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--over", type=int, default=50)
    p.add_argument("--failover-rate", type=float, default=1_000)
    p.add_argument("--backlog", type=int, default=40_000)
    p.add_argument("--rate", type=float, default=2_000)
    p.add_argument("--latency-devices", type=int, default=2_000)
    p.add_argument("--steady-s", type=float, default=20)
    p.add_argument("--triggers", type=int, default=200)
    p.add_argument("--phases", default="failover,throughput,latency")
    args = p.parse_args(argv)
    summary: dict = {"bench": "roles", "machine": machine(), "errors": {}}
    phases = {
        "failover": lambda w, b: failover(w, args.database, b, args),
        "throughput_1": lambda w, b: throughput(w, args.database, b, args, 1),
        "throughput_2": lambda w, b: throughput(w, args.database, b, args, 2),
        "latency": lambda w, b: latency(w, args.database, b, args),
    }
    wanted = args.phases.split(",")
    for name, run in phases.items():
        if name.split("_")[0] not in wanted:
            continue
        summary[name] = None
        with tempfile.TemporaryDirectory(prefix=f"landun-roles-{name}-") as tmp:
            work = Path(tmp)
            broker = MosquittoBroker(work, persistence=True)
            try:
                broker.start()
                summary[name] = run(work, broker)
                print(name, json.dumps(summary[name]), flush=True)
            except Exception as exc:
                traceback.print_exc()
                summary["errors"][name] = f"{type(exc).__name__}: {exc}"
            finally:
                broker.stop()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
