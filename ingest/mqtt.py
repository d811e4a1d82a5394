"""MQTT subscriber: persistent session, QoS 1, manual acks after commit, batched.

paho's network thread only enqueues; one worker thread drains the queue in batches and has the
pipeline commit each; a second thread hands committed batches on to the alert stage, in commit
order, and then acknowledges their messages in arrival order.
Unacknowledged messages stay with the broker, so a crash loses nothing and the store's idempotent
writes absorb the redelivery. tests/test_reliability.py proves it against a real Mosquitto: ingest
killed, broker restarted, store locked, two workers on a shared subscription."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from domain.timeutil import now_ms
from ingest.pipeline import Committed, IngestPipeline, RawMessage

log = logging.getLogger("landun.ingest.mqtt")

TOPICS = (
    "landun/v1/devices/+/telemetry",
    "landun/v1/devices/+/status",
    "landun/v1/devices/+/events",
)
# Never subscribed: unsubscribing from it is a harmless round trip (see _flush_acks).
FLUSH_TOPIC = "landun/v1/ingest/flush"


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
    batch_wait_s: float = 0.02  # gather for up to 20 ms: fixed costs per commit amortise
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
        # A deque, not a queue.Queue: append and popleft are atomic and lock-free, which matters
        # at tens of thousands of messages a second. The worker sleeps on `_arrived` only when
        # it has found the deque empty (`_idle`), so the network thread rarely touches the event.
        self._queue: deque[_Item] = deque()
        self._arrived = threading.Event()
        self._idle = False
        self._stop = threading.Event()
        # Counts connections lost. Packet ids are only valid on the connection that delivered
        # them, so an ack is sent only while the generation is unchanged, under this lock.
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._flushed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="landun-ingest", daemon=True)
        # Committed batches wait here for their alert evaluation and acks, on a second thread:
        # SQLite releases the GIL while it writes, so batch n is judged while batch n+1 is being
        # stored. Two at most, so memory and the unacknowledged window stay bounded. None: done.
        self._committed: queue.Queue[tuple[Committed, list[_Item]] | None] = queue.Queue(2)
        self._deliverer = threading.Thread(
            target=self._deliver_run, name="landun-deliver", daemon=True
        )
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
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Connected and the broker granted every subscription on this connection."""
        return self._subscribed.is_set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def topics(self) -> list[str]:
        group = self.settings.shared_group
        return [f"$share/{group}/{t}" if group else t for t in TOPICS]

    def start(self, wait_s: float = 10.0) -> None:
        self._worker.start()
        self._deliverer.start()
        self.client.connect_async(self.broker.host, self.broker.port, self.settings.keepalive_s)
        self.client.loop_start()
        if wait_s and not self._subscribed.wait(wait_s):
            log.warning("not subscribed on %s:%s yet; retrying", self.broker.host, self.broker.port)

    def stop(self) -> None:
        """Finish the batch in hand, judge and acknowledge what is committed, then disconnect;
        queued but uncommitted messages stay with the broker (they were not acknowledged)."""
        self._stop.set()
        self.pipeline.stop()
        self._worker.join(timeout=30)
        self._deliverer.join(timeout=30)
        self._flush_acks()
        self.client.disconnect()
        self.client.loop_stop()

    def _flush_acks(self, timeout_s: float = 5.0) -> None:
        """Wait until the broker has read our last PUBACKs. Closing a socket that still has unread
        incoming data (the broker keeps sending) makes the kernel reset the connection, and the
        reset discards whatever is still in the broker's receive buffer: the last acks, so those
        committed messages would come back as duplicates after every clean restart. A PUBACK has
        no reply, but the broker handles a connection's packets in order, so its UNSUBACK for a
        topic we never subscribed to proves it has read every ack sent before."""
        if not self.connected:
            return
        self._flushed.clear()
        self.client.unsubscribe(FLUSH_TOPIC)
        if not self._flushed.wait(timeout_s):
            log.warning("broker did not confirm the last acks; they may be redelivered")

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused connection: %s", reason_code)
            return
        metrics = self.pipeline.metrics
        metrics.connects += 1
        if metrics.connects > 1 and not flags.session_present:
            # The broker forgot us (restarted without persistence, or expired the session):
            # whatever it queued while we were away is gone; only a resubscribe can help now.
            metrics.sessions_lost += 1
            log.error("broker has no session for %s; messages sent meanwhile are lost",
                      self.settings.client_id)  # fmt: skip
        # Subscribing again is harmless when the session kept the subscriptions, and required
        # when it did not.
        client.subscribe([(t, 1) for t in self.topics()])
        self._connected.set()
        log.info("connected (session present: %s), subscribing to %s",
                 flags.session_present, self.topics())  # fmt: skip

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", self.topics(), refused)
            return
        self._subscribed.set()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._flushed.set()  # the only unsubscribe is _flush_acks'

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # paho calls this before it reconnects, so no ack from the old connection can be queued
        # onto the new one once the generation has moved on.
        with self._ack_lock:
            self._generation += 1
        self._connected.clear()
        self._subscribed.clear()
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
        # Waits while full: TCP backpressure to the broker, which holds the backlog. Gives up
        # only when stopping (the message is unacknowledged, so the broker keeps it); an endless
        # wait would make stop() hang joining this thread.
        if len(self._queue) >= self.settings.queue_max:
            self.pipeline.metrics.observe_queue(len(self._queue))
            while len(self._queue) >= self.settings.queue_max:
                if self._stop.wait(0.005):
                    return
        self._queue.append(item)
        if self._idle:
            self._arrived.set()

    # -- worker thread --------------------------------------------------------------------------

    def _next_batch(self) -> list[_Item]:
        if not self._queue:
            # Idle before looking again: a message appended after this flag is set wakes us,
            # one appended before it is seen by the look.
            self._idle = True
            if not self._queue:
                self._arrived.wait(0.2)
            self._idle = False
            self._arrived.clear()
            if not self._queue:
                return []
        batch = [self._queue.popleft()]
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < self.settings.batch_max:
            if self._queue:
                take = min(len(self._queue), self.settings.batch_max - len(batch))
                batch.extend(self._queue.popleft() for _ in range(take))
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(0.0005)
        self.pipeline.metrics.observe_queue(len(self._queue))
        return batch

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                committed = self._commit(batch) if batch else None
                if committed is not None:
                    self._committed.put((committed, batch))
        finally:
            self._committed.put(None)

    def _commit(self, batch: list[_Item]) -> Committed | None:
        """Hand the batch to the pipeline until it is committed; None if stopped first."""
        metrics = self.pipeline.metrics
        metrics.redelivered += sum(1 for i in batch if i.dup)
        delay = self.settings.reconnect_min_s
        while True:
            try:
                return self.pipeline.commit([i.message for i in batch])
            except Exception:
                # A bug rather than an outage (the pipeline rides out StoreUnavailable itself).
                # Keep the worker alive and the batch unacknowledged: a dead worker would stop
                # ingest for good while the subscriber still looked connected.
                metrics.worker_errors += 1
                log.exception("ingest batch of %d messages failed; retrying", len(batch))
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.reconnect_max_s)

    def _deliver_run(self) -> None:
        while (job := self._committed.get()) is not None:
            committed, batch = job
            try:
                self.pipeline.deliver(committed)
            except Exception:
                # The batch is stored: acknowledge it anyway, or ingest would stall for good.
                self.pipeline.metrics.worker_errors += 1
                log.exception("handing a committed batch of %d messages on failed", len(batch))
            self._ack(batch)

    def _ack(self, batch: list[_Item]) -> None:
        with self._ack_lock:
            generation = self._generation
            acked = 0
            for item in batch:
                # A message from an earlier connection will be redelivered by the broker anyway
                # (it was stored, so the copy is a duplicate); its packet id may now name another,
                # uncommitted message, so acking it could lose that one.
                if item.qos > 0 and item.generation == generation:
                    self.client.ack(item.mid, item.qos)
                    acked += 1
        self.pipeline.metrics.acked += acked
