"""MQTT subscriber on paho-mqtt: persistent session, QoS 1, manual acks after commit, batched.

Three threads. paho's network thread owns the connection and only enqueues each message
(`_on_message`). The worker drains the queue in batches and has the pipeline commit each. The
deliverer hands committed batches on to the alert stage, in commit order, then acknowledges
their messages (paho's manual acks), on the connection that delivered them. Unacknowledged
messages stay with the broker, so a crash loses nothing and the store's idempotent writes absorb
the redelivery. tests/test_reliability.py proves it against a real Mosquitto: ingest killed,
broker restarted, store locked, two workers on a shared subscription, clean stop."""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from domain.mqtt_connection import (
    BrokerAddress,
    BrokerUnusable,
    FailureLog,
    connect_options,
    describe_failure,
    is_configuration_error,
    new_client,
)
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
CLIENT_ID_PREFIX = "landun-ingest"


def default_client_id(worker: int = 0) -> str:
    """`landun-ingest-<host>-<worker>`: its own per worker, and the same across restarts, which
    a persistent session needs (a process id would orphan the session's backlog)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{CLIENT_ID_PREFIX}-{host}-{worker}"


@dataclass(frozen=True, slots=True)
class SubscriberSettings:
    client_id: str = field(default_factory=default_client_id)
    shared_group: str | None = None  # e.g. "landun-ingest" -> $share/landun-ingest/<topic>
    batch_max: int = 2000
    batch_wait_s: float = 0.02  # gather for up to 20 ms: fixed costs per commit amortise
    # Bound on messages held between broker and store. Under MQTT 5 the broker is told so
    # (receive maximum); under 3.1.1 Mosquitto sends at most its in-flight window
    # unacknowledged (2,000 in mosquitto/mosquitto.conf), and a broker without one is held back
    # here by not reading, which beyond 1.5 keepalives costs the connection (nothing is lost:
    # the unacknowledged messages come again).
    queue_max: int = 20_000
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    # MQTT 5 only: how long the broker keeps the session while ingest is away. The maximum
    # means "never", as a 3.1.1 persistent session (the broker's own expiry setting still rules).
    session_expiry_s: int = 0xFFFFFFFF

    def __post_init__(self) -> None:
        if not 1 <= self.keepalive_s <= 0xFFFF:
            raise ValueError(f"keepalive_s {self.keepalive_s}: MQTT allows 1 to 65535 s here")
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_min_s must be positive and at most reconnect_max_s")


@dataclass(slots=True)  # not frozen: one is made per message on paho's thread, and frozen
class _Item:  # dataclasses initialise through object.__setattr__, several times slower
    mid: int
    qos: int
    generation: int
    message: RawMessage
    dup: bool


def _topic(msg: mqtt.MQTTMessage) -> str:
    try:
        return msg.topic
    except UnicodeDecodeError:  # brokers refuse such topics; if one passes, it is dead-lettered
        return "<topic not UTF-8>"


class MqttSubscriber:
    def __init__(
        self,
        pipeline: IngestPipeline,
        broker: BrokerAddress,
        settings: SubscriberSettings | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.broker = broker
        self.settings = s = settings or SubscriberSettings()
        # A deque, not a queue.Queue: append and popleft are atomic and lock-free, which matters
        # at tens of thousands of messages a second. The worker sleeps on `_arrived` only when
        # it has found the deque empty (`_idle`), so the network thread rarely touches the event.
        self._queue: deque[_Item] = deque()
        self._arrived = threading.Event()
        self._idle = False
        self._stop = threading.Event()  # stop taking messages
        self._closing = False  # and then close the connection
        # Counts connections made and lost. Packet ids are only valid on the connection that
        # delivered them, so an ack is queued only while the generation is unchanged, under
        # this lock. paho drops the acks still queued when it reconnects.
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._flushed = threading.Event()
        self._failures = FailureLog(log, broker, f"ingest {s.client_id}")
        self._client = new_client(broker, s.client_id, persistent=True, manual_ack=True)
        # paho annotates whole seconds but computes with any number.
        self._client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
        # A bug in a callback is logged by paho; it must not end paho's network thread.
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_unsubscribe = lambda *_: self._flushed.set()
        self._client.on_message = self._on_message
        self._failures.attach(self._client)
        self._worker = threading.Thread(target=self._run, name="landun-ingest", daemon=True)
        # Committed batches wait here for their alert evaluation and acks, on a second thread:
        # SQLite releases the GIL while it writes, so batch n is judged while batch n+1 is being
        # stored. Two at most, so memory and the unacknowledged window stay bounded. None: done.
        self._committed: queue.Queue[tuple[Committed, list[_Item]] | None] = queue.Queue(2)
        self._deliverer = threading.Thread(
            target=self._deliver_run, name="landun-deliver", daemon=True
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Connected and the broker granted every subscription at QoS 1 on this connection."""
        return self._subscribed.is_set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def topics(self) -> list[str]:
        group = self.settings.shared_group
        return [f"$share/{group}/{t}" if group else t for t in TOPICS]

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and subscribe. A certificate the broker's TLS setup rejects raises
        BrokerUnusable (one clear line, no retrying); a broker that is down is retried."""
        s = self.settings
        options = connect_options(self.broker, True, s.session_expiry_s, s.queue_max)
        try:
            self._client.connect(self.broker.host, self.broker.port, s.keepalive_s, **options)
        except (OSError, BrokerUnusable) as exc:
            if is_configuration_error(exc):
                raise BrokerUnusable(f"{self.broker.url}: {describe_failure(exc)}") from None
            self._failures.failed(describe_failure(exc))
            self._client.connect_async(self.broker.host, self.broker.port, s.keepalive_s, **options)
        self._worker.start()
        self._deliverer.start()
        self._client.loop_start()
        if wait_s and not self._subscribed.wait(wait_s):
            log.warning("not subscribed on %s yet; retrying", self.broker.url)

    def stop(self) -> None:
        """Finish the batch in hand, judge and acknowledge what is committed, then disconnect;
        queued but uncommitted messages stay with the broker (they were not acknowledged)."""
        self._stop.set()
        self.pipeline.stop()
        if self._worker.is_alive():
            self._worker.join(timeout=30)
            self._deliverer.join(timeout=30)
        self._flush_acks()
        self._closing = True
        self._client.disconnect()  # a clean goodbye after the queued acks, no will message
        self._client.loop_stop()

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
        if self._client.unsubscribe(FLUSH_TOPIC)[0] != mqtt.MQTT_ERR_SUCCESS:
            return
        if not self._flushed.wait(timeout_s):
            log.warning("broker did not confirm the last acks; they may be redelivered")

    # -- paho's network thread ------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._failures.connected(reason_code):
            return  # paho closes the connection and retries with backoff
        with self._ack_lock:
            self._generation += 1
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
        log.info("connected to %s as %s (session present: %s), subscribing to %s",
                 self.broker.url, self.settings.client_id, flags.session_present,
                 self.topics())  # fmt: skip

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._ack_lock:  # no ack from the old connection is queued after this
            self._generation += 1
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if was_connected and not self._closing:
            log.warning("connection to %s lost (%s); reconnecting", self.broker.url, reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        granted = [rc.value for rc in reason_codes]
        if granted == [1] * len(TOPICS):
            self._subscribed.set()
            return
        # Refused (0x80 and up), or granted at QoS 0, where messages come without acks and a
        # crash loses them: say so; `subscribed` stays false for the health check.
        log.error("the broker granted subscriptions %s as %s, not QoS 1: check its ACL and"
                  " max_qos", self.topics(), [str(rc) for rc in reason_codes])  # fmt: skip

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if self._stop.is_set():
            return  # not acknowledged: the broker keeps it for the next start
        message = RawMessage(_topic(msg), msg.payload, now_ms())
        self._enqueue(_Item(msg.mid, msg.qos, self._generation, message, msg.dup))

    def _enqueue(self, item: _Item) -> None:
        # Waits while full: paho reads no more, TCP holds the broker back, the broker holds the
        # backlog. Gives up only when stopping (the message is unacknowledged, so kept).
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
        # A message from an earlier connection will be redelivered by the broker anyway (it was
        # stored, so the copy is a duplicate); its packet id may now name another, uncommitted
        # message, so acking it could lose that one.
        acked = 0
        with self._ack_lock:
            generation = self._generation
            for i in batch:
                if i.qos and i.generation == generation:
                    self._client.ack(i.mid, i.qos)
                    acked += 1
        self.pipeline.metrics.acked += acked
