"""Publishes simulated devices over MQTT exactly as real sensors would (wire contract JSON).

Simulated time starts at `start_ms` (possibly in the past: a backfill, as a device flushing its
offline buffer) and runs `speed` times faster than the wall clock, but never ahead of it, so no
sample carries a future timestamp."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import paho.mqtt.client as mqtt

from domain.mqtt_connection import BrokerAddress, connect_options, new_client
from domain.timeutil import now_ms
from simulators.pool_model import PoolModel, Sample

log = logging.getLogger("landun.simulators")


class EventSource(Protocol):
    def events_until(self, until_ms: int) -> list[dict]: ...

    def sample(self, t_ms: int) -> Sample | None: ...


@dataclass(slots=True)
class SimDevice:
    """A simulated device: a model sampled for `telemetry`, or an event source for `events`."""

    site_id: str
    device_id: str
    model: PoolModel | EventSource
    topic: str = "telemetry"


def telemetry_record(sample: Sample, seq: int) -> dict:
    rec: dict = {"ts": sample.ts_ms, "seq": seq, "values": sample.values}
    if sample.flags:
        rec["flags"] = sample.flags
    return rec


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    interval_s: int = 60
    speed: float = 1.0
    jitter_s: float = 2.0
    start_ms: int | None = None  # None: now
    backfill_until_ms: int | None = None  # samples before this are sent at once, in buffers
    # Ticks before this are simulated but not sent: a model's warm-up, or what an earlier run of
    # the same (deterministic) devices already delivered, so a restart continues the same past.
    publish_from_ms: int | None = None
    end_ms: int | None = None  # None: run until stopped
    buffer_max: int = 120  # records per message when catching up on the past
    seed: int = 0


def paced_times(
    settings: RunnerSettings, clock: Callable[[], int], stop: threading.Event
) -> Iterator[int]:
    """The simulated tick times of a run: at once before `backfill_until_ms`, then no faster
    than `speed` times the wall clock and never ahead of it. Ends at `end_ms` or on `stop`."""
    s = settings
    t = s.start_ms if s.start_ms is not None else clock()
    backfill_until = s.backfill_until_ms if s.backfill_until_ms is not None else t
    wall0, sim0 = time.monotonic(), max(t, backfill_until)
    while not stop.is_set() and (s.end_ms is None or t < s.end_ms):
        if t >= backfill_until:
            paced = sim0 + (time.monotonic() - wall0) * 1000 * s.speed
            wait_ms = max(t - clock(), (t - paced) / s.speed)
            if wait_ms > 0:
                stop.wait(min(wait_ms / 1000, 1.0))  # wake at least every second to see stop
                continue
        yield t
        t += s.interval_s * 1000


class SimulatorRunner:
    def __init__(
        self,
        broker: BrokerAddress,
        devices: Sequence[SimDevice],
        settings: RunnerSettings | None = None,
        client_id: str = "landun-simulators",
        clock: Callable[[], int] = now_ms,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.devices = list(devices)
        self.settings = settings or RunnerSettings()
        self.clock = clock
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="landun-simulators", daemon=True)
        self._rng = np.random.default_rng(self.settings.seed)
        self._seq = dict.fromkeys((d.device_id for d in self.devices), 0)
        self._inflight: list[mqtt.MQTTMessageInfo] = []
        # With credentials each device connects as itself (user name = device id), as real
        # sensors do under the production ACL; otherwise one client speaks for all of them.
        if credentials:
            self.clients = {
                d.device_id: new_client(
                    dataclasses.replace(
                        broker, username=d.device_id, password=credentials[d.device_id]
                    ),
                    f"{client_id}-{d.device_id}",
                )
                for d in self.devices
            }
        else:
            shared = new_client(broker, client_id)
            self.clients = dict.fromkeys((d.device_id for d in self.devices), shared)

    def _unique_clients(self) -> list[mqtt.Client]:
        return list({id(c): c for c in self.clients.values()}.values())

    def start(self) -> None:
        for client in self._unique_clients():
            client.connect(self.broker.host, self.broker.port, **connect_options(self.broker))
            client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        # Let the broker acknowledge what was published before hanging up (QoS 1).
        for info in self._inflight:
            info.wait_for_publish(10)
        self._inflight.clear()
        for client in self._unique_clients():
            client.disconnect()
            client.loop_stop()

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def run(self) -> None:
        s = self.settings
        # By device and topic: a line controller publishes telemetry and events as one device.
        pending: dict[tuple[str, str], list[dict]] = {
            (d.device_id, d.topic): [] for d in self.devices
        }
        backfill_until = s.backfill_until_ms or 0
        publish_from = s.publish_from_ms or 0
        for t in paced_times(s, self.clock, self._stop):
            for d in self.devices:
                if d.topic == "events" and not isinstance(d.model, PoolModel):
                    pending[(d.device_id, d.topic)].extend(d.model.events_until(t))
                    continue
                jitter = int(self._rng.uniform(0, s.jitter_s * 1000))
                sample = d.model.sample(t + jitter)
                if sample is None:
                    continue
                self._seq[d.device_id] += 1
                record = telemetry_record(sample, self._seq[d.device_id])
                pending[(d.device_id, d.topic)].append(record)
            if t < publish_from:
                for records in pending.values():
                    records.clear()
                continue
            live = t + s.interval_s * 1000 >= backfill_until
            if live or any(len(v) >= s.buffer_max for v in pending.values()):
                self._flush(pending)
        self._flush(pending)

    def _flush(self, pending: dict[tuple[str, str], list[dict]]) -> None:
        for (device_id, topic), records in pending.items():
            if not records:
                continue
            payload = records[0] if len(records) == 1 else records
            info = self.clients[device_id].publish(
                f"landun/v1/devices/{device_id}/{topic}",
                json.dumps(payload, separators=(",", ":")),
                qos=1,
            )
            self._inflight = [i for i in self._inflight if not i.is_published()]
            self._inflight.append(info)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("publish for %s failed: %s", device_id, mqtt.error_string(info.rc))
            self.published += len(records)
            records.clear()
