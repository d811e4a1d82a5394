"""Dead letters in the log as one INFO line per interval with counts per kind of reason.

Every dead letter is in the store with its reason and raw bytes; the log only has to say that
they happen and of what kind. A line each would let a sender of garbage fill the disk."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

from domain.logtext import log_safe

DEFAULT_INTERVAL_S = 60.0
# Distinct kinds listed per line; the rest are counted together, so the line stays short.
MAX_KINDS = 12
KIND_LENGTH = 80
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@functools.lru_cache(maxsize=1024)  # a flood repeats a few reasons many times
def reason_kind(reason: str) -> str:
    """A reason without the particulars (numbers, quoted text) that make each one unique."""
    kind = _QUOTED.sub("'…'", _NUMBER.sub("N", reason.split(";", 1)[0]))
    return log_safe(kind, KIND_LENGTH)


class DeadLetterLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._since = clock()

    def record(self, reason: str) -> None:
        """Count one dead letter; writes the interval's line once the interval has passed."""
        with self._lock:
            self._counts[reason_kind(reason)] += 1
            if self.clock() - self._since >= self.interval_s:
                self._flush_locked()

    def flush(self) -> None:
        """Write what is counted now (at shutdown)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        now = self.clock()
        if self._counts:
            total = sum(self._counts.values())
            shown = self._counts.most_common(MAX_KINDS)
            parts = [f"{n} × {kind}" for kind, n in shown]
            rest = total - sum(n for _, n in shown)
            if rest:
                parts.append(f"{rest} × other reasons")
            self.logger.info(
                "%d dead letters in the last %.0f s: %s", total, now - self._since, "; ".join(parts)
            )
            self._counts.clear()
        self._since = now
