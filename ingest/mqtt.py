"""MQTT subscriber: persistent session, QoS 1, manual acks after commit, batched.

paho's network thread only enqueues; one worker thread drains the queue in batches, hands each
batch to the pipeline, and acknowledges the batch's messages in arrival order once committed.
Unacknowledged messages stay with the broker, so a crash loses nothing and the store's idempotent
writes absorb the redelivery."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from domain.timeutil import now_ms
from ingest.pipeline import IngestPipeline, RawMessage

log = logging.getLogger("landun.ingest.mqtt")

TOPICS = ("landun/v1/devices/+/telemetry", "landun/v1/devices/+/status")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        u = urlparse(url if "://" in url else f"mqtt://{url}")
        if u.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt://")
        return cls(u.hostname or "127.0.0.1", u.port or 1883, u.username, u.password)


@dataclass(frozen=True, slots=True)
class SubscriberSettings:
    client_id: str = "landun-ingest"
    shared_group: str | None = None  # e.g. "landun-ingest" -> $share/landun-ingest/<topic>
    batch_max: int = 2000
    batch_wait_s: float = 0.005
    # Bound on messages held between broker and store; matches the broker's in-flight window.
    queue_max: int = 20_000
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class _Item:
    mid: int
    qos: int
    generation: int
    message: RawMessage
    dup: bool


class MqttSubscriber:
    def __init__(
        self,
        pipeline: IngestPipeline,
        broker: BrokerAddress,
        settings: SubscriberSettings | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.broker = broker
        self.settings = settings or SubscriberSettings()
        self._queue: queue.Queue[_Item] = queue.Queue(self.settings.queue_max)
        self._stop = threading.Event()
        self._generation = 0
        self._connected = threading.Event()
        self._worker = threading.Thread(target=self._run, name="landun-ingest", daemon=True)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        self.client.reconnect_delay_set(
            self.settings.reconnect_min_s, self.settings.reconnect_max_s
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def topics(self) -> list[str]:
        group = self.settings.shared_group
        return [f"$share/{group}/{t}" if group else t for t in TOPICS]

    def start(self, wait_s: float = 10.0) -> None:
        self._worker.start()
        self.client.connect_async(self.broker.host, self.broker.port, self.settings.keepalive_s)
        self.client.loop_start()
        if wait_s and not self._connected.wait(wait_s):
            log.warning("not connected to %s:%s yet; retrying", self.broker.host, self.broker.port)

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; queued but uncommitted messages stay with
        the broker (they were not acknowledged)."""
        self._stop.set()
        self.pipeline.stop()
        self._worker.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused connection: %s", reason_code)
            return
        self._generation += 1
        client.subscribe([(t, 1) for t in self.topics()])
        self._connected.set()
        log.info("subscribed to %s (session present: %s)", self.topics(), flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        item = _Item(
            msg.mid,
            msg.qos,
            self._generation,
            RawMessage(msg.topic, msg.payload, now_ms()),
            bool(msg.dup),
        )
        # Blocks when full: TCP backpressure to the broker, which holds the backlog.
        self._queue.put(item)

    # -- worker thread --------------------------------------------------------------------------

    def _next_batch(self) -> list[_Item]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.0005)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            self.pipeline.metrics.redelivered += sum(1 for i in batch if i.dup)
            if not self.pipeline.process([i.message for i in batch]):
                return  # stopping while the store was down: leave the batch unacknowledged
            generation = self._generation
            for item in batch:
                # A message from before a reconnect will be redelivered by the broker anyway;
                # its old packet id may now belong to another message, so don't ack it.
                if item.qos > 0 and item.generation == generation:
                    self.client.ack(item.mid, item.qos)
