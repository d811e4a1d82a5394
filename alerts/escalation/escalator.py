"""The escalator: tells people about open alerts, level by level, while nobody acknowledges them.

It runs on the alert engine's clock (a `Rule` whose `tick` looks at every open alert) and on alert
changes (an `AlertSink`: level 0 goes out as soon as an alert opens). It keeps nothing in memory:
which level each alert reached lives in the store, and each (alert, level) is claimed there
atomically, together with its audit entries, before its notices go to the outbox. So a restart
neither resends nor skips a level, any number of alert processes may run it at once, and an
alert acknowledged or resolved is never claimed again (the claim checks the alert is open).
A process that stops between the claim and handing the notices over loses that level's notices:
the audit trail says they were queued, and the outbox's own record says what was delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, time
from typing import Protocol
from zoneinfo import ZoneInfo

from alerts.channels.base import Notice, Recipient
from alerts.escalation.people import PeopleStore, Person, people_for
from alerts.escalation.policy import EscalationSettings, Level, Policy
from domain.model import Alert, AlertStatus, Reading, Severity, Site
from domain.notify import ESCALATION_ACTOR
from domain.registry import Registry
from domain.rule_names import rule_name
from domain.timeutil import now_ms
from store.base import AlertReader, AuditEntry, StoreUnavailable

log = logging.getLogger("landun.escalation")

ACTOR = ESCALATION_ACTOR
# Audit actions (the dashboard names them in api/static/i18n.js).
LEVEL_REACHED = "notification_level"
QUEUED = "notification_queued"
SKIPPED = "notification_skipped"
FAILED = "notification_failed"
SENT = "notification_sent"

_SEVERITY_ZH = {Severity.WARNING: "警告", Severity.CRITICAL: "严重"}


class Submitter(Protocol):
    """What the escalator needs of an outbox (alerts.channels.base.Outbox)."""

    def submit(self, notice: Notice) -> bool: ...


class EscalationStore(AlertReader, PeopleStore, Protocol):
    """The open alerts, the levels they reached and the people to notify."""


class Escalator:
    def __init__(
        self,
        store: EscalationStore,
        registry: Registry,
        outbox: Submitter,
        settings: EscalationSettings | None = None,
        clock: Callable[[], int] = now_ms,
        dashboard_url: str = "",
    ) -> None:
        self.store = store
        self.registry = registry
        self.outbox = outbox
        self.settings = settings or EscalationSettings.load(registry)
        self.clock = clock
        self.dashboard_url = dashboard_url.rstrip("/")

    @classmethod
    def attach(cls, engine, outbox: Submitter, dashboard_url: str = "") -> Escalator:
        """An escalator on the engine's store, registry and clock, run by its tick and told of
        its alert changes."""
        esc = cls(engine.store, engine.registry, outbox, clock=engine.clock,
                  dashboard_url=dashboard_url)  # fmt: skip
        engine.rules.append(esc)
        engine.sinks.append(esc)
        return esc

    # -- the engine's hooks ---------------------------------------------------------------------

    def observe(self, readings: Sequence[Reading], engine: object = None) -> None:
        """Readings change nothing here: only time and alert changes do."""

    def tick(self, now: int, engine: object = None) -> None:
        try:
            alerts = [a for a in self.store.open_alerts() if a.status is AlertStatus.OPEN]
            steps = self.store.escalation_steps([a.id for a in alerts if a.id is not None])
            for alert in alerts:
                self.advance(alert, now, steps.get(alert.id or 0, {}))
        except StoreUnavailable as exc:
            log.warning("escalation waits for the store: %s", exc)

    def alert_changed(self, alert: Alert, action: str) -> None:
        if action != "opened" or alert.id is None or alert.status is not AlertStatus.OPEN:
            return
        try:
            self.advance(
                alert, self.clock(), self.store.escalation_steps([alert.id]).get(alert.id, {})
            )
        except StoreUnavailable as exc:
            log.warning("escalation of alert %s waits for the store: %s", alert.id, exc)

    # -- escalation -----------------------------------------------------------------------------

    def advance(self, alert: Alert, now: int, reached: dict[int, int]) -> None:
        """Claim and notify every level now due that the alert has not reached, in order."""
        site = self.registry.sites.get(alert.site_id)
        if site is None or alert.id is None:
            return
        policy = self.settings.policy_for(site.jurisdiction)
        for index, level in enumerate(policy.levels):
            if index in reached:
                continue
            if now < alert.opened_ms + level.delay_ms(alert.severity):
                return
            notices, audit = self._level(alert, site, policy, index, level, now)
            if self.store.claim_escalation(alert.id, index, now, audit):
                self._submit(notices, now)

    def _level(
        self, alert: Alert, site: Site, policy: Policy, index: int, level: Level, now: int
    ) -> tuple[list[Notice], list[AuditEntry]]:
        """The level's notices and the audit entries its claim writes."""
        schedule = self.settings.schedule(policy)
        working = schedule.is_working(now)
        targets = level.targets(working)
        local = schedule.local(now).time()
        notices: dict[tuple[str, str], Notice] = {}
        audit: list[AuditEntry] = []
        for target in targets:
            for person in people_for(
                self.store, self.settings.contacts, target, site, schedule.duty_day(now)
            ):
                why_not = _refusal(person, alert, local)
                if why_not:
                    audit.append(self._entry(alert, now, SKIPPED, f"{person.name}: {why_not}"))
                    continue
                for channel, address in sorted(person.addresses.items()):
                    if (channel, address) not in notices:
                        recipient = Recipient(channel, address, person.name)
                        notices[channel, address] = self._notice(alert, site, index, recipient, now)
        hours = "working hours" if working else "outside working hours"
        if index == 0:
            why = "alert opened"
        else:
            why = f"unacknowledged {(now - alert.opened_ms) // 60_000} min"
        head = f"level {index} ({why}, {hours}): {', '.join(targets)}"
        if not notices:
            head += "; nobody to notify"
        queued = [self._entry(alert, now, QUEUED, _describe(n.recipient)) for n in notices.values()]
        return list(notices.values()), [
            self._entry(alert, now, LEVEL_REACHED, head),
            *audit,
            *queued,
        ]

    def _submit(self, notices: list[Notice], now: int) -> None:
        for notice in notices:
            try:
                self.outbox.submit(notice)
            except Exception as exc:  # a broken outbox must not stop the engine's clock
                log.exception("outbox refused notice %s", notice.key)
                self.delivery_result(notice, False, f"not queued: {exc}")

    def delivery_result(self, notice: Notice, ok: bool, detail: str = "") -> None:
        """The outbox's final word on a notice, for the alert's audit trail."""
        text = _describe(notice.recipient) + (f": {detail}" if detail else "")
        entry = AuditEntry(notice.alert_id, self.clock(), ACTOR, SENT if ok else FAILED, text)
        self.store.append_audit([entry])

    @staticmethod
    def _entry(alert: Alert, now: int, action: str, comment: str) -> AuditEntry:
        return AuditEntry(alert.id or 0, now, ACTOR, action, comment)

    def _notice(
        self, alert: Alert, site: Site, level: int, recipient: Recipient, now: int
    ) -> Notice:
        rule = rule_name(alert.rule_id, alert.parameter, "zh")
        severity = _SEVERITY_ZH.get(alert.severity, str(alert.severity))
        prefix = f"【{severity}】" if level == 0 else f"【第{level}级升级·{severity}】"
        title = f"{prefix}{site.name}：{rule}"
        url = f"{self.dashboard_url}/#/alert/{alert.id}"
        started = datetime.fromtimestamp(alert.first_ms / 1000, ZoneInfo(site.timezone))
        lines = [
            f"### {title}",
            f"- 场所：{site.name}（{site.id}）",
            f"- 规则：{rule}",
            f"- 详情：{alert.message}",
            f"- 开始：{started:%Y-%m-%d %H:%M}",
        ]
        if level > 0:
            lines.append(f"- 已 **{(now - alert.opened_ms) // 60_000} 分钟**未确认")
        lines.append(f"- 请登录蓝盾确认处理：{url}")
        return Notice(
            alert_id=alert.id or 0,
            level=level,
            action="opened" if level == 0 else "escalated",
            severity=str(alert.severity),
            family=str(alert.family),
            site_id=site.id,
            title=title,
            text="\n".join(lines),
            url=url,
            recipient=recipient,
        )


def _refusal(person: Person, alert: Alert, local: time) -> str | None:
    if not person.addresses:
        return "no address on file"
    return person.preferences.refusal(str(alert.family), str(alert.severity), local)


def _describe(r: Recipient) -> str:
    """Who and how, with the address masked: the audit trail goes into evidence records."""
    return f"{r.name} via {r.channel} {_mask(r.channel, r.address)}"


def _mask(channel: str, address: str) -> str:
    if channel == "sms":
        return address[:-8] + "****" + address[-4:]
    if channel == "email":
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if channel == "webhook":
        return address.split("?", 1)[0][:80]
    return address
