"""MQTT 3.1.1 wire format, as much as ingest's QoS 1 subscriber needs (OASIS MQTT 3.1.1, ch. 2-3).

The packets the subscriber sends are built by small functions; what the broker sends is split
into packets by `PacketReader`, which takes whatever `recv` returned (any number of packets,
possibly cut anywhere) so one system call serves thousands of messages. paho-mqtt reads each
packet with three system calls and wakes its loop for every ack, which cost ~55 µs a message,
about as much as decoding and storing it (README, Benchmarks)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # the low nibble is fixed by the spec for these three
SUBACK = 0x90
UNSUBSCRIBE = 0xA2
UNSUBACK = 0xB0
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ_PACKET = bytes((PINGREQ, 0))
DISCONNECT_PACKET = bytes((DISCONNECT, 0))
SUBACK_FAILURE = 0x80

# CONNACK return codes (3.2.2.3).
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}

_PUBACK = struct.Struct(">BBH")
_MAX_REMAINING = 268_435_455  # the largest remaining length four bytes can say


class ProtocolError(Exception):
    """The broker sent something MQTT 3.1.1 does not allow; the connection cannot go on."""


class Publish(NamedTuple):
    topic: str
    payload: bytes
    mid: int  # packet id; 0 for QoS 0
    qos: int
    dup: bool


class Control(NamedTuple):
    """Any packet but PUBLISH: its type (first byte's high nibble) and its variable part."""

    kind: int
    body: bytes


def _remaining_length(n: int) -> bytes:
    if not 0 <= n <= _MAX_REMAINING:
        raise ValueError(f"packet of {n} bytes is too long for MQTT")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def _utf8(s: str) -> bytes:
    raw = s.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"string of {len(raw)} bytes is too long for MQTT")
    return struct.pack(">H", len(raw)) + raw


def connect_packet(
    client_id: str,
    keepalive_s: int,
    clean_session: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:  # 3.1.1 allows a password only with a user name
            flags |= 0x40
            payload += _utf8(password)
    header = _utf8("MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive_s)
    return _packet(CONNECT, header + payload)


def subscribe_packet(packet_id: int, topics: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(_utf8(t) + bytes((qos,)) for t, qos in topics)
    return _packet(SUBSCRIBE, body)


def unsubscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    return _packet(UNSUBSCRIBE, struct.pack(">H", packet_id) + b"".join(map(_utf8, topics)))


def puback_packets(mids: Iterable[int]) -> bytes:
    """PUBACKs for many messages as one buffer, so they go out in one system call."""
    pack = _PUBACK.pack
    return b"".join([pack(PUBACK, 2, mid) for mid in mids])


def parse_connack(body: bytes) -> tuple[bool, int]:
    """(session present, return code)."""
    if len(body) != 2:
        raise ProtocolError(f"CONNACK of {len(body)} bytes, expected 2")
    return bool(body[0] & 1), body[1]


def parse_suback(body: bytes) -> tuple[int, bytes]:
    """(packet id, one granted QoS or 0x80 per topic)."""
    if len(body) < 3:
        raise ProtocolError(f"SUBACK of {len(body)} bytes, expected at least 3")
    return (body[0] << 8) | body[1], body[2:]


class PacketReader:
    """Splits the broker's byte stream into packets, keeping a cut packet until the rest comes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | memoryview) -> tuple[list[Publish], list[Control]]:
        """The whole packets now available: PUBLISHes in arrival order, and any others."""
        buf = self._buf
        buf += data
        end_of_data = len(buf)
        publishes: list[Publish] = []
        controls: list[Control] = []
        pos = 0
        while pos + 2 <= end_of_data:
            first = buf[pos]
            start = pos + 1
            length = buf[start]
            if length < 0x80:  # one length byte: every telemetry message, so the fast path
                start += 1
            else:
                header = _long_length(buf, start, end_of_data)
                if header is None:
                    break
                start, length = header
            end = start + length
            if end > end_of_data:
                break
            if first & 0xF0 == PUBLISH:
                publishes.append(_publish(buf, first, start, end))
            else:
                controls.append(Control(first & 0xF0, bytes(buf[start:end])))
            pos = end
        del buf[:pos]
        return publishes, controls


def _long_length(buf: bytearray, start: int, end_of_data: int) -> tuple[int, int] | None:
    """(where the packet's body starts, its length) for a multi-byte remaining length; None if
    the length is not all here yet."""
    length = 0
    for shift in (0, 7, 14, 21):
        if start >= end_of_data:
            return None
        byte = buf[start]
        start += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return start, length
    raise ProtocolError("remaining length longer than four bytes")


def _publish(buf: bytearray, first: int, start: int, end: int) -> Publish:
    qos = (first >> 1) & 3
    if qos > 1:  # the subscriber asks for QoS 1, and a broker never sends more than it granted
        raise ProtocolError(f"PUBLISH with QoS {qos}")
    if end - start < 2:
        raise ProtocolError("PUBLISH too short for its topic length")
    topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
    payload_start = topic_end + 2 if qos else topic_end
    if payload_start > end:
        raise ProtocolError("PUBLISH topic runs past the end of the packet")
    try:
        topic = buf[start + 2 : topic_end].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("PUBLISH topic is not UTF-8") from exc
    mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
    if qos and not mid:
        raise ProtocolError("PUBLISH with QoS 1 and packet id 0")
    return Publish(topic, bytes(buf[payload_start:end]), mid, qos, bool(first & 0x08))
