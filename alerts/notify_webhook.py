"""Webhook delivery: HTTP POST of each alert change, signed with HMAC-SHA256, retried with
backoff on a worker thread so a slow receiver never holds up evaluation. Every outcome is
recorded in the store (`deliveries`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
from dataclasses import dataclass

import httpx

from domain.alert_json import alert_to_dict
from domain.model import Alert
from domain.timeutil import now_ms
from store.base import Store

log = logging.getLogger("landun.alerts.webhook")

SIGNATURE_HEADER = "X-Landun-Signature"


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: str
    max_attempts: int = 5
    backoff_s: float = 1.0  # doubled after each failed attempt
    timeout_s: float = 5.0


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of the body; receivers recompute it with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class _Job:
    target: WebhookTarget
    alert_id: int
    action: str
    body: bytes


class WebhookNotifier:
    def __init__(self, targets: list[WebhookTarget], store: Store, queue_max: int = 10_000):
        self.targets = targets
        self.store = store
        self._queue: queue.Queue[_Job | None] = queue.Queue(queue_max)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landun-webhooks", daemon=True)
        self._client = httpx.Client()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._client.close()

    def alert_changed(self, alert: Alert, action: str) -> None:
        payload = {"action": action, "at": now_ms(), "alert": alert_to_dict(alert)}
        body = json.dumps(payload, ensure_ascii=False).encode()
        for target in self.targets:
            job = _Job(target, alert.id or 0, action, body)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self._record(job, False, 0, "delivery queue full: change not sent")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._deliver(job)

    def _deliver(self, job: _Job) -> None:
        t = job.target
        delay = t.backoff_s
        error = ""
        for attempt in range(1, t.max_attempts + 1):
            try:
                r = self._client.post(
                    t.url,
                    content=job.body,
                    timeout=t.timeout_s,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(t.secret, job.body),
                        "X-Landun-Action": job.action,
                    },
                )
                if r.status_code < 300:
                    self._record(job, True, attempt, "")
                    return
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < t.max_attempts and self._stop.wait(delay):
                break
            delay *= 2
        log.warning("webhook %s failed for alert %s: %s", t.url, job.alert_id, error)
        self._record(job, False, attempt, error)

    def _record(self, job: _Job, ok: bool, attempts: int, error: str) -> None:
        try:
            self.store.record_delivery(
                job.target.url, job.alert_id, job.action, ok, attempts, error, now_ms()
            )
        except Exception:
            log.exception("could not record a webhook delivery")
