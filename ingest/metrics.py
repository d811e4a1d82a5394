"""Ingest counters, read by the API's /metrics. Plain ints: updated by one worker thread."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestMetrics:
    received: int = 0
    redelivered: int = 0
    readings_stored: int = 0
    readings_duplicate: int = 0
    dead_lettered: int = 0
    statuses: int = 0
    batches: int = 0
    store_retries: int = 0
    last_batch_size: int = 0
    max_batch_size: int = 0
    lag_ms_last: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def observe_batch(self, size: int) -> None:
        self.batches += 1
        self.last_batch_size = size
        self.max_batch_size = max(self.max_batch_size, size)
        bucket = 1
        while bucket < size:
            bucket *= 4
        self.batch_sizes[bucket] = self.batch_sizes.get(bucket, 0) + 1
