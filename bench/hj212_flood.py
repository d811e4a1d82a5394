"""The HJ 212 attacks of issue 23 against a real `landun run --hj212-port`: one connection sends
a flood (20 MB of `#`, or 2 MB of short broken frames) while a logger sends a packet every 0.5 s
and a client polls `/healthz`; then ten packets from a logger with a credential (PBKDF2 per
check).

Prints the worst logger reply time and `/healthz` time during the flood, the dead letters it
left and the process's RSS; the last line is a JSON object. `--quick` is a small run."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from domain.credentials import hash_secret
from domain.hj212.codec import decode, encode, format_cp
from landun.demo import demo_registry_path

MN = "LD310105POOLCN0300000001"
PW = "bench-pw-123456"
LANDUN_RUN = [sys.executable, "-m", "landun.cli", "run", "--no-simulators"]


def registry_with_credential(path: Path) -> None:
    text = demo_registry_path().read_text("utf-8")
    line = f'mn = "{MN}"\n'
    path.write_text(text.replace(line, line + f'credential_hash = "{hash_secret(PW)}"\n'))


def packet(n: int) -> bytes:
    data_time = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 8 * 3600))
    fields = {"QN": f"{data_time}{n % 1000:03d}", "ST": "32", "CN": "2011", "PW": PW, "MN": MN}
    fields["Flag"] = "5"
    fields["CP"] = format_cp({"DataTime": data_time}, {"w01001": {"Rtd": "7.3", "Flag": "N"}})
    return encode(fields)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def flood(port: int, pattern: bytes, total: int, done: asyncio.Event) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = pattern * (65536 // len(pattern))
    started = time.perf_counter()
    sent = 0
    try:
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        writer.write_eof()
        await reader.read()  # the gateway closes once it has handled everything
    except ConnectionError:
        pass
    writer.close()
    done.set()
    return time.perf_counter() - started


async def logger(port: int, done: asyncio.Event, times: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while not done.is_set():
        n += 1
        started = time.perf_counter()
        writer.write(packet(n))
        decode(await asyncio.wait_for(reader.readuntil(b"\r\n"), 120))
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.5)
    writer.close()


def healthz(base: str, done: threading.Event, times: list[float]) -> None:
    with httpx.Client(timeout=60) as http:
        while not done.is_set():
            started = time.perf_counter()
            http.get(base + "/healthz").raise_for_status()
            times.append(time.perf_counter() - started)
            time.sleep(0.2)


async def attack(hj_port: int, base: str, pattern: bytes, total: int) -> dict:
    done = asyncio.Event()
    stop_health = threading.Event()
    replies: list[float] = []
    health: list[float] = []
    poller = threading.Thread(target=healthz, args=(base, stop_health, health))
    poller.start()
    flooding = asyncio.create_task(flood(hj_port, pattern, total, done))
    await logger(hj_port, done, replies)
    seconds = await flooding
    stop_health.set()
    poller.join()
    return {
        "flood_s": round(seconds, 2),
        "logger_replies": len(replies),
        "logger_reply_max_ms": round(max(replies) * 1000, 1),
        "healthz_calls": len(health),
        "healthz_max_ms": round(max(health) * 1000, 1) if health else None,
    }


async def password_storm(hj_port: int, packets: int) -> float:
    """Packets from one logger with a credential: the check is made once per connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hj_port)
    started = time.perf_counter()
    for n in range(packets):
        writer.write(packet(n))
        await asyncio.wait_for(reader.readuntil(b"\r\n"), 60)
    writer.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="floods of 1 MB and 100 KB")
    args = ap.parse_args(argv)
    total = (1 if args.quick else 20) * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.toml"
        registry_with_credential(registry)
        api_port, hj_port = free_port(), free_port()
        ports = ["--port", str(api_port), "--broker-port", str(free_port())]
        ports += ["--hj212-port", str(hj_port)]
        proc = subprocess.Popen(
            [*LANDUN_RUN, "--data-dir", tmp, "--registry", str(registry), *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if re.search(r"HJ 212 \(TCP\)", line):
                    break
            base = f"http://127.0.0.1:{api_port}"
            rss_before = rss_mb(proc.pid)
            results: dict = {"flood_bytes": total, "rss_before_mb": round(rss_before, 1)}
            # A broken frame every three bytes costs far more to frame than a run of "#".
            floods = (("hashes", b"#", total), ("broken_frames", b"##0", total // 10))
            for name, pattern, size in floods:
                results[name] = asyncio.run(attack(hj_port, base, pattern, size))
                results[name]["bytes"] = size
                results[name]["rss_mb"] = round(rss_mb(proc.pid), 1)
            results["ten_packets_with_pbkdf2_s"] = round(
                asyncio.run(password_storm(hj_port, 10)), 3
            )
            password = (Path(tmp) / "admin-password.txt").read_text().strip()
            token = httpx.post(
                base + "/api/v1/auth/login", json={"username": "admin", "password": password}
            ).json()["token"]
            dead = httpx.get(
                base + "/api/v1/dead-letters",
                params={"limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            results["dead_letters_stored"] = len(dead["items"])
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for key, value in results.items():
        print(f"{key}: {value}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
