"""Retention of raw readings: older than `raw_days`, they are rolled up into hourly aggregates
and removed, except the readings of a device inside one of its alerts' windows, which are kept
as long as the alert. Each backend applies it its own way (PostgreSQL drops whole monthly
partitions; SQLite deletes in batches); this module holds what they share."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Protocol, runtime_checkable

from domain.timeutil import now_ms

log = logging.getLogger("landun.store.retention")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    raw_days: int

    def cutoff_ms(self, now_ms: int) -> int:
        """Raw readings with a sensor time before this may go."""
        return now_ms - self.raw_days * DAY_MS


@dataclass(frozen=True, slots=True)
class RetentionReport:
    removed: int  # raw readings rolled up and removed
    kept_as_evidence: int  # readings older than the cutoff kept for an alert
    hours: int  # hourly aggregates written or merged


def _positive(key: str) -> int:
    text = resources.files("store").joinpath("data/retention.toml").read_text("utf-8")
    value = tomllib.loads(text)["readings"][key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"store/data/retention.toml: {key} must be a positive integer: {value}")
    return value


def load_retention_settings() -> RetentionSettings:
    return RetentionSettings(_positive("raw_days"))


def load_every_hours() -> int:
    """How often a running Landun applies the readings retention."""
    return _positive("every_hours")


@runtime_checkable
class RetainingStore(Protocol):
    """A store that keeps raw readings itself (InfluxDB expires them by bucket retention)."""

    def apply_retention(self, now_ms: int, settings: RetentionSettings) -> RetentionReport: ...


class ReadingRetention:
    """Applies the readings retention when `every_hours` have passed since its last run (at
    once the first time); called from a periodic thread (landun.housekeeping)."""

    def __init__(
        self,
        store: RetainingStore,
        settings: RetentionSettings | None = None,
        every_hours: int | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.settings = settings or load_retention_settings()
        self.every_ms = (every_hours or load_every_hours()) * HOUR_MS
        self.clock = clock
        self._last_ms: int | None = None

    def maybe_run(self) -> RetentionReport | None:
        now = self.clock()
        if self._last_ms is not None and now - self._last_ms < self.every_ms:
            return None
        self._last_ms = now
        report = self.store.apply_retention(now, self.settings)
        if report.removed or report.kept_as_evidence:
            log.info(
                "readings retention: %d raw readings older than %d days rolled up into %d hourly"
                " aggregates and removed; %d kept as alert evidence",
                report.removed,
                self.settings.raw_days,
                report.hours,
                report.kept_as_evidence,
            )
        return report


def is_evidence(alerts: str, r: str) -> str:
    """Reading `r` is evidence of an alert in table `alerts`: its device's, inside the alert's
    window."""
    return (
        f"EXISTS (SELECT 1 FROM {alerts} a WHERE a.device_id = {r}.device_id"
        f" AND {r}.ts_ms >= a.first_ms AND {r}.ts_ms <= a.last_ms)"
    )


# The hourly aggregate columns: all readings, and the valid ones (flag N) apart, as downsample
# serves either.
HOURLY_COLS = (
    "device_id, parameter, hour_ms, n, total, lo, hi, valid_n, valid_total, valid_lo, valid_hi"
)
# Aggregates of the readings `r` selected by the query's FROM/WHERE, one row per hour.
HOURLY_SELECT = (
    "SELECT r.device_id, r.parameter, (r.ts_ms / 3600000) * 3600000 AS h, count(*), sum(r.value),"
    " min(r.value), max(r.value), count(*) FILTER (WHERE r.flag = 'N'),"
    " coalesce(sum(r.value) FILTER (WHERE r.flag = 'N'), 0),"
    " min(r.value) FILTER (WHERE r.flag = 'N'), max(r.value) FILTER (WHERE r.flag = 'N')"
)
# Merging into an hour already aggregated (a batch boundary inside an hour, or a second run).
HOURLY_MERGE = (
    " ON CONFLICT (device_id, parameter, hour_ms) DO UPDATE SET"
    " n = readings_hourly.n + excluded.n, total = readings_hourly.total + excluded.total,"
    " lo = {least}(readings_hourly.lo, excluded.lo),"
    " hi = {greatest}(readings_hourly.hi, excluded.hi),"
    " valid_n = readings_hourly.valid_n + excluded.valid_n,"
    " valid_total = readings_hourly.valid_total + excluded.valid_total,"
    " valid_lo = coalesce({least}(readings_hourly.valid_lo, excluded.valid_lo),"
    " readings_hourly.valid_lo, excluded.valid_lo),"
    " valid_hi = coalesce({greatest}(readings_hourly.valid_hi, excluded.valid_hi),"
    " readings_hourly.valid_hi, excluded.valid_hi)"
)


def downsample_sql(readings: str, hourly: str, marks: str, valid_only: bool, mark: str) -> str:
    """Buckets of `every_ms` (a whole number of hours) from raw readings and from the hourly
    aggregates of removed ones together. Arguments, in order: every, every, device, *parameters,
    start, end (raw), then every, every, device, *parameters, start, end (hourly)."""
    flag = " AND flag = 'N'" if valid_only else ""
    p = "valid_" if valid_only else ""
    return (
        "SELECT b, parameter, sum(s) / CAST(sum(n) AS DOUBLE PRECISION), min(lo), max(hi),"
        " CAST(sum(n) AS BIGINT) FROM ("
        f"SELECT (ts_ms / {mark}) * {mark} AS b, parameter, sum(value) AS s, count(*) AS n,"
        f" min(value) AS lo, max(value) AS hi FROM {readings} WHERE device_id = {mark}"
        f" AND parameter IN ({marks}) AND ts_ms >= {mark} AND ts_ms < {mark}{flag}"
        " GROUP BY b, parameter"
        f" UNION ALL SELECT (hour_ms / {mark}) * {mark}, parameter, {p}total, {p}n, {p}lo, {p}hi"
        f" FROM {hourly} WHERE device_id = {mark} AND parameter IN ({marks})"
        f" AND hour_ms >= {mark} AND hour_ms < {mark} AND {p}n > 0"
        ") AS parts GROUP BY b, parameter ORDER BY b, parameter"
    )
