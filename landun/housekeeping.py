"""The store's periodic upkeep in a running Landun: the readings retention (raw readings past
`raw_days` rolled up into hourly aggregates, alert evidence kept) and the dead-letter retention,
each when due (store/data/retention.toml). On a thread of its own: a retention run can take
minutes on a big store, and must delay neither the event loop, ingest, nor the alert clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from domain.timeutil import now_ms
from store.base import Store
from store.dead_letter_retention import DeadLetterRetention
from store.retention import ReadingRetention, RetainingStore

log = logging.getLogger("landun.housekeeping")


class Job(Protocol):
    def maybe_run(self) -> object: ...


def retention_jobs(store: Store, clock: Callable[[], int] = now_ms) -> list[Job]:
    """The retention jobs this store needs, on `clock` (default: the wall clock)."""
    jobs: list[Job] = [DeadLetterRetention(store, clock=clock)]
    if isinstance(store, RetainingStore):
        jobs.append(ReadingRetention(store, clock=clock))
    return jobs


class Housekeeper:
    """Calls each job's `maybe_run` every `tick_s` seconds, first after one tick."""

    def __init__(self, jobs: list[Job], tick_s: float) -> None:
        self.jobs = jobs
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landun-housekeeping", daemon=True)

    @classmethod
    def for_store(cls, store: Store, tick_s: float) -> Housekeeper:
        return cls(retention_jobs(store), tick_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends after the job in progress; a store's retention stops between batches once the
        store is closing."""
        self._stop.set()
        self._thread.join(timeout=30)

    def run_due(self) -> None:
        for job in self.jobs:
            if self._stop.is_set():
                return
            try:
                job.maybe_run()
            except Exception:
                # Nothing is lost by a failed run: the rows wait for the next one.
                log.exception("%s failed; trying again when next due", type(job).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.run_due()
