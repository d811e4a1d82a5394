"""InfluxDB 2 backend for readings, composed with a relational store for everything else.

Readings go to InfluxDB; dead letters, device status, last-seen times, alerts, their audit trail,
webhook deliveries, users and tokens, and the other roles stay in the relational store, so
`InfluxStore` satisfies the whole `Store` protocol: the readings methods are implemented here, the
rest are forwarded by name (`DELEGATED`).

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
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import urllib3.exceptions
from influxdb_client import BucketRetentionRules, InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from domain.model import DeadLetter, Reading
from domain.params import Catalogue, default_catalogue
from domain.registry import Registry
from store.base import Bucket, DeviceStatus, ReadingQuery, Store, StoreUnavailable

log = logging.getLogger("landun.store.influx")

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# range() needs a stop; sensor clocks may run minutes ahead of ours, so "now" would hide them.
_FAR_FUTURE = "2100-01-01T00:00:00Z"


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


def flux_float(value: float) -> str:
    """A Flux float literal: Flux has no exponent notation, so 1e-05 is written 0.00001."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"Flux has no literal for {v}")
    text = format(Decimal(repr(v)), "f")
    return text if "." in text else text + ".0"


def _pivoted(bucket: str, start: str, stop: str, preds: Sequence[str]) -> list[str]:
    """Value and flag of each reading in one row (flag is a field, so filtering on it needs the
    pivot)."""
    where = " and ".join([*preds, '(r._field == "value" or r._field == "flag")'])
    return [
        f"from(bucket: {flux_string(bucket)})",
        f"  |> range(start: {start}, stop: {stop})",
        f"  |> filter(fn: (r) => {where})",
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
    ]


# Count, sum, min and max of one window in one pass; the mean is sum / count, taken in Python.
_WINDOW_STATS = """\
stats = (column, tables=<-) => tables
  |> reduce(
    identity: {n: 0, total: 0.0, lo: 0.0, hi: 0.0},
    fn: (r, accumulator) => ({
      n: accumulator.n + 1,
      total: accumulator.total + r.value,
      lo: if accumulator.n == 0 or r.value < accumulator.lo then r.value else accumulator.lo,
      hi: if accumulator.n == 0 or r.value > accumulator.hi then r.value else accumulator.hi
    })
  )"""


def flux_downsample(
    bucket: str,
    measurements: Sequence[str],
    device_id: str,
    parameters: Sequence[str],
    start_ms: int,
    end_ms: int,
    every_ms: int,
    valid_only: bool = True,
) -> str:
    """Flux for Store.downsample: count, sum, min and max per parameter and UTC-aligned window of
    `every_ms` over [start_ms, end_ms), each row stamped with its window's start.

    Windows are aligned to the epoch, like SQLite's (ts // every) * every; but Flux clips a
    window to the range, so a range starting at 08:03 would stamp the first 5m window 08:03. The
    range therefore starts at the aligned 08:00 and a filter on _time keeps readings from 08:03."""
    if int(every_ms) <= 0:
        raise ValueError(f"every_ms={every_ms!r} must be a positive number of milliseconds")
    if not measurements or not parameters:
        raise ValueError("need at least one measurement and one parameter")
    aligned = start_ms - start_ms % every_ms
    keep = f"r._time >= {flux_time(start_ms)}" + (' and r.flag == "N"' if valid_only else "")
    preds = [
        _any_of("_measurement", measurements),
        f"r.device == {flux_string(device_id)}",
        _any_of("parameter", parameters),
    ]
    return "\n".join(
        [
            _WINDOW_STATS,
            *_pivoted(bucket, flux_time(aligned), flux_time(end_ms), preds),
            f"  |> filter(fn: (r) => {keep})",
            # One table per parameter, even if the device's site or jurisdiction tag changed
            # within the range (a new series).
            '  |> group(columns: ["parameter"])',
            f'  |> aggregateWindow(every: {int(every_ms)}ms, fn: stats, column: "value",'
            ' createEmpty: false, timeSrc: "_start")',
            "  |> group()",
            '  |> sort(columns: ["_time", "parameter"])',
        ]
    )


def flux_latest(bucket: str, measurements: Sequence[str], device_id: str) -> str:
    """Flux for Store.latest_readings: the newest point of each parameter of a device.

    last() runs per field series; a point written without seq leaves seq's last value on an older
    point, which pivots into a row without a value and is dropped."""
    preds = f"{_any_of('_measurement', measurements)} and r.device == {flux_string(device_id)}"
    return "\n".join(
        [
            f"from(bucket: {flux_string(bucket)})",
            _range(None, None),
            f"  |> filter(fn: (r) => {preds})",
            "  |> last()",
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> filter(fn: (r) => exists r.value)",
            # Several series per parameter if the device moved site: the newest of them.
            '  |> group(columns: ["parameter"])',
            '  |> sort(columns: ["_time"])',
            '  |> last(column: "_time")',
            "  |> group()",
            '  |> sort(columns: ["parameter"])',
        ]
    )


def flux_reading_stats(
    bucket: str,
    measurement: str,
    device_id: str,
    parameter: str,
    start_ms: int,
    end_ms: int,
    low: float | None,
    high: float | None,
) -> str:
    """Flux for Store.reading_stats: one row with `total`, `valid` (flag N) and `outside` (valid
    and below `low` or above `high`; a missing bound is no bound); no row for no readings."""
    bounds = [f"r.value < {flux_float(low)}"] if low is not None else []
    bounds += [f"r.value > {flux_float(high)}"] if high is not None else []
    outside = f'r.flag == "N" and ({" or ".join(bounds)})' if bounds else "false"
    preds = [
        f"r._measurement == {flux_string(measurement)}",
        f"r.device == {flux_string(device_id)}",
        f"r.parameter == {flux_string(parameter)}",
    ]
    return "\n".join(
        [
            *_pivoted(bucket, flux_time(start_ms), flux_time(end_ms), preds),
            "  |> group()",
            "  |> reduce(",
            "    identity: {total: 0, valid: 0, outside: 0},",
            "    fn: (r, accumulator) => ({",
            "      total: accumulator.total + 1,",
            '      valid: accumulator.valid + (if r.flag == "N" then 1 else 0),',
            f"      outside: accumulator.outside + (if {outside} then 1 else 0)",
            "    })",
            "  )",
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
        relational: Store,
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
        cls, relational: Store, registry: Registry, catalogue: Catalogue | None = None
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
                    # The constant is the string "ms"; the client annotates the class.
                    write_precision=WritePrecision.MS,  # type: ignore[arg-type]
                )
            )  # fmt: skip
        if dead_letters or statuses:
            self.relational.write_batch((), dead_letters, statuses)
        seen: dict[str, int] = {}
        for r in readings:
            seen[r.device_id] = max(seen.get(r.device_id, 0), r.recv_ms)
        if seen:
            self.relational.record_last_seen(seen)
        return len(readings)

    def query_readings(self, q: ReadingQuery) -> list[Reading]:
        flux = flux_readings(self.bucket, q, self._measurements)
        return [_reading_from_row(v) for v in self._rows(flux)]

    def _rows(self, flux: str) -> list[dict[str, Any]]:
        tables = self._call(lambda: self._query.query(flux, org=self.org))
        return [rec.values for table in tables for rec in table.records]

    def _families(self, parameters: Iterable[str]) -> list[str]:
        """Measurements holding these parameters; unknown parameters have no readings."""
        params = self.catalogue.parameters
        return sorted({params[p].family for p in parameters if p in params})

    def downsample(
        self,
        device_id: str,
        parameters: Sequence[str],
        start_ms: int,
        end_ms: int,
        every_ms: int,
        valid_only: bool = True,
    ) -> list[Bucket]:
        """Mean, min, max and count per parameter and UTC-aligned `every_ms` window of
        [start_ms, end_ms), non-empty windows only, ordered by window then parameter; with
        `valid_only`, readings flagged other than N are left out. As SqliteStore.downsample."""
        known = [p for p in parameters if p in self.catalogue.parameters]
        if not known or start_ms >= end_ms:
            return []
        flux = flux_downsample(
            self.bucket, self._families(known), device_id, known, start_ms, end_ms, every_ms,
            valid_only,
        )  # fmt: skip
        return [
            Bucket(
                start_ms=_to_ms(v["_time"]),
                parameter=v["parameter"],
                mean=float(v["total"]) / int(v["n"]),
                min=float(v["lo"]),
                max=float(v["hi"]),
                count=int(v["n"]),
            )
            for v in self._rows(flux)
        ]

    def latest_readings(self, device_id: str) -> list[Reading]:
        """The newest reading of each parameter of a device, ordered by parameter."""
        flux = flux_latest(self.bucket, self._measurements, device_id)
        return [_reading_from_row(v) for v in self._rows(flux)]

    def reading_stats(
        self,
        device_id: str,
        parameter: str,
        start_ms: int,
        end_ms: int,
        low: float | None,
        high: float | None,
    ) -> tuple[int, int, int]:
        """(all readings, valid readings, valid readings outside [low, high]) in the range."""
        param = self.catalogue.parameters.get(parameter)
        if param is None or start_ms >= end_ms:
            return 0, 0, 0
        flux = flux_reading_stats(
            self.bucket, param.family, device_id, parameter, start_ms, end_ms, low, high
        )
        rows = self._rows(flux)
        if not rows:
            return 0, 0, 0
        [v] = rows
        return int(v["total"]), int(v["valid"]), int(v["outside"])

    # -- delegated to the relational store ----------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Forward the names in DELEGATED, and only those, to the relational store.

        Only called for names the class does not define. A whitelist rather than forwarding
        everything: SqliteStore also has readings methods, which here would silently answer
        from its empty readings table; a Store method added later fails loudly (AttributeError,
        and tests/test_influx_unit.py checks every protocol method is defined or listed)."""
        if name in DELEGATED:
            return getattr(self.relational, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# Store methods answered by the relational store unchanged: everything but readings. Last-seen
# times are kept there too (ingest moves them forward with each batch).
DELEGATED = frozenset(
    {
        "last_seen",
        "record_last_seen",
        "dead_letters",
        "dead_letter_counts",
        "prune_dead_letters",
        "device_statuses",
        "open_alerts",
        "save_alerts",
        "get_alert",
        "list_alerts",
        "audit_trail",
        "last_audit_id",
        "audit_events",
        "record_delivery",
        "deliveries",
        "claim_notice",
        "release_notice",
        "add_user",
        "get_user",
        "add_token",
        "principal_for_token",
        "list_users",
        "set_user_disabled",
        "delete_user",
        "list_tokens",
        "revoke_token",
        "load_state",
        "save_state",
        "site_edits",
        "save_site_edit",
        "device_edits",
        "save_device_edit",
        "public_links",
        "save_public_link",
        "add_tank_records",
        "tank_records",
        "counter",
        "save_counter",
        "mailed_reports",
        "record_mailed_report",
        "notify_settings",
        "save_notify_settings",
        "claim_escalation",
        "escalation_steps",
        "append_audit",
    }
)


def _reading_from_row(v: dict[str, Any]) -> Reading:
    """A Reading from a row of pivoted fields (value, flag, recv_ms, seq) and its tags."""
    seq = v.get("seq")
    return Reading(
        device_id=v["device"],
        site_id=v["site"],
        parameter=v["parameter"],
        ts_ms=_to_ms(v["_time"]),
        value=float(v["value"]),
        flag=v.get("flag") or "N",
        recv_ms=int(v.get("recv_ms") or 0),
        seq=int(seq) if seq is not None else None,
    )
