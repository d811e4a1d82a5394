"""Webhook delivery: HTTP POST of each alert change, signed with HMAC-SHA256, retried a bounded
number of times with backoff on a worker thread per target, so a slow receiver never holds up
evaluation or another target. Every outcome is recorded in the store (`deliveries`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import queue
import threading
from dataclasses import dataclass

import httpx

from domain import strict_json
from domain.alert_json import alert_to_dict
from domain.logtext import log_safe
from domain.model import Alert
from domain.timeutil import now_ms
from store.base import Store

log = logging.getLogger("landun.alerts.webhook")

SIGNATURE_HEADER = "X-Landun-Signature"
STOP_WAIT_S = 30.0


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
    """One worker thread and queue per target: a receiver that is down or slow costs its own
    retries only, never another target's deliveries."""

    def __init__(self, targets: list[WebhookTarget], store: Store, queue_max: int = 10_000):
        self.targets = targets
        self.store = store
        self._stop = threading.Event()
        self._client = httpx.Client()
        self._queues: list[queue.Queue[_Job | None]] = [queue.Queue(queue_max) for _ in targets]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"landun-webhook-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for q in self._queues:
            with contextlib.suppress(queue.Full):
                q.put(None, timeout=STOP_WAIT_S)
        for thread in self._threads:
            thread.join(timeout=STOP_WAIT_S)
        self._client.close()

    def alert_changed(self, alert: Alert, action: str) -> None:
        payload = {"action": action, "at": now_ms(), "alert": alert_to_dict(alert)}
        body = strict_json.dumps(payload).encode()
        for target, q in zip(self.targets, self._queues, strict=True):
            job = _Job(target, alert.id or 0, action, body)
            try:
                q.put_nowait(job)
            except queue.Full:
                self._record(job, False, 0, "delivery queue full: change not sent")

    def _run(self, q: queue.Queue[_Job | None]) -> None:
        while (job := q.get()) is not None:
            if self._stop.is_set():
                self._record(job, False, 0, "not sent: Landun stopped first")
            else:
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
        log.warning(
            "webhook %s failed for alert %s: %s", log_safe(t.url), job.alert_id, log_safe(error)
        )
        self._record(job, False, attempt, error)

    def _record(self, job: _Job, ok: bool, attempts: int, error: str) -> None:
        try:
            self.store.record_delivery(
                job.target.url, job.alert_id, job.action, ok, attempts, error, now_ms()
            )
        except Exception:
            log.exception("could not record a webhook delivery")
