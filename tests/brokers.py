"""Real MQTT brokers for tests: Mosquitto when installed, the embedded amqtt broker otherwise."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import subprocess
import threading
from pathlib import Path

from landun.broker import EmbeddedBroker, free_port, wait_port


class MosquittoBroker:
    """A mosquitto process on an ephemeral port; `extra` lines are appended to its config."""

    def __init__(self, workdir: Path, extra: str = "", persistence: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.extra = extra
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.conf = workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        # As root, mosquitto drops to the `mosquitto` user, which cannot write pytest's temp dir.
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}"]
        if "allow_anonymous" not in self.extra:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        # Large windows so tests are not throttled by the broker's defaults (20 in flight).
        lines += ["max_inflight_messages 1000", "max_queued_messages 100000"]
        self.conf.write_text("\n".join(lines) + "\n" + self.extra + "\n")

    def start(self) -> None:
        self.write_config()
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "mosquitto.log", "ab"),  # noqa: SIM115
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class AmqttBroker:
    """The embedded broker on its own event loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._broker: EmbeddedBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._broker = EmbeddedBroker("127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(10)
        wait_port(self.port)

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None
