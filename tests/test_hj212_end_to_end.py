"""The whole system fed by HJ 212 loggers over TCP: gateway, ingest, SQLite, alerts, HTTP API.

Packets of the raw-socket tests are written out by hand, CRC included, so that they check the
gateway against the standard's text rather than against Landun's own encoder. The logger
simulator's resend and reconnect are driven by a misbehaving stand-in platform at the end."""

from __future__ import annotations

import re
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from domain.hj212.codec import Packet, decode, reply_9014
from domain.timeutil import now_ms
from landun.cli import build_parser
from landun.system import RunConfig
from simulators.hj212_logger import Hj212LoggerRunner
from simulators.pool_model import PoolModel
from simulators.runner import RunnerSettings, SimDevice
from tests.conftest import RunningSystem, start_system, wait_for

DEVICE = "pool-cn-03-hj"
SITE = "pool-cn-03"
MN = "LD310105POOLCN0300000001"
MINUTE = 60_000
CST = timezone(timedelta(hours=8))
SAFETY = 10.0  # seconds; bounds a hang, never a timing assertion


@pytest.fixture
def system(broker, tmp_path: Path) -> Iterator[RunningSystem]:
    cfg = RunConfig(
        port=0,
        broker_url=broker.url,
        data_dir=tmp_path / "var",
        simulators=False,
        hj212_port=0,
        client_id=f"landun-ingest-{tmp_path.name}",
    )
    running = start_system(cfg)
    yield running
    running.stop()


@pytest.fixture
def logger(system: RunningSystem) -> Iterator[socket.socket]:
    """A raw TCP connection to the gateway, as a data logger holds one."""
    assert system.system.hj212_port is not None
    sock = socket.create_connection(("127.0.0.1", system.system.hj212_port), timeout=SAFETY)
    yield sock
    sock.close()


# -- packets by hand ----------------------------------------------------------------------------


def crc(segment: bytes) -> str:
    """HJ 212 CRC as the standard describes it (not CRC-16/MODBUS), high byte first."""
    reg = 0xFFFF
    for byte in segment:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
    return f"{reg:04X}"


def frame(segment: str, crc_text: str | None = None) -> bytes:
    data = segment.encode()
    return b"##%04d%s%s\r\n" % (len(data), data, (crc_text or crc(data)).encode())


def data_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CST).strftime("%Y%m%d%H%M%S")


def qn(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CST).strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


def utc_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def segment(cn: str, qn_text: str, cp: str, mn: str = MN) -> str:
    return f"QN={qn_text};ST=32;CN={cn};PW=123456;MN={mn};Flag=5;CP=&&{cp}&&"


def read_reply(sock: socket.socket) -> Packet:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, "the gateway closed the connection"
        buf += chunk
    return decode(buf)


def exchange(sock: socket.socket, packet: bytes) -> Packet:
    sock.sendall(packet)
    return read_reply(sock)


def readings(system: RunningSystem, **params: object) -> list[dict]:
    r = system.http.get("/api/v1/readings", params={"device": DEVICE, **params})
    assert r.status_code == 200, r.text
    return r.json()


def dead_letters(system: RunningSystem) -> list[dict]:
    return system.http.get("/api/v1/dead-letters").json()["items"]


def whole_seconds_ago(ms: int) -> int:
    # DataTime has whole seconds: choose sensor times the packet can state exactly.
    return (now_ms() - ms) // 1000 * 1000


# -- tests --------------------------------------------------------------------------------------


def test_hand_written_crc_matches_the_standards_worked_example() -> None:
    seg = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    assert crc(seg + b"CP=&&RtdInterval=30&&") == "1C80"


def test_real_time_and_minute_data_are_answered_and_stored(system, logger) -> None:
    rtd_ms = whole_seconds_ago(10 * MINUTE)
    avg_ms = rtd_ms // MINUTE * MINUTE - MINUTE  # minute data is stamped on the minute
    rtd_qn, avg_qn = qn(now_ms()), qn(now_ms() + 1)
    rtd = segment(
        "2011",
        rtd_qn,
        f"DataTime={data_time(rtd_ms)};w99001-Rtd=0.62,w99001-Flag=N;"
        "w01001-Rtd=7.41,w01001-Flag=N;w01003-Rtd=0.35,w01003-Flag=M",
    )
    avg = segment(
        "2051",
        avg_qn,
        f"DataTime={data_time(avg_ms)};w01010-Avg=27.4,w01010-Flag=N;"
        "w99003-Avg=712,w99003-Flag=N;w99002-Avg=0.12,w99002-Flag=C",
    )

    for seg, sent_qn in ((rtd, rtd_qn), (avg, avg_qn)):
        reply = exchange(logger, frame(seg))
        assert (reply.cn, reply.qn, reply.mn, reply.st) == ("9014", sent_qn, MN, "91")
        assert not reply.wants_reply

    rows = readings(system)  # the reply is sent once the readings are committed
    got = {r["parameter"]: (r["ts"], r["value"], r["flag"]) for r in rows}
    assert got == {
        "free_chlorine": (utc_iso(rtd_ms), 0.62, "N"),
        "ph": (utc_iso(rtd_ms), 7.41, "N"),
        "turbidity": (utc_iso(rtd_ms), 0.35, "M"),
        "temperature": (utc_iso(avg_ms), 27.4, "N"),
        "orp": (utc_iso(avg_ms), 712.0, "N"),
        "combined_chlorine": (utc_iso(avg_ms), 0.12, "C"),
    }
    assert {r["site_id"] for r in rows} == {SITE}
    assert dead_letters(system) == []


def test_sustained_low_free_chlorine_raises_a_range_alert(system, logger) -> None:
    start = whole_seconds_ago(30 * MINUTE) // MINUTE * MINUTE
    for i in range(15):
        ts = start + i * MINUTE
        cp = f"DataTime={data_time(ts)};w99001-Avg=0.1,w99001-Flag=N;w01001-Avg=7.4,w01001-Flag=N"
        sent_qn = qn(now_ms() + i)
        assert exchange(logger, frame(segment("2051", sent_qn, cp))).qn == sent_qn

    def free_chlorine_alert() -> dict | None:
        alerts = system.http.get("/api/v1/alerts", params={"site": SITE}).json()
        return next((a for a in alerts if a["rule_id"] == "range:free_chlorine"), None)

    alert = wait_for(free_chlorine_alert, SAFETY, "a free chlorine range alert")
    assert alert["site_id"] == SITE
    assert alert["worst_value"] == 0.1
    assert alert["evidence"]["readings"]["from_ms"] == start


def test_bad_crc_is_dead_lettered_and_the_next_packet_on_the_connection_is_stored(
    system, logger
) -> None:
    ts = whole_seconds_ago(5 * MINUTE)
    bad_seg = segment("2011", qn(now_ms()), f"DataTime={data_time(ts)};w01001-Rtd=9.9")
    good_qn = qn(now_ms() + 1)
    good_seg = segment("2011", good_qn, f"DataTime={data_time(ts)};w01001-Rtd=7.38")
    right = crc(bad_seg.encode())
    bad = frame(bad_seg, f"{int(right, 16) ^ 0x0101:04X}")

    logger.sendall(bad)
    # No reply to a packet that fails its CRC: the first answer is the good packet's.
    assert exchange(logger, frame(good_seg)).qn == good_qn

    assert [(r["parameter"], r["value"]) for r in readings(system)] == [("ph", 7.38)]
    (dead,) = dead_letters(system)
    assert "CRC" in dead["reason"]
    assert dead["raw"] == bad.decode()
    assert dead["source"] == "hj212"
    # Where it came from: the logger's address, as the dead-letter API shows it.
    host, port = logger.getsockname()[:2]
    assert dead["topic"] == f"hj212://{host}:{port}"


def test_unknown_mn_is_dead_lettered(system, logger) -> None:
    stranger = "LD000000UNKNOWN000000001"
    ts = whole_seconds_ago(MINUTE)
    logger.sendall(
        frame(segment("2011", qn(now_ms()), f"DataTime={data_time(ts)};w01001-Rtd=7.4", stranger))
    )
    (dead,) = wait_for(lambda: dead_letters(system), SAFETY, "a dead letter")
    assert dead["reason"] == f"unknown MN {stranger}"
    assert dead["device_id"] is None
    assert readings(system) == []


@pytest.mark.parametrize("cn", ["2051", "2011"])
def test_logger_simulator_backfill_is_delivered_and_every_packet_answered(system, cn) -> None:
    now = now_ms()
    start = now - 30 * MINUTE
    model = PoolModel(DEVICE, seed=3, start_ms=start)
    settings = RunnerSettings(
        interval_s=60, start_ms=start, backfill_until_ms=now, end_ms=now, seed=3
    )
    runner = Hj212LoggerRunner(
        "127.0.0.1",
        system.system.hj212_port,
        [SimDevice(SITE, DEVICE, model)],
        settings,
        mn_of={DEVICE: MN},
        cn=cn,
    )
    runner.start()
    try:
        wait_for(lambda: runner.finished, SAFETY, "the simulated backfill")
    finally:
        runner.stop()

    assert runner.published == 30
    assert runner.replies == runner.published
    assert (runner.resent, runner.unanswered, runner.connects) == (0, 0, 1)
    rows = readings(system)
    assert len(rows) == 30 * 6
    assert len({r["ts"] for r in rows}) == 30
    assert dead_letters(system) == []


class FlakyPlatform(socketserver.ThreadingTCPServer):
    """A platform that withholds the reply to the first packet and hangs up after the third
    frame, to drive the logger's resend and reconnect."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.frames: list[Packet] = []


class FlakyHandler(socketserver.StreamRequestHandler):
    server: FlakyPlatform

    def handle(self) -> None:
        while line := self.rfile.readline():
            packet = decode(line)
            self.server.frames.append(packet)
            count = len(self.server.frames)
            if count > 1:
                self.wfile.write(reply_9014(packet))
            if count == 3:
                return


def test_logger_simulator_resends_an_unanswered_packet_and_reconnects() -> None:
    start = now_ms() - 3 * MINUTE
    platform = FlakyPlatform()
    threading.Thread(target=platform.serve_forever, daemon=True).start()
    runner = Hj212LoggerRunner(
        "127.0.0.1",
        platform.server_address[1],
        [SimDevice(SITE, DEVICE, PoolModel(DEVICE, seed=3, start_ms=start))],
        RunnerSettings(
            start_ms=start, backfill_until_ms=start + 3 * MINUTE, end_ms=start + 3 * MINUTE
        ),
        mn_of={DEVICE: MN},
        reply_timeout_s=0.2,
    )
    runner.start()
    try:
        wait_for(lambda: runner.finished, SAFETY, "the run")
    finally:
        runner.stop()
        platform.shutdown()
        platform.server_close()

    qns = [p.qn for p in platform.frames]
    # The first packet again (its resend), then the second, then the third on a new connection.
    assert qns[1] == qns[0] and len(set(qns)) == 3 and len(qns) == 4
    assert (runner.published, runner.replies, runner.resent) == (3, 3, 1)
    assert (runner.unanswered, runner.connects) == (0, 2)


def test_standalone_gateway_binds_loopback_unless_asked(tmp_path: Path) -> None:
    assert build_parser().parse_args(["hj212-gateway"]).hj212_host == "127.0.0.1"
    command = ["hj212-gateway", "--port", "0", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "landun.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.match(
            r"HJ 212 gateway listening on 127\.0\.0\.1:(\d+) \(this machine only\)", banner
        )
        assert match, banner
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=30):
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=60)
