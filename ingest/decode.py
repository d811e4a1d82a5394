"""Wire contract decoding: raw MQTT payload bytes -> validated readings, or precise reasons.

Pydantic checks the shape at the edge; catalogue, unit, range and time checks then run on plain
data. A message with any bad part is rejected whole, with every reason listed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from domain.model import FUTURE_TS, Device, Reading
from domain.params import Catalogue
from domain.timeutil import ms_to_iso

Flag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]


class TelemetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ts: int | str
    seq: Annotated[int, Field(ge=0)] | None = None
    values: Annotated[dict[str, float], Field(min_length=1)]
    # default_factory: a plain `{}` default is deep-copied on every validation (hot path).
    flags: dict[str, Flag] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    state: Literal["online", "offline", "maintenance"]
    ts: int | str | None = None
    firmware: str | None = None
    battery: Annotated[float, Field(ge=0, le=100)] | int | None = None
    rssi: int | None = None


_telemetry_one = TypeAdapter(TelemetryIn)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int = 256 * 1024
    max_batch: int = 1000
    max_future_ms: int = 5 * 60_000
    max_age_ms: int = 30 * 86_400_000
    max_depth: int = 8


@dataclass(slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(obj: object, limit: int) -> int:
    """Nesting depth, stopping early once past the limit."""
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def parse_json(payload: bytes, limits: DecodeLimits) -> tuple[object, str | None]:
    """JSON document of a payload, or the reason it is not acceptable JSON."""
    if not payload:
        return None, "empty payload"
    if len(payload) > limits.max_payload_bytes:
        return None, (
            f"payload {_size(len(payload))} over the {_size(limits.max_payload_bytes)} limit"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: byte 0x{payload[exc.start]:02x} at offset {exc.start}"
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    except RecursionError:
        return None, f"JSON nested deeper than {limits.max_depth} levels"
    # Walking the document costs more than parsing it; a payload with no more brackets than
    # the limit cannot be nested deeper, which is every ordinary message.
    brackets = payload.count(b"{") + payload.count(b"[")
    if brackets > limits.max_depth and _depth(doc, limits.max_depth) > limits.max_depth:
        return None, f"JSON nested deeper than {limits.max_depth} levels"
    return doc, None


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n} bytes"


def _pydantic_reasons(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "payload"
        out.append(f"{where}: {err['msg']}")
    return out


def parse_ts(ts: int | str, now: int, limits: DecodeLimits) -> tuple[int | None, str | None]:
    """Sensor time in UTC epoch ms from epoch-ms or ISO 8601 with zone, checked against now."""
    if isinstance(ts, int):
        ms = ts
        shown = str(ts)
    else:
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return None, f"ts {ts!r} is not ISO 8601"
        if dt.tzinfo is None:
            return None, f"ts {ts!r} has no zone offset (sensor time must state its zone)"
        ms = int(dt.timestamp() * 1000)
        shown = ts
    if ms > now + limits.max_future_ms:
        return None, (
            f"ts {shown} ({_calendar(ms)}) more than {limits.max_future_ms // 60_000} min"
            f" {FUTURE_TS}"
        )
    if ms < now - limits.max_age_ms:
        return None, (
            f"ts {shown} ({_calendar(ms)}) older than {limits.max_age_ms // 86_400_000} days"
        )
    return ms, None


def _calendar(ms: int) -> str:
    try:
        return ms_to_iso(ms)
    except (ValueError, OverflowError, OSError):
        return "outside the calendar"


def decode_record(
    rec: TelemetryIn,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str = "",
) -> list[Reading]:
    ts_ms, why = parse_ts(rec.ts, recv_ms, limits)
    if why:
        reasons.append(prefix + why)
    out: list[Reading] = []
    for wire_name, raw_value in rec.values.items():
        param = catalogue.resolve(wire_name)
        if param is None:
            reasons.append(f"{prefix}unknown parameter {wire_name!r}")
            continue
        if device.parameters and param.name not in device.parameters:
            reasons.append(
                f"{prefix}parameter {param.name!r} is not registered for device {device.id}"
            )
            continue
        value = float(raw_value)
        unit = rec.units.get(wire_name)
        if unit is not None and unit != param.unit:
            conv = param.units.get(unit)
            if conv is None:
                reasons.append(
                    f"{prefix}{wire_name}: unit {unit!r} cannot be converted to {param.unit}"
                )
                continue
            value = conv.apply(value)
        if not math.isfinite(value) or not param.physical_min <= value <= param.physical_max:
            reasons.append(
                f"{prefix}{wire_name}={raw_value:g} outside physical range "
                f"{param.physical_min:g}–{param.physical_max:g} {param.unit}"
            )
            continue
        flag = rec.flags.get(wire_name, "N")
        if ts_ms is not None:
            out.append(
                Reading(device.id, site_id, param.name, ts_ms, value, flag, recv_ms, rec.seq)
            )
    for wire_name in rec.flags:
        if wire_name not in rec.values:
            reasons.append(f"{prefix}flag for {wire_name!r} but no value")
    return out


def decode_telemetry(
    payload: bytes,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
) -> Decoded:
    doc, why = parse_json(payload, limits)
    if why:
        return Decoded(reasons=[why])
    return decode_document(doc, device, site_id, catalogue, recv_ms, limits)


def decode_document(
    doc: object,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
) -> Decoded:
    """Decode an already-parsed telemetry document (an object or an array of them)."""
    result = Decoded()
    if isinstance(doc, list):
        if not doc:
            result.reasons.append("empty array")
        elif len(doc) > limits.max_batch:
            result.reasons.append(f"array of {len(doc)} records over the {limits.max_batch} limit")
        items = doc if len(doc) <= limits.max_batch else []
        many = True
    elif isinstance(doc, dict):
        items, many = [doc], False
    else:
        return Decoded(reasons=[f"payload is a JSON {type(doc).__name__}, not an object or array"])
    for i, item in enumerate(items):
        prefix = f"[{i}] " if many else ""
        try:
            rec = _telemetry_one.validate_python(item)
        except ValidationError as exc:
            result.reasons.extend(_pydantic_reasons(exc, prefix))
            continue
        result.readings.extend(
            decode_record(rec, device, site_id, catalogue, recv_ms, limits, result.reasons, prefix)
        )
    if result.reasons:
        result.readings.clear()
    return result


def decode_status(
    payload: bytes, recv_ms: int, limits: DecodeLimits
) -> tuple[dict | None, list[str]]:
    """Device status message -> (detail dict with 'state' and 'ts_ms'), or reasons."""
    doc, why = parse_json(payload, limits)
    if why:
        return None, [why]
    try:
        status = StatusIn.model_validate(doc)
    except ValidationError as exc:
        return None, _pydantic_reasons(exc, "")
    ts_ms = None
    if status.ts is not None:
        ts_ms, why = parse_ts(status.ts, recv_ms, limits)
        if why:
            return None, [why]
    detail = status.model_dump(exclude_none=True)
    detail["ts_ms"] = ts_ms
    return detail, []
