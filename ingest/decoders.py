"""The decoder interface and the table the pipeline looks each message's kind up in.

A message's kind is its route (an MQTT topic's last level, or `hj212` for the gateway's packets)
and its device's kind: a decoder serves one route, for one device kind or for any. A decoder adds
what it decodes to the batch (readings, statuses, or events for its own ledger) or says why the
message is refused. The kinds Landun accepts are listed in one place, ingest.kinds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from domain.model import Device, Reading
from ingest.messages import Message
from store.base import DeviceStatus

E = TypeVar("E")

ANY_DEVICE = "*"  # a decoder for every device kind on its route


class EventLedger(Protocol[E]):
    def record(self, events: Sequence[E]) -> list[E]:
        """Commit events in one transaction of the ledger's own (with their alert-feed entries
        where the feed is on); return those that were new. Raises StoreUnavailable."""
        ...


class Batch:
    """What a batch of messages decodes to, until it is committed."""

    __slots__ = ("events", "readings", "statuses")

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.statuses: list[DeviceStatus] = []
        # Each ledger's events, recorded in one call per batch: one transaction, not one a message.
        # By identity: a ledger need not be hashable.
        self.events: dict[int, tuple[EventLedger[Any], list[Any]]] = {}

    def add_events(self, ledger: EventLedger[E], events: list[E]) -> None:
        held = self.events.get(id(ledger))
        if held is None:
            self.events[id(ledger)] = (ledger, events)
        else:
            held[1].extend(events)


class Decoder(Protocol):
    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        """Add the message's content to the batch; or, adding nothing, say why it is refused."""
        ...


class DecoderTable:
    """Route -> device kind (or ANY_DEVICE) -> decoder."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Decoder]] = {}

    def add(self, route: str, decoder: Decoder, device_kind: str = ANY_DEVICE) -> DecoderTable:
        by_kind = self._routes.setdefault(route, {})
        if device_kind in by_kind:
            raise ValueError(f"two decoders for {route} messages of {device_kind} devices")
        by_kind[device_kind] = decoder
        return self

    def find(self, route: str, device_kind: str) -> Decoder | None:
        by_kind = self._routes.get(route)
        if by_kind is None:
            return None
        decoder = by_kind.get(device_kind)
        return by_kind.get(ANY_DEVICE) if decoder is None else decoder

    def refusal(self, route: str, device: Device) -> str:
        """Why a message `find` has no decoder for is refused."""
        by_kind = self._routes.get(route)
        if by_kind is None:
            known = ", ".join(sorted(self._routes)) or "none"
            return f"{route} messages are not accepted here (routes taken: {known})"
        kinds = ", ".join(sorted(by_kind))
        return (
            f"device {device.id} is a {device.kind}: its {route} messages are not accepted here"
            f" (only those of {kinds} devices)"
        )
