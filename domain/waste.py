"""Medical-waste custody: bag events and the bag a chain of them describes. No I/O.

A bag is collected in a department (weighed), carried to the temporary store (暂存间), and handed
with its weight to the licensed disposal company under a transfer manifest (联单). Events may
arrive late, twice or out of order, so a bag is always derived from all of its events, never
updated in place: the same set of events gives the same bag whatever order they came in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# Device kinds of a hospital's waste tracking (the registry's `kind` field).
WASTE_SCANNER = "waste_scanner"  # publishes bag events
WASTE_STORE_SENSOR = "waste_store_sensor"  # publishes store-room telemetry


class WasteCategory(StrEnum):
    """The five categories of the 医疗废物分类目录 (2021 edition)."""

    INFECTIOUS = "infectious"  # 感染性废物
    SHARPS = "sharps"  # 损伤性废物
    PATHOLOGICAL = "pathological"  # 病理性废物
    PHARMACEUTICAL = "pharmaceutical"  # 药物性废物
    CHEMICAL = "chemical"  # 化学性废物


class WasteEventKind(StrEnum):
    COLLECTED = "bag_collected"
    STORED = "bag_stored"
    HANDED_OVER = "bag_handed_over"


class BagStatus(StrEnum):
    COLLECTED = "collected"  # collected, not yet in the store
    STORED = "stored"  # in the temporary store
    HANDED_OVER = "handed_over"  # gone with the disposal company


@dataclass(frozen=True, slots=True)
class WasteEvent:
    """One scan of one bag. `ts_ms` is the scanner's time, `recv_ms` when Landun received it."""

    device_id: str
    site_id: str
    event: WasteEventKind
    bag_id: str
    ts_ms: int
    recv_ms: int
    category: WasteCategory | None = None
    weight_kg: float | None = None
    department: str | None = None
    manifest_id: str | None = None
    carrier: str | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What makes an event the same event when it is delivered again."""
        return (self.device_id, self.bag_id, str(self.event), self.ts_ms)


@dataclass(frozen=True, slots=True)
class Bag:
    """A bag's custody as its events tell it. Times are the first event of each kind; a later
    event of a kind already seen is a duplicate (a reused or double-scanned bag id)."""

    site_id: str
    bag_id: str
    category: WasteCategory | None
    department: str | None
    collected_ms: int | None
    collected_kg: float | None
    stored_ms: int | None
    stored_kg: float | None
    handed_ms: int | None
    handed_kg: float | None
    handed_recv_ms: int | None
    manifest_id: str | None
    carrier: str | None
    categories: tuple[WasteCategory, ...]  # every category the chain states, in event order
    duplicates: int  # events of a kind the bag already had
    events: int

    @property
    def status(self) -> BagStatus:
        if self.handed_ms is not None:
            return BagStatus.HANDED_OVER
        if self.stored_ms is not None:
            return BagStatus.STORED
        return BagStatus.COLLECTED

    @property
    def produced_ms(self) -> int:
        """When the bag entered the chain: collection, or the first scan we have of it."""
        return min(t for t in (self.collected_ms, self.stored_ms, self.handed_ms) if t is not None)

    @property
    def weight_kg(self) -> float | None:
        """The weight the hospital recorded first; what the handover weight must match."""
        return self.collected_kg if self.collected_kg is not None else self.stored_kg

    @property
    def weight_loss_kg(self) -> float | None:
        if self.weight_kg is None or self.handed_kg is None:
            return None
        return self.weight_kg - self.handed_kg

    @property
    def category_changed(self) -> bool:
        return len(set(self.categories)) > 1


def _chain_order(e: WasteEvent) -> tuple[int, int, str]:
    return (e.ts_ms, e.recv_ms, e.device_id)


def derive_bag(events: Iterable[WasteEvent]) -> Bag:
    """The bag a set of events (all of one site and bag id) describes, whatever their order."""
    chain = sorted(events, key=_chain_order)
    if not chain:
        raise ValueError("a bag needs at least one event")
    first: dict[WasteEventKind, WasteEvent] = {}
    duplicates = 0
    for e in chain:
        if e.event in first:
            duplicates += 1
        else:
            first[e.event] = e
    collected = first.get(WasteEventKind.COLLECTED)
    stored = first.get(WasteEventKind.STORED)
    handed = first.get(WasteEventKind.HANDED_OVER)
    categories = tuple(e.category for e in chain if e.category is not None)
    return Bag(
        site_id=chain[0].site_id,
        bag_id=chain[0].bag_id,
        category=categories[0] if categories else None,
        department=next((e.department for e in chain if e.department), None),
        collected_ms=collected.ts_ms if collected else None,
        collected_kg=collected.weight_kg if collected else None,
        stored_ms=stored.ts_ms if stored else None,
        stored_kg=stored.weight_kg if stored else None,
        handed_ms=handed.ts_ms if handed else None,
        handed_kg=handed.weight_kg if handed else None,
        handed_recv_ms=handed.recv_ms if handed else None,
        manifest_id=handed.manifest_id if handed else None,
        carrier=handed.carrier if handed else None,
        categories=categories,
        duplicates=duplicates,
        events=len(chain),
    )
