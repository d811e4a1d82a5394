"""Tank cleaning and disinfection: a drinking-water storage tank not cleaned and disinfected
within its interval (alerts/data/tanks.toml) raises an alert for its site, on the clock; a new
record clears it. Tanks are those the register has records of (domain.tanks, store.tank_log)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alerts.settings_files import check_like, packaged_toml, read_toml
from domain.model import Alert, AlertFamily, Reading, Severity
from domain.registry import Registry
from domain.tanks import Tank, TankEvent, derive_tank
from domain.timeutil import ms_to_iso
from store.tank_log import TankLog

if TYPE_CHECKING:
    from alerts.engine import AlertEngine

RULE_PREFIX = "tank:cleaning_overdue"
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TankSettings:
    interval_days: float
    kinds: tuple[str, ...]
    critical_after_days: float
    source: str
    confidence: str

    @classmethod
    def load(cls) -> TankSettings:
        """The config dir's tanks.toml or the packaged one; SettingsError if it is wrong."""
        file, doc = read_toml("tanks.toml")
        check_like(doc, packaged_toml("tanks.toml"), file)
        interval, overdue = doc["interval"], doc["overdue"]
        return cls(
            interval_days=float(interval["days"]),
            kinds=tuple(interval["kinds"]),
            critical_after_days=float(overdue["critical_after_days"]),
            source=" ".join(interval["source"].split()),
            confidence=interval["confidence"],
        )


class TankRule:
    """Implements the engine's Rule protocol plus `on_events` (after the tank log recorded them).
    The register is read once, at the first tick; later records arrive through `on_events`."""

    def __init__(self, registry: Registry, log: TankLog, settings: TankSettings) -> None:
        self.registry = registry
        self.log = log
        self.settings = settings
        self._tanks: dict[tuple[str, str], Tank] | None = None
        self._raised: dict[tuple[str, str], bool] = {}  # (site, rule) -> raised as critical

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None:
        """Tanks are judged on records and on the clock, not on readings."""

    def on_events(self, events: Sequence[TankEvent], engine: AlertEngine) -> None:
        tanks = self._loaded()
        touched = {(e.site_id, e.tank_id) for e in events}
        for site_id, tank_id in sorted(touched):
            old = tanks.get((site_id, tank_id))
            mine = [e for e in events if (e.site_id, e.tank_id) == (site_id, tank_id)]
            new = derive_tank(site_id, tank_id, mine)
            tanks[(site_id, tank_id)] = new if old is None else _newest(old, new)
            self._judge(tanks[(site_id, tank_id)], engine.clock(), engine)

    def tick(self, now: int, engine: AlertEngine) -> None:
        for tank in self._loaded().values():
            self._judge(tank, now, engine)

    def _loaded(self) -> dict[tuple[str, str], Tank]:
        if self._tanks is None:
            self._tanks = {(t.site_id, t.tank_id): t for t, _ in self.log.tanks()}
        return self._tanks

    def _judge(self, tank: Tank, now: int, engine: AlertEngine) -> None:
        site = self.registry.sites.get(tank.site_id)
        if site is None or site.kind not in self.settings.kinds:
            return
        rule_id = f"{RULE_PREFIX}:{tank.tank_id}"
        # Due an interval after both jobs were last done; with one job only on record, an
        # interval after that one.
        done = tank.serviced_ms
        if done is None:
            done = tank.cleaned_ms if tank.cleaned_ms is not None else tank.disinfected_ms
        if done is None:
            return
        due = done + int(self.settings.interval_days * DAY_MS)
        if now <= due:
            self._raised.pop((site.id, rule_id), None)
            if engine.is_open(site.id, None, rule_id):
                engine.clear_alert(site.id, None, rule_id, "tank cleaned and disinfected")
            return
        late_ms = now - due
        critical = late_ms >= self.settings.critical_after_days * DAY_MS
        key = (site.id, rule_id)
        if self._raised.get(key) == critical and engine.is_open(site.id, None, rule_id):
            return  # raised already; updated again only when it turns critical
        self._raised[key] = critical
        engine.raise_alert(self._alert(site.id, rule_id, tank, due, now, late_ms, critical))

    def _alert(
        self, site_id: str, rule_id: str, tank: Tank, due: int, now: int, late: int, critical: bool
    ) -> Alert:
        s = self.settings
        days = late / DAY_MS
        return Alert(
            site_id=site_id,
            device_id=None,
            rule_id=rule_id,
            family=AlertFamily.COMPLIANCE,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            parameter=None,
            message=(
                f"tank {tank.tank_id} not cleaned and disinfected within {s.interval_days:g} days"
                f" (due {ms_to_iso(due)}, {days:.1f} days late)"
            ),
            first_ms=due,
            last_ms=now,
            first_value=None,
            last_value=round(days, 2),
            worst_value=round(days, 2),
            worst_ms=now,
            limit={
                "max": s.interval_days,
                "unit": "d",
                "text": f"≤{s.interval_days:g} d",
                "standard": "drinking-water tank hygiene (alerts/data/tanks.toml)",
                "clause": s.source,
                "confidence": s.confidence,
            },
            evidence={
                "tank_id": tank.tank_id,
                "cleaned": ms_to_iso(tank.cleaned_ms) if tank.cleaned_ms is not None else None,
                "disinfected": (
                    ms_to_iso(tank.disinfected_ms) if tank.disinfected_ms is not None else None
                ),
                "due": ms_to_iso(due),
                "days_late": round(days, 2),
            },
        )


def _newest(a: Tank, b: Tank) -> Tank:
    def later(x: int | None, y: int | None) -> int | None:
        return y if x is None else x if y is None else max(x, y)

    return Tank(
        a.site_id,
        a.tank_id,
        later(a.cleaned_ms, b.cleaned_ms),
        later(a.disinfected_ms, b.disinfected_ms),
    )
