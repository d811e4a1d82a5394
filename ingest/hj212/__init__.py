"""HJ 212-2017 / HJ 212-2025 support: the codec (sans-I/O), the code map, the TCP gateway."""

from ingest.hj212.codec import (
    CHINA_STANDARD_TIME,
    FrameError,
    Hj212Error,
    Packet,
    Reassembler,
    Stream,
    crc16,
    decode,
    encode,
    format_cp,
    reply_9011,
    reply_9012,
    reply_9013,
    reply_9014,
)
from ingest.hj212.codes import load_code_map
from ingest.hj212.gateway import DeviceLookup, GatewaySink, Hj212Gateway, packet_to_record

__all__ = [
    "CHINA_STANDARD_TIME",
    "DeviceLookup",
    "FrameError",
    "GatewaySink",
    "Hj212Error",
    "Hj212Gateway",
    "Packet",
    "Reassembler",
    "Stream",
    "crc16",
    "decode",
    "encode",
    "format_cp",
    "load_code_map",
    "packet_to_record",
    "reply_9011",
    "reply_9012",
    "reply_9013",
    "reply_9014",
]
