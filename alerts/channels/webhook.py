"""Signed webhook: an HTTP POST of JSON, signed with HMAC-SHA256 over the body in the
`X-Landun-Signature` header (`sha256=<hex>`), so the receiver can tell it came from Landun.

The body is the notice's `payload` when it carries one (the alert-change sink of
alerts.notify_webhook sends `{"action", "at", "alert"}` as before), else the notice itself.
Any answer below 300 is delivered; any other is a failure worth trying again. The recipient
address is the URL."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from alerts.channels.base import DeliveryFailed, Notice
from alerts.channels.registry import ChannelConfig, ChannelSpec, Secret, register
from domain import strict_json
from domain.timeutil import now_ms

SIGNATURE_HEADER = "X-Landun-Signature"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of the body; receivers recompute it with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notice_body(notice: Notice) -> dict[str, Any]:
    return {
        "action": notice.action,
        "at": now_ms(),
        "notice": {
            "alert_id": notice.alert_id,
            "level": notice.level,
            "severity": notice.severity,
            "family": notice.family,
            "site_id": notice.site_id,
            "title": notice.title,
            "text": notice.text,
            "url": notice.url,
            "recipient": notice.recipient.name,
        },
    }


class WebhookConfig(ChannelConfig):
    secret: Secret
    timeout_s: float = 5.0


class WebhookChannel:
    name: ClassVar[str] = "webhook"

    def __init__(
        self,
        secret: str | None,
        timeout_s: float = 5.0,
        per_url: Mapping[str, tuple[str, float]] | None = None,  # url -> (secret, timeout)
    ) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.per_url = dict(per_url or {})
        self._client = httpx.Client()

    def send(self, notice: Notice) -> None:
        url = notice.recipient.address
        secret, timeout_s = self.per_url.get(url, (self.secret, self.timeout_s))
        if not url.startswith(("https://", "http://")):
            raise DeliveryFailed(f"not an http(s) URL: {url[:80]!r}", retry=False)
        if secret is None:
            raise DeliveryFailed("no webhook secret configured", retry=False)
        body = strict_json.dumps(notice.payload or notice_body(notice)).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "X-Landun-Action": notice.action,
        }
        try:
            # The answer's body is not read: only its status matters.
            with self._client.stream(
                "POST", url, content=body, headers=headers, timeout=timeout_s
            ) as r:
                status = r.status_code
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if status >= 300:
            raise DeliveryFailed(f"HTTP {status}")


def build(config: WebhookConfig) -> WebhookChannel:
    return WebhookChannel(config.secret.reveal(), config.timeout_s)


SPEC = register(ChannelSpec("webhook", WebhookConfig, build))
