"""Dead-letter retention: raw bytes cleared after `raw_days`, rows deleted after `row_days`
with their counts per reason kept, run every `every_minutes` (store/data/retention.toml)."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from domain.timeutil import now_ms
from store.base import DeadLetterStore

log = logging.getLogger("landun.store.dead_letter_retention")

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    raw_days: int
    row_days: int
    every_minutes: int

    def __post_init__(self) -> None:
        if not 0 < self.raw_days <= self.row_days or self.every_minutes <= 0:
            raise ValueError(f"dead-letter retention {self}: need 0 < raw_days <= row_days")


def load_policy() -> RetentionPolicy:
    text = resources.files("store").joinpath("data/retention.toml").read_text("utf-8")
    return RetentionPolicy(**tomllib.loads(text)["dead_letters"])


class DeadLetterRetention:
    def __init__(
        self,
        store: DeadLetterStore,
        policy: RetentionPolicy | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.policy = policy or load_policy()
        self.clock = clock
        self._last_ms: int | None = None

    def maybe_run(self) -> None:
        """Run if the interval has passed since the last run (called from a periodic clock)."""
        now = self.clock()
        if self._last_ms is not None and now - self._last_ms < self.policy.every_minutes * 60_000:
            return
        self._last_ms = now
        cleared, deleted = self.store.prune_dead_letters(
            now - self.policy.raw_days * DAY_MS, now - self.policy.row_days * DAY_MS
        )
        if cleared or deleted:
            log.info(
                "dead-letter retention: raw bytes cleared from %d, %d rows deleted (counted)",
                cleared,
                deleted,
            )
