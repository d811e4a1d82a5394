"""HJ 212-2017 / HJ 212-2025 codec: CRC, framing, data-segment parsing, replies. Pure, no I/O.

A frame is ``##`` + 4 decimal digits (data-segment length in bytes) + data segment + CRC (4 hex
digits over the data segment) + ``\\r\\n``. The data segment is ``NAME=value`` fields separated by
``;`` with ``CP=&&...&&`` last; CP holds ``NAME=value`` items separated by ``;`` (between
monitoring factors) and ``,`` (between the fields of one factor), e.g. ``w01001-Rtd=7.41``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo

# DataTime and QN carry the logger's local clock; Chinese loggers run on China Standard Time.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

HEADER = b"##"
TERMINATOR = b"\r\n"
FRAME_OVERHEAD = 12  # "##" + 4 length digits + 4 CRC digits + "\r\n"
MAX_SEGMENT_BYTES = 9999  # the largest number the 4-digit length field can state
DEFAULT_MAX_PACKET = 16 * 1024

# Flag = V5 V4 V3 V2 V1 V0 D A (bit 7 .. bit 0): A asks for a reply, D marks a split packet
# (PNUM/PNO present), V5..V0 is the protocol version.
FLAG_REPLY = 0x01
FLAG_SPLIT = 0x02
VERSION_SHIFT = 2
VERSION_2005 = 0
VERSION_2017 = 1
# HJ 212-2025 loggers send Flag=8/9 (version 2) in the public implementations we could inspect;
# the standard text itself was not available to check.
VERSION_2025 = 2
VERSION_NAMES = {
    VERSION_2005: "HJ/T 212-2005",
    VERSION_2017: "HJ 212-2017",
    VERSION_2025: "HJ 212-2025",
}

KNOWN_CNS: dict[str, str] = {
    "1000": "set timeout and retries",
    "1011": "get logger time",
    "1012": "set logger time",
    "1013": "time calibration request",
    "1061": "get real-time data interval",
    "1062": "set real-time data interval",
    "1063": "get minute data interval",
    "1064": "set minute data interval",
    "1072": "set access password",
    "2011": "real-time data",
    "2012": "stop real-time data",
    "2021": "equipment running status",
    "2022": "stop equipment running status",
    "2031": "day data",
    "2041": "day running time",
    "2051": "minute data",
    "2061": "hour data",
    "2081": "logger restart time",
    "9011": "request answer",
    "9012": "execution result",
    "9013": "notification answer",
    "9014": "data reply",
    "9015": "heartbeat (HJ 212-2025)",
}

_QN = re.compile(r"\d{17}")
_DATA_TIME = re.compile(r"\d{14}")
_ST = re.compile(r"\d{2}")
_CN = re.compile(r"\d{4}")
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")


class Hj212Error(ValueError):
    """A packet that cannot be accepted; ``reason`` is meant for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# CRC


def _crc_table() -> tuple[int, ...]:
    # The 8 shift/XOR steps after ``reg ^= byte`` depend only on the low byte of the register
    # (the high byte just shifts down), so they can be tabulated per low byte.
    table = []
    for low in range(256):
        reg = low
        for _ in range(8):
            reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
        table.append(reg)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """HJ 212 CRC of the data segment (reg=0xFFFF; reg=(reg>>8)^byte; 8x shift, XOR 0xA001)."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        reg = (reg >> 8) ^ _CRC_TABLE[reg & 0xFF]
    return reg


def crc_hex(data: bytes) -> str:
    return f"{crc16(data):04X}"


# ---------------------------------------------------------------------------------------------
# Packets


@dataclass(frozen=True)
class Packet:
    """One decoded data segment. Values stay strings: conversion is the consumer's decision."""

    qn: str | None
    st: str
    cn: str
    pw: str
    mn: str
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    cp: dict[str, str] = field(default_factory=dict)  # every CP item, raw, in order
    items: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> suffix -> value
    data_time_ms: int | None = None  # CP DataTime as UTC epoch ms
    extra: dict[str, str] = field(default_factory=dict)  # header fields HJ 212-2017 lacks

    @property
    def wants_reply(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_REPLY)

    @property
    def is_split(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_SPLIT)

    @property
    def version(self) -> int | None:
        return None if self.flag is None else self.flag >> VERSION_SHIFT


def decode(
    frame: bytes,
    *,
    tz: tzinfo = CHINA_STANDARD_TIME,
    max_bytes: int = DEFAULT_MAX_PACKET,
) -> Packet:
    """Check framing, length and CRC of one complete frame and parse its data segment."""
    if len(frame) > max_bytes:
        raise Hj212Error(f"packet of {len(frame)} bytes over the {max_bytes} byte limit")
    if not frame.startswith(HEADER):
        raise Hj212Error("missing header ##")
    if not frame.endswith(TERMINATOR):
        raise Hj212Error("truncated packet: no \\r\\n terminator")
    if len(frame) < FRAME_OVERHEAD:
        raise Hj212Error(f"truncated packet: {len(frame)} bytes, a frame has at least 12")
    length_field = frame[2:6]
    if not length_field.isdigit():
        raise Hj212Error(f"length field {length_field.decode('latin-1')!r} is not 4 digits")
    segment = frame[6:-6]
    if int(length_field) != len(segment):
        raise Hj212Error(
            f"length field says {length_field.decode()} but data segment is {len(segment)} bytes"
        )
    crc_field = frame[-6:-2]
    if not _HEX4.fullmatch(crc_field):
        raise Hj212Error(f"CRC field {crc_field.decode('latin-1')!r} is not 4 hex digits")
    computed = crc_hex(segment)
    if crc_field.decode().upper() != computed:
        raise Hj212Error(f"bad CRC: packet says {crc_field.decode()}, computed {computed}")
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Hj212Error(
            f"data segment is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    return parse_segment(text, tz=tz)


def parse_segment(text: str, *, tz: tzinfo = CHINA_STANDARD_TIME) -> Packet:
    """Parse a data segment (the text between the length field and the CRC)."""
    if text.startswith("CP=&&"):
        cp_at = 0
    else:
        found = text.find(";CP=&&")
        if found == -1:
            raise Hj212Error("field CP missing")
        cp_at = found + 1
    cp_text = text[cp_at + len("CP=&&") :]
    if not cp_text.endswith("&&"):
        raise Hj212Error("field CP malformed: not closed by && at the end of the data segment")
    header = _parse_header(text[:cp_at])
    cp, items = _parse_cp(cp_text[:-2])
    packet = Packet(
        qn=_field(header, "QN", _QN, "17 digits YYYYMMDDhhmmsszzz"),
        st=_required(header, "ST", _ST, "2 digits"),
        cn=_required(header, "CN", _CN, "4 digits"),
        pw=_required(header, "PW"),
        mn=_required(header, "MN"),
        flag=_int_field(header, "Flag", 0, 255),
        pnum=_int_field(header, "PNUM", 1, 9999),
        pno=_int_field(header, "PNO", 1, 9999),
        cp=cp,
        items=items,
        data_time_ms=_data_time_ms(cp.get("DataTime"), tz),
        extra={k: v for k, v in header.items() if k not in _HEADER_NAMES},
    )
    if packet.cn not in KNOWN_CNS:
        raise Hj212Error(f"unknown CN {packet.cn}")
    if not packet.mn:
        raise Hj212Error("field MN malformed: empty")
    if packet.is_split:
        if packet.pnum is None or packet.pno is None:
            raise Hj212Error("field Flag says split packet but PNUM or PNO is missing")
        if packet.pno > packet.pnum:
            raise Hj212Error(f"field PNO malformed: part {packet.pno} of {packet.pnum}")
    return packet


_HEADER_NAMES = frozenset({"QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO"})


def _parse_header(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue  # the ";" before CP, or a doubled separator
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise Hj212Error(f"field {part!r} malformed: expected NAME=value")
        if name in fields:
            raise Hj212Error(f"field {name} malformed: given twice")
        fields[name] = value
    return fields


def _parse_cp(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    cp: dict[str, str] = {}
    items: dict[str, dict[str, str]] = {}
    for part in re.split(r"[;,]", text):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        # Some loggers pad items with spaces ("w01001-Rtd =7.4, w01001-Flag=N"); tolerate it.
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise Hj212Error(f"field CP malformed: item {part!r} is not NAME=value")
        if name in cp:
            raise Hj212Error(f"field CP malformed: {name} given twice")
        cp[name] = value
        code, dash, suffix = name.partition("-")
        if dash:
            items.setdefault(code, {})[suffix] = value
    return cp, items


def _field(
    header: Mapping[str, str], name: str, pattern: re.Pattern[str] | None = None, want: str = ""
) -> str | None:
    value = header.get(name)
    if value is not None and pattern is not None and not pattern.fullmatch(value):
        raise Hj212Error(f"field {name} malformed: expected {want}, got {value!r}")
    return value


def _required(
    header: Mapping[str, str], name: str, pattern: re.Pattern[str] | None = None, want: str = ""
) -> str:
    value = _field(header, name, pattern, want)
    if value is None:
        raise Hj212Error(f"field {name} missing")
    return value


def _int_field(header: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    if name not in header:
        return None
    value = header[name]
    if not value.isdigit() or not low <= int(value) <= high:
        raise Hj212Error(
            f"field {name} malformed: expected an integer {low}..{high}, got {value!r}"
        )
    return int(value)


def _data_time_ms(value: str | None, tz: tzinfo) -> int | None:
    if value is None:
        return None
    try:
        if not _DATA_TIME.fullmatch(value):
            raise ValueError
        local = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        raise Hj212Error(
            f"field DataTime malformed: expected YYYYMMDDhhmmss, got {value!r}"
        ) from None
    return int(local.timestamp()) * 1000


# ---------------------------------------------------------------------------------------------
# Encoding and replies


def frame(segment: str) -> bytes:
    """Wrap a data segment in header, length, CRC and terminator."""
    data = segment.encode("utf-8")
    if len(data) > MAX_SEGMENT_BYTES:
        raise Hj212Error(f"data segment of {len(data)} bytes does not fit the 4-digit length field")
    return b"##%04d%s%s\r\n" % (len(data), data, crc_hex(data).encode())


def encode(fields: Mapping[str, str]) -> bytes:
    """Build a frame from data-segment fields, in the given order; ``CP`` is the content between
    the ``&&`` markers (see ``format_cp``) and is always written last."""
    parts = []
    for name, value in fields.items():
        if name == "CP":
            continue
        if not name or any(c in name for c in "=;&") or any(c in value for c in ";\r\n"):
            raise Hj212Error(f"field {name} malformed: {value!r} cannot be encoded")
        parts.append(f"{name}={value}")
    cp = fields.get("CP", "")
    if "&&" in cp or "\r\n" in cp:
        raise Hj212Error("field CP malformed: content must not contain && or \\r\\n")
    parts.append(f"CP=&&{cp}&&")
    return frame(";".join(parts))


def format_cp(
    fields: Mapping[str, str] | None = None,
    items: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """CP content: plain fields first (``DataTime=...``), then one group per code whose suffixes
    are joined by ``,`` (``w01001-Rtd=7.41,w01001-Flag=N``); groups and fields joined by ``;``."""
    parts = [f"{k}={v}" for k, v in (fields or {}).items()]
    for code, values in (items or {}).items():
        parts.append(",".join(f"{code}-{suffix}={v}" for suffix, v in values.items()))
    return ";".join(parts)


def make_qn(when: datetime, tz: tzinfo = CHINA_STANDARD_TIME) -> str:
    """QN (request number) for ``when``: the local time to the millisecond, YYYYMMDDhhmmsszzz."""
    local = when.astimezone(tz)
    return local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}"


def format_data_time(epoch_ms: int, tz: tzinfo = CHINA_STANDARD_TIME) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz).strftime("%Y%m%d%H%M%S")


def _reply(request: Packet, cn: str, cp: str, now: datetime | None) -> bytes:
    # HJ 212-2017 answers carry the request's QN so the logger can match them (appendix C);
    # the Flag keeps the logger's protocol version and does not ask for a reply back.
    version = request.version if request.version is not None else VERSION_2017
    qn = request.qn or make_qn(now or datetime.now(CHINA_STANDARD_TIME))
    fields = {
        "QN": qn,
        "ST": "91",
        "CN": cn,
        "PW": request.pw,
        "MN": request.mn,
        "Flag": str(version << VERSION_SHIFT),
        "CP": cp,
    }
    return encode(fields)


def reply_9011(request: Packet, qn_rtn: int = 1, now: datetime | None = None) -> bytes:
    """Request answer; QnRtn 1 = ready to execute."""
    return _reply(request, "9011", f"QnRtn={qn_rtn}", now)


def reply_9012(request: Packet, exe_rtn: int = 1, now: datetime | None = None) -> bytes:
    """Execution result; ExeRtn 1 = success."""
    return _reply(request, "9012", f"ExeRtn={exe_rtn}", now)


def reply_9013(request: Packet, now: datetime | None = None) -> bytes:
    """Notification answer, also what HJ 212-2025 loggers expect after a 9015 heartbeat."""
    return _reply(request, "9013", "", now)


def reply_9014(request: Packet, now: datetime | None = None) -> bytes:
    """Data reply: the upload with this QN was received."""
    return _reply(request, "9014", "", now)


# ---------------------------------------------------------------------------------------------
# Split packets


@dataclass(frozen=True)
class Incomplete:
    """A split packet that never completed (expired, evicted, or its connection closed)."""

    mn: str
    qn: str
    cn: str
    pnum: int
    received: tuple[int, ...]
    raw: bytes

    @property
    def reason(self) -> str:
        got = ", ".join(map(str, self.received))
        return f"incomplete split packet QN={self.qn} CN={self.cn}: got parts {got} of {self.pnum}"


class SplitError(Hj212Error):
    """Parts of one split packet contradict each other; ``raw`` holds every part received."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.raw = raw


@dataclass
class _Pending:
    pnum: int
    first_seen: float
    parts: dict[int, tuple[Packet, bytes]] = field(default_factory=dict)

    def raw(self) -> bytes:
        return b"".join(self.parts[n][1] for n in sorted(self.parts))


class Reassembler:
    """Collects the PNUM parts of split packets (same MN, QN and CN) into one packet.

    Bounded: at most ``max_pending`` packets wait at once (the oldest is evicted), a packet
    waits at most ``expiry_s`` seconds, and one packet's parts total at most ``max_bytes``.
    Clock values are passed in, so this stays sans-I/O.
    """

    def __init__(
        self, max_pending: int = 32, expiry_s: float = 120.0, max_bytes: int = 1024 * 1024
    ) -> None:
        self.max_pending = max_pending
        self.expiry_s = expiry_s
        self.max_bytes = max_bytes
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._dropped: list[Incomplete] = []

    def add(self, part: Packet, raw: bytes, now: float) -> tuple[Packet, bytes] | None:
        """Store one part; returns the merged packet and all parts' bytes once complete."""
        if part.pnum is None or part.pno is None:
            raise Hj212Error("split packet without PNUM/PNO")
        if part.qn is None:
            raise Hj212Error("split packet without QN cannot be reassembled")
        key = (part.mn, part.qn, part.cn)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].first_seen)
                self._dropped.append(self._incomplete(oldest, self._pending.pop(oldest)))
            pending = self._pending[key] = _Pending(part.pnum, now)
        if part.pnum != pending.pnum:
            del self._pending[key]
            raise SplitError(
                f"split packet QN={part.qn} parts disagree on PNUM ({pending.pnum} vs {part.pnum})",
                pending.raw() + raw,
            )
        # A logger that got no reply resends the same part; keep the first copy.
        pending.parts.setdefault(part.pno, (part, raw))
        if sum(len(r) for _, r in pending.parts.values()) > self.max_bytes:
            del self._pending[key]
            raise SplitError(
                f"split packet QN={part.qn} over the {self.max_bytes} byte limit", pending.raw()
            )
        if len(pending.parts) < pending.pnum:
            return None
        del self._pending[key]
        try:
            merged = _merge([pending.parts[n][0] for n in sorted(pending.parts)])
        except Hj212Error as exc:
            raise SplitError(exc.reason, pending.raw()) from None
        return merged, pending.raw()

    def expire(self, now: float) -> list[Incomplete]:
        """Split packets given up on since the last call: expired or evicted."""
        for key in [k for k, p in self._pending.items() if now - p.first_seen > self.expiry_s]:
            self._dropped.append(self._incomplete(key, self._pending.pop(key)))
        dropped, self._dropped = self._dropped, []
        return dropped

    def drain(self) -> list[Incomplete]:
        """Everything still waiting (the connection is closing)."""
        for key in list(self._pending):
            self._dropped.append(self._incomplete(key, self._pending.pop(key)))
        dropped, self._dropped = self._dropped, []
        return dropped

    @staticmethod
    def _incomplete(key: tuple[str, str, str], pending: _Pending) -> Incomplete:
        mn, qn, cn = key
        return Incomplete(mn, qn, cn, pending.pnum, tuple(sorted(pending.parts)), pending.raw())


def _merge(parts: list[Packet]) -> Packet:
    cp: dict[str, str] = {}
    for part in parts:
        for name, value in part.cp.items():
            if cp.setdefault(name, value) != value:
                raise Hj212Error(
                    f"split packet QN={part.qn} parts disagree on {name} ({cp[name]} vs {value})"
                )
    items: dict[str, dict[str, str]] = {}
    for part in parts:
        for code, values in part.items.items():
            items.setdefault(code, {}).update(values)
    first = parts[0]
    return dataclasses.replace(
        first,
        flag=None if first.flag is None else first.flag & ~FLAG_SPLIT,
        pnum=None,
        pno=None,
        cp=cp,
        items=items,
        data_time_ms=next((p.data_time_ms for p in parts if p.data_time_ms is not None), None),
    )


# ---------------------------------------------------------------------------------------------
# Stream framing


@dataclass(frozen=True)
class FrameError:
    """Bytes the framer had to discard, and why."""

    reason: str
    raw: bytes


_NOT_HASH = re.compile(rb"[^#]")


class Stream:
    """Sans-I/O framer for one TCP connection: bytes in, complete frames or errors out.

    A frame runs from ``##`` to the first ``\\r\\n`` (neither the data segment nor the CRC may
    contain it), so a wrong length field costs one frame, not the rest of the stream; the length
    and CRC are checked by ``decode``. Garbage is discarded up to the next ``##`` and reported.
    Memory is bounded by ``max_packet``: a frame that grows beyond it is reported and dropped.
    """

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if max_packet < FRAME_OVERHEAD:
            raise ValueError(f"max_packet must be at least {FRAME_OVERHEAD} bytes")
        self.max_packet = max_packet
        self._buf = bytearray()
        self._junk = bytearray()  # first bytes of the current garbage run, for the report
        self._junk_len = 0
        # True while discarding the rest of a frame already reported: not garbage of its own.
        self._skipping = False
        # Where the search for the end of the frame at the start of the buffer resumes, so a
        # frame arriving in many small reads is scanned once, not once per read.
        self._scan_from = 2

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (never much beyond ``max_packet``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        self._buf += data
        out: list[bytes | FrameError] = []
        while self._step(out):
            pass
        return out

    def close(self) -> list[FrameError]:
        """The connection ended: report a partial frame and pending garbage."""
        out: list[bytes | FrameError] = []
        if self._buf.startswith(HEADER):
            out.append(
                FrameError(
                    f"truncated packet: connection ended after {len(self._buf)} bytes",
                    bytes(self._buf),
                )
            )
        else:
            self._discard(len(self._buf))
        self._cut(len(self._buf))
        self._report_junk(out)
        return [e for e in out if isinstance(e, FrameError)]

    def _step(self, out: list[bytes | FrameError]) -> bool:
        buf = self._buf
        start = buf.find(HEADER)
        if start == -1:
            # Keep a trailing "#": it may be the first half of the next header.
            self._discard(len(buf) - (1 if buf.endswith(b"#") else 0))
            self._flush_junk_if_full(out)
            return False
        # In a run of "#" the header is the last two; until the run's end is known only those
        # two are kept, so a flood of "#" costs one pass and no memory.
        not_hash = _NOT_HASH.search(buf, start + 2)
        if not_hash is None:
            self._discard(len(buf) - 2)
            self._flush_junk_if_full(out)
            return False
        self._discard(not_hash.start() - 2)
        self._report_junk(out)
        self._skipping = False
        return self._frame(out)

    def _frame(self, out: list[bytes | FrameError]) -> bool:
        buf = self._buf  # starts with "##"
        if len(buf) >= 6:
            length_field = bytes(buf[2:6])
            if not length_field.isdigit():
                bad = length_field.decode("latin-1")
                return self._reject(f"length field {bad!r} is not 4 digits", out)
            size = int(length_field) + FRAME_OVERHEAD
            if size > self.max_packet:
                return self._reject(
                    f"packet of {size} bytes over the {self.max_packet} byte limit", out
                )
        # Resume one byte early: a "\r\n" or "##" may straddle two reads. The terminator is
        # looked for only up to the next header, so a stream of short broken frames costs each
        # frame its own length, not the rest of the buffer.
        scan = max(2, self._scan_from - 1)
        nxt = buf.find(HEADER, scan)
        end = buf.find(TERMINATOR, scan, len(buf) if nxt == -1 else nxt + 1)
        if end != -1 and (nxt == -1 or end < nxt):
            out.append(bytes(buf[: end + 2]))
            self._cut(end + 2)
            return True
        if nxt != -1:
            return self._reject("truncated packet: next ## arrived before \\r\\n", out)
        if len(buf) > self.max_packet:
            return self._reject(
                f"packet of over {self.max_packet} bytes without \\r\\n, over the byte limit", out
            )
        self._scan_from = len(buf)
        return False

    def _reject(self, reason: str, out: list[bytes | FrameError]) -> bool:
        """Drop the frame at the start of the buffer up to where the stream can resynchronise."""
        buf = self._buf
        nxt = buf.find(HEADER, 2)
        end = buf.find(TERMINATOR, 2, len(buf) if nxt == -1 else nxt + 1)
        cuts = [i for i in (end + 2 if end != -1 else -1, nxt) if i != -1]
        cut = min(cuts) if cuts else len(buf)
        out.append(FrameError(reason, bytes(buf[: min(cut, self.max_packet)])))
        self._cut(cut)
        # Without a resync point, what follows until the next "##" belongs to this frame.
        self._skipping = not cuts
        return True

    def _discard(self, count: int) -> None:
        if count <= 0:
            return
        if not self._skipping:
            room = self.max_packet - len(self._junk)
            self._junk += self._buf[: min(count, room)]
            self._junk_len += count
        self._cut(count)

    def _cut(self, count: int) -> None:
        del self._buf[:count]
        self._scan_from = 2

    def _flush_junk_if_full(self, out: list[bytes | FrameError]) -> None:
        # Report a long garbage run now rather than holding it until the next header.
        if self._junk_len >= self.max_packet:
            self._report_junk(out)

    def _report_junk(self, out: list[bytes | FrameError]) -> None:
        # Whitespace between frames (a stray CR/LF some loggers send) is not data.
        if self._junk_len and self._junk.strip():
            out.append(
                FrameError(
                    f"discarded {self._junk_len} bytes of garbage before header ##",
                    bytes(self._junk),
                )
            )
        self._junk.clear()
        self._junk_len = 0
