"""Decode -> validate -> store -> hand to alerts, for a batch of messages from any transport.

Synchronous and transport-agnostic: the MQTT subscriber and the HJ 212 gateway both feed it.
Each message is decoded by the decoder its kind has in the table (ingest.decoders, ingest.kinds).
A batch is committed in one store transaction, its events then in their ledgers; `process`
returns only once it is committed, so the caller may then acknowledge the messages."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from domain.model import DeadLetter, Reading
from domain.registry import Registry
from domain.timeutil import now_ms
from ingest.dead_letter_log import DeadLetterLog
from ingest.decoders import Batch, DecoderTable
from ingest.messages import HJ212_ROUTE, Hj212Message, Message, RawMessage
from ingest.metrics import IngestMetrics
from store.base import DeviceStatus, ReadingStore, StoreUnavailable

log = logging.getLogger("landun.ingest")

# The route is the decoder table's to judge (ingest.kinds); letters only, so no topic can name
# the HJ 212 gateway's route.
TOPIC_RE = re.compile(r"^landun/v1/devices/([A-Za-z0-9_.\-]{1,64})/([a-z_]{1,32})$")
MAX_RAW = 64 * 1024  # dead letters keep at most this much of the raw payload

__all__ = ["Committed", "IngestListener", "IngestPipeline", "RawMessage"]


@dataclass(frozen=True, slots=True)
class Committed:
    """A batch in the store, waiting to be handed on to the alert stage."""

    readings: list[Reading]
    events: list[Any]  # only those not recorded yet, of every ledger
    dead: list[DeadLetter]


def _ignore(_items: Sequence[Any]) -> None:
    pass


@dataclass(frozen=True, slots=True)
class IngestListener:
    """Who hears of each committed batch in the ingesting process itself: the alert engine and
    its rules in `landun run`. `landun ingest` has none (its alert workers read the store's
    feed)."""

    stored: Callable[[list[Reading]], None] = _ignore
    events: Callable[[Sequence[Any]], None] = _ignore
    dead: Callable[[list[DeadLetter]], None] = _ignore


T = TypeVar("T")


class IngestPipeline:
    def __init__(
        self,
        store: ReadingStore,
        registry: Registry,
        decoders: DecoderTable,
        *,
        listener: IngestListener | None = None,
        metrics: IngestMetrics | None = None,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.decoders = decoders
        self.listener = listener
        self.metrics = metrics or IngestMetrics()
        self.dead_log = DeadLetterLog(log)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._stopping = threading.Event()
        # The MQTT worker and the HJ 212 gateway share one pipeline: serialising commits keeps
        # the counters exact, and serialising deliveries hands the listener one batch at a time.
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()

    def stop(self) -> None:
        """Make a pending store retry give up; the unacknowledged batch stays with the broker."""
        self._stopping.set()
        self.dead_log.flush()

    def refuse(self, letter: DeadLetter) -> bool:
        """Record a message found bad before it reached the pipeline (e.g. a broken HJ 212
        frame), through the same commit, retry and counting as every other dead letter."""
        self.dead_log.record(letter.reason)
        if len(letter.raw) > MAX_RAW:
            letter = replace(letter, raw=letter.raw[:MAX_RAW])
        with self._lock:
            return self._commit([], [letter], [])

    def process(self, msgs: Sequence[Message]) -> bool:
        """Store a batch and hand it on; True once committed, False if stopped before the store
        came back."""
        committed = self.commit(msgs)
        if committed is None:
            return False
        self.deliver(committed)
        return True

    def commit(self, msgs: Sequence[Message]) -> Committed | None:
        """Decode and store a batch; None if stopped before the store came back. The caller
        then `deliver`s it, in commit order, before acknowledging its messages, so a crash in
        between has the broker redeliver them and the alert stage still sees them."""
        with self._lock:
            return self._process(msgs)

    def deliver(self, committed: Committed) -> None:
        """Hand a committed batch to the listener (alert evaluation, custody, clock skew)."""
        hear = self.listener
        if hear is None:
            return
        with self._deliver_lock:
            if committed.readings:
                self._run_hook(hear.stored, committed.readings)
            if committed.events:
                self._run_hook(hear.events, committed.events)
            if committed.dead:
                self._run_hook(hear.dead, committed.dead)

    def _process(self, msgs: Sequence[Message]) -> Committed | None:
        batch = Batch()
        dead: list[DeadLetter] = []
        for m in msgs:
            self._decode_one(m, batch, dead)
        readings = batch.readings
        if not self._commit(readings, dead, batch.statuses):
            return None
        # Recorded after the batch (each ledger has its own transaction) and before the acks; a
        # crash in between is healed by redelivery, as a ledger ignores events it already has.
        fresh: list[Any] = []
        for ledger, events in batch.events.values():
            recorded = self._retrying(ledger.record, events)
            if recorded is None:
                return None
            fresh += recorded
        self.metrics.received += len(msgs)
        self.metrics.observe_batch(len(msgs))
        if msgs:
            self.metrics.commit_delay_ms_last = now_ms() - min(m.recv_ms for m in msgs)
        if readings:
            self.metrics.lag_ms_last = msgs[-1].recv_ms - readings[-1].ts_ms
        return Committed(readings, fresh, dead)

    def _run_hook(self, hook: Callable[[list], None], items: list) -> None:
        """Hand committed readings (or newly recorded events) to the alert stage. Its failure
        must not stop ingest: the data are stored and will be acknowledged; raising here would
        kill the caller's worker thread and with it every later message."""
        try:
            hook(items)
        except Exception:
            self.metrics.hook_errors += 1
            log.exception("alert hook failed on %d committed records", len(items))

    def _decode_one(self, m: Message, batch: Batch, dead: list[DeadLetter]) -> None:
        """Look the message's kind up in the decoder table and decode it, or dead-letter it."""
        if isinstance(m, Hj212Message):
            device_id, route = m.device_id, HJ212_ROUTE
        else:
            match = TOPIC_RE.match(m.topic)
            if match is None:
                reason = f"topic {m.topic!r} is not landun/v1/devices/<id>/<kind>"
                dead.append(self._dead(m, None, reason))
                return
            device_id, route = match.groups()
        device = self.registry.devices.get(device_id)
        if device is None:
            dead.append(self._dead(m, device_id, f"unknown device {device_id}"))
            return
        decoder = self.decoders.find(route, device.kind)
        if decoder is None:
            why: str | None = self.decoders.refusal(route, device)
        else:
            why = decoder.decode(m, device, batch)
        if why is not None:
            dead.append(self._dead(m, device_id, why))

    def _dead(self, m: Message, device_id: str | None, reason: str) -> DeadLetter:
        self.dead_log.record(reason)
        return DeadLetter(
            m.topic, device_id, m.recv_ms, reason, bytes(m.payload[:MAX_RAW]), m.source
        )

    def _commit(
        self, readings: list[Reading], dead: list[DeadLetter], statuses: list[DeviceStatus]
    ) -> bool:
        stored = self._retrying(self.store.write_batch, readings, dead, statuses)
        if stored is None:
            return False
        self.metrics.readings_stored += stored
        self.metrics.readings_duplicate += len(readings) - stored
        self.metrics.dead_lettered += len(dead)
        self.metrics.statuses += len(statuses)
        return True

    def _retrying(self, write: Callable[..., T], *args: Any) -> T | None:
        """A store write, retried with backoff until it succeeds; None if stopped first."""
        delay = self._retry_initial_s
        while True:
            try:
                return write(*args)
            except StoreUnavailable as exc:
                # Hold the batch (and with it every later ack) until the store is back: the broker
                # keeps the backlog, so memory stays bounded by its in-flight window.
                self.metrics.store_retries += 1
                log.warning("store unavailable, retrying in %.2fs: %s", delay, exc)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self._retry_max_s)
