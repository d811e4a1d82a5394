"""HJ 212 TCP gateway over real sockets on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from domain.hj212.codec import decode, encode, format_cp
from domain.model import DeadLetter
from ingest.hj212.gateway import Hj212Gateway
from ingest.messages import Hj212Message, Hj212Record

MN = "LD0000000000000000000001"
PW = "123456"
DEVICE = "pool-1-analyzer"
SAFETY = 5.0  # seconds; only guards against a hung test, never a timing assertion


class Lookup:
    def __init__(self) -> None:
        self.password_threads: list[int] = []

    def device_for_mn(self, mn: str) -> str | None:
        return DEVICE if mn == MN else None

    def check_password(self, device_id: str, pw: str) -> bool:
        self.password_threads.append(threading.get_ident())
        return device_id == DEVICE and pw == PW


@dataclass
class Sink:
    telemetry_calls: list[Hj212Message] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)

    def telemetry(self, message: Hj212Message) -> None:
        self.threads.add(threading.current_thread().name)
        self.telemetry_calls.append(message)

    def dead_letter(self, letter: DeadLetter) -> None:
        assert letter.source == "hj212" and letter.topic.startswith("hj212://127.0.0.1:")
        self.letters.append(letter)

    @property
    def dead_letters(self) -> list[tuple[str, bytes, str | None, int]]:
        return [(d.reason, d.raw, d.device_id, d.recv_ms) for d in self.letters]

    def reasons(self) -> list[str]:
        return [d[0] for d in self.dead_letters]


def packet(
    cn: str,
    items: dict[str, dict[str, str]],
    *,
    qn: str = "20260801085800123",
    mn: str = MN,
    pw: str = PW,
    flag: int = 5,
    data_time: str = "20260801085800",
    extra: dict[str, str] | None = None,
) -> bytes:
    fields = {"QN": qn, "ST": "32", "CN": cn, "PW": pw, "MN": mn, "Flag": str(flag)}
    fields |= extra or {}
    fields["CP"] = format_cp({"DataTime": data_time}, items)
    return encode(fields)


DATA_TIME_MS = int(datetime(2026, 8, 1, 0, 58, tzinfo=UTC).timestamp()) * 1000


def run(
    scenario: Callable[[Hj212Gateway, int], Awaitable[None]], sink: Sink, **options: object
) -> Hj212Gateway:
    async def main() -> Hj212Gateway:
        gateway = Hj212Gateway(Lookup(), sink, **options)  # type: ignore[arg-type]
        port = await gateway.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(gateway, port), SAFETY)
        finally:
            await gateway.stop()
        return gateway

    return asyncio.run(main())


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n")


def test_realtime_and_minute_data_with_replies() -> None:
    sink = Sink()

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            packet(
                "2011",
                {
                    "w01001": {"Rtd": "7.41", "Flag": "N"},
                    "w99001": {"Rtd": "0.62", "Flag": "N"},
                    "w99003": {"Rtd": "712", "Flag": "C"},
                },
                qn="20260801085800123",
            )
        )
        reply = decode(await read_reply(reader))
        assert (reply.cn, reply.st, reply.qn, reply.mn) == ("9014", "91", "20260801085800123", MN)
        assert reply.flag == 4 and not reply.wants_reply

        writer.write(
            packet(
                "2051",
                {"w01010": {"Avg": "27.1", "Min": "26.9", "Max": "27.3", "Flag": "N"}},
                qn="20260801085900456",
            )
        )
        assert decode(await read_reply(reader)).qn == "20260801085900456"
        writer.close()

    gateway = run(scenario, sink)
    assert sink.dead_letters == []
    m1, m2 = sink.telemetry_calls
    assert m1.device_id == m2.device_id == DEVICE
    assert m1.record == Hj212Record(
        DATA_TIME_MS,
        {"ph": 7.41, "free_chlorine": 0.62, "orp": 712.0},
        {"ph": "N", "free_chlorine": "N", "orp": "C"},
    )
    assert m2.record == Hj212Record(DATA_TIME_MS, {"temperature": 27.1}, {"temperature": "N"})
    assert m1.peer == m2.peer and m1.topic == f"hj212://{m1.peer}"
    raw1, raw2, recv1 = m1.payload, m2.payload, m1.recv_ms
    assert raw1.startswith(b"##") and b"CN=2011" in raw1 and b"CN=2051" in raw2
    assert recv1 > DATA_TIME_MS
    assert (gateway.packets_ok, gateway.replies_sent, gateway.connections_total) == (2, 2, 1)
    assert all(name.startswith("landun-hj212-sink") for name in sink.threads)


def test_no_reply_when_flag_does_not_ask() -> None:
    sink = Sink()

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet("2061", {"w01001": {"Avg": "7.2"}}, flag=4))
        writer.write_eof()
        assert await reader.read() == b""  # the server closes without having answered

    gateway = run(scenario, sink)
    assert [c.record.values for c in sink.telemetry_calls] == [{"ph": 7.2}]
    assert gateway.replies_sent == 0


def test_bad_crc_and_garbage_then_good_packet_on_the_same_connection() -> None:
    sink = Sink()
    good = packet("2011", {"w01001": {"Rtd": "7.5"}})
    bad_crc = good[:-6] + (b"0000" if good[-6:-2] != b"0000" else b"FFFF") + b"\r\n"

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bad_crc + b"AT+CSQ\r\nnoise" + good[:20])
        await writer.drain()
        writer.write(good[20:])
        assert decode(await read_reply(reader)).cn == "9014"
        writer.close()

    gateway = run(scenario, sink)
    reasons = sink.reasons()
    assert len(reasons) == 2
    assert reasons[0].startswith("bad CRC: packet says ")
    assert reasons[1] == "discarded 13 bytes of garbage before header ##"
    # The connection's device is known only after its first good packet.
    assert [d[2] for d in sink.dead_letters] == [None, None]
    assert sink.dead_letters[0][1] == bad_crc
    assert [c.record.values for c in sink.telemetry_calls] == [{"ph": 7.5}]
    assert gateway.packets_dead_lettered == 2 and gateway.packets_ok == 1


def test_unknown_mn_and_wrong_password_are_dead_lettered_without_reply() -> None:
    sink = Sink()
    unknown = packet("2011", {"w01001": {"Rtd": "7.0"}}, mn="SOMEONE-ELSE")
    wrong_pw = packet("2011", {"w01001": {"Rtd": "7.0"}}, pw="000000")
    good = packet("2011", {"w01001": {"Rtd": "7.1"}}, qn="20260801085800999")

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(unknown + wrong_pw + good)
        # The first answer is the good packet's: the others got none.
        assert decode(await read_reply(reader)).qn == "20260801085800999"
        writer.close()

    run(scenario, sink)
    assert sink.dead_letters == [
        ("unknown MN SOMEONE-ELSE", unknown, None, sink.dead_letters[0][3]),
        (f"wrong password for MN {MN}", wrong_pw, DEVICE, sink.dead_letters[1][3]),
    ]
    assert len(sink.telemetry_calls) == 1


def test_oversized_packet_is_dropped_and_the_stream_resyncs() -> None:
    sink = Sink()
    big = packet("2011", {f"w{n:05d}": {"Rtd": "1.0"} for n in range(100)})
    good = packet("2011", {"w01001": {"Rtd": "7.3"}})

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(big + good)
        assert decode(await read_reply(reader)).cn == "9014"
        writer.close()

    run(scenario, sink, max_packet=512)
    assert sink.reasons() == [f"packet of {len(big)} bytes over the 512 byte limit"]
    assert [c.record.values for c in sink.telemetry_calls] == [{"ph": 7.3}]


def test_idle_timeout_closes_the_connection_and_reports_partial_data() -> None:
    sink = Sink()

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"##0101QN=2016")
        assert await reader.read() == b""  # closed by the server
        writer.close()

    gateway = run(scenario, sink, idle_timeout=0.2)
    assert gateway.idle_timeouts == 1
    assert sink.reasons() == ["truncated packet: connection ended after 13 bytes"]
    assert gateway.connections_open == 0


@pytest.mark.parametrize(
    ("items", "delivered", "reason"),
    [
        (  # a code the site's map lacks
            {"w01001": {"Rtd": "7.2"}, "w21003": {"Rtd": "0.5"}},
            {"ph": 7.2},
            "unmapped codes w21003 (not in the site's code map); "
            "the packet's other values were delivered",
        ),
        (  # a value that underflows to zero is refused, not stored as 0.0
            {"w01001": {"Rtd": "1e-400"}, "w99001": {"Rtd": "0.5"}},
            {"free_chlorine": 0.5},
            "w01001-Rtd: number 1e-400 underflows to 0; the packet's other values were delivered",
        ),
    ],
)
def test_a_bad_item_is_dead_lettered_and_the_rest_delivered(items, delivered, reason) -> None:
    sink = Sink()
    raw = packet("2011", items)

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        assert decode(await read_reply(reader)).cn == "9014"
        writer.close()

    run(scenario, sink)
    assert [c.record.values for c in sink.telemetry_calls] == [delivered]
    assert sink.reasons() == [reason]
    assert sink.dead_letters[0][1] == raw


def test_split_packet_is_reassembled_and_answered_once() -> None:
    sink = Sink()
    qn = "20260801085800321"
    part1 = packet(
        "2011", {"w01001": {"Rtd": "7.4"}}, qn=qn, flag=7, extra={"PNUM": "2", "PNO": "1"}
    )
    part2 = packet(
        "2011", {"w99001": {"Rtd": "0.5"}}, qn=qn, flag=7, extra={"PNUM": "2", "PNO": "2"}
    )

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(part2 + part1)
        assert decode(await read_reply(reader)).qn == qn
        writer.close()

    gateway = run(scenario, sink)
    (message,) = sink.telemetry_calls
    assert message.record.values == {"ph": 7.4, "free_chlorine": 0.5}
    raw = message.payload
    assert raw == part1 + part2
    assert gateway.replies_sent == 1 and sink.dead_letters == []


def test_incomplete_split_packet_is_dead_lettered_on_close() -> None:
    sink = Sink()
    part1 = packet("2011", {"w01001": {"Rtd": "7.4"}}, flag=6, extra={"PNUM": "3", "PNO": "1"})

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(part1)
        writer.write_eof()
        assert await reader.read() == b""

    run(scenario, sink)
    assert sink.dead_letters == [
        (
            "incomplete split packet QN=20260801085800123 CN=2011: got parts 1 of 3",
            part1,
            DEVICE,
            sink.dead_letters[0][3],
        )
    ]


def test_heartbeat_is_answered_and_unhandled_cn_dead_lettered() -> None:
    sink = Sink()
    heartbeat = encode(
        {"QN": "20260801085800123", "ST": "32", "CN": "9015", "PW": PW, "MN": MN, "Flag": "9"}
    )
    status = packet("2021", {"SB1": {"RS": "1"}}, qn="20260801085800777", flag=9)

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(heartbeat + status)
        answer = decode(await read_reply(reader))
        assert (answer.cn, answer.flag) == ("9013", 8)  # HJ 212-2025 version kept
        assert decode(await read_reply(reader)).qn == "20260801085800777"
        writer.close()

    gateway = run(scenario, sink)
    assert gateway.heartbeats == 1
    assert sink.reasons() == ["CN 2021 (equipment running status) is not handled by Landun"]
    assert sink.telemetry_calls == []


def test_many_concurrent_connections() -> None:
    sink = Sink()

    async def client(port: int, n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        qn = f"2026080108580{n:04d}"
        writer.write(packet("2011", {"w01001": {"Rtd": f"7.{n}"}}, qn=qn))
        assert decode(await read_reply(reader)).qn == qn
        writer.close()

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        await asyncio.gather(*(client(port, n) for n in range(20)))

    gateway = run(scenario, sink)
    assert len(sink.telemetry_calls) == 20
    assert gateway.connections_total == 20


def test_sink_failure_means_no_reply() -> None:
    class FailingSink(Sink):
        def telemetry(self, message: Hj212Message) -> None:
            raise RuntimeError("database is locked")

    sink = FailingSink()

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet("2011", {"w01001": {"Rtd": "7.4"}}))
        writer.write_eof()
        assert await reader.read() == b""  # no 9014: the logger will resend

    gateway = run(scenario, sink)
    assert gateway.sink_errors == 1 and gateway.packets_ok == 0


def test_stop_closes_open_connections_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    good = packet("2011", {"w01001": {"Rtd": "7.4"}})

    async def main() -> Hj212Gateway:
        gateway = Hj212Gateway(Lookup(), sink)
        port = await gateway.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(good + good[:10])
        await asyncio.wait_for(read_reply(reader), SAFETY)
        await asyncio.wait_for(gateway.stop(), SAFETY)
        assert await asyncio.wait_for(reader.read(), SAFETY) == b""
        writer.close()
        return gateway

    with caplog.at_level(logging.WARNING):
        gateway = asyncio.run(main())
    assert gateway.connections_open == 0
    assert sink.reasons() == ["truncated packet: connection ended after 10 bytes"]
    assert sink.dead_letters[0][2] == DEVICE
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("pattern", "flood_total", "kind"),
    [
        (b"#", 20 * 1024 * 1024, "discarded N bytes of garbage before header ##"),
        # A short broken frame every three bytes: linear framing, counted not stored.
        (b"##0", 1024 * 1024, "length field '…' is not N digits"),
    ],
)
def test_flood_stays_bounded_and_does_not_hold_up_a_logger(
    pattern: bytes, flood_total: int, kind: str
) -> None:
    """One connection floods while a logger sends a packet: the logger is answered while the
    flood is still being sent, the flood's buffer never grows, and its dead letters are a
    bounded handful plus a summary instead of one per frame or per 16 KiB."""
    sink = Sink()
    chunk = pattern * (65536 // len(pattern))
    good = packet("2011", {"w01001": {"Rtd": "7.3"}}, qn="20260801085800555")
    seen: dict[str, int] = {"sent": 0, "peak": 0}

    async def flood(gateway: Hj212Gateway, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        while seen["sent"] < flood_total:
            writer.write(chunk)
            await writer.drain()
            seen["sent"] += len(chunk)
            buffered = [c.stream.buffered for c in gateway._connections]
            seen["peak"] = max(seen["peak"], *buffered)
        writer.close()
        await writer.wait_closed()

    async def main() -> tuple[Hj212Gateway, int]:
        gateway = Hj212Gateway(Lookup(), sink, dead_letter_summary_s=3600)
        port = await gateway.start("127.0.0.1", 0)
        try:
            flooding = asyncio.create_task(flood(gateway, port))
            while gateway.bytes_received < flood_total // 16:
                await asyncio.sleep(0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(good)
            assert decode(await read_reply(reader)).qn == "20260801085800555"
            answered_at = gateway.bytes_received  # of the flood, read and framed so far
            writer.close()
            await asyncio.wait_for(flooding, 120)
        finally:
            await gateway.stop()
        return gateway, answered_at

    gateway, answered_at = asyncio.run(main())
    assert answered_at < flood_total  # answered before the gateway had read the flood
    assert [c.record.values for c in sink.telemetry_calls] == [{"ph": 7.3}]
    assert seen["peak"] <= gateway.max_packet
    reasons = sink.reasons()
    assert len(reasons) == gateway.max_dead_letters + 1
    assert sum(len(d[1]) for d in sink.dead_letters) <= gateway.max_dead_letters * 65536
    assert "not recorded one by one" in reasons[-1] and f"× {kind}" in reasons[-1]
    assert (
        gateway.packets_dead_lettered == gateway.max_dead_letters + gateway.dead_letters_suppressed
    )


def test_password_is_checked_once_per_connection_off_the_loop() -> None:
    sink = Sink()
    lookup = Lookup()
    wrong = packet("2011", {"w01001": {"Rtd": "7.0"}}, pw="000000")

    async def scenario(gateway: Hj212Gateway, port: int) -> None:
        loop_thread = threading.get_ident()
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for n in range(10):
                qn = f"2026080108580{n:04d}"
                writer.write(wrong + packet("2011", {"w01001": {"Rtd": "7.1"}}, qn=qn))
                assert decode(await read_reply(reader)).qn == qn
            writer.close()
        assert loop_thread not in lookup.password_threads

    async def main() -> Hj212Gateway:
        gateway = Hj212Gateway(lookup, sink)
        port = await gateway.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(gateway, port), SAFETY)
        finally:
            await gateway.stop()
        return gateway

    gateway = asyncio.run(main())
    # Right and wrong password, once each per connection, for 20 packets each.
    assert len(lookup.password_threads) == gateway.password_checks == 4
    assert len(sink.telemetry_calls) == 20
    assert sink.reasons() == [f"wrong password for MN {MN}"] * 20
