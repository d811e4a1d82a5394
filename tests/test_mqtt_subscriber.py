"""Ingest's MQTT subscriber (paho-mqtt with manual acks) against a real broker: connection
handling, refusals, stop, MQTT 5, and a device that tries to take over ingest's session."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from domain.mqtt_connection import BrokerAddress
from domain.params import default_catalogue
from domain.registry import load_registry
from ingest.kinds import standard_decoders
from ingest.mqtt import MqttSubscriber, SubscriberSettings, default_client_id
from ingest.pipeline import IngestPipeline
from landun import broker_options
from landun.demo import demo_registry_path
from store.sqlite import SqliteStore
from tests.brokers import AmqttBroker, MosquittoBroker, have_mosquitto
from tests.conftest import Publisher, wait_for

needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto not on PATH")


def subscriber(
    tmp_path: Path, broker: BrokerAddress | str, **settings: object
) -> tuple[MqttSubscriber, SqliteStore]:
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(
        store, load_registry(demo_registry_path()), standard_decoders(default_catalogue())
    )
    client_id = str(settings.pop("client_id", f"sub-{tmp_path.name}"))
    sub_settings = SubscriberSettings(client_id, **settings)  # type: ignore[arg-type]
    address = BrokerAddress.parse(broker) if isinstance(broker, str) else broker
    return MqttSubscriber(pipeline, address, sub_settings), store


@contextmanager
def mosquitto(tmp_path: Path, extra: str = "", persistence: bool = False):
    """A Mosquitto of this test's own, for settings the shared `broker` fixture lacks."""
    b = MosquittoBroker(tmp_path, extra=extra, persistence=persistence)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def running(sub: MqttSubscriber, store: SqliteStore, wait_s: float = 10.0) -> Iterator[None]:
    sub.start(wait_s)
    try:
        yield
    finally:
        sub.stop()
        store.close()


def publish_readings(url: str, count: int, client_id: str, device: str | None = None) -> None:
    """`count` telemetry messages from one demo device, a minute apart, acknowledged by the
    broker."""
    device = device or next(iter(load_registry(demo_registry_path()).devices))
    pub = Publisher(url, client_id)
    now = int(time.time() * 1000)
    for k in range(count):
        pub.publish(device, {"ts": now - k * 60_000, "seq": k, "values": {"ph": 7.2}})
    pub.close()


def test_default_client_ids_differ_per_worker_and_stay_across_restarts() -> None:
    assert default_client_id(0) == default_client_id(0)
    assert default_client_id(0) != default_client_id(1)
    assert default_client_id(1).startswith("landun-ingest-")


def test_settings_the_protocol_cannot_carry_are_refused() -> None:
    for keepalive in (0, 65_536):
        with pytest.raises(ValueError, match="keepalive_s"):
            SubscriberSettings(keepalive_s=keepalive)


def test_a_login_in_the_broker_url_is_refused() -> None:
    """It would show in the process list; the login comes from the environment or a file."""
    with pytest.raises(ValueError, match="LANDUN_BROKER_PASSWORD"):
        BrokerAddress.parse("mqtt://ingest:secret@broker:1883")
    address = BrokerAddress.parse("mqtts://broker", username="ingest", password="secret")
    assert (address.port, address.tls, address.url) == (8883, True, "mqtts://broker:8883")
    assert "secret" not in repr(address)
    ws = BrokerAddress.parse("wss://broker/mqtt-ws")
    assert (ws.transport, ws.port, ws.url) == ("websockets", 443, "wss://broker:443/mqtt-ws")


def test_idle_connection_is_kept_alive_by_pings(broker, tmp_path: Path) -> None:
    sub, store = subscriber(tmp_path, broker.url, keepalive_s=1)
    with running(sub, store):
        assert sub.subscribed
        time.sleep(3.5)  # the broker drops a client silent for 1.5 keepalives
        assert sub.connected and sub.pipeline.metrics.connects == 1


@needs_mosquitto
def test_refused_login_says_so_once_and_stop_still_returns(tmp_path: Path, caplog) -> None:
    with mosquitto(tmp_path, "allow_anonymous false") as b:
        sub, store = subscriber(tmp_path, b.url, reconnect_min_s=0.05, reconnect_max_s=0.1)
        with caplog.at_level("DEBUG", logger="landun.ingest.mqtt"):
            sub.start(wait_s=1)
            assert not sub.connected and sub.pipeline.metrics.connects == 0
            started = time.monotonic()
            sub.stop()
            store.close()
        # A hang check, not a speed one: stop must not wait out paho's login retries.
        assert time.monotonic() - started < 60
    refusals = [r for r in caplog.records if "refused the login" in r.getMessage()]
    assert len(refusals) > 2, "paho kept retrying"
    assert [r.levelname for r in refusals].count("ERROR") == 1, "one line, not one a retry"


@needs_mosquitto
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_kept_session_queue_is_stored_on_the_next_start(tmp_path: Path, version: str) -> None:
    """Messages queued for ingest's persistent session while it was away are taken on the next
    start, under MQTT 3.1.1 and 5 alike (5: session expiry and receive maximum)."""
    with mosquitto(tmp_path) as b:
        address = BrokerAddress.parse(b.url, mqtt_version=version)
        sub, store = subscriber(tmp_path, address, client_id=f"kept-{version}")
        with running(sub, store):
            pass  # the session stays, subscribed, with nobody connected
        publish_readings(b.url, 50, "kept-pub")
        again, store2 = subscriber(tmp_path, address, client_id=f"kept-{version}")
        with running(again, store2):
            assert wait_for(lambda: again.pipeline.metrics.acked == 50)
            assert again.pipeline.metrics.readings_stored == 50
            assert again.pipeline.metrics.sessions_lost == 0


def test_stop_while_the_broker_is_gone_returns(broker, tmp_path: Path) -> None:
    sub, store = subscriber(tmp_path, broker.url)
    sub.start()
    assert sub.subscribed
    broker.stop()
    assert wait_for(lambda: not sub.connected)
    done = threading.Event()
    threading.Thread(target=lambda: (sub.stop(), done.set()), daemon=True).start()
    try:
        assert done.wait(15)
    finally:
        store.close()


@needs_mosquitto
def test_a_qos0_grant_is_not_taken_for_a_subscription(tmp_path: Path, caplog) -> None:
    """Granted QoS 0, messages would come without acks and a crash would lose them."""
    with mosquitto(tmp_path, "max_qos 0") as b:
        sub, store = subscriber(tmp_path, b.url)
        with running(sub, store, wait_s=1.5):
            assert sub.connected and not sub.subscribed
    assert any("not QoS 1" in r.getMessage() for r in caplog.records)


@needs_mosquitto
def test_stop_says_disconnect(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as b:
        sub, store = subscriber(tmp_path, b.url, client_id="sub-goodbye")
        with running(sub, store):
            assert sub.subscribed
        log = tmp_path / "mosquitto.log"
        assert wait_for(lambda: "Client sub-goodbye disconnected." in log.read_text())


def _options(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    broker_options.add_arguments(p, "broker")
    return p.parse_args(argv)


def test_the_broker_login_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    env = {"LANDUN_BROKER_USERNAME": "ingest", "LANDUN_BROKER_PASSWORD": "from-env"}
    args = _options(["--broker", "mqtts://b:8883", "--mqtt-version", "5"])
    address = broker_options.address_from_args(args, env)
    assert address is not None
    assert (address.username, address.password, address.v5) == ("ingest", "from-env", True)
    pw = tmp_path / "pw"
    pw.write_text("from file \n")  # the line end goes, the space belongs to the password
    args = _options(["--broker", "mqtt://b", "--broker-password-file", str(pw)])
    address = broker_options.address_from_args(args, {"LANDUN_BROKER_USERNAME": "ingest"})
    assert address is not None and address.password == "from file "
    with pytest.raises(ValueError, match="both"):
        broker_options.address_from_args(args, env)
    with pytest.raises(ValueError, match="needs a user name"):
        broker_options.address_from_args(args, {})
    pw.write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="not a password file"):
        broker_options.address_from_args(args, {"LANDUN_BROKER_USERNAME": "ingest"})
    with pytest.raises(ValueError, match="needs TLS"):
        broker_options.address_from_args(_options(["--broker", "mqtt://b", "--broker-ca", "x"]))
    assert broker_options.address_from_args(_options([])) is None


def test_the_embedded_broker_serves_ingest(tmp_path: Path) -> None:
    """`landun run`'s default broker (amqtt) with ingest's manual acks and clean stop."""
    b = AmqttBroker()
    b.start()
    try:
        sub, store = subscriber(tmp_path, b.url)
        with running(sub, store):
            assert sub.subscribed
            publish_readings(b.url, 20, "embedded-pub")
            assert wait_for(lambda: sub.pipeline.metrics.acked == 20)
            assert sub.pipeline.metrics.readings_stored == 20
    finally:
        b.stop()
