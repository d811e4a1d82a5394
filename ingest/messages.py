"""What ingest takes in, from either door: an MQTT message as received, or an HJ 212 packet the
gateway has already parsed and authenticated. The pipeline decodes both through its decoder table
(ingest.decoders) and records where each came from in its dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple


class RawMessage(NamedTuple):
    """One MQTT message as received. A named tuple: the MQTT thread makes one per message, at
    half the cost of a frozen dataclass."""

    topic: str
    payload: bytes
    recv_ms: int
    source: str = "mqtt"


HJ212_SOURCE = "hj212"
# The decoder route of the gateway's packets. No MQTT topic names it: topic routes are letters.
HJ212_ROUTE = HJ212_SOURCE


def hj212_topic(peer: str) -> str:
    """Where an HJ 212 packet came from, as its dead letters record it (their topic)."""
    return f"{HJ212_SOURCE}://{peer}"


@dataclass(frozen=True, slots=True)
class Hj212Record:
    """The readings of one HJ 212 data packet, by Landun parameter: its DataTime, the values its
    code map names and their HJ 212 data flags."""

    ts_ms: int
    values: dict[str, float]
    flags: dict[str, str]


@dataclass(frozen=True, slots=True)
class Hj212Message:
    """One data packet of an authenticated HJ 212 logger, parsed by the gateway."""

    device_id: str  # found by the packet's MN, its PW checked
    record: Hj212Record
    peer: str  # the logger's address, host:port
    recv_ms: int
    payload: bytes  # the packet as received (a split packet's parts, joined)
    source: ClassVar[str] = HJ212_SOURCE

    @property
    def topic(self) -> str:
        return hj212_topic(self.peer)


Message = RawMessage | Hj212Message
