"""InfluxDB 2 backend for readings, composed with a relational store for everything else.

Readings go to InfluxDB; dead letters, device status, last-seen times, alerts, their audit trail
and engine state stay in the relational store (SQLite), so `InfluxStore` satisfies the whole
`Store` protocol.

Schema: one measurement per parameter family (`pool_water`, `waste_store`, from
domain/data/parameters.toml); tags `site`, `device`, `jurisdiction`, `parameter`; fields `value`
(float), `flag` (string), `recv_ms` (integer), `seq` (integer, when the device sent one); the
point's time is the sensor time with millisecond precision.

Writes are synchronous, one HTTP request per ingest batch, never the client's batching mode: that
mode drops a batch after its retries run out, while ingest must know the batch is committed
before it acknowledges the messages to the broker.

Errors: an unreachable or overloaded server raises `StoreUnavailable` (ingest backs off and
retries, the broker holds the backlog); a rejected token, missing permission or missing bucket
raises `InfluxConfigError`, deliberately not a `StoreUnavailable`: the pipeline's store backoff
does not retry it, because waiting does not fix a configuration error; it reaches the caller,
which should stop and say so.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import urllib3.exceptions
from influxdb_client import BucketRetentionRules, InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from domain.model import Alert, DeadLetter, Reading
from domain.params import Catalogue, default_catalogue
from domain.registry import Registry
from store.base import (
    AlertChange,
    AlertQuery,
    AuditEntry,
    DeviceStatus,
    ReadingQuery,
    StoreUnavailable,
)
from store.sqlite import SqliteStore

log = logging.getLogger("landun.store.influx")

T = TypeVar("T")
AggregateFn = Literal["mean", "min", "max"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# range() needs a stop; sensor clocks may run minutes ahead of ours, so "now" would hide them.
_FAR_FUTURE = "2100-01-01T00:00:00Z"
_FLUX_DURATION = re.compile(r"^(\d+(ns|us|µs|ms|s|m|h|d|w|mo|y))+$")
# Last-seen times live in the relational store's engine state, beside the alerts that use them.
_LAST_SEEN_NS = "store.influx.last_seen"


class InfluxError(RuntimeError):
    """InfluxDB refused a request for a reason retrying will not fix."""


class InfluxConfigError(InfluxError):
    """Token, organisation, permission or bucket is wrong: fix the configuration."""


# -- line protocol ----------------------------------------------------------------------------


def _escape_key(text: str) -> str:
    """Measurement names, tag keys and values, field keys: commas, equals signs and spaces are
    syntax in line protocol and must be escaped; a newline cannot be escaped at all."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"line protocol cannot carry a newline: {text!r}")
    return text.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_measurement(text: str) -> str:
    # An equals sign is literal in a measurement name, only commas and spaces are syntax.
    return _escape_key(text).replace(r"\=", "=")


def _string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float_field(value: float) -> str:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"line protocol has no representation for {v}")
    # repr is the shortest text that round-trips the double; "1e-05" style is valid line protocol.
    return repr(v)


def to_line_protocol(
    readings: Iterable[Reading], registry: Registry, catalogue: Catalogue | None = None
) -> list[str]:
    """One line per reading, timestamps in milliseconds (write with WritePrecision.MS)."""
    cat = catalogue or default_catalogue()
    lines = []
    for r in readings:
        param = cat.parameters.get(r.parameter)
        if param is None:
            raise ValueError(f"reading of unknown parameter {r.parameter!r}")
        site = registry.sites.get(r.site_id)
        tags = {"device": r.device_id, "jurisdiction": site.jurisdiction if site else "",
                "parameter": r.parameter, "site": r.site_id}  # fmt: skip
        # Measurement + tags are the series key, and a point is unique per series and time:
        # that is what makes a redelivered reading overwrite itself. A device moved to another
        # site or jurisdiction in the registry starts a new series, so only then could a late
        # redelivery of an older reading be stored twice.
        # Tags sorted by key (what InfluxDB does anyway); an empty tag value is not allowed.
        tag_text = "".join(f",{k}={_escape_key(v)}" for k, v in sorted(tags.items()) if v)
        fields = [
            f"value={_float_field(r.value)}",
            f"flag={_string_field(r.flag)}",
            f"recv_ms={int(r.recv_ms)}i",
        ]
        if r.seq is not None:
            fields.append(f"seq={int(r.seq)}i")
        lines.append(
            f"{_escape_measurement(param.family)}{tag_text} {','.join(fields)} {int(r.ts_ms)}"
        )
    return lines


# -- Flux -------------------------------------------------------------------------------------


def flux_string(text: str) -> str:
    """A Flux string literal; `${` would otherwise start an interpolation."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{body}"'


def flux_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, exact for any epoch-ms integer."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _any_of(column: str, values: Iterable[str]) -> str:
    return "(" + " or ".join(f"r.{column} == {flux_string(v)}" for v in values) + ")"


def _range(start_ms: int | None, end_ms: int | None) -> str:
    # Flux range() is start-inclusive and stop-exclusive, as ReadingQuery is.
    start = flux_time(start_ms) if start_ms is not None else "1970-01-01T00:00:00Z"
    stop = flux_time(end_ms) if end_ms is not None else _FAR_FUTURE
    return f"  |> range(start: {start}, stop: {stop})"


def flux_readings(bucket: str, q: ReadingQuery, measurements: Sequence[str]) -> str:
    """Flux for ReadingQuery: fields pivoted into one row per reading, one table, sorted."""
    preds = [_any_of("_measurement", measurements)]
    if q.device_id is not None:
        preds.append(f"r.device == {flux_string(q.device_id)}")
    if q.site_id is not None:
        preds.append(f"r.site == {flux_string(q.site_id)}")
    if q.parameters:
        preds.append(_any_of("parameter", q.parameters))
    return "\n".join(
        [
            f"from(bucket: {flux_string(bucket)})",
            _range(q.start_ms, q.end_ms),
            f"  |> filter(fn: (r) => {' and '.join(preds)})",
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            f'  |> sort(columns: ["_time"], desc: {"true" if q.descending else "false"})',
            f"  |> limit(n: {int(q.limit)})",
        ]
    )


def flux_downsample(
    bucket: str,
    measurement: str,
    device_id: str,
    parameter: str,
    start_ms: int,
    end_ms: int,
    every: str,
    fn: AggregateFn,
) -> str:
    """Flux for one device's parameter aggregated per window; each point is stamped with its
    window's start, so 08:00 covers [08:00, 08:00 + every)."""
    if not _FLUX_DURATION.match(every):
        raise ValueError(f"every={every!r} is not a Flux duration such as 5m or 1h")
    if fn not in ("mean", "min", "max"):
        raise ValueError(f"fn={fn!r}: choose mean, min or max")
    preds = " and ".join(
        [
            f"r._measurement == {flux_string(measurement)}",
            f"r.device == {flux_string(device_id)}",
            f"r.parameter == {flux_string(parameter)}",
            'r._field == "value"',
        ]
    )
    return "\n".join(
        [
            f"from(bucket: {flux_string(bucket)})",
            _range(start_ms, end_ms),
            f"  |> filter(fn: (r) => {preds})",
            # One series even if the device's site or jurisdiction tag changed within the range.
            "  |> group()",
            f"  |> aggregateWindow(every: {every}, fn: {fn}, createEmpty: false,"
            ' timeSrc: "_start")',
            '  |> sort(columns: ["_time"])',
        ]
    )


def _to_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


# -- errors -----------------------------------------------------------------------------------


def map_error(url: str, exc: BaseException) -> Exception:
    """The exception ingest and the API should see for a failed InfluxDB request."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        if status == 401:
            return InfluxConfigError(
                f"token rejected by InfluxDB at {url} (401): check LANDUN_INFLUX_TOKEN"
            )
        if status == 403:
            return InfluxConfigError(
                f"token lacks permission at InfluxDB {url} (403): it needs read and write on"
                " the bucket (check LANDUN_INFLUX_TOKEN and LANDUN_INFLUX_BUCKET)"
            )
        if status == 404:
            return InfluxConfigError(
                f"InfluxDB at {url} (404): organisation or bucket not found"
                " (check LANDUN_INFLUX_ORG and LANDUN_INFLUX_BUCKET)"
            )
        if status == 429 or status >= 500:
            return StoreUnavailable(f"influxdb at {url} unavailable ({status}): {exc.reason}")
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
        return InfluxError(f"InfluxDB at {url} refused the request ({status}): {body}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return StoreUnavailable(f"influxdb at {url} unreachable: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


# -- the store --------------------------------------------------------------------------------


class InfluxStore:
    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        relational: SqliteStore,
        registry: Registry,
        catalogue: Catalogue | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.org = org
        self.bucket = bucket
        self.relational = relational
        self.registry = registry
        self.catalogue = catalogue or default_catalogue()
        # No client-side retries: ingest has its own backoff, which also holds the broker acks.
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._query = self._client.query_api()
        self._measurements = sorted({p.family for p in self.catalogue.parameters.values()})

    @classmethod
    def from_env(
        cls, relational: SqliteStore, registry: Registry, catalogue: Catalogue | None = None
    ) -> InfluxStore:
        """Configured by LANDUN_INFLUX_URL, _TOKEN, _ORG and _BUCKET (as docker-compose.yml)."""
        missing = [
            f"LANDUN_INFLUX_{k}"
            for k in ("URL", "TOKEN", "ORG", "BUCKET")
            if not os.environ.get(f"LANDUN_INFLUX_{k}")
        ]
        if missing:
            raise InfluxConfigError(f"set {', '.join(missing)}")
        env = os.environ
        return cls(
            env["LANDUN_INFLUX_URL"],
            env["LANDUN_INFLUX_TOKEN"],
            env["LANDUN_INFLUX_ORG"],
            env["LANDUN_INFLUX_BUCKET"],
            relational,
            registry,
            catalogue,
        )

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            mapped = map_error(self.url, exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def ensure_bucket(self, retention_days: int) -> bool:
        """Create the bucket with this retention (0: keep for ever) unless it exists; True if
        created. An existing bucket's retention is left as the operator set it."""
        buckets = self._client.buckets_api()
        if self._call(lambda: buckets.find_bucket_by_name(self.bucket)) is not None:
            return False
        rules = (
            [BucketRetentionRules(type="expire", every_seconds=retention_days * 86_400)]
            if retention_days > 0
            else []
        )
        self._call(
            lambda: buckets.create_bucket(
                bucket_name=self.bucket, retention_rules=rules, org=self.org
            )
        )
        log.info("created InfluxDB bucket %s (retention %s days)", self.bucket, retention_days)
        return True

    def close(self) -> None:
        """Close the InfluxDB client and the relational store this store owns."""
        self._client.close()
        self.relational.close()

    # -- ingest -------------------------------------------------------------------------------

    def write_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter] = (),
        statuses: Sequence[DeviceStatus] = (),
    ) -> int:
        """Readings to InfluxDB first, then the rest to the relational store; returns
        len(readings), duplicates included.

        A point with the same measurement, tag set and time as a stored one replaces its fields,
        so a redelivered reading is stored once, but InfluxDB cannot say whether a point was new:
        the count includes duplicates (ingest's duplicate metric stays 0 on this backend).
        If the relational write fails after InfluxDB took the readings, the batch is not
        acknowledged and its redelivery overwrites the same points, so nothing is doubled."""
        if readings:
            lines = to_line_protocol(readings, self.registry, self.catalogue)
            self._call(
                lambda: self._write.write(
                    bucket=self.bucket, org=self.org, record=lines,
                    write_precision=WritePrecision.MS,
                )
            )  # fmt: skip
        if dead_letters or statuses:
            self.relational.write_batch((), dead_letters, statuses)
        self._advance_last_seen(readings)
        return len(readings)

    def _advance_last_seen(self, readings: Sequence[Reading]) -> None:
        seen: dict[str, int] = {}
        for r in readings:
            seen[r.device_id] = max(seen.get(r.device_id, 0), r.recv_ms)
        if not seen:
            return
        stored = self.last_seen()
        newer = {d: str(ms) for d, ms in seen.items() if ms > stored.get(d, 0)}
        # Read, then write: two ingest workers may interleave and keep the earlier of two
        # near-simultaneous times, off by one batch at most, which the deadman cannot notice.
        if newer:
            self.relational.save_state(_LAST_SEEN_NS, newer)

    def query_readings(self, q: ReadingQuery) -> list[Reading]:
        flux = flux_readings(self.bucket, q, self._measurements)
        tables = self._call(lambda: self._query.query(flux, org=self.org))
        out = []
        for table in tables:
            for rec in table.records:
                v = rec.values
                seq = v.get("seq")
                out.append(
                    Reading(
                        device_id=v["device"],
                        site_id=v["site"],
                        parameter=v["parameter"],
                        ts_ms=_to_ms(rec.get_time()),
                        value=float(v["value"]),
                        flag=v.get("flag") or "N",
                        recv_ms=int(v.get("recv_ms") or 0),
                        seq=int(seq) if seq is not None else None,
                    )
                )
        return out

    def downsample(
        self,
        device_id: str,
        parameter: str,
        start_ms: int,
        end_ms: int,
        every: str,
        fn: AggregateFn = "mean",
    ) -> list[tuple[int, float]]:
        """(window start ms, aggregate) per non-empty window of [start_ms, end_ms). Every value
        counts, whatever its flag: this is for charts, not for compliance judgements."""
        param = self.catalogue.parameters.get(parameter)
        if param is None:
            raise ValueError(f"unknown parameter {parameter!r}")
        flux = flux_downsample(
            self.bucket, param.family, device_id, parameter, start_ms, end_ms, every, fn
        )
        tables = self._call(lambda: self._query.query(flux, org=self.org))
        return [
            (_to_ms(rec.get_time()), float(rec.get_value()))
            for table in tables
            for rec in table.records
        ]

    # -- delegated to the relational store ----------------------------------------------------

    def last_seen(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.relational.load_state(_LAST_SEEN_NS).items()}

    def dead_letters(self, limit: int = 100, since_ms: int | None = None) -> list[DeadLetter]:
        return self.relational.dead_letters(limit, since_ms)

    def dead_letter_counts(self) -> dict[str, int]:
        return self.relational.dead_letter_counts()

    def device_statuses(self) -> dict[str, DeviceStatus]:
        return self.relational.device_statuses()

    def open_alerts(self) -> list[Alert]:
        return self.relational.open_alerts()

    def save_alerts(
        self,
        changes: Sequence[AlertChange],
        state_namespace: str = "",
        state: dict[str, str | None] | None = None,
    ) -> None:
        self.relational.save_alerts(changes, state_namespace, state)

    def get_alert(self, alert_id: int) -> Alert | None:
        return self.relational.get_alert(alert_id)

    def list_alerts(self, q: AlertQuery) -> list[Alert]:
        return self.relational.list_alerts(q)

    def audit_trail(self, alert_id: int) -> list[AuditEntry]:
        return self.relational.audit_trail(alert_id)

    def load_state(self, namespace: str) -> dict[str, str]:
        return self.relational.load_state(namespace)

    def save_state(self, namespace: str, items: dict[str, str | None]) -> None:
        self.relational.save_state(namespace, items)
