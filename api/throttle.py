"""Login guessing kept slow and cheap: failed logins drain token buckets per account and per
client address (429 with Retry-After when empty), and password hashes run on a small pool of
their own threads so guessing cannot take the threads and cores other requests need."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from api.context import AppContext
from domain.credentials import hash_secret

T = TypeVar("T")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class FailureBuckets:
    """One token bucket per key: `burst` failures, then one more every `refill_s`. At most
    `max_keys` buckets are kept; when full, the least recently used one is dropped (with an
    address limit in front, one client cannot create keys fast enough to flush a drained
    account's bucket)."""

    def __init__(
        self, burst: int, refill_s: float, max_keys: int, clock: Callable[[], float]
    ) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _level(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) / self.refill_s)
        bucket.at = now
        if bucket.tokens >= self.burst:
            del self._buckets[key]  # full again: as good as never seen
            return None
        self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: str) -> float:
        """Seconds until the key may try again; 0 when it may now."""
        bucket = self._level(key)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.refill_s

    def fail(self, key: str) -> None:
        bucket = self._level(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), self.clock())
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        bucket.tokens = max(0.0, bucket.tokens - 1)


class LoginThrottle:
    """Failed logins counted per account and per address; a login waits for both."""

    def __init__(self, accounts: FailureBuckets, addresses: FailureBuckets) -> None:
        self.accounts = accounts
        self.addresses = addresses

    def retry_after(self, account: str, address: str) -> int:
        """Whole seconds to wait before trying (0: go ahead)."""
        wait = max(self.accounts.retry_after(account), self.addresses.retry_after(address))
        return math.ceil(wait)

    def failed(self, account: str, address: str) -> None:
        self.accounts.fail(account)
        self.addresses.fail(address)


class Busy(RuntimeError):
    """Too many password checks are waiting already."""


class HashPool:
    """Runs password hashing on `workers` threads of its own, with at most `waiting_max`
    checks queued; beyond that a login is refused at once instead of piling up."""

    def __init__(self, workers: int, waiting_max: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="landun-hash")
        self._queued = 0  # touched on the event loop only
        self._limit = workers + waiting_max

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._queued >= self._limit:
            raise Busy("too many logins at once")
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._queued -= 1


@dataclass(slots=True)
class LoginGuard:
    """What the login route needs to stay slow for guessers and fast for everyone else."""

    throttle: LoginThrottle
    hashes: HashPool
    # Checked against when the user is unknown, so an unknown name costs the same hash work.
    dummy_hash: str

    @classmethod
    def for_context(cls, ctx: AppContext) -> LoginGuard:
        lim = ctx.limits
        clock = ctx.clock or time.monotonic
        keys = lim.login_buckets_max
        return cls(
            LoginThrottle(
                FailureBuckets(lim.login_account_burst, lim.login_account_refill_s, keys, clock),
                FailureBuckets(lim.login_address_burst, lim.login_address_refill_s, keys, clock),
            ),
            HashPool(lim.hash_workers, lim.hash_waiting_max),
            hash_secret(secrets.token_urlsafe(16)),
        )
