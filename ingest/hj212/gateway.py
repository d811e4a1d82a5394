"""Asyncio TCP server for HJ 212 data loggers: frames in, typed messages out (ingest.messages).

Per connection: a ``Stream`` framer, a split-packet ``Reassembler``, an idle timeout. Every
frame ends in exactly one of: telemetry handed to the sink, a dead letter with its reason, or
(a heartbeat) an answer. Frames of one connection are handled in order, so a device's records
reach the sink in the order it sent them and a 9014 reply means the sink has committed them.

The sink is synchronous and commits to a database, so it runs on a gateway-owned
single-thread executor: the event loop keeps serving every other connection while one commit
blocks, and the sink never sees two calls at once, so it needs no locking of its own. It does
run on a thread other than the loop's (a SQLite connection must allow that).
``DeviceLookup.device_for_mn`` is called on the loop and must answer from memory; the password
check hashes (slow by design), so it runs on a worker thread and once per connection for a
given (MN, PW).

Whatever a connection sends, it costs bounded memory (the framer keeps at most about one packet)
and a bounded number of dead letters: past ``max_dead_letters`` the rest are counted per kind of
reason and recorded as one summary every ``dead_letter_summary_s`` seconds and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Protocol

from domain.hj212.codec import (
    CHINA_STANDARD_TIME,
    DEFAULT_MAX_PACKET,
    KNOWN_CNS,
    FrameError,
    Hj212Error,
    Packet,
    Reassembler,
    SplitError,
    Stream,
    decode,
    reply_9013,
    reply_9014,
)
from domain.hj212.codes import load_code_map
from domain.model import DeadLetter
from ingest.dead_letter_log import reason_kind
from ingest.decode import number_from_text
from ingest.messages import HJ212_SOURCE, Hj212Message, Hj212Record, hj212_topic

log = logging.getLogger("landun.hj212")

# Which value of a factor becomes the reading: the instantaneous value for real-time data, the
# period average for minute, hour and day data.
VALUE_SUFFIX_BY_CN = {"2011": "Rtd", "2051": "Avg", "2061": "Avg", "2031": "Avg"}
HEARTBEAT_CN = "9015"
# Answers from the logger; answering them back would start an endless exchange.
ANSWER_CNS = frozenset({"9011", "9012", "9013", "9014"})
FEED_BYTES = 1024  # bytes framed and handled before the loop serves other connections


class DeviceLookup(Protocol):
    def device_for_mn(self, mn: str) -> str | None: ...  # MN -> device_id, None if unknown
    def check_password(self, device_id: str, pw: str) -> bool: ...


class GatewaySink(Protocol):
    def telemetry(self, message: Hj212Message) -> None: ...
    def dead_letter(self, letter: DeadLetter) -> None: ...


def packet_to_record(
    packet: Packet, code_map: Mapping[str, str]
) -> tuple[Hj212Record | None, list[str]]:
    """The readings record of a data packet, and the problems found on the way.

    A factor that cannot be used (unmapped code, missing or non-numeric value) is reported but
    does not block the others: one unconfigured code must not stop a pool's chlorine readings.
    The record is None when nothing usable is left.
    """
    suffix = VALUE_SUFFIX_BY_CN[packet.cn]
    if packet.data_time_ms is None:
        return None, ["field DataTime missing from CP"]
    if not packet.items:
        return None, ["no monitoring values in CP"]
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    problems: list[str] = []
    unmapped = [code for code in packet.items if code not in code_map]
    if unmapped:
        problems.append(f"unmapped codes {', '.join(unmapped)} (not in the site's code map)")
    for code, fields in packet.items.items():
        parameter = code_map.get(code)
        if parameter is None:
            continue
        raw_value = fields.get(suffix)
        if raw_value is None:
            problems.append(f"{code} has no {suffix} value")
            continue
        try:
            value = float(raw_value)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(f"{code}-{suffix} value {raw_value!r} is not a finite number")
            continue
        try:
            number_from_text(raw_value)
        except ValueError as exc:  # underflowed to 0, which the logger did not measure
            problems.append(f"{code}-{suffix}: {exc}")
            continue
        if parameter in values:
            problems.append(f"{code} maps to {parameter}, which another code already gave")
            continue
        values[parameter] = value
        if "Flag" in fields:
            flags[parameter] = fields["Flag"]  # HJ 212 data flags are Landun's flags
    if not values:
        return None, problems
    return Hj212Record(packet.data_time_ms, values, flags), problems


@dataclass(eq=False)
class _Connection:
    peer: str
    stream: Stream
    reassembler: Reassembler
    writer: asyncio.StreamWriter
    # The device last authenticated on this connection: attached to dead letters of frames
    # too broken to name their own device, so an inspector sees who sends them.
    device_id: str | None = None
    # Password checks already made on this connection: (MN, PW) -> verdict.
    checked: dict[tuple[str, str], bool] = field(default_factory=dict)
    dead_letters: int = 0
    # Dead letters past the budget, not recorded one by one: counts per kind of reason.
    suppressed: Counter[str] = field(default_factory=Counter)
    suppressed_bytes: int = 0
    summarised_at: float = field(default_factory=time.monotonic)


class Hj212Gateway:
    """HJ 212 TCP server. Counters are plain attributes for the metrics endpoint."""

    def __init__(
        self,
        lookup: DeviceLookup,
        sink: GatewaySink,
        *,
        code_map: Mapping[str, str] | None = None,
        idle_timeout: float = 300.0,
        max_packet: int = DEFAULT_MAX_PACKET,
        tz: tzinfo = CHINA_STANDARD_TIME,
        max_connections: int = 10_000,
        split_expiry: float = 120.0,
        max_pending_splits: int = 32,
        sink_executor: Executor | None = None,
        max_dead_letters: int = 20,
        dead_letter_summary_s: float = 60.0,
        max_checked_passwords: int = 16,
    ) -> None:
        self.lookup = lookup
        self.sink = sink
        self.code_map = dict(code_map) if code_map is not None else load_code_map()
        self.idle_timeout = idle_timeout
        self.max_packet = max_packet
        self.tz = tz
        self.max_connections = max_connections
        self.split_expiry = split_expiry
        self.max_pending_splits = max_pending_splits
        self.max_dead_letters = max_dead_letters
        self.dead_letter_summary_s = dead_letter_summary_s
        self.max_checked_passwords = max_checked_passwords
        self._given_executor = sink_executor
        self._executor: Executor | None = None
        # Password hashing on its own two threads: many connections guessing passwords queue
        # here instead of taking the threads the API's own off-loop work runs on.
        self._auth_executor: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[_Connection] = set()

        self.connections_total = 0
        self.connections_open = 0
        self.connections_rejected = 0
        self.idle_timeouts = 0
        self.bytes_received = 0
        self.packets_ok = 0
        self.packets_dead_lettered = 0
        self.heartbeats = 0
        self.replies_sent = 0
        self.sink_errors = 0
        self.dead_letters_suppressed = 0
        self.password_checks = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); returns the bound port."""
        self._executor = self._given_executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="landun-hj212-sink"
        )
        self._auth_executor = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="landun-hj212-auth"
        )
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("HJ 212 gateway listening on %s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening, close every connection (reporting partial data), release the sink."""
        if self._server is not None:
            self._server.close()
        # Closing the transports makes every reader see end of stream, so each handler ends
        # through its normal path (partial data dead-lettered) instead of being cancelled.
        for conn in self._connections:
            conn.writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._executor is not None and self._given_executor is None:
            # Every handler has returned, so no sink call is pending.
            self._executor.shutdown(wait=False)
        self._executor = None
        if self._auth_executor is not None:
            self._auth_executor.shutdown(wait=False)
            self._auth_executor = None

    # -----------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = _peer_name(writer)
        if self.connections_open >= self.max_connections:
            self.connections_rejected += 1
            log.warning("refusing %s: %d connections open", peer, self.connections_open)
            writer.close()
            return
        self._tasks.add(task)
        self.connections_total += 1
        self.connections_open += 1
        conn = _Connection(
            peer,
            Stream(self.max_packet),
            Reassembler(self.max_pending_splits, self.split_expiry),
            writer,
        )
        self._connections.add(conn)
        log.info("connection from %s", peer)
        try:
            await self._read_loop(conn, reader)
        except (ConnectionError, OSError) as exc:
            log.info("connection from %s lost: %s", peer, exc)
        finally:
            try:
                await self._finish(conn)
            finally:
                self.connections_open -= 1
                self._connections.discard(conn)
                self._tasks.discard(task)

    async def _read_loop(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    data = await reader.read(65536)
            except TimeoutError:
                self.idle_timeouts += 1
                log.info("closing %s: idle for %.1f s", conn.peer, self.idle_timeout)
                return
            if not data:
                return
            self.bytes_received += len(data)
            recv_ms = _now_ms()
            for start in range(0, len(data), FEED_BYTES):
                for item in conn.stream.feed(data[start : start + FEED_BYTES]):
                    await self._handle(conn, item, recv_ms)
                # Dead letters past the budget are only counted, without a wait: a read full of
                # short broken frames must still let other connections run.
                await asyncio.sleep(0)

    async def _finish(self, conn: _Connection) -> None:
        recv_ms = _now_ms()
        for error in conn.stream.close():
            await self._dead_letter(conn, error.reason, error.raw, conn.device_id, recv_ms)
        for incomplete in conn.reassembler.drain():
            await self._dead_letter(
                conn, incomplete.reason, incomplete.raw, conn.device_id, recv_ms
            )
        await self._summarise_suppressed(conn, recv_ms)
        conn.writer.close()
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
        log.info("connection from %s closed", conn.peer)

    async def _handle(self, conn: _Connection, item: bytes | FrameError, recv_ms: int) -> None:
        now = time.monotonic()
        await self._give_up_splits(conn, now, recv_ms)
        if isinstance(item, FrameError):
            await self._dead_letter(conn, item.reason, item.raw, conn.device_id, recv_ms)
            return
        try:
            packet = decode(item, tz=self.tz, max_bytes=self.max_packet)
        except Hj212Error as exc:
            await self._dead_letter(conn, exc.reason, item, conn.device_id, recv_ms)
            return
        device_id = self.lookup.device_for_mn(packet.mn)
        if device_id is None:
            await self._dead_letter(conn, f"unknown MN {packet.mn}", item, None, recv_ms)
            return
        if not await self._password_ok(conn, device_id, packet):
            reason = f"wrong password for MN {packet.mn}"
            await self._dead_letter(conn, reason, item, device_id, recv_ms)
            return
        conn.device_id = device_id
        raw = item
        if packet.is_split:
            try:
                assembled = conn.reassembler.add(packet, item, now)
            except Hj212Error as exc:
                bad_raw = exc.raw if isinstance(exc, SplitError) else item
                await self._dead_letter(conn, exc.reason, bad_raw, device_id, recv_ms)
                return
            await self._give_up_splits(conn, now, recv_ms)  # evicted to make room
            if assembled is None:
                return
            packet, raw = assembled
        await self._dispatch(conn, device_id, packet, raw, recv_ms)

    async def _password_ok(self, conn: _Connection, device_id: str, packet: Packet) -> bool:
        key = (packet.mn, packet.pw)
        verdict = conn.checked.get(key)
        if verdict is None:
            self.password_checks += 1
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(
                self._auth_executor, self.lookup.check_password, device_id, packet.pw
            )
            if len(conn.checked) >= self.max_checked_passwords:
                conn.checked.clear()  # a connection trying many passwords pays for each
            conn.checked[key] = verdict
        return verdict

    async def _give_up_splits(self, conn: _Connection, now: float, recv_ms: int) -> None:
        for incomplete in conn.reassembler.expire(now):
            reason, raw = incomplete.reason, incomplete.raw
            await self._dead_letter(conn, reason, raw, conn.device_id, recv_ms)

    async def _dispatch(
        self, conn: _Connection, device_id: str, packet: Packet, raw: bytes, recv_ms: int
    ) -> None:
        if packet.cn == HEARTBEAT_CN:
            self.heartbeats += 1
            if packet.wants_reply:
                await self._reply(conn, reply_9013(packet))
            return
        if packet.cn not in VALUE_SUFFIX_BY_CN:
            # Landun sends no commands, so answers and other uploads have nothing to act on;
            # record them rather than pretend they were used.
            reason = f"CN {packet.cn} ({KNOWN_CNS[packet.cn]}) is not handled by Landun"
            stored = await self._dead_letter(conn, reason, raw, device_id, recv_ms)
            if stored and packet.wants_reply and packet.cn not in ANSWER_CNS:
                await self._reply(conn, reply_9014(packet))
            return
        record, problems = packet_to_record(packet, self.code_map)
        stored = True
        if record is not None:
            message = Hj212Message(device_id, record, conn.peer, recv_ms, raw)
            stored = await self._call_sink(self.sink.telemetry, message)
            if stored:
                self.packets_ok += 1
        if problems:
            reason = "; ".join(problems)
            if record is not None:
                reason += "; the packet's other values were delivered"
            stored = await self._dead_letter(conn, reason, raw, device_id, recv_ms) and stored
        # Answer once the packet is durably recorded (as telemetry or dead letter): resending
        # cannot fix its content, while a logger that gets no answer resends the same packet.
        if stored and packet.wants_reply:
            await self._reply(conn, reply_9014(packet))

    async def _reply(self, conn: _Connection, frame: bytes) -> None:
        conn.writer.write(frame)
        # A peer that never reads must not hold the connection forever.
        async with asyncio.timeout(self.idle_timeout):
            await conn.writer.drain()
        self.replies_sent += 1

    async def _dead_letter(
        self, conn: _Connection, reason: str, raw: bytes, device_id: str | None, recv_ms: int
    ) -> bool:
        self.packets_dead_lettered += 1
        if conn.dead_letters >= self.max_dead_letters:
            # Counted, not stored one by one: a flood of garbage must not become a flood of
            # commits that delays every other logger's packets.
            self.dead_letters_suppressed += 1
            conn.suppressed[reason_kind(reason)] += 1
            conn.suppressed_bytes += len(raw)
            if time.monotonic() - conn.summarised_at >= self.dead_letter_summary_s:
                return await self._summarise_suppressed(conn, recv_ms)
            return True
        conn.dead_letters += 1
        return await self._send_dead_letter(conn, reason, raw, device_id, recv_ms)

    async def _summarise_suppressed(self, conn: _Connection, recv_ms: int) -> bool:
        if not conn.suppressed:
            return True
        kinds = "; ".join(f"{n} × {kind}" for kind, n in conn.suppressed.most_common(10))
        reason = (
            f"{conn.suppressed.total()} more dead letters ({conn.suppressed_bytes} bytes) from"
            f" {conn.peer} after the first {self.max_dead_letters}, not recorded one by one:"
            f" {kinds}"
        )
        conn.suppressed.clear()
        conn.suppressed_bytes = 0
        conn.summarised_at = time.monotonic()
        return await self._send_dead_letter(conn, reason, b"", conn.device_id, recv_ms)

    async def _send_dead_letter(
        self, conn: _Connection, reason: str, raw: bytes, device_id: str | None, recv_ms: int
    ) -> bool:
        letter = DeadLetter(hj212_topic(conn.peer), device_id, recv_ms, reason, raw, HJ212_SOURCE)
        return await self._call_sink(self.sink.dead_letter, letter)

    async def _call_sink(self, fn: Callable[..., None], *args: Any) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, fn, *args)
        except Exception:
            # No reply goes out, so a logger that asked for one will resend the packet.
            self.sink_errors += 1
            log.exception("sink %s failed", getattr(fn, "__name__", fn))
            return False
        return True


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
