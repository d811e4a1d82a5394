"""The alert engine: judges stored readings against each site's limits, keeps one alert per
(subject, rule) episode, runs time-driven rules on a clock, and tells the sinks of every change.

Called from the ingest worker (on_readings), a clock thread (tick) and the API (inspector
actions); one lock serialises them. State that must survive a restart (threshold phases, open
alerts) is written in the same transaction as the alerts it produced."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Protocol

from alerts.settings_files import STRICT, checked, read_toml
from alerts.threshold import Action, Phase, ThresholdState, step
from domain.limits import Limit, Profile, limits_for_site
from domain.model import VALID_FLAG, Alert, AlertFamily, AlertStatus, Reading, Severity
from domain.params import Catalogue
from domain.registry import Registry
from domain.timeutil import now_ms
from store.base import AlertChange, AlertStore, ReadingStore, StoreUnavailable

log = logging.getLogger("landun.alerts")

STATE_NS = "threshold"


class EngineStore(AlertStore, ReadingStore, Protocol):
    """What the engine and its rules use: alerts with the engine's checkpoint, and stored
    readings for the rules that look back (alerts.cycles)."""


class AlertSink(Protocol):
    """Somewhere alert changes go: the MQTT alerts topic, webhooks, the API's live stream."""

    def alert_changed(self, alert: Alert, action: str) -> None: ...


class Rule(Protocol):
    """A rule beyond the range limits: detectors, offline devices, custody. `observe` sees every
    batch of new readings; `tick` runs on the clock, so silence can raise an alert too."""

    def observe(self, readings: Sequence[Reading], engine: AlertEngine) -> None: ...

    def tick(self, now: int, engine: AlertEngine) -> None: ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """alerts/data/engine.toml, where each setting says why."""

    __pydantic_config__ = STRICT

    max_gap_s: int
    renotify_s: int
    source: str = ""
    confidence: str = ""

    @classmethod
    def load(cls) -> EngineSettings:
        """The config dir's engine.toml or the packaged one; SettingsError if it is wrong."""
        file, doc = read_toml("engine.toml")
        return checked(cls, doc, file)


class AlertEngine:
    def __init__(
        self,
        store: EngineStore,
        registry: Registry,
        profiles: dict[str, Profile],
        catalogue: Catalogue,
        sinks: Sequence[AlertSink] = (),
        settings: EngineSettings | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.registry = registry
        self.profiles = profiles
        self.catalogue = catalogue
        self.sinks = list(sinks)
        self.rules: list[Rule] = []
        self.settings = settings or EngineSettings.load()
        self.clock = clock
        self._lock = threading.RLock()
        self._limits: dict[str, dict[str, Limit]] = {}
        self._states: dict[str, ThresholdState] = {
            k: ThresholdState.from_json(json.loads(v))
            for k, v in store.load_state(STATE_NS).items()
        }
        self._open: dict[tuple[str, str | None, str], Alert] = {
            (a.site_id, a.device_id, a.rule_id): a for a in store.open_alerts()
        }
        self._last_notified: dict[int, int] = {}
        self._unsaved: list[AlertChange] = []
        self._batch: list[AlertChange] | None = None
        self._unsaved_state: dict[str, str | None] = {}

    # -- evaluation on arrival ------------------------------------------------------------------

    def site_limits(self, site_id: str) -> dict[str, Limit]:
        limits = self._limits.get(site_id)
        if limits is None:
            limits = limits_for_site(self.registry.sites[site_id], self.profiles)
            self._limits[site_id] = limits
        return limits

    def forget_limits(self, site_id: str) -> None:
        """The site's profile or overrides changed: look its limits up again."""
        with self._lock:
            self._limits.pop(site_id, None)

    def on_readings(self, readings: Sequence[Reading]) -> None:
        changes: list[AlertChange] = []
        dirty: dict[str, str | None] = {}
        max_gap_ms = self.settings.max_gap_s * 1000
        with self._lock:
            self._batch = changes
            try:
                for rule in self.rules:
                    rule.observe(readings, self)
            finally:
                self._batch = None
            states = self._states
            site_limits = self._limits.get
            normal = Phase.NORMAL
            for r in sorted(readings, key=_sensor_time):
                limit = (site_limits(r.site_id) or self.site_limits(r.site_id)).get(r.parameter)
                if limit is None:
                    continue
                key = f"{r.device_id}|{r.parameter}"
                st = states.get(key)
                if st is None:
                    st = states[key] = ThresholdState()
                before = st.phase
                if before is normal and (r.flag != VALID_FLAG or not limit.violated(r.value)):
                    # What step() does here, without the call: nearly every reading is this one.
                    if r.ts_ms > st.last_ts:
                        st.last_ts = r.ts_ms
                    continue
                action = step(st, r.ts_ms, r.value, r.flag == VALID_FLAG, limit, max_gap_ms)
                if action is not Action.NONE:
                    change = self._apply(action, r, st, limit)
                    if change is not None:
                        changes.append(change)
                if st.phase is not Phase.NORMAL or before is not Phase.NORMAL:
                    dirty[key] = json.dumps(st.to_json()) if st.phase is not Phase.NORMAL else None
            if changes or dirty or self._unsaved:
                self._announce(self._save(changes, dirty))

    def _apply(
        self, action: Action, r: Reading, st: ThresholdState, limit: Limit
    ) -> AlertChange | None:
        key = (r.site_id, r.device_id, f"range:{r.parameter}")
        alert = self._open.get(key)
        if action is Action.RESOLVE:
            if alert is None:
                return None
            alert.status = AlertStatus.RESOLVED
            alert.resolved_ms = r.ts_ms
            alert.evidence["excluded_flagged"] = st.excluded
            del self._open[key]
            return AlertChange(
                alert, "resolved", comment="back inside the limit for the clear time"
            )
        if alert is None:
            alert = self._new_range_alert(r, st, limit)
            self._open[key] = alert
            return AlertChange(alert, "opened")
        _update_from_state(alert, st)
        if alert.severity is Severity.WARNING and self._is_critical(alert, limit):
            alert.severity = Severity.CRITICAL
            return AlertChange(alert, "escalated", comment="breach far or long: critical")
        return AlertChange(alert, None)

    def _new_range_alert(self, r: Reading, st: ThresholdState, limit: Limit) -> Alert:
        param = self.catalogue.parameters.get(r.parameter)
        name = param.name_en if param else r.parameter
        alert = Alert(
            site_id=r.site_id,
            device_id=r.device_id,
            rule_id=f"range:{r.parameter}",
            # An advisory band (water temperature) is information for the inspector, not a
            # breach of a limit: it must not mark the site 超标.
            family=AlertFamily.QUALITY if limit.advisory else AlertFamily.COMPLIANCE,
            severity=Severity.WARNING,
            parameter=r.parameter,
            message=(
                f"{name} {st.worst_value:g} {limit.unit_label} outside {limit.describe()}"
                f" for {(st.last_ts - st.episode_start_ms) // 60000} min ({limit.standard})"
            ),
            first_ms=st.episode_start_ms,
            last_ms=st.last_ts,
            limit=limit.as_dict(),
            opened_ms=self.clock(),
        )
        _update_from_state(alert, st)
        if self._is_critical(alert, limit):
            alert.severity = Severity.CRITICAL
        return alert

    @staticmethod
    def _is_critical(alert: Alert, limit: Limit) -> bool:
        if limit.advisory:
            return False
        long = alert.last_ms - alert.first_ms >= limit.critical_after_s * 1000
        return long or (alert.worst_value is not None and limit.far_out(alert.worst_value))

    # -- open alerts from other rules (detectors, custody, offline) -----------------------------

    def raise_alert(self, alert: Alert, value: float | None = None) -> Alert:
        """Open an alert, or update the open one of the same (subject, rule)."""
        with self._lock:
            key = (alert.site_id, alert.device_id, alert.rule_id)
            current = self._open.get(key)
            if current is None:
                alert.opened_ms = alert.opened_ms or self.clock()
                self._open[key] = alert
                change = AlertChange(alert, "opened")
            else:
                current.last_ms = max(current.last_ms, alert.last_ms)
                current.last_value = value if value is not None else current.last_value
                current.count += 1
                current.evidence.update(alert.evidence)
                change = AlertChange(current, None)
                if current.severity is Severity.WARNING and alert.severity is Severity.CRITICAL:
                    current.severity = Severity.CRITICAL
                    change = AlertChange(current, "escalated")
            self._commit([change])
            return change.alert

    def clear_alert(self, site_id: str, device_id: str | None, rule_id: str, why: str) -> None:
        with self._lock:
            alert = self._open.pop((site_id, device_id, rule_id), None)
            if alert is None:
                return
            alert.status = AlertStatus.RESOLVED
            alert.resolved_ms = self.clock()
            self._commit([AlertChange(alert, "resolved", comment=why)])

    def open_alerts(self, rule_prefixes: tuple[str, ...]) -> list[Alert]:
        """Open alerts whose rule id starts with one of the prefixes (a rule's own, at start)."""
        with self._lock:
            return [a for a in self._open.values() if a.rule_id.startswith(rule_prefixes)]

    def is_open(self, site_id: str, device_id: str | None, rule_id: str) -> bool:
        return (site_id, device_id, rule_id) in self._open

    # -- the clock ------------------------------------------------------------------------------

    def tick(self, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        if self._unsaved:
            with self._lock:
                self._announce(self._save([]))
        for rule in self.rules:
            rule.tick(now, self)
        with self._lock:
            due = [
                a
                for a in self._open.values()
                if a.severity is Severity.CRITICAL
                and a.status is AlertStatus.OPEN
                and now - self._last_notified.get(a.id or 0, a.opened_ms)
                >= self.settings.renotify_s * 1000
            ]
            for a in due:
                self._last_notified[a.id or 0] = now
            if due:
                self._announce([AlertChange(a, "renotified") for a in due])

    # -- inspector actions ----------------------------------------------------------------------

    def acknowledge(self, alert_id: int, actor: str, comment: str = "") -> Alert:
        return self._inspector_action(alert_id, actor, "acknowledged", comment)

    def resolve(self, alert_id: int, actor: str, comment: str = "") -> Alert:
        return self._inspector_action(alert_id, actor, "resolved", comment)

    def comment(self, alert_id: int, actor: str, comment: str) -> Alert:
        return self._inspector_action(alert_id, actor, "commented", comment)

    def _inspector_action(self, alert_id: int, actor: str, action: str, comment: str) -> Alert:
        """Applied to a copy and written before the engine adopts it: if the store fails, the
        inspector gets the error and nothing has changed."""
        with self._lock:
            current = next((a for a in self._open.values() if a.id == alert_id), None)
            if current is None:
                current = self.store.get_alert(alert_id)
            if current is None:
                raise KeyError(f"alert {alert_id} does not exist")
            alert = replace(current, evidence=dict(current.evidence))
            if action != "commented" and alert.status is AlertStatus.RESOLVED:
                raise ValueError(f"alert {alert_id} is already resolved")
            if action == "acknowledged":
                if alert.status is AlertStatus.ACKNOWLEDGED:
                    raise ValueError(f"alert {alert_id} is already acknowledged")
                alert.status = AlertStatus.ACKNOWLEDGED
            elif action == "resolved":
                alert.status = AlertStatus.RESOLVED
                alert.resolved_ms = self.clock()
            change = AlertChange(alert, action, actor=actor, comment=comment)
            state = self._state_reset(alert) if action == "resolved" else None
            self.store.save_alerts([change], STATE_NS, state)
            key = (alert.site_id, alert.device_id, alert.rule_id)
            if key in self._open:
                if alert.status is AlertStatus.RESOLVED:
                    del self._open[key]
                    st = self._states.get(f"{alert.device_id}|{alert.parameter}")
                    if st is not None:
                        st.phase = Phase.NORMAL
                else:
                    self._open[key] = alert
            self._announce([change])
            return alert

    @staticmethod
    def _state_reset(alert: Alert) -> dict[str, str | None] | None:
        """A manual resolve ends the episode: a violation that goes on starts a new one."""
        if not alert.rule_id.startswith("range:") or alert.device_id is None:
            return None
        return {f"{alert.device_id}|{alert.parameter}": None}

    # -- persistence ----------------------------------------------------------------------------

    def _commit(self, changes: list[AlertChange]) -> None:
        """Write and announce now, or, while a batch of readings is being judged, with the
        batch: one transaction per batch however many readings the rules act on."""
        if self._batch is not None:
            self._batch.extend(changes)
        else:
            self._announce(self._save(changes))

    def _save(
        self, changes: list[AlertChange], state: dict[str, str | None] | None = None
    ) -> list[AlertChange]:
        """Write these changes together with any a failed write left over; return what was
        written. While the store is unavailable, decisions wait here for the next write, so an
        alert decided in memory is never lost."""
        pending = self._unsaved + changes
        pending_state = self._unsaved_state | (state or {})
        try:
            self.store.save_alerts(_dedupe(pending), STATE_NS, pending_state)
        except StoreUnavailable as exc:
            self._unsaved, self._unsaved_state = pending, pending_state
            log.warning("alert changes kept for the next write (%d waiting): %s", len(pending), exc)
            return []
        self._unsaved, self._unsaved_state = [], {}
        return pending

    # -- delivery -------------------------------------------------------------------------------

    def _announce(self, changes: Iterable[AlertChange]) -> None:
        for ch in changes:
            if ch.action is None:
                continue
            for sink in self.sinks:
                try:
                    sink.alert_changed(ch.alert, ch.action)
                except Exception:
                    # A failing sink must not stop evaluation; sinks record their own failures.
                    log.exception("alert sink %r failed", sink)


_sensor_time = attrgetter("ts_ms")


def _update_from_state(alert: Alert, st: ThresholdState) -> None:
    alert.first_ms = st.episode_start_ms
    alert.last_ms = st.last_ts
    alert.first_value = st.first_value
    alert.last_value = st.last_value
    alert.worst_value = st.worst_value
    alert.worst_ms = st.worst_ms
    alert.count = st.count
    alert.evidence = {
        "readings": {
            "device_id": alert.device_id,
            "parameter": alert.parameter,
            "from_ms": st.episode_start_ms,
            "to_ms": st.last_ts,
        },
        "duration_s": (st.last_ts - st.episode_start_ms) // 1000,
        "excluded_flagged": st.excluded,
    }


def _dedupe(changes: list[AlertChange]) -> list[AlertChange]:
    """Several readings of a batch may touch one alert: write each once, keeping every audited
    transition and the last plain update."""
    out: list[AlertChange] = []
    last_plain: dict[int, int] = {}
    for ch in changes:
        if ch.action is None:
            ident = id(ch.alert)
            if ident in last_plain:
                out[last_plain[ident]] = ch
                continue
            last_plain[ident] = len(out)
        out.append(ch)
    return out
