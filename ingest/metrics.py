"""Ingest counters and their Prometheus text rendering (mounted by the API at /metrics).

Plain ints, no locks: batch counters change under the pipeline's lock, the others on the one
thread that owns them (MQTT worker or paho's network thread; the queue gauges on both, where a
lost update only delays a gauge), and readers tolerate a value that is one batch old."""

from __future__ import annotations

from dataclasses import dataclass, field

# Upper bounds of the batch-size histogram: powers of 4 up to past the default batch_max (2000).
BATCH_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096)


@dataclass(slots=True)
class IngestMetrics:
    received: int = 0
    redelivered: int = 0
    acked: int = 0
    readings_stored: int = 0
    readings_duplicate: int = 0
    dead_lettered: int = 0
    statuses: int = 0
    batches: int = 0
    store_retries: int = 0
    hook_errors: int = 0
    worker_errors: int = 0
    connects: int = 0
    sessions_lost: int = 0
    last_batch_size: int = 0
    max_batch_size: int = 0
    batch_size_sum: int = 0
    # Receive time minus sensor time of the last reading committed (a device's own delay).
    lag_ms_last: int = 0
    # Commit time minus receive time of the oldest message of the last batch (ingest's delay).
    commit_delay_ms_last: int = 0
    # Messages handed over by the transport and waiting for the worker (bounded by queue_max).
    queue_depth: int = 0
    queue_depth_max: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def observe_batch(self, size: int) -> None:
        self.batches += 1
        self.last_batch_size = size
        self.max_batch_size = max(self.max_batch_size, size)
        self.batch_size_sum += size
        bucket = 1
        while bucket < size:
            bucket *= 4
        self.batch_sizes[bucket] = self.batch_sizes.get(bucket, 0) + 1

    def observe_queue(self, depth: int) -> None:
        self.queue_depth = depth
        self.queue_depth_max = max(self.queue_depth_max, depth)

    def prometheus(self) -> str:
        return render_prometheus(self)


_COUNTERS = (
    ("messages_received", "received", "Messages committed to the store (any outcome)."),
    ("messages_redelivered", "redelivered", "Messages the broker delivered again (DUP flag)."),
    ("messages_acked", "acked", "Messages acknowledged to the broker after their commit."),
    ("readings_stored", "readings_stored", "Readings newly written."),
    ("readings_duplicate", "readings_duplicate", "Readings already stored (redeliveries)."),
    ("dead_letters", "dead_lettered", "Messages refused into the dead-letter table."),
    ("statuses", "statuses", "Device status messages stored."),
    ("store_retries", "store_retries", "Batch commits retried because the store was down."),
    ("hook_errors", "hook_errors", "Batches whose alert hook failed after the commit."),
    ("worker_errors", "worker_errors", "Unexpected ingest worker errors (batch retried)."),
    ("connects", "connects", "Successful connections to the broker."),
    ("sessions_lost", "sessions_lost", "Reconnects where the broker had lost the session."),
)
_GAUGES = (
    ("sensor_lag_seconds", "lag_ms_last", "Receive time minus sensor time, last reading."),
    ("commit_delay_seconds", "commit_delay_ms_last", "Commit minus receive time, last batch."),
)


def _number(value: float) -> str:
    # Counters stay exact integers; "%g" would print 1234567 as 1.23457e+06.
    return str(value) if isinstance(value, int) else repr(float(value))


def render_prometheus(metrics: IngestMetrics, prefix: str = "landun_ingest") -> str:
    """The metrics in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        lines.extend(
            (
                f"# HELP {prefix}_{name} {help_text}",
                f"# TYPE {prefix}_{name} {kind}",
                f"{prefix}_{name} {_number(value)}",
            )
        )

    for name, attr, help_text in _COUNTERS:
        metric(f"{name}_total", "counter", help_text, getattr(metrics, attr))
    for name, attr, help_text in _GAUGES:
        metric(name, "gauge", help_text, getattr(metrics, attr) / 1000)
    metric("queue_depth", "gauge", "Messages waiting for the ingest worker.", metrics.queue_depth)
    metric("queue_depth_max", "gauge", "Most messages waiting at once.", metrics.queue_depth_max)

    hist = f"{prefix}_batch_size"
    lines += [f"# HELP {hist} Messages per committed batch.", f"# TYPE {hist} histogram"]
    cumulative = 0
    for bound in sorted(set(BATCH_BUCKETS) | set(metrics.batch_sizes)):
        cumulative += metrics.batch_sizes.get(bound, 0)
        lines.append(f'{hist}_bucket{{le="{bound}"}} {cumulative}')
    lines += [
        f'{hist}_bucket{{le="+Inf"}} {metrics.batches}',
        f"{hist}_sum {metrics.batch_size_sum}",
        f"{hist}_count {metrics.batches}",
    ]
    return "\n".join(lines) + "\n"
