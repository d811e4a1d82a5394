"""Medical-waste custody rules: the bag ledger and the store-room sensors judged against the
settings of `alerts/data/custody.toml`, each alert carrying the bags and weights behind it.

- on bag events (`on_events`, after the ledger has recorded them): weight lost between
  collection and handover, per bag and per manifest; duplicate bag ids; a category changed along
  the chain; a bag handed over after more than the storage limit;
- on the clock (`tick`): bags stored beyond the limit (warning before it), bags collected but not
  stored, handovers of bags whose chain lacks collection or storage once late scans had their
  grace, a store-room door open too long, a facility's daily waste far below its own baseline;
- on telemetry (`observe`): store-room temperature above the limit while waste is held (the
  range state machine of alerts.threshold), the door opened outside working hours.

Custody alerts about bags belong to the site (device None): a hospital has many scanners and the
finding is about the waste, not one scanner. Store-room alerts belong to the sensor."""

from __future__ import annotations

import statistics
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from alerts.settings_files import check_like, packaged_toml, read_toml
from alerts.threshold import Action, Phase, ThresholdState, step
from domain.limits import Limit
from domain.model import VALID_FLAG, Alert, AlertFamily, AlertStatus, Reading, Severity, SiteKind
from domain.registry import Registry
from domain.timeutil import ms_to_iso
from domain.waste import Bag, WasteEvent, WasteEventKind
from store.base import AlertQuery
from store.ledger import WasteLedger, local_day, local_day_bounds

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

RULE_STORAGE = "custody:storage_overdue"
RULE_NOT_STORED = "custody:not_stored"
RULE_WEIGHT = "custody:weight_loss"
RULE_MANIFEST = "custody:manifest_weight_loss"
RULE_UNRECORDED = "custody:handover_unrecorded"
RULE_DUPLICATE = "custody:duplicate_bag"
RULE_CATEGORY = "custody:category_changed"
RULE_TEMPERATURE = "custody:store_temperature"
RULE_DOOR_LONG = "custody:door_open_long"
RULE_DOOR_HOURS = "custody:door_after_hours"
RULE_DROP = "custody:daily_drop"

STATE_NS = "custody"
ROOM_TEMPERATURE = "room_temperature"
DOOR_OPEN = "door_open"
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
OPEN_STATUSES = (str(AlertStatus.OPEN), str(AlertStatus.ACKNOWLEDGED))


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a group of settings comes from, carried into every alert's `limit`."""

    text: str
    confidence: str
    engineering: bool = False

    def limit(self, **values: object) -> dict:
        return {
            **values,
            "standard": "medical-waste custody (alerts/data/custody.toml)",
            "clause": self.text,
            "confidence": self.confidence,
            "engineering": self.engineering,
        }


@dataclass(frozen=True, slots=True)
class CustodySettings:
    storage_warn_h: float
    storage_max_h: float
    not_stored_h: float
    tolerance_fraction: float
    tolerance_kg: float
    critical_fraction: float
    manifest_tolerance_fraction: float
    manifest_tolerance_kg: float
    handover_grace_min: float
    room: Limit
    door_max_open_min: float
    working_from_min: int  # minutes after local midnight
    working_to_min: int
    baseline_days: int
    min_history_days: int
    drop_ratio: float
    settle_h: float
    sources: dict[str, Source] = field(default_factory=dict)

    def bag_tolerance_kg(self, weight_kg: float) -> float:
        return max(self.tolerance_fraction * weight_kg, self.tolerance_kg)

    def manifest_tolerance(self, weight_kg: float) -> float:
        return max(self.manifest_tolerance_fraction * weight_kg, self.manifest_tolerance_kg)


def _minutes(hhmm: str) -> int:
    hours, minutes = (int(p) for p in hhmm.strip().split(":"))
    if not (0 <= hours <= 24 and 0 <= minutes < 60):
        raise ValueError(f"{hhmm!r} is not HH:MM")
    return hours * 60 + minutes


def parse_custody_settings(doc: dict) -> CustodySettings:
    sources = {
        name: Source(
            " ".join(sec["source"].split()), sec["confidence"], sec.get("engineering", False)
        )
        for name, sec in doc.items()
    }
    st, ns, w, h, rt, d, dd = (
        doc[k]
        for k in (
            "storage",
            "not_stored",
            "weight",
            "handover",
            "room_temperature",
            "door",
            "daily_drop",
        )
    )
    if not 0 < st["warn_hours"] < st["max_hours"]:
        raise ValueError("storage: warn_hours must be positive and below max_hours")
    start, end = d["working_hours"].split("-")
    room = Limit(
        parameter=ROOM_TEMPERATURE,
        unit="degC",
        clause=sources["room_temperature"].text,
        confidence=sources["room_temperature"].confidence,
        standard="医疗废物集中处置技术规范 (试行)",
        profile="custody",
        max=float(rt["max"]),
        hysteresis=float(rt["hysteresis"]),
        critical_max=float(rt["critical_max"]),
        pending_s=int(rt["pending_s"]),
        clear_s=int(rt["clear_s"]),
        critical_after_s=int(rt["critical_after_s"]),
    )
    return CustodySettings(
        storage_warn_h=float(st["warn_hours"]),
        storage_max_h=float(st["max_hours"]),
        not_stored_h=float(ns["max_hours"]),
        tolerance_fraction=float(w["tolerance_fraction"]),
        tolerance_kg=float(w["tolerance_kg"]),
        critical_fraction=float(w["critical_fraction"]),
        manifest_tolerance_fraction=float(w["manifest_tolerance_fraction"]),
        manifest_tolerance_kg=float(w["manifest_tolerance_kg"]),
        handover_grace_min=float(h["grace_minutes"]),
        room=room,
        door_max_open_min=float(d["max_open_minutes"]),
        working_from_min=_minutes(start),
        working_to_min=_minutes(end),
        baseline_days=int(dd["baseline_days"]),
        min_history_days=int(dd["min_history_days"]),
        drop_ratio=float(dd["ratio"]),
        settle_h=float(dd["settle_hours"]),
        sources=sources,
    )


@cache
def default_custody_settings() -> CustodySettings:
    """The config dir's custody.toml or the packaged one; an operator's file must have the keys
    and value types of the packaged one (SettingsError names the file and key otherwise)."""
    file, doc = read_toml("custody.toml")
    check_like(doc, packaged_toml("custody.toml"), file)
    return parse_custody_settings(doc)


# -- evidence -----------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_iso(ms)


def bag_evidence(b: Bag) -> dict:
    return {
        "bag_id": b.bag_id,
        "category": b.category,
        "department": b.department,
        "collected": _iso(b.collected_ms),
        "collected_kg": b.collected_kg,
        "stored": _iso(b.stored_ms),
        "stored_kg": b.stored_kg,
        "handed_over": _iso(b.handed_ms),
        "handed_kg": b.handed_kg,
        "manifest_id": b.manifest_id,
        "carrier": b.carrier,
    }


@dataclass(frozen=True, slots=True)
class _Raise:
    alert: Alert
    value: float | None = None


@dataclass(frozen=True, slots=True)
class _Clear:
    site_id: str
    device_id: str | None
    rule_id: str
    why: str


@dataclass(slots=True)
class _Door:
    open_since: int | None = None
    last_ts: int = -1
    long_raised: bool = False


def _custody_alert(
    site_id: str,
    rule_id: str,
    severity: Severity,
    message: str,
    first_ms: int,
    last_ms: int,
    value: float | None,
    limit: dict,
    evidence: dict,
    device_id: str | None = None,
    parameter: str | None = None,
) -> Alert:
    return Alert(
        site_id=site_id,
        device_id=device_id,
        rule_id=rule_id,
        family=AlertFamily.CUSTODY,
        severity=severity,
        parameter=parameter,
        message=message,
        first_ms=first_ms,
        last_ms=last_ms,
        first_value=value,
        last_value=value,
        worst_value=value,
        worst_ms=last_ms if value is not None else None,
        limit=limit,
        evidence=evidence,
    )


# -- the rule -----------------------------------------------------------------------------------


class CustodyRule:
    """Implements the engine's Rule protocol plus `on_events`. Its in-memory state (door and
    store-room episodes, what the clock last reported) is guarded by its own lock, which is
    never held while calling the engine: the engine calls `observe` under its lock, while the
    clock thread calls `tick` without it, so holding both in turn could deadlock."""

    def __init__(
        self,
        registry: Registry,
        ledger: WasteLedger,
        settings: CustodySettings | None = None,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.settings = settings or default_custody_settings()
        self._lock = threading.Lock()
        self._rooms: dict[str, ThresholdState] = {}
        self._doors: dict[str, _Door] = {}
        self._reported: dict[tuple[str, str], tuple] = {}  # (site, rule) -> what tick raised
        self._state: dict[str, str] | None = None  # persisted clock bookmarks

    # -- store-room telemetry -----------------------------------------------------------------

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            if r.parameter in (ROOM_TEMPERATURE, DOOR_OPEN):
                by_device[r.device_id].append(r)
        if not by_device:
            return
        max_gap_ms = engine.settings.max_gap_s * 1000
        actions: list[_Raise | _Clear] = []
        with self._lock:
            for device_id, rs in by_device.items():
                rs.sort(key=lambda r: r.ts_ms)
                temps = [r for r in rs if r.parameter == ROOM_TEMPERATURE]
                doors = [r for r in rs if r.parameter == DOOR_OPEN]
                if temps:
                    actions += self._room(device_id, temps, max_gap_ms)
                if doors:
                    actions += self._door(device_id, doors)
        self._apply(actions, engine)

    def _room(self, device_id: str, rs: list[Reading], max_gap_ms: int) -> list[_Raise | _Clear]:
        site_id = rs[0].site_id
        held = self.ledger.holding(site_id, rs[0].ts_ms, rs[-1].ts_ms + 1)
        st = self._rooms.setdefault(device_id, ThresholdState())
        out: list[_Raise | _Clear] = []
        update: _Raise | None = None
        for r in rs:
            bags = sum(1 for s, h in held if s <= r.ts_ms and (h is None or r.ts_ms < h))
            if not bags:
                # The rule applies while waste is held: an empty store ends any episode.
                if st.phase in (Phase.ACTIVE, Phase.CLEARING):
                    update = None
                    out.append(_Clear(site_id, device_id, RULE_TEMPERATURE, "no waste held"))
                st = self._rooms[device_id] = ThresholdState(last_ts=max(st.last_ts, r.ts_ms))
                continue
            action = step(
                st, r.ts_ms, r.value, r.flag == VALID_FLAG, self.settings.room, max_gap_ms
            )
            if action is Action.OPEN:
                out.append(_Raise(self._room_alert(site_id, device_id, st, bags), r.value))
            elif action is Action.UPDATE:
                update = _Raise(self._room_alert(site_id, device_id, st, bags), r.value)
            elif action is Action.RESOLVE:
                update = None
                out.append(_Clear(site_id, device_id, RULE_TEMPERATURE, "back below the limit"))
        # One write for a batch of further readings over the limit, not one per reading.
        return out + ([update] if update else [])

    def _room_alert(self, site_id: str, device_id: str, st: ThresholdState, bags: int) -> Alert:
        limit = self.settings.room
        long = st.last_ts - st.episode_start_ms >= limit.critical_after_s * 1000
        severity = Severity.CRITICAL if long or limit.far_out(st.worst_value) else Severity.WARNING
        alert = _custody_alert(
            site_id,
            RULE_TEMPERATURE,
            severity,
            f"store-room temperature {st.worst_value:g} °C above {limit.max:g} °C for"
            f" {(st.last_ts - st.episode_start_ms) // MINUTE_MS} min with {bags} bag(s) held",
            st.episode_start_ms,
            st.last_ts,
            st.last_value,
            limit.as_dict(),
            {
                "readings": {
                    "device_id": device_id,
                    "parameter": ROOM_TEMPERATURE,
                    "from_ms": st.episode_start_ms,
                    "to_ms": st.last_ts,
                },
                "duration_s": (st.last_ts - st.episode_start_ms) // 1000,
                "bags_held": bags,
            },
            device_id=device_id,
            parameter=ROOM_TEMPERATURE,
        )
        alert.first_value, alert.worst_value, alert.worst_ms = (
            st.first_value,
            st.worst_value,
            st.worst_ms,
        )
        alert.count = st.count
        return alert

    def _door(self, device_id: str, rs: list[Reading]) -> list[_Raise | _Clear]:
        site = self.registry.sites[rs[0].site_id]
        d = self._doors.setdefault(device_id, _Door())
        out: list[_Raise | _Clear] = []
        for r in rs:
            if r.ts_ms <= d.last_ts or r.flag != VALID_FLAG:
                continue
            d.last_ts = r.ts_ms
            if r.value >= 0.5 and d.open_since is None:
                d.open_since, d.long_raised = r.ts_ms, False
                if not self._working(r.ts_ms, site.timezone):
                    out.append(_Raise(self._door_hours_alert(site.id, device_id, r.ts_ms)))
            elif r.value < 0.5 and d.open_since is not None:
                why = f"door closed at {ms_to_iso(r.ts_ms)}"
                out += [
                    _Clear(site.id, device_id, RULE_DOOR_LONG, why),
                    _Clear(site.id, device_id, RULE_DOOR_HOURS, why),
                ]
                d.open_since = None
            out += self._door_long(site.id, device_id, d, r.ts_ms)
        return out

    def _door_long(self, site_id: str, device_id: str, d: _Door, now: int) -> list[_Raise]:
        limit_ms = int(self.settings.door_max_open_min * MINUTE_MS)
        if d.open_since is None or d.long_raised or now - d.open_since <= limit_ms:
            return []
        d.long_raised = True
        minutes = (now - d.open_since) // MINUTE_MS
        return [
            _Raise(
                _custody_alert(
                    site_id,
                    RULE_DOOR_LONG,
                    Severity.WARNING,
                    f"store-room door open since {ms_to_iso(d.open_since)} ({minutes} min,"
                    f" limit {self.settings.door_max_open_min:g} min)",
                    d.open_since,
                    now,
                    minutes,
                    self.settings.sources["door"].limit(
                        max_open_minutes=self.settings.door_max_open_min
                    ),
                    {"opened": ms_to_iso(d.open_since), "open_minutes": minutes},
                    device_id=device_id,
                    parameter=DOOR_OPEN,
                ),
                minutes,
            )
        ]

    def _working(self, ms: int, tz: str) -> bool:
        local = datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
        minute = local.hour * 60 + local.minute
        return self.settings.working_from_min <= minute < self.settings.working_to_min

    def _door_hours_alert(self, site_id: str, device_id: str, ts: int) -> Alert:
        s = self.settings
        hours = f"{s.working_from_min // 60:02d}:{s.working_from_min % 60:02d}-" + (
            f"{s.working_to_min // 60:02d}:{s.working_to_min % 60:02d}"
        )
        return _custody_alert(
            site_id,
            RULE_DOOR_HOURS,
            Severity.WARNING,
            f"store-room door opened at {ms_to_iso(ts)}, outside working hours {hours}",
            ts,
            ts,
            None,
            s.sources["door"].limit(working_hours=hours),
            {"opened": ms_to_iso(ts)},
            device_id=device_id,
            parameter=DOOR_OPEN,
        )

    # -- bag events -----------------------------------------------------------------------------

    def on_events(self, events: Sequence[WasteEvent], engine: AlertEngine) -> None:
        """Judge the bags touched by newly recorded events (call after `ledger.record`)."""
        kinds: dict[tuple[str, str], set[WasteEventKind]] = defaultdict(set)
        for e in events:
            kinds[(e.site_id, e.bag_id)].add(e.event)
        manifests: set[tuple[str, str]] = set()
        for (site_id, bag_id), new_kinds in kinds.items():
            bag = self.ledger.bag(site_id, bag_id)
            if bag is None:
                continue
            self._judge_bag(bag, new_kinds, engine)
            if bag.manifest_id is not None:
                manifests.add((site_id, bag.manifest_id))
        for site_id, manifest_id in sorted(manifests):
            self._judge_manifest(site_id, manifest_id, engine)

    def _judge_bag(self, bag: Bag, new: set[WasteEventKind], engine: AlertEngine) -> None:
        s = self.settings
        loss = bag.weight_loss_kg
        if loss is not None and bag.weight_kg and loss > s.bag_tolerance_kg(bag.weight_kg):
            fraction = loss / bag.weight_kg
            severity = Severity.CRITICAL if fraction >= s.critical_fraction else Severity.WARNING
            entry = bag_evidence(bag) | {"loss_kg": round(loss, 3), "loss_fraction": fraction}
            self._accumulate(
                engine,
                bag,
                RULE_WEIGHT,
                severity,
                f"bag {bag.bag_id}: {bag.weight_kg:g} kg recorded by the hospital,"
                f" {bag.handed_kg:g} kg at handover ({loss:.2f} kg lost)",
                loss,
                s.sources["weight"].limit(
                    tolerance_fraction=s.tolerance_fraction, tolerance_kg=s.tolerance_kg
                ),
                entry,
            )
        max_ms = s.storage_max_h * HOUR_MS
        if (
            WasteEventKind.HANDED_OVER in new
            and bag.stored_ms is not None
            and bag.handed_ms is not None
            and bag.handed_ms - bag.stored_ms > max_ms
        ):
            # Found only now (the scans came late): the violation happened all the same.
            hours = (bag.handed_ms - bag.stored_ms) / HOUR_MS
            self._accumulate(
                engine,
                bag,
                RULE_STORAGE,
                Severity.CRITICAL,
                f"bag {bag.bag_id} was held {hours:.1f} h before handover"
                f" (limit {s.storage_max_h:g} h)",
                hours,
                s.sources["storage"].limit(max_hours=s.storage_max_h),
                bag_evidence(bag) | {"held_hours": round(hours, 2)},
            )
        if bag.duplicates:
            counts = Counter(e.event for e in self.ledger.chain(bag.site_id, bag.bag_id))
            repeated = sorted(str(k) for k, n in counts.items() if n > 1 and k in new)
            if repeated:
                self._accumulate(
                    engine,
                    bag,
                    RULE_DUPLICATE,
                    Severity.WARNING,
                    f"bag id {bag.bag_id} scanned again as {', '.join(repeated)}",
                    None,
                    s.sources["handover"].limit(),
                    bag_evidence(bag)
                    | {"repeated": {k: counts[WasteEventKind(k)] for k in repeated}},
                )
        if bag.category_changed:
            self._accumulate(
                engine,
                bag,
                RULE_CATEGORY,
                Severity.WARNING,
                f"bag {bag.bag_id} changed category along its chain: {' → '.join(bag.categories)}",
                None,
                s.sources["handover"].limit(),
                bag_evidence(bag) | {"categories": list(bag.categories)},
            )

    def _judge_manifest(self, site_id: str, manifest_id: str, engine: AlertEngine) -> None:
        m = self.ledger.manifest(site_id, manifest_id)
        s = self.settings
        if m is None or not m.weighed_bags or m.loss_kg <= s.manifest_tolerance(m.hospital_kg):
            return
        fraction = m.loss_kg / m.hospital_kg
        entry = {
            "manifest_id": manifest_id,
            "bags": m.bags,
            "weighed_bags": m.weighed_bags,
            "hospital_kg": round(m.hospital_kg, 3),
            "handed_kg": round(m.handed_kg, 3),
            "loss_kg": round(m.loss_kg, 3),
            "loss_fraction": fraction,
            "bag_ids": list(m.bag_ids),
        }
        now = engine.clock()
        alert = _custody_alert(
            site_id,
            RULE_MANIFEST,
            Severity.CRITICAL if fraction >= s.critical_fraction else Severity.WARNING,
            f"manifest {manifest_id}: {m.hospital_kg:.2f} kg recorded, {m.handed_kg:.2f} kg handed"
            f" over ({m.loss_kg:.2f} kg lost over {m.weighed_bags} bags)",
            now,
            now,
            m.loss_kg,
            s.sources["weight"].limit(
                manifest_tolerance_fraction=s.manifest_tolerance_fraction,
                manifest_tolerance_kg=s.manifest_tolerance_kg,
            ),
            {"manifests": _merged(engine, site_id, RULE_MANIFEST, "manifests", manifest_id, entry)},
        )
        engine.raise_alert(alert, m.loss_kg)

    def _accumulate(
        self,
        engine: AlertEngine,
        bag: Bag,
        rule_id: str,
        severity: Severity,
        message: str,
        value: float | None,
        limit: dict,
        entry: dict,
    ) -> None:
        """Open the site's alert for the rule, or add this bag to the one already open."""
        t = max(x for x in (bag.collected_ms, bag.stored_ms, bag.handed_ms) if x is not None)
        bags = _merged(engine, bag.site_id, rule_id, "bags", bag.bag_id, entry)
        alert = _custody_alert(
            bag.site_id, rule_id, severity, message, t, t, value, limit, {"bags": bags}
        )
        engine.raise_alert(alert, value)

    # -- the clock ----------------------------------------------------------------------------

    def tick(self, now: int, engine: AlertEngine) -> None:
        held = self.ledger.held_bags()
        actions: list[_Raise | _Clear] = []
        with self._lock:
            state = self._bookmarks(engine)
            saves: dict[str, str | None] = {}
            actions += self._held(now, held, engine)
            actions += self._unrecorded(now, state, saves)
            actions += self._daily_drop(now, state, saves, engine)
            for device_id, d in self._doors.items():
                site_id = self.registry.devices[device_id].site_id
                actions += self._door_long(site_id, device_id, d, now)
        if saves:
            engine.store.save_state(STATE_NS, saves)
        self._apply(actions, engine)

    def _bookmarks(self, engine: AlertEngine) -> dict[str, str]:
        if self._state is None:
            self._state = engine.store.load_state(STATE_NS)
        return self._state

    def _medical_sites(self) -> list[str]:
        return sorted(s.id for s in self.registry.sites.values() if s.kind == SiteKind.MEDICAL)

    def _held(self, now: int, held: list[Bag], engine: AlertEngine) -> list[_Raise | _Clear]:
        s = self.settings
        by_site: dict[str, list[Bag]] = defaultdict(list)
        for b in held:
            by_site[b.site_id].append(b)
        out: list[_Raise | _Clear] = []
        for site_id in sorted(set(by_site) | set(self._medical_sites())):
            bags = by_site.get(site_id, [])
            due = [b for b in bags if now - _since_ms(b, True, now) > s.storage_warn_h * HOUR_MS]
            over = [b for b in due if now - _since_ms(b, True, now) > s.storage_max_h * HOUR_MS]
            out += self._state_rule(site_id, RULE_STORAGE, due, over, now, engine)
            late = [
                b
                for b in bags
                if b.stored_ms is None and now - _since_ms(b, False, now) > s.not_stored_h * HOUR_MS
            ]
            out += self._state_rule(site_id, RULE_NOT_STORED, late, [], now, engine)
        return out

    def _state_rule(
        self,
        site_id: str,
        rule_id: str,
        bags: list[Bag],
        critical: list[Bag],
        now: int,
        engine: AlertEngine,
    ) -> list[_Raise | _Clear]:
        """An alert that stands while some bags are in a state (held too long, not stored) and
        clears when none are; raised again only when the bags or the severity change."""
        key = (site_id, rule_id)
        if not bags:
            self._reported.pop(key, None)
            if engine.is_open(site_id, None, rule_id):
                return [_Clear(site_id, None, rule_id, "no bag in that state any more")]
            return []
        severity = Severity.CRITICAL if critical else Severity.WARNING
        signature = (tuple(sorted(b.bag_id for b in bags)), severity)
        if self._reported.get(key) == signature and engine.is_open(site_id, None, rule_id):
            return []
        self._reported[key] = signature
        s = self.settings
        storage = rule_id == RULE_STORAGE
        since = [_since_ms(b, storage, now) for b in bags]
        oldest = bags[since.index(min(since))]
        hours = (now - min(since)) / HOUR_MS
        kg = sum(b.weight_kg or 0.0 for b in bags)
        # The engine keeps an alert's first message: name what stays true while it is open
        # (the oldest bag); counts, weights and ages go to the evidence, updated every change.
        if storage:
            message = (
                f"medical waste held in the store beyond the {s.storage_warn_h:g} h warning"
                f" (limit {s.storage_max_h:g} h): oldest bag {oldest.bag_id} stored"
                f" {ms_to_iso(min(since))}"
            )
            limit = s.sources["storage"].limit(
                warn_hours=s.storage_warn_h, max_hours=s.storage_max_h
            )
            start = min(since) + int(s.storage_warn_h * HOUR_MS)
        else:
            message = (
                f"bags collected but not in the store after {s.not_stored_h:g} h: oldest bag"
                f" {oldest.bag_id} collected {ms_to_iso(min(since))}"
            )
            limit = s.sources["not_stored"].limit(max_hours=s.not_stored_h)
            start = min(since) + int(s.not_stored_h * HOUR_MS)
        entries = {
            b.bag_id: bag_evidence(b)
            | {"hours": round((now - _since_ms(b, storage, now)) / HOUR_MS, 2)}
            for b in bags
        }
        evidence = {
            "bags": entries,
            "total_kg": round(kg, 3),
            "beyond_limit": sorted(b.bag_id for b in critical),
        }
        alert = _custody_alert(
            site_id, rule_id, severity, message, start, now, hours, limit, evidence
        )
        return [_Raise(alert, hours)]

    def _unrecorded(
        self, now: int, state: dict[str, str], saves: dict[str, str | None]
    ) -> list[_Raise | _Clear]:
        """Handovers whose grace for late scans ended since the last tick, still lacking a
        collection or storage record. The bookmark is persisted, so none is judged twice."""
        s = self.settings
        checked = int(state.get("handover_checked_ms", "0"))
        upto = now - int(s.handover_grace_min * MINUTE_MS)
        if upto <= checked:
            return []
        state["handover_checked_ms"] = saves["handover_checked_ms"] = str(upto)
        by_site: dict[str, list[Bag]] = defaultdict(list)
        for b in self.ledger.incomplete_handovers(checked, upto):
            by_site[b.site_id].append(b)
        out: list[_Raise | _Clear] = []
        for site_id, bags in sorted(by_site.items()):
            entries = {}
            for b in bags:
                missing = [
                    name
                    for name, t in (("collection", b.collected_ms), ("storage", b.stored_ms))
                    if t is None
                ]
                entries[b.bag_id] = bag_evidence(b) | {"missing": missing}
            kg = sum(b.handed_kg or 0.0 for b in bags)
            first = min(b.handed_ms for b in bags if b.handed_ms is not None)
            alert = _custody_alert(
                site_id,
                RULE_UNRECORDED,
                Severity.CRITICAL,
                f"{len(bags)} bag(s) ({kg:.2f} kg) handed over without a collection or storage"
                f" record",
                first,
                now,
                kg,
                s.sources["handover"].limit(grace_minutes=s.handover_grace_min),
                {"bags": entries},
            )
            out.append(_Raise(alert, kg))
        return out

    def _daily_drop(
        self, now: int, state: dict[str, str], saves: dict[str, str | None], engine: AlertEngine
    ) -> list[_Raise | _Clear]:
        """Once a local day is over (plus the settle time for late scans), compare its collected
        weight with the median of the site's previous days with waste."""
        s = self.settings
        out: list[_Raise | _Clear] = []
        for site_id in self._medical_sites():
            tz = self.registry.sites[site_id].timezone
            day = local_day(now - int(s.settle_h * HOUR_MS), tz) - timedelta(days=1)
            key = f"daily_drop|{site_id}"
            if key in state and date.fromisoformat(state[key]) >= day:
                continue
            state[key] = saves[key] = day.isoformat()
            first = day - timedelta(days=s.baseline_days)
            per_day: dict[date, float] = defaultdict(float)
            for t in self.ledger.daily_totals(site_id, first, day, tz):
                per_day[t.day] += t.weight_kg
            history = [
                per_day[first + timedelta(days=i)]
                for i in range(s.baseline_days)
                if per_day[first + timedelta(days=i)] > 0
            ]
            if len(history) < s.min_history_days:
                continue
            baseline = statistics.median(history)
            total = per_day[day]
            if total < s.drop_ratio * baseline:
                start_ms, end_ms = local_day_bounds(day, day, tz)
                alert = _custody_alert(
                    site_id,
                    RULE_DROP,
                    Severity.WARNING,
                    f"{day.isoformat()}: {total:.1f} kg of medical waste recorded, below"
                    f" {s.drop_ratio:.0%} of the site's median {baseline:.1f} kg/day",
                    start_ms,
                    end_ms - 1,
                    total,
                    s.sources["daily_drop"].limit(
                        ratio=s.drop_ratio, baseline_days=s.baseline_days
                    ),
                    {
                        "day": day.isoformat(),
                        "day_kg": round(total, 3),
                        "baseline_kg": round(baseline, 3),
                        "history_kg": {
                            d.isoformat(): round(kg, 3) for d, kg in sorted(per_day.items())
                        },
                    },
                )
                out.append(_Raise(alert, total))
            elif engine.is_open(site_id, None, RULE_DROP):
                out.append(
                    _Clear(site_id, None, RULE_DROP, f"{day.isoformat()}: back near the baseline")
                )
        return out

    # -- delivery -----------------------------------------------------------------------------

    @staticmethod
    def _apply(actions: list[_Raise | _Clear], engine: AlertEngine) -> None:
        for a in actions:
            if isinstance(a, _Raise):
                engine.raise_alert(a.alert, a.value)
            else:
                engine.clear_alert(a.site_id, a.device_id, a.rule_id, a.why)


def _since_ms(bag: Bag, storage: bool, now: int) -> int:
    """When the bag entered the state a rule watches: stored (`storage`) or collected; `now`
    for a bag that has no such scan, so it is never overdue."""
    t = bag.stored_ms if storage else bag.collected_ms
    return now if t is None else t


def _merged(
    engine: AlertEngine, site_id: str, rule_id: str, key: str, item_id: str, entry: dict
) -> dict:
    """The evidence entries of the rule's open alert at the site, with this one added: the
    engine replaces an evidence key on update, so the alert keeps every bag only if each
    update carries them all."""
    q = AlertQuery(site_ids=(site_id,), rule_id=rule_id, statuses=OPEN_STATUSES, limit=1)
    current = engine.store.list_alerts(q)
    entries = dict(current[0].evidence.get(key, {})) if current else {}
    entries[item_id] = entry
    return entries
