"""Simulated HJ 212 data loggers: the TCP counterpart of ``simulators.runner.SimulatorRunner``.

Each device keeps the one connection a real logger keeps open to the platform. Every sample
becomes one HJ 212-2017 data packet (CN 2051 minute data with ``-Avg``, or CN 2011 real-time
data with ``-Rtd``, each with its ``-Flag``), stamped in China Standard Time as loggers do and
sent with Flag=5 (2017 version, reply requested). Like a logger, a device sends its next packet
only after the 9014 reply to the previous one; a packet left without a reply is resent once, at
the next tick, and then given up. A dropped connection is reopened at the next tick and the
packet in flight sent again.

Simulated time follows ``RunnerSettings`` exactly as in ``SimulatorRunner``: a backfill before
``backfill_until_ms`` is sent at once (a logger emptying its buffer after an outage), later
samples no faster than ``speed`` allows and never ahead of the wall clock. HJ 212 has one
DataTime per packet, so a backfill is many packets rather than ``buffer_max`` records per
message.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from domain.hj212.codec import (
    FLAG_REPLY,
    VERSION_2017,
    VERSION_SHIFT,
    FrameError,
    Hj212Error,
    Stream,
    decode,
    encode,
    format_cp,
    format_data_time,
    make_qn,
)
from domain.hj212.codes import load_code_map
from domain.timeutil import now_ms
from simulators.pool_model import Sample
from simulators.runner import RunnerSettings, SimDevice, paced_times

log = logging.getLogger("landun.simulators.hj212")

VALUE_SUFFIX_BY_CN = {"2011": "Rtd", "2051": "Avg"}
DATA_REPLY_CN = "9014"
FLAG = (VERSION_2017 << VERSION_SHIFT) | FLAG_REPLY  # 5
# HJ 212 has no system code for pools; water-quality loggers are commonly configured with 32
# (surface-water pollution source), as in the standard's worked example.
SYSTEM_CODE = "32"
# The factory access password of most loggers; the demo registry sets no credential.
DEFAULT_PASSWORD = "123456"
MAX_SENDS = 2  # the first send and one resend
# A logger's storage is finite: while the platform is unreachable the oldest packets go.
MAX_BACKLOG = 10_000


def parameter_codes(code_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """Landun parameter -> HJ 212 code: the reverse of the gateway's code map."""
    codes: dict[str, str] = {}
    for code, parameter in (code_map if code_map is not None else load_code_map()).items():
        codes.setdefault(parameter, code)  # the first code listed wins, as the file reads
    return codes


def encode_sample(
    sample: Sample, *, mn: str, password: str, cn: str, qn: str, codes: Mapping[str, str]
) -> bytes:
    """One HJ 212-2017 data packet (Flag=5) carrying a sample."""
    suffix = VALUE_SUFFIX_BY_CN[cn]
    items: dict[str, dict[str, str]] = {}
    for parameter, value in sample.values.items():
        code = codes.get(parameter)
        if code is None:
            # A logger sends only the factors configured on it: a missing code is a setup error.
            raise ValueError(f"no HJ 212 code for parameter {parameter!r} in the code map")
        items[code] = {suffix: f"{value:.10g}", "Flag": sample.flags.get(parameter, "N")}
    cp = format_cp({"DataTime": format_data_time(sample.ts_ms)}, items)
    fields = {
        "QN": qn,
        "ST": SYSTEM_CODE,
        "CN": cn,
        "PW": password,
        "MN": mn,
        "Flag": str(FLAG),
        "CP": cp,
    }
    return encode(fields)


@dataclass
class _Outgoing:
    qn: str
    frame: bytes
    sends: int = 0  # sends that ended without a connection error


@dataclass(eq=False)
class _Logger:
    """One device's logger: its connection and the packets the platform has not answered."""

    device: SimDevice
    mn: str
    password: str
    sock: socket.socket | None = None
    stream: Stream = field(default_factory=Stream)
    backlog: deque[_Outgoing] = field(default_factory=lambda: deque(maxlen=MAX_BACKLOG))
    last_qn_ms: int = 0


class Hj212LoggerRunner:
    """Sends simulated devices' samples to an HJ 212 gateway, one logger connection each."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: Sequence[SimDevice],
        settings: RunnerSettings | None = None,
        *,
        mn_of: Mapping[str, str],
        password_of: Mapping[str, str] | None = None,
        cn: str = "2051",
        clock: Callable[[], int] = now_ms,
        reply_timeout_s: float = 5.0,
    ) -> None:
        if cn not in VALUE_SUFFIX_BY_CN:
            raise ValueError(f"CN {cn} is not a data upload this simulator sends (2011, 2051)")
        missing = [d.device_id for d in devices if d.device_id not in mn_of]
        if missing:
            raise ValueError(f"no MN for devices {', '.join(missing)}")
        self.host = host
        self.port = port
        self.settings = settings or RunnerSettings()
        self.cn = cn
        self.clock = clock
        self.reply_timeout_s = reply_timeout_s
        self.codes = parameter_codes()
        passwords = password_of or {}
        self.loggers = [
            _Logger(d, mn_of[d.device_id], passwords.get(d.device_id, DEFAULT_PASSWORD))
            for d in devices
        ]
        self.published = 0  # packets sent (each counted once, however often it was resent)
        self.replies = 0  # packets answered with a 9014 data reply
        self.resent = 0
        self.unanswered = 0  # packets given up after their resend got no reply either
        self.connects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="landun-hj212-loggers", daemon=True)
        self._rng = np.random.default_rng(self.settings.seed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.reply_timeout_s + 5)
        for logger in self.loggers:
            self._disconnect(logger)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def run(self) -> None:
        jitter_ms = self.settings.jitter_s * 1000
        publish_from = self.settings.publish_from_ms or 0
        for t in paced_times(self.settings, self.clock, self._stop):
            for logger in self.loggers:
                sample = logger.device.model.sample(t + int(self._rng.uniform(0, jitter_ms)))
                if sample is not None and t >= publish_from:
                    logger.backlog.append(self._outgoing(logger, sample))
                self._drain(logger)
        # The run is over: packets waiting for their resend get it now.
        for logger in self.loggers:
            self._drain(logger)

    def _outgoing(self, logger: _Logger, sample: Sample) -> _Outgoing:
        # QN is the send time to the millisecond and must differ between a logger's packets,
        # which a backfill can send within one millisecond.
        qn_ms = logger.last_qn_ms = max(self.clock(), logger.last_qn_ms + 1)
        qn = make_qn(datetime.fromtimestamp(qn_ms / 1000, UTC))
        frame = encode_sample(
            sample, mn=logger.mn, password=logger.password, cn=self.cn, qn=qn, codes=self.codes
        )
        return _Outgoing(qn, frame)

    def _drain(self, logger: _Logger) -> None:
        """Send the logger's waiting packets in order, each only after the previous reply."""
        while logger.backlog and not self._stop.is_set():
            out = logger.backlog[0]
            if out.sends >= MAX_SENDS:
                logger.backlog.popleft()
                self.unanswered += 1
                log.warning("%s: no reply to QN %s after a resend; giving up", logger.mn, out.qn)
                continue
            sock = self._connection(logger)
            if sock is None:
                return
            try:
                sock.sendall(out.frame)
                answered = self._await_reply(logger, sock, out.qn)
            except OSError as exc:
                # The packet may not have arrived: send it again, on a new connection, at the
                # next tick; a broken connection does not use up the packet's resend.
                log.info("%s: connection lost (%s); reconnecting at the next tick", logger.mn, exc)
                self._disconnect(logger)
                return
            out.sends += 1
            if out.sends == 1:
                self.published += 1
            else:
                self.resent += 1
            if not answered:
                return  # the platform is slow or lost it: resend at the next tick
            logger.backlog.popleft()
            self.replies += 1

    def _connection(self, logger: _Logger) -> socket.socket | None:
        if logger.sock is None:
            try:
                logger.sock = socket.create_connection(
                    (self.host, self.port), timeout=self.reply_timeout_s
                )
            except OSError as exc:
                log.info("%s: cannot connect to %s:%d: %s", logger.mn, self.host, self.port, exc)
                return None
            logger.stream = Stream()
            self.connects += 1
        return logger.sock

    def _await_reply(self, logger: _Logger, sock: socket.socket, qn: str) -> bool:
        """Read until the 9014 reply to ``qn`` arrives (True) or the reply timeout passes."""
        deadline = time.monotonic() + self.reply_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                return False
            if not data:
                raise ConnectionResetError("the platform closed the connection")
            if any(_is_reply_to(item, qn) for item in logger.stream.feed(data)):
                return True
        return False

    @staticmethod
    def _disconnect(logger: _Logger) -> None:
        if logger.sock is not None:
            logger.sock.close()
            logger.sock = None


def _is_reply_to(item: bytes | FrameError, qn: str) -> bool:
    if isinstance(item, FrameError):
        log.warning("unreadable bytes from the platform: %s", item.reason)
        return False
    try:
        packet = decode(item)
    except Hj212Error as exc:
        log.warning("bad packet from the platform: %s", exc.reason)
        return False
    # Late replies to packets already resent carry other QNs; they are not this one's answer.
    return packet.cn == DATA_REPLY_CN and packet.qn == qn
