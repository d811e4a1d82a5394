"""The MQTT 3.1.1 codec of ingest's subscriber, and the subscriber's connection handling against a
real broker (Mosquitto when installed, amqtt otherwise)."""

from __future__ import annotations

import itertools
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.params import default_catalogue
from domain.registry import load_registry
from ingest import mqtt_wire as wire
from ingest.mqtt import BrokerAddress, MqttSubscriber, SubscriberSettings
from ingest.pipeline import Committed, IngestPipeline
from landun.demo import demo_registry_path
from store.sqlite import SqliteStore
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.conftest import Publisher, wait_for

needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto not on PATH")


def publish_bytes(topic: str, payload: bytes, qos: int, mid: int, dup: bool = False) -> bytes:
    """A PUBLISH as a broker sends it, built independently of the reader under test."""
    raw_topic = topic.encode()
    body = struct.pack(">H", len(raw_topic)) + raw_topic
    body += struct.pack(">H", mid) if qos else b""
    body += payload
    first = wire.PUBLISH | (0x08 if dup else 0) | (qos << 1)
    length, n = bytearray(), len(body)
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(length) + body


def test_connect_packet_bytes() -> None:
    assert wire.connect_packet("c", 30) == b"\x10\x0d\x00\x04MQTT\x04\x00\x00\x1e\x00\x01c"
    packet = wire.connect_packet("c", 60, True, "u", "p")
    assert packet[9] == 0xC2  # user name, password, clean session
    assert packet.endswith(b"\x00\x01c\x00\x01u\x00\x01p")
    assert wire.connect_packet("c", 5, username="u")[9] == 0x80  # no password without a flag


def test_subscribe_unsubscribe_puback_bytes() -> None:
    assert wire.subscribe_packet(7, [("a/+", 1)]) == b"\x82\x08\x00\x07\x00\x03a/+\x01"
    assert wire.unsubscribe_packet(258, ["x"]) == b"\xa2\x05\x01\x02\x00\x01x"
    assert wire.puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert wire.puback_packets([]) == b""


@pytest.mark.parametrize("size", [0, 1, 127 - 9, 128, 16_383, 16_384, 2_097_152])
def test_remaining_length_of_every_width(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    publishes, controls = wire.PacketReader().feed(publish_bytes("t/x", payload, 1, 9))
    assert publishes == [wire.Publish("t/x", payload, 9, 1, False)] and controls == []


packets = st.lists(
    st.one_of(
        st.builds(
            wire.Publish,
            topic=st.text(min_size=1, max_size=40),
            payload=st.binary(max_size=300),
            mid=st.integers(1, 0xFFFF),
            qos=st.sampled_from([1]),
            dup=st.booleans(),
        ),
        st.builds(
            wire.Publish,
            topic=st.text(min_size=1, max_size=40),
            payload=st.binary(max_size=300),
            mid=st.just(0),
            qos=st.just(0),
            dup=st.just(False),
        ),
        st.sampled_from(
            [
                wire.Control(wire.PINGRESP, b""),
                wire.Control(wire.SUBACK, b"\x00\x01\x01\x01\x80"),
                wire.Control(wire.UNSUBACK, b"\x00\x02"),
            ]
        ),
    ),
    max_size=30,
)


def encode(packet: wire.Publish | wire.Control) -> bytes:
    if isinstance(packet, wire.Publish):
        return publish_bytes(packet.topic, packet.payload, packet.qos, packet.mid, packet.dup)
    return bytes([packet.kind, len(packet.body)]) + packet.body


@settings(max_examples=200, deadline=None)
@given(packets, st.lists(st.integers(0, 20_000), max_size=8))
def test_any_cut_of_the_stream_gives_the_same_packets(stream, cuts) -> None:
    data = b"".join(map(encode, stream))
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    reader = wire.PacketReader()
    publishes, controls = [], []
    for a, b in itertools.pairwise(bounds):
        got_p, got_c = reader.feed(data[a:b])
        publishes += got_p
        controls += got_c
    assert publishes == [p for p in stream if isinstance(p, wire.Publish)]
    assert controls == [c for c in stream if isinstance(c, wire.Control)]


def test_byte_by_byte() -> None:
    data = publish_bytes("a", b"x" * 200, 1, 3) + b"\xd0\x00"
    reader = wire.PacketReader()
    publishes, controls = [], []
    for i in range(len(data)):
        got_p, got_c = reader.feed(data[i : i + 1])
        publishes += got_p
        controls += got_c
    assert publishes == [wire.Publish("a", b"x" * 200, 3, 1, False)]
    assert controls == [wire.Control(wire.PINGRESP, b"")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
        (b"\x36\x03\x00\x01a", "QoS 3"),
        (b"\x34\x05\x00\x01a\x00\x01", "QoS 2"),
        (b"\x32\x05\x00\x01a\x00\x00", "packet id 0"),
        (b"\x30\x01\x00", "too short"),
        (b"\x32\x04\x00\x05ab", "runs past the end"),
        (b"\x30\x03\x00\x01\xff", "not UTF-8"),
    ],
)
def test_malformed_packets_are_protocol_errors(data: bytes, reason: str) -> None:
    with pytest.raises(wire.ProtocolError, match=reason):
        wire.PacketReader().feed(data)


def test_connack_and_suback_parsing() -> None:
    assert wire.parse_connack(b"\x01\x00") == (True, 0)
    assert wire.parse_connack(b"\x00\x05") == (False, 5)
    assert wire.parse_suback(b"\x01\x02\x01\x80") == (258, b"\x01\x80")
    with pytest.raises(wire.ProtocolError):
        wire.parse_connack(b"\x00")


# -- the subscriber against a real broker ----------------------------------------------------


def subscriber(tmp_path: Path, url: str, **settings: object) -> tuple[MqttSubscriber, SqliteStore]:
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(store, load_registry(demo_registry_path()), default_catalogue())
    client_id = str(settings.pop("client_id", f"wire-{tmp_path.name}"))
    sub_settings = SubscriberSettings(client_id, **settings)  # type: ignore[arg-type]
    return MqttSubscriber(pipeline, BrokerAddress.parse(url), sub_settings), store


@contextmanager
def mosquitto(tmp_path: Path, extra: str = "") -> Iterator[MosquittoBroker]:
    """A Mosquitto of this test's own, for settings the shared `broker` fixture lacks."""
    b = MosquittoBroker(tmp_path, extra=extra)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def retrying_subscriber(tmp_path: Path, extra: str) -> Iterator[MqttSubscriber]:
    """A subscriber that reconnects quickly, to a Mosquitto of its own configured with `extra`
    (one that refuses it somehow); the caller starts and stops it."""
    with mosquitto(tmp_path, extra) as b:
        sub, store = subscriber(tmp_path, b.url, reconnect_min_s=0.05, reconnect_max_s=0.2)
        try:
            yield sub
        finally:
            store.close()


def publish_readings(url: str, count: int, client_id: str) -> None:
    """`count` telemetry messages from one demo device, a minute apart, acknowledged by the
    broker."""
    device = next(iter(load_registry(demo_registry_path()).devices))
    pub = Publisher(url, client_id)
    now = int(time.time() * 1000)
    for k in range(count):
        pub.publish(device, {"ts": now - k * 60_000, "seq": k, "values": {"ph": 7.2}})
    pub.close()


def test_idle_connection_is_kept_alive_by_pings(broker, tmp_path: Path) -> None:
    sub, store = subscriber(tmp_path, broker.url, keepalive_s=1, poll_s=0.1)
    sub.start()
    try:
        assert sub.subscribed
        time.sleep(3.5)  # the broker drops a client silent for 1.5 keepalives
        assert sub.connected and sub.pipeline.metrics.connects == 1
    finally:
        sub.stop()
        store.close()


@needs_mosquitto
def test_refused_login_is_retried_and_stop_still_returns(tmp_path: Path) -> None:
    with retrying_subscriber(tmp_path, "allow_anonymous false") as sub:
        sub.start(wait_s=1)
        assert not sub.connected and sub.pipeline.metrics.connects == 0
        started = time.monotonic()
        sub.stop()
        assert time.monotonic() - started < 5


@needs_mosquitto
def test_a_kept_session_queue_arriving_with_connack_is_stored(tmp_path: Path) -> None:
    """Mosquitto sends a persistent session's queue straight after CONNACK, often in the same
    TCP segment: those messages must be taken like any other."""
    with mosquitto(tmp_path) as b:
        sub, store = subscriber(tmp_path, b.url, client_id="wire-session")
        try:
            sub.start()
            sub.stop()  # the session stays, subscribed, with nobody connected
            publish_readings(b.url, 50, "wire-pub")
            again, store2 = subscriber(tmp_path, b.url, client_id="wire-session")
            again.start()
            try:
                assert wait_for(lambda: again.pipeline.metrics.acked == 50)
                assert again.pipeline.metrics.readings_stored == 50
            finally:
                again.stop()
                store2.close()
        finally:
            store.close()


def test_stop_while_the_broker_is_gone_returns(broker, tmp_path: Path) -> None:
    sub, store = subscriber(tmp_path, broker.url, poll_s=0.1)
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


def test_settings_the_protocol_cannot_carry_are_refused() -> None:
    for keepalive in (0, 65_536):
        with pytest.raises(ValueError, match="keepalive_s"):
            SubscriberSettings(keepalive_s=keepalive)


def test_credentials_in_the_broker_url_are_percent_decoded() -> None:
    address = BrokerAddress.parse("mqtt://in%40gest:p%2Fw%3A1@broker:1884")
    assert (address.username, address.password, address.port) == ("in@gest", "p/w:1", 1884)


def test_a_store_stall_longer_than_the_keepalive_keeps_the_connection(broker, tmp_path) -> None:
    """While the queue is full the network thread does not read (the broker's answers to its
    pings wait unread); once the stall ends, that must not look like a dead broker."""
    sub, store = subscriber(tmp_path, broker.url, keepalive_s=1, poll_s=0.1, queue_max=5)
    release = threading.Event()
    commit = sub.pipeline.commit

    def stalled_commit(msgs) -> Committed | None:
        release.wait(10)
        return commit(msgs)

    sub.pipeline.commit = stalled_commit  # type: ignore[method-assign]
    sub.start()
    try:
        publish_readings(broker.url, 30, f"stall-pub-{tmp_path.name}")
        time.sleep(3)  # three keepalives with the queue full
        release.set()
        assert wait_for(lambda: sub.pipeline.metrics.acked == 30)
        metrics = sub.pipeline.metrics
        assert metrics.connects == 1 and metrics.readings_stored == 30
        assert metrics.redelivered == 0
    finally:
        release.set()
        sub.stop()
        store.close()


@needs_mosquitto
def test_a_qos0_grant_is_not_taken_for_a_subscription(tmp_path: Path) -> None:
    """Granted QoS 0, messages would come without acks and a crash would lose them."""
    with retrying_subscriber(tmp_path, "max_qos 0") as sub:
        try:
            sub.start(wait_s=1.5)
            assert not sub.subscribed
            assert sub.pipeline.metrics.connects >= 2  # refused, reconnected, asked again
        finally:
            sub.stop()


@needs_mosquitto
def test_stop_says_disconnect_and_does_not_wait_for_a_poll(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as b:
        sub, store = subscriber(tmp_path, b.url, client_id="wire-goodbye", poll_s=5.0)
        try:
            sub.start()
            assert sub.subscribed
            started = time.monotonic()
            sub.stop()
            assert time.monotonic() - started < 3  # woken from its read, not after the 5 s timeout
            log = tmp_path / "mosquitto.log"
            assert wait_for(lambda: "Client wire-goodbye disconnected." in log.read_text())
        finally:
            store.close()
