from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from landun.demo import demo_registry_path
from landun.system import RunConfig, System
from tests.brokers import AmqttBroker, MosquittoBroker, have_mosquitto
from tests.postgres import fresh_database


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker | AmqttBroker]:
    b = MosquittoBroker(tmp_path) if have_mosquitto() else AmqttBroker()
    b.start()
    yield b
    b.stop()


ADMIN_PASSWORD = "test-admin-password"


class RunningSystem:
    """A whole system on real parts; `http` is logged in as admin, `anon` is not."""

    def __init__(self, system: System, thread: threading.Thread) -> None:
        self.system = system
        self.thread = thread
        self.base_url = f"http://127.0.0.1:{system.api_port}"
        self.anon = httpx.Client(base_url=self.base_url, timeout=10)
        self.http = self.login("admin", ADMIN_PASSWORD)

    def judged(self) -> bool:
        """Every message committed so far has been through the alert stage too: acks follow
        it, and the stage runs one batch behind the commits."""
        return self.metric("landun_ingest_messages_received_total") == self.metric(
            "landun_ingest_messages_acked_total"
        )

    def metric(self, name: str) -> float:
        """A sample of the process's /metrics, by its exposition name."""
        for line in self.anon.get("/metrics").text.splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return float(value)
        raise KeyError(name)

    def login(self, name: str, password: str) -> httpx.Client:
        r = self.anon.post("/api/v1/auth/login", json={"username": name, "password": password})
        r.raise_for_status()
        return httpx.Client(
            base_url=self.base_url,
            timeout=10,
            headers={"Authorization": f"Bearer {r.json()['token']}"},
        )

    def stop(self) -> None:
        self.system.request_stop()
        self.thread.join(timeout=30)
        self.http.close()
        self.anon.close()


def start_system(config: RunConfig) -> RunningSystem:
    if config.admin_password is None:
        config.admin_password = ADMIN_PASSWORD
    system = System(config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(system.run())
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not system.ready.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"system did not start: {errors}")
    return RunningSystem(system, thread)


def demo_config(broker_url: str, data_dir: Path, client_id: str, **changes) -> RunConfig:
    """A whole system on the demo registry, its API on a free port, no simulators."""
    fields = {"simulators": False} | changes
    return RunConfig(
        port=0,
        broker_url=broker_url,
        data_dir=data_dir,
        registry_path=demo_registry_path(),
        client_id=client_id,
        **fields,
    )


@pytest.fixture
def system(broker, tmp_path: Path) -> Iterator[RunningSystem]:
    running = start_system(
        demo_config(broker.url, tmp_path / "var", f"landun-ingest-{tmp_path.name}")
    )
    yield running
    running.stop()


class Publisher:
    """A device-like MQTT client publishing QoS 1."""

    def __init__(self, url: str, client_id: str = "test-device") -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def publish(self, device_id: str, payload: object, kind: str = "telemetry") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(f"landun/v1/devices/{device_id}/{kind}", data, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker) -> Iterator[Publisher]:
    p = Publisher(broker.url)
    yield p
    p.close()


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    """Poll until predicate() is truthy; the timeout bounds a hang, it does not measure speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database (tests/postgres.py)."""
    with fresh_database() as url:
        yield url


def raw_request(port: int, head: str, body: bytes = b"", chunk_total: int = 0) -> tuple[int, str]:
    """Send a request head (and a body, or a chunked body of `chunk_total` bytes) on a plain
    socket, stopping as soon as the server answers; return (status, body text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        chunk = b"%x\r\n" % (64 * 1024) + b"x" * (64 * 1024) + b"\r\n"
        sent = 0
        sock.setblocking(False)
        while sent < chunk_total and not _readable(sock):
            try:
                sock.sendall(chunk)
            except BlockingIOError:
                continue
            except OSError:
                break
            sent += 64 * 1024
        sock.setblocking(True)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    head_text, _, text = data.decode().partition("\r\n\r\n")
    return int(head_text.split()[1]), text


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _length(data: bytes) -> int:
    m = re.search(rb"content-length: *([0-9]+)", data, re.I)
    return int(m.group(1)) if m else 0
