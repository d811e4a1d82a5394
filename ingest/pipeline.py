"""Decode -> validate -> store -> hand to alerts, for a batch of raw messages from any transport.

Synchronous and transport-agnostic: the MQTT subscriber and the HJ 212 gateway both feed it. A
batch is committed in one store transaction; `process` returns only once it is committed, so the
caller may then acknowledge the messages."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from domain.model import DeadLetter, Reading
from domain.params import Catalogue
from domain.registry import Registry
from domain.tableware import LineEvent
from domain.tanks import TANK_LOG, TankEvent
from domain.timeutil import now_ms
from domain.waste import WasteEvent
from ingest.dead_letter_log import DeadLetterLog
from ingest.decode import DecodeLimits, decode_document, decode_status, decode_telemetry
from ingest.events import decode_events
from ingest.metrics import IngestMetrics
from ingest.tank_events import decode_tank_events
from store.base import DeviceStatus, ReadingStore, StoreUnavailable
from store.lines import EventLedgers
from store.tank_log import TankLog

log = logging.getLogger("landun.ingest")

TOPIC_RE = re.compile(r"^landun/v1/devices/([A-Za-z0-9_.\-]{1,64})/(telemetry|status|events)$")
MAX_RAW = 64 * 1024  # dead letters keep at most this much of the raw payload


class RawMessage(NamedTuple):
    """One message as received. A named tuple: the MQTT thread makes one per message, at half
    the cost of a frozen dataclass."""

    topic: str
    payload: bytes
    recv_ms: int
    source: str = "mqtt"
    doc: object = None  # an already-decoded document (HJ 212 records), instead of payload bytes


@dataclass(frozen=True, slots=True)
class Committed:
    """A batch in the store, waiting to be handed on to the alert stage."""

    readings: list[Reading]
    events: list[WasteEvent | LineEvent | TankEvent]  # only those not recorded yet
    dead: list[DeadLetter]


ReadingsHook = Callable[[list[Reading]], None]
EventsHook = Callable[[Sequence[WasteEvent | LineEvent | TankEvent]], None]
T = TypeVar("T")


class IngestPipeline:
    def __init__(
        self,
        store: ReadingStore,
        registry: Registry,
        catalogue: Catalogue,
        limits: DecodeLimits | None = None,
        on_stored: ReadingsHook | None = None,
        metrics: IngestMetrics | None = None,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        ledger: EventLedgers | None = None,
        on_events: EventsHook | None = None,
        on_dead: Callable[[list[DeadLetter]], None] | None = None,
        tanks: TankLog | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.catalogue = catalogue
        self.limits = limits or DecodeLimits()
        self.on_stored = on_stored
        self.ledger = ledger  # None: `.../events` messages are refused
        self.tanks = tanks  # None: tank records are refused
        self.on_events = on_events
        self.on_dead = on_dead
        self.metrics = metrics or IngestMetrics()
        self.dead_log = DeadLetterLog(log)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._stopping = threading.Event()
        # The MQTT worker and the HJ 212 gateway share one pipeline: serialising commits keeps
        # the counters exact, and serialising deliveries hands the hooks one batch at a time.
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()

    def stop(self) -> None:
        """Make a pending store retry give up; the unacknowledged batch stays with the broker."""
        self._stopping.set()
        self.dead_log.flush()

    def dead_letter(self, m: RawMessage, device_id: str | None, reason: str) -> bool:
        """Refuse a message found bad before decoding (e.g. a broken HJ 212 frame), through the
        same commit, retry and counting as every other dead letter."""
        with self._lock:
            return self._commit([], [self._dead(m, device_id, reason)], [])

    def process(self, msgs: Sequence[RawMessage]) -> bool:
        """Store a batch and hand it on; True once committed, False if stopped before the store
        came back."""
        committed = self.commit(msgs)
        if committed is None:
            return False
        self.deliver(committed)
        return True

    def commit(self, msgs: Sequence[RawMessage]) -> Committed | None:
        """Decode and store a batch; None if stopped before the store came back. The caller
        then `deliver`s it, in commit order, before acknowledging its messages, so a crash in
        between has the broker redeliver them and the alert stage still sees them."""
        with self._lock:
            return self._process(msgs)

    def deliver(self, committed: Committed) -> None:
        """Hand a committed batch to the hooks (alert evaluation, custody, clock skew)."""
        with self._deliver_lock:
            if self.on_stored and committed.readings:
                self._run_hook(self.on_stored, committed.readings)
            if self.on_events and committed.events:
                self._run_hook(self.on_events, committed.events)
            if self.on_dead and committed.dead:
                self._run_hook(self.on_dead, committed.dead)

    def _process(self, msgs: Sequence[RawMessage]) -> Committed | None:
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        statuses: list[DeviceStatus] = []
        events: list[WasteEvent | LineEvent] = []
        tank_events: list[TankEvent] = []
        for m in msgs:
            self._decode_one(m, readings, dead, statuses, events, tank_events)
        if not self._commit(readings, dead, statuses):
            return None
        # Recorded after the batch (the ledger has its own transaction) and before the acks; a
        # crash in between is healed by redelivery, as the ledger ignores events it already has.
        ledger, tanks = self.ledger, self.tanks
        fresh = self._retrying(lambda: ledger.record(events)) if events and ledger else []
        if fresh is None:
            return None
        fresh_tanks = (
            self._retrying(lambda: tanks.record(tank_events)) if tank_events and tanks else []
        )
        if fresh_tanks is None:
            return None
        self.metrics.received += len(msgs)
        self.metrics.observe_batch(len(msgs))
        if msgs:
            self.metrics.commit_delay_ms_last = now_ms() - min(m.recv_ms for m in msgs)
        if readings:
            self.metrics.lag_ms_last = msgs[-1].recv_ms - readings[-1].ts_ms
        return Committed(readings, [*fresh, *fresh_tanks], dead)

    def _run_hook(self, hook: Callable[[list], None], items: list) -> None:
        """Hand committed readings (or newly recorded events) to the alert stage. Its failure
        must not stop ingest: the data are stored and will be acknowledged; raising here would
        kill the caller's worker thread and with it every later message."""
        try:
            hook(items)
        except Exception:
            self.metrics.hook_errors += 1
            log.exception("alert hook failed on %d committed records", len(items))

    def _decode_one(
        self,
        m: RawMessage,
        readings: list[Reading],
        dead: list[DeadLetter],
        statuses: list[DeviceStatus],
        events: list[WasteEvent | LineEvent],
        tank_events: list[TankEvent],
    ) -> None:
        match = TOPIC_RE.match(m.topic)
        if match is None:
            dead.append(
                self._dead(m, None, f"topic {m.topic!r} is not landun/v1/devices/<id>/<kind>")
            )
            return
        device_id, kind = match.groups()
        device = self.registry.devices.get(device_id)
        if device is None:
            dead.append(self._dead(m, device_id, f"unknown device {device_id}"))
            return
        if kind == "telemetry":
            if m.doc is not None:
                decoded = decode_document(
                    m.doc, device, device.site_id, self.catalogue, m.recv_ms, self.limits
                )
            else:
                decoded = decode_telemetry(
                    m.payload, device, device.site_id, self.catalogue, m.recv_ms, self.limits
                )
            if decoded.reasons:
                dead.append(self._dead(m, device_id, "; ".join(decoded.reasons)))
            else:
                readings.extend(decoded.readings)
        elif kind == "status":
            detail, reasons = decode_status(m.payload, m.recv_ms, self.limits)
            if detail is None:
                dead.append(self._dead(m, device_id, "; ".join(reasons)))
            else:
                statuses.append(
                    DeviceStatus(device_id, m.recv_ms, detail.pop("ts_ms"), detail["state"], detail)
                )
        elif kind == "events" and device.kind == TANK_LOG and self.tanks is not None:
            decoded_tanks, reasons = decode_tank_events(
                m.payload, device, device.site_id, m.recv_ms, self.limits
            )
            if reasons:
                dead.append(self._dead(m, device_id, "; ".join(reasons)))
            else:
                tank_events.extend(decoded_tanks)
        elif kind == "events" and self.ledger is not None:
            decoded_events, reasons = decode_events(
                m.payload, device, device.site_id, m.recv_ms, self.limits
            )
            if reasons:
                dead.append(self._dead(m, device_id, "; ".join(reasons)))
            else:
                events.extend(decoded_events)
        else:
            dead.append(self._dead(m, device_id, f"{kind} messages are not accepted on this route"))

    def _dead(self, m: RawMessage, device_id: str | None, reason: str) -> DeadLetter:
        self.dead_log.record(reason)
        return DeadLetter(
            m.topic, device_id, m.recv_ms, reason, bytes(m.payload[:MAX_RAW]), m.source
        )

    def _commit(
        self, readings: list[Reading], dead: list[DeadLetter], statuses: list[DeviceStatus]
    ) -> bool:
        stored = self._retrying(lambda: self.store.write_batch(readings, dead, statuses))
        if stored is None:
            return False
        self.metrics.readings_stored += stored
        self.metrics.readings_duplicate += len(readings) - stored
        self.metrics.dead_lettered += len(dead)
        self.metrics.statuses += len(statuses)
        return True

    def _retrying(self, write: Callable[[], T]) -> T | None:
        """A store write, retried with backoff until it succeeds; None if stopped first."""
        delay = self._retry_initial_s
        while True:
            try:
                return write()
            except StoreUnavailable as exc:
                # Hold the batch (and with it every later ack) until the store is back: the broker
                # keeps the backlog, so memory stays bounded by its in-flight window.
                self.metrics.store_retries += 1
                log.warning("store unavailable, retrying in %.2fs: %s", delay, exc)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self._retry_max_s)
