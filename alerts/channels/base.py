"""The interface every notification channel implements, and the message it delivers.

The escalation stage (who is told, when, at which level) builds `Notice`s and hands them to an
`Outbox`; the outbox delivers each through the `Channel` named by its recipient, concurrently per
target, retried with backoff, rate-limited per channel and deduplicated on `Notice.key`. A
channel is one module that sends one notice and says how it failed; nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where a notice goes: `channel` names a registered channel (`wecom`, `dingtalk`, `email`,
    `sms`, `webhook`); `address` is that channel's address (robot name, e-mail, phone, URL)."""

    channel: str
    address: str
    name: str = ""  # the person or group, for the audit trail


@dataclass(frozen=True, slots=True)
class Notice:
    """One message about one alert to one recipient at one escalation level."""

    alert_id: int
    level: int  # 0: first notice; 1, 2, ...: escalation levels
    action: str  # the alert change behind it: opened, escalated, resolved, ...
    severity: str
    family: str
    site_id: str
    title: str  # zh-CN, one line
    text: str  # zh-CN, plain text with light markdown (headings, bold, lists)
    url: str  # the alert in the dashboard
    recipient: Recipient
    # The machine-readable body for channels that carry one (the webhook sends it as JSON);
    # None: the channel builds its own from the fields above.
    payload: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        """One message per person per level per alert episode (an alert id is one episode)."""
        r = self.recipient
        return f"{self.alert_id}:{self.level}:{self.action}:{r.channel}:{r.address}"


class DeliveryFailed(Exception):
    """A send that failed; `retry` False when trying again cannot help (bad address, refused
    signature, message over the vendor's limit)."""

    def __init__(
        self, reason: str, *, retry: bool = True, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        # The vendor asked to wait this long (a rate limit), longer than the usual backoff.
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    name: ClassVar[str]

    def send(self, notice: Notice) -> None:
        """Deliver one notice or raise DeliveryFailed; blocking, called on a worker thread."""
        ...


class Outbox(Protocol):
    def submit(self, notice: Notice) -> bool:
        """Queue a notice for delivery without blocking; False when its key was sent already."""
        ...
