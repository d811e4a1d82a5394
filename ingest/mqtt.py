"""MQTT subscriber: persistent session, QoS 1, manual acks after commit, batched.

Three threads. The network thread owns the connection: it reads whatever the broker sent in one
system call, splits it into packets (ingest/mqtt_wire.py) and only enqueues the messages. The
worker drains the queue in batches and has the pipeline commit each. The deliverer hands
committed batches on to the alert stage, in commit order, then acknowledges their messages in one
write. Unacknowledged messages stay with the broker, so a crash loses nothing and the store's
idempotent writes absorb the redelivery. tests/test_reliability.py proves it against a real
Mosquitto: ingest killed, broker restarted, store locked, two workers on a shared subscription."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from domain.timeutil import now_ms
from ingest import mqtt_wire as wire
from ingest.pipeline import Committed, IngestPipeline, RawMessage

log = logging.getLogger("landun.ingest.mqtt")

TOPICS = (
    "landun/v1/devices/+/telemetry",
    "landun/v1/devices/+/status",
    "landun/v1/devices/+/events",
)
# Never subscribed: unsubscribing from it is a harmless round trip (see _flush_acks).
FLUSH_TOPIC = "landun/v1/ingest/flush"
RECV_BYTES = 256 * 1024


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
        user, password = (None if v is None else unquote(v) for v in (u.username, u.password))
        return cls(u.hostname or "127.0.0.1", u.port or 1883, user, password)


@dataclass(frozen=True, slots=True)
class SubscriberSettings:
    client_id: str = "landun-ingest"
    shared_group: str | None = None  # e.g. "landun-ingest" -> $share/landun-ingest/<topic>
    batch_max: int = 2000
    batch_wait_s: float = 0.02  # gather for up to 20 ms: fixed costs per commit amortise
    # Bound on messages held between broker and store. Mosquitto sends at most its in-flight
    # window unacknowledged (2,000 in mosquitto/mosquitto.conf); a broker without one stops here.
    queue_max: int = 20_000
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    # The socket's timeout: how long a read waits before the keepalive is looked at, and how
    # long a write may take before the connection is given up (its messages are redelivered).
    poll_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.keepalive_s <= 0xFFFF:
            raise ValueError(f"keepalive_s {self.keepalive_s}: MQTT allows 1 to 65535 s here")
        if not 0 < self.poll_s <= self.keepalive_s / 2 or self.reconnect_min_s <= 0:
            raise ValueError("poll_s must be positive and at most half of keepalive_s, and"
                             " reconnect_min_s positive")  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Item:
    mid: int
    qos: int
    generation: int
    message: RawMessage
    dup: bool


_Packets = tuple[list[wire.Publish], list[wire.Control]]


class _Refused(Exception):
    """The broker answered CONNECT with a refusal."""


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
        self._stop = threading.Event()  # stop taking messages
        self._closing = threading.Event()  # and then close the connection
        # Counts connections lost. Packet ids are only valid on the connection that delivered
        # them, so an ack is sent only while the generation is unchanged. Everything written
        # to the socket goes under this lock, so packets never interleave.
        self._generation = 0
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._last_sent = self._last_heard = 0.0
        self._ping_sent: float | None = None
        self._packet_id = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._flushed = threading.Event()
        self._network = threading.Thread(target=self._network_run, name="landun-mqtt", daemon=True)
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
        self._network.start()
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
        self._closing.set()
        # Wake the network thread from its read; it says DISCONNECT and closes (_on_disconnected).
        with self._send_lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RD)
        self._network.join(timeout=15)

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
        if not self._send(wire.unsubscribe_packet(self._next_packet_id(), [FLUSH_TOPIC])):
            return
        if not self._flushed.wait(timeout_s):
            log.warning("broker did not confirm the last acks; they may be redelivered")

    # -- network thread -------------------------------------------------------------------------

    def _network_run(self) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        while not self._closing.is_set():
            try:
                sock, reader, session_present, early = self._open()
            except (OSError, wire.ProtocolError, _Refused) as exc:
                log.warning("cannot connect to broker %s:%s (%s); retrying in %.1f s",
                            self.broker.host, self.broker.port, exc, delay)  # fmt: skip
            except Exception:
                # A bug, not an outage: keep trying rather than end ingest for good.
                log.exception("connecting to the broker failed; retrying in %.1f s", delay)
            else:
                opened = time.monotonic()
                try:
                    self._on_connected(sock, session_present)
                    self._handle(*early, now_ms())
                    self._read_until_closed(sock, reader)
                except (OSError, wire.ProtocolError, _Refused) as exc:
                    if not self._closing.is_set():
                        log.warning("connection to broker lost (%s); reconnecting", exc)
                except Exception:
                    log.exception("ingest's MQTT connection failed; reconnecting")
                finally:
                    self._on_disconnected(sock)
                # A connection that served a keepalive or more starts the backoff afresh; one
                # dropped on arrival (say, another client took our id) backs off like a refusal.
                if time.monotonic() - opened >= s.keepalive_s:
                    delay = s.reconnect_min_s
            if self._closing.wait(delay):
                return
            delay = min(delay * 2, s.reconnect_max_s)

    def _open(self) -> tuple[socket.socket, wire.PacketReader, bool, _Packets]:
        """Connect and log in: the socket, its reader, whether the broker kept our session, and
        the packets that came in the same read as the CONNACK (a kept session's queue)."""
        s = self.settings
        sock = socket.create_connection((self.broker.host, self.broker.port), timeout=10)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(
                wire.connect_packet(
                    s.client_id, s.keepalive_s, False, self.broker.username, self.broker.password
                )
            )
            reader = wire.PacketReader()
            publishes: list[wire.Publish] = []
            controls: list[wire.Control] = []
            while not controls and not publishes:
                data = sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionError("broker closed the connection before CONNACK")
                publishes, controls = reader.feed(data)
            # CONNACK is the first packet of a connection, so publishes read with it came after.
            if not controls or controls[0].kind != wire.CONNACK:
                raise wire.ProtocolError("the broker's first packet is not a CONNACK")
            session_present, code = wire.parse_connack(controls[0].body)
            if code:
                raise _Refused(wire.CONNACK_REFUSALS.get(code, f"return code {code}"))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.settings.poll_s)
        return sock, reader, session_present, (publishes, controls[1:])

    def _on_connected(self, sock: socket.socket, session_present: bool) -> None:
        metrics = self.pipeline.metrics
        metrics.connects += 1
        if metrics.connects > 1 and not session_present:
            # The broker forgot us (restarted without persistence, or expired the session):
            # whatever it queued while we were away is gone; only a resubscribe can help now.
            metrics.sessions_lost += 1
            log.error("broker has no session for %s; messages sent meanwhile are lost",
                      self.settings.client_id)  # fmt: skip
        self._last_sent = self._last_heard = time.monotonic()
        self._ping_sent = None
        with self._send_lock:
            self._sock = sock
        # Subscribing again is harmless when the session kept the subscriptions, and required
        # when it did not.
        self._send(wire.subscribe_packet(self._next_packet_id(), [(t, 1) for t in self.topics()]))
        self._connected.set()
        log.info("connected (session present: %s), subscribing to %s",
                 session_present, self.topics())  # fmt: skip

    def _on_disconnected(self, sock: socket.socket) -> None:
        # Under the send lock: no ack from the old connection can be written once the
        # generation has moved on.
        with self._send_lock:
            if self._closing.is_set():
                with contextlib.suppress(OSError):
                    sock.sendall(wire.DISCONNECT_PACKET)  # a clean goodbye, no will message
            self._generation += 1
            self._sock = None
        self._connected.clear()
        self._subscribed.clear()
        sock.close()

    def _read_until_closed(self, sock: socket.socket, reader: wire.PacketReader) -> None:
        # One buffer for every read: a fresh 256 KiB object per recv, shrunk to what came,
        # fragments the heap of a long-running process.
        buffer = memoryview(bytearray(RECV_BYTES))
        while not self._closing.is_set():
            try:
                n = sock.recv_into(buffer)
            except TimeoutError:
                n = -1
            if n == 0:
                if self._closing.is_set():
                    return
                raise ConnectionError("broker closed the connection")
            if n > 0:
                self._last_heard = time.monotonic()
                self._handle(*reader.feed(buffer[:n]), now_ms())
            self._keepalive()

    def _handle(
        self, publishes: list[wire.Publish], controls: list[wire.Control], recv_ms: int
    ) -> None:
        generation = self._generation
        for p in publishes:
            if self._stop.is_set():
                break  # not acknowledged: the broker keeps them for the next start
            message = RawMessage(p.topic, p.payload, recv_ms)
            self._enqueue(_Item(p.mid, p.qos, generation, message, p.dup))
        for c in controls:
            if c.kind == wire.SUBACK:
                _, granted = wire.parse_suback(c.body)
                # Refused (0x80), or granted at QoS 0, where messages come without acks and a
                # crash loses them: reconnect and ask again (with backoff) rather than go on.
                if granted != bytes(len(TOPICS) * [1]):
                    raise _Refused(f"subscriptions {self.topics()} granted as {list(granted)}")
                self._subscribed.set()
            elif c.kind == wire.UNSUBACK:
                self._flushed.set()  # the only unsubscribe is _flush_acks'
            elif c.kind == wire.PINGRESP:
                self._ping_sent = None
            else:
                raise wire.ProtocolError(f"unexpected packet type {c.kind:#x} from the broker")

    def _enqueue(self, item: _Item) -> None:
        # Waits while full: TCP backpressure to the broker, which holds the backlog. Gives up
        # only when stopping (the message is unacknowledged, so the broker keeps it).
        if len(self._queue) >= self.settings.queue_max:
            self.pipeline.metrics.observe_queue(len(self._queue))
            while len(self._queue) >= self.settings.queue_max:
                if self._stop.wait(0.005):
                    return
                # Only to be heard: its reply waits unread until the queue has room again.
                if time.monotonic() - self._last_sent >= self.settings.keepalive_s / 2:
                    self._send(wire.PINGREQ_PACKET)
            # Nothing was read while waiting, so silence until now says nothing of the broker.
            self._last_heard = time.monotonic()
        self._queue.append(item)
        if self._idle:
            self._arrived.set()

    def _keepalive(self) -> None:
        """Ping when idle; give the connection up when a ping goes unanswered for a keepalive."""
        ping_sent = self._ping_sent
        keepalive = self.settings.keepalive_s
        now = time.monotonic()
        if ping_sent is None:
            # The broker silent for half a keepalive (is it still there?), or we have been (it
            # drops a client that sends nothing for 1.5 keepalives, 3.1.2.10).
            if now - min(self._last_heard, self._last_sent) >= keepalive / 2:
                self._ping_sent = now
                self._send(wire.PINGREQ_PACKET)
        elif now - max(ping_sent, self._last_heard) > keepalive:
            raise TimeoutError(f"no reply from the broker for {keepalive} s")

    def _send(self, data: bytes, generation: int | None = None) -> bool:
        """Write whole packets; False if there is no connection (or not the one of
        `generation`). A failed write shuts the socket, so the network thread reconnects
        rather than go on after half a packet."""
        with self._send_lock:
            sock = self._sock
            if sock is None or (generation is not None and generation != self._generation):
                return False
            try:
                sock.sendall(data)
            except OSError as exc:
                log.warning("writing to the broker failed (%s); reconnecting", exc)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return False
            self._last_sent = time.monotonic()
            return True

    def _next_packet_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

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
        generation = self._generation
        mids = [i.mid for i in batch if i.qos and i.generation == generation]
        if mids and self._send(wire.puback_packets(mids), generation):
            self.pipeline.metrics.acked += len(mids)
