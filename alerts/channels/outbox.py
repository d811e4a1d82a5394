"""The outbox: delivers notices through their channels, concurrently per target, retried with
backoff, rate-limited per target, deduplicated on the notice key, every outcome recorded.

- One worker thread and bounded queue per target (channel, address), made on first use: a
  receiver that is down or slow costs its own retries only. A full queue is recorded as a
  failure at once; `submit` never waits.
- Retries: up to `max_attempts`, the pause doubling from `backoff_s` up to `backoff_max_s`,
  longer when the vendor asked for it (DeliveryFailed.retry_after_s); none when a failure
  cannot succeed by trying again (DeliveryFailed.retry False).
- Rate: a token bucket per target (`burst` tokens, `per_minute` refill), chosen in
  alerts/data/channels.toml so no window of the vendor's length holds more than it allows.
- Dedup: `submit` refuses a key this process has taken already; the worker claims the key in
  the store (a unique key) before sending, so a restart or another process does not send it
  again. A notice that finally failed gives its key back, so submitting it again tries again.
  A crash between the claim and the send loses that message (at most once).
- Outcomes: each delivery series is a row of the store's `notice_deliveries` (channel, address,
  alert, action, ok, attempts, last error) and a count of
  `landun_notifications_total{channel, outcome}` on /metrics."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from alerts.channels.base import Channel, DeliveryFailed, Notice
from domain.logtext import log_safe
from domain.timeutil import now_ms
from store.base import NoticeStore

log = logging.getLogger("landun.alerts.outbox")

STOP_WAIT_S = 30.0

NOTIFICATIONS = Counter(
    "landun_notifications",
    "Notices by channel and outcome: sent, failed (given up or refused), duplicate (key"
    " claimed already, not sent again).",
    ["channel", "outcome"],
)
ATTEMPTS = Counter(
    "landun_notification_attempts",
    "Sends tried by channel and result (ok, failed).",
    ["channel", "result"],
)


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    max_attempts: int = 5
    backoff_s: float = 1.0  # the first pause; doubled after each failed attempt
    backoff_max_s: float = 600.0
    per_minute: float = 0.0  # token refill per minute; 0: no rate limit
    burst: int = 1  # tokens a target starts with and holds at most
    queue_max: int = 1000  # notices waiting per target


class TokenBucket:
    """`burst` tokens, refilled at `per_minute`; `wait_s` says how long until one is there."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate_s = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self.tokens = float(self.burst)
        self.at = clock()

    def wait_s(self) -> float:
        if self.rate_s <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_s)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_s

    def take(self) -> None:
        if self.rate_s > 0:
            self.tokens -= 1


@dataclass(frozen=True, slots=True)
class _Job:
    notice: Notice
    dedup: bool


class _Target:
    def __init__(self, channel: str, address: str, policy: ChannelPolicy, clock) -> None:
        self.channel, self.address, self.policy = channel, address, policy
        self.queue: queue.Queue[_Job | None] = queue.Queue(policy.queue_max)
        self.bucket = TokenBucket(policy.per_minute, policy.burst, clock)
        self.thread: threading.Thread | None = None


class OutboxService:
    """The Outbox of alerts.channels.base: `submit` from any thread; `start` and `stop` once."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        store: NoticeStore,
        policies: Mapping[str, ChannelPolicy] | None = None,
        *,
        overrides: Mapping[tuple[str, str], ChannelPolicy] | None = None,
        targets_max: int = 1000,
        keys_remembered: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """`clock` and `wait` (sleep up to s seconds; True when stopping) let tests run the
        backoff and rate limits on a fake clock."""
        self.channels = dict(channels)
        self.store = store
        self.policies = dict(policies or {})
        self.overrides = dict(overrides or {})
        self.targets_max = targets_max
        self.keys_remembered = keys_remembered
        self.clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._lock = threading.Lock()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._started = False
        # Told every outcome but duplicates (notice, ok, attempts, last error), on the thread
        # that decided it: the escalation stage writes them to the alert's audit trail.
        self.on_outcome: Callable[[Notice, bool, int, str], None] | None = None

    # -- the Outbox interface -------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._started = True
            for target in self._targets.values():
                self._start_worker(target)

    def stop(self) -> None:
        """Stop taking notices; what is still queued is recorded as not sent."""
        self._stop.set()
        with self._lock:
            targets = list(self._targets.values())
        for t in targets:
            with contextlib.suppress(queue.Full):
                t.queue.put(None, timeout=STOP_WAIT_S)
        for t in targets:
            if t.thread is not None:
                t.thread.join(timeout=STOP_WAIT_S)

    def submit(self, notice: Notice, *, dedup: bool = True) -> bool:
        """Queue a notice without waiting; False when its key was taken already. `dedup`
        False sends it even so (the alert-change webhook, whose every change is a message)."""
        if dedup and not self._remember(notice.key):
            NOTIFICATIONS.labels(notice.recipient.channel, "duplicate").inc()
            return False
        r = notice.recipient
        if self._stop.is_set():
            self._finish(notice, dedup, False, 0, "not sent: Landun stopped first")
            return True
        if r.channel not in self.channels:
            self._finish(notice, dedup, False, 0, f"no channel {r.channel!r} is configured")
            return True
        target = self._target(r.channel, r.address)
        if target is None:
            self._finish(notice, dedup, False, 0, f"more than {self.targets_max} targets: not sent")
            return True
        try:
            target.queue.put_nowait(_Job(notice, dedup))
        except queue.Full:
            self._finish(notice, dedup, False, 0, "delivery queue full: notice not sent")
        return True

    # -- workers --------------------------------------------------------------------------------

    def _remember(self, key: str) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys[key] = None
            while len(self._keys) > self.keys_remembered:
                self._keys.popitem(last=False)
            return True

    def _forget(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def _policy(self, channel: str, address: str) -> ChannelPolicy:
        return self.overrides.get((channel, address), self.policies.get(channel, ChannelPolicy()))

    def _target(self, channel: str, address: str) -> _Target | None:
        with self._lock:
            target = self._targets.get((channel, address))
            if target is None:
                if len(self._targets) >= self.targets_max:
                    return None
                policy = self._policy(channel, address)
                target = _Target(channel, address, policy, self.clock)
                self._targets[(channel, address)] = target
                if self._started:
                    self._start_worker(target)
            return target

    def _start_worker(self, target: _Target) -> None:
        if target.thread is None:
            target.thread = threading.Thread(
                target=self._run,
                args=(target,),
                name=f"landun-notify-{target.channel}-{len(self._targets)}",
                daemon=True,
            )
            target.thread.start()

    def _run(self, target: _Target) -> None:
        while (job := target.queue.get()) is not None:
            if self._stop.is_set():
                self._finish(job.notice, job.dedup, False, 0, "not sent: Landun stopped first")
                continue
            try:
                self._deliver(target, job)
            except Exception:
                log.exception("notice delivery failed unexpectedly")

    def _deliver(self, target: _Target, job: _Job) -> None:
        notice = job.notice
        if job.dedup and not self._claim(notice):
            return
        channel = self.channels[target.channel]
        policy = target.policy
        delay = policy.backoff_s
        error = ""
        attempt = 0
        for attempt in range(1, policy.max_attempts + 1):
            if not self._take_token(target):
                error = "not sent: Landun stopped first"
                self._finish(notice, job.dedup, False, attempt - 1, error, claimed=job.dedup)
                return
            try:
                channel.send(notice)
            except DeliveryFailed as exc:
                error, retry, pause = exc.reason, exc.retry, exc.retry_after_s
            except Exception as exc:  # a channel's bug must not end its worker
                error, retry, pause = f"{type(exc).__name__}: {exc}", True, None
            else:
                ATTEMPTS.labels(target.channel, "ok").inc()
                self._finish(notice, job.dedup, True, attempt, "", claimed=job.dedup)
                return
            ATTEMPTS.labels(target.channel, "failed").inc()
            if not retry or attempt == policy.max_attempts:
                break
            if self._wait(max(delay, pause or 0.0)):
                break
            delay = min(delay * 2, policy.backoff_max_s)
        log.warning(
            "%s to %s failed for alert %s: %s",
            target.channel,
            log_safe(target.address),
            notice.alert_id,
            log_safe(error),
        )
        self._finish(notice, job.dedup, False, attempt, error, claimed=job.dedup)

    def _claim(self, notice: Notice) -> bool:
        """Take the key in the store; False (counted as a duplicate) when it was taken."""
        try:
            claimed = self.store.claim_notice(notice.key, now_ms())
        except Exception as exc:
            self._finish(notice, True, False, 0, f"could not claim the notice key: {exc}")
            return False
        if not claimed:
            NOTIFICATIONS.labels(notice.recipient.channel, "duplicate").inc()
        return claimed

    def _take_token(self, target: _Target) -> bool:
        """Wait for the target's rate limit; False when stopping."""
        while (pause := target.bucket.wait_s()) > 0:
            if self._wait(pause):
                return False
        target.bucket.take()
        return True

    def _finish(
        self,
        notice: Notice,
        dedup: bool,
        ok: bool,
        attempts: int,
        error: str,
        *,
        claimed: bool = False,
    ) -> None:
        """Count and record an outcome; a failed notice gives its key back (in the store
        only when this worker claimed it there)."""
        r = notice.recipient
        NOTIFICATIONS.labels(r.channel, "sent" if ok else "failed").inc()
        if not ok and dedup:
            self._forget(notice.key)
            if claimed:
                try:
                    self.store.release_notice(notice.key)
                except Exception:
                    log.exception("could not give back the key of a failed notice")
        try:
            self.store.record_delivery(
                r.address, notice.alert_id, notice.action, ok, attempts, error, now_ms(), r.channel
            )
        except Exception:
            log.exception("could not record a notice delivery")
        if self.on_outcome is not None:
            try:
                self.on_outcome(notice, ok, attempts, error)
            except Exception:
                log.exception("the outcome hook failed")
