"""The `--webhook` targets: every alert change POSTed to each, as `{"action", "at", "alert"}`,
signed with HMAC-SHA256 (alerts.channels.webhook), through an outbox of its own (a worker and
queue per target, retries with backoff, every outcome recorded in the store's `notice_deliveries`).
Each change is its own message, so these notices are not deduplicated."""

from __future__ import annotations

from dataclasses import dataclass

from alerts.channels.base import Notice, Recipient
from alerts.channels.outbox import ChannelPolicy, OutboxService
from alerts.channels.webhook import WebhookChannel
from domain.alert_json import alert_to_dict
from domain.model import Alert
from domain.timeutil import now_ms
from store.base import NoticeStore


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: str
    max_attempts: int = 5
    backoff_s: float = 1.0  # doubled after each failed attempt
    timeout_s: float = 5.0


class WebhookNotifier:
    """An alert sink: one notice per change per target, handed to the outbox."""

    def __init__(self, targets: list[WebhookTarget], store: NoticeStore, queue_max: int = 10_000):
        self.targets = targets
        channel = WebhookChannel(None, per_url={t.url: (t.secret, t.timeout_s) for t in targets})
        self.outbox = OutboxService(
            {"webhook": channel},
            store,
            overrides={
                ("webhook", t.url): ChannelPolicy(
                    t.max_attempts, t.backoff_s, float("inf"), queue_max=queue_max
                )
                for t in targets
            },
        )

    def start(self) -> None:
        self.outbox.start()

    def stop(self) -> None:
        self.outbox.stop()

    def alert_changed(self, alert: Alert, action: str) -> None:
        payload = {"action": action, "at": now_ms(), "alert": alert_to_dict(alert)}
        for t in self.targets:
            notice = Notice(
                alert_id=alert.id or 0,
                level=0,
                action=action,
                severity=str(alert.severity),
                family=str(alert.family),
                site_id=alert.site_id,
                title=alert.message,
                text=alert.message,
                url="",
                recipient=Recipient("webhook", t.url),
                payload=payload,
            )
            self.outbox.submit(notice, dedup=False)
