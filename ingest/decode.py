"""Wire contract decoding: raw MQTT payload bytes -> validated readings, or precise reasons.

Pydantic checks the shape at the edge; catalogue, unit, range and time checks then run on plain
data. A message with any bad part is rejected whole, with every reason listed.

Nearly every message has the plain shape (int or string ts, numbers in `values`, known flags, no
extra keys). Those take a fast path: orjson parses them and a hand check stands in for pydantic,
passing only what pydantic would pass, as pydantic would read it. Anything else, including every
message refused for its shape, goes the full way (stdlib json, pydantic), so shape reasons are
always that path's. Catalogue, unit, range and time checks are the same code on both paths."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from math import isfinite, isinf
from typing import Annotated, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from domain.model import FUTURE_TS, VALID_FLAG, Device, Reading
from domain.params import Catalogue
from domain.timeutil import ms_to_iso
from ingest.decoders import Batch
from ingest.messages import Message
from store.base import DeviceStatus

Flag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]


# A reading row keeps seq in a signed 64-bit column (SQLite INTEGER): a larger one must be refused
# here, or the store would refuse the whole batch on every retry and stall ingest.
SEQ_MAX = 2**63 - 1


class TelemetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ts: int | str
    seq: Annotated[int, Field(ge=0, le=SEQ_MAX)] | None = None
    values: Annotated[dict[str, float], Field(min_length=1)]
    # default_factory: a plain `{}` default is deep-copied on every validation (hot path).
    flags: dict[str, Flag] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    state: Literal["online", "offline", "maintenance"]
    ts: int | str | None = None
    firmware: str | None = None
    battery: Annotated[float, Field(ge=0, le=100)] | None = None
    rssi: int | None = None


_telemetry_one = TypeAdapter(TelemetryIn)

# One telemetry record as decode_record takes it: ts, seq, values, flags, units.
RecordFields = tuple[int | str, int | None, dict[str, float], Mapping[str, str], dict[str, str]]

_RECORD_KEYS = frozenset(TelemetryIn.model_fields)
_FLAGS = frozenset(get_args(Flag))
# Stands in for absent flags or units on the fast path; only ever read.
_NO_ENTRIES: dict[str, str] = {}
# The deepest plain document: an array (1) of objects (2) of dicts (3) of numbers or strings (4).
_PLAIN_DEPTH = 4
_SPACE_COLON = re.compile(rb"[ \t\n\r]:")
# A Reading made as a plain tuple: the named tuple's own constructor is a Python function.
_new_tuple = tuple.__new__


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


# A double has at most 309 integer digits; a longer integer cannot become a value.
_MAX_INT_DIGITS = 309
# An escape in the surrogate range: the only way a JSON text can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def number_from_text(text: str) -> float:
    """A decimal number as a double, refusing one that overflows to infinity or underflows to 0
    (stored, either would be a value the sender never sent)."""
    value = float(text)
    if isinf(value):
        raise ValueError(f"number {text[:40]} overflows a double")
    if value == 0.0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        raise ValueError(f"number {text[:40]} underflows to 0")
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"number {text[:40]}… overflows a double")
    return int(text)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"duplicate key {dup!r} (which value is meant is unknown)")
    return obj


def _lone_surrogate(doc: object) -> str | None:
    """The reason text in the document is not Unicode (a lone surrogate escape), or None."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        return (
            f"text contains a lone surrogate {bad.encode('unicode_escape').decode()} (not Unicode)"
        )
    return None


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
        doc = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=number_from_text,
            parse_int=_parse_int,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    except RecursionError:
        return None, f"JSON nested deeper than {limits.max_depth} levels"
    if _SURROGATE_ESCAPE.search(payload) and (why := _lone_surrogate(doc)):
        return None, why
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
    else:
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return None, f"ts {ts!r} is not ISO 8601"
        if dt.tzinfo is None:
            return None, f"ts {ts!r} has no zone offset (sensor time must state its zone)"
        ms = int(dt.timestamp() * 1000)
    if ms > now + limits.max_future_ms:
        return None, (
            f"ts {ts!s} ({_calendar(ms)}) more than {limits.max_future_ms // 60_000} min"
            f" {FUTURE_TS}"
        )
    if ms < now - limits.max_age_ms:
        return None, (
            f"ts {ts!s} ({_calendar(ms)}) older than {limits.max_age_ms // 86_400_000} days"
        )
    return ms, None


def _calendar(ms: int) -> str:
    try:
        return ms_to_iso(ms)
    except (ValueError, OverflowError, OSError):
        return "outside the calendar"


def decode_record(
    rec: RecordFields,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
    readings: list[Reading],
    reasons: list[str],
    prefix: str = "",
) -> None:
    """Appends the readings of one well-shaped record, or the reasons they are refused."""
    ts, seq, values, flags, units = rec
    ts_ms, why = parse_ts(ts, recv_ms, limits)
    if why:
        reasons.append(prefix + why)
    # Hoisted out of the loop: this runs for every value of every message.
    resolve = catalogue.by_wire_name.get
    registered = device.parameters
    device_id = device.id
    given: dict[str, str] = {}  # parameter -> the wire name that gave it
    for wire_name, raw_value in values.items():
        param = resolve(wire_name)
        if param is None:
            reasons.append(f"{prefix}unknown parameter {wire_name!r}")
            continue
        other = given.setdefault(param.name, wire_name)
        if other != wire_name:
            reasons.append(
                f"{prefix}{other!r} and {wire_name!r} both give {param.name} (which is meant?)"
            )
            continue
        if registered and param.name not in registered:
            reasons.append(
                f"{prefix}parameter {param.name!r} is not registered for device {device_id}"
            )
            continue
        value = float(raw_value)
        unit = units.get(wire_name) if units else None
        if unit is not None and unit != param.unit:
            conv = param.units.get(unit)
            if conv is None:
                reasons.append(
                    f"{prefix}{wire_name}: unit {unit!r} cannot be converted to {param.unit}"
                )
                continue
            value = conv.apply(value)
        if not param.physical_min <= value <= param.physical_max or not isfinite(value):
            reasons.append(
                f"{prefix}{wire_name}={raw_value:g} outside physical range "
                f"{param.physical_min:g}–{param.physical_max:g} {param.unit}"
            )
            continue
        if ts_ms is not None:
            flag = flags.get(wire_name, VALID_FLAG) if flags else VALID_FLAG
            row = (device_id, site_id, param.name, ts_ms, value, flag, recv_ms, seq)
            readings.append(_new_tuple(Reading, row))
    for wire_name in flags:
        if wire_name not in values:
            reasons.append(f"{prefix}flag for {wire_name!r} but no value")


def decode_telemetry(
    payload: bytes,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
) -> Decoded:
    decoded = decode_plain(payload, device, site_id, catalogue, recv_ms, limits)
    if decoded is not None:
        return decoded
    doc, why = parse_json(payload, limits)
    if why:
        return Decoded(reasons=[why])
    return decode_document(doc, device, site_id, catalogue, recv_ms, limits)


def decode_plain(
    payload: bytes,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
) -> Decoded | None:
    """The fast path: a payload orjson parses into records that all have the plain shape.
    None for anything else, which the full path then decides, with its exact reasons."""
    # Refusals for size, or for a depth limit a plain document could break, are the full path's.
    if len(payload) > limits.max_payload_bytes or limits.max_depth < _PLAIN_DEPTH:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is dict:
        items, many = [doc], False
    elif type(doc) is list and 0 < len(doc) <= limits.max_batch:
        items, many = doc, True
    else:
        return None
    records = []
    keys = 0
    for item in items:
        rec = _plain_record(item)
        if rec is None:
            return None
        records.append(rec)
        keys += len(item) + len(rec[2]) + len(rec[3]) + len(rec[4])
    # orjson keeps the last of duplicate keys silently. In a payload that can pass, every key
    # is followed by `":` and no other text has it (strings are known names, units and times),
    # so fewer keys than `":` means a duplicate; whitespace before a colon breaks the count and
    # goes the full way too, which refuses duplicates by name.
    if keys != payload.count(b'":') or _SPACE_COLON.search(payload):
        return None
    return _decode_records(records, many, device, site_id, catalogue, recv_ms, limits, [])


def _plain_record(item: object) -> RecordFields | None:
    """The fields of one orjson-parsed record if TelemetryIn would accept it as it is; None to
    leave it to pydantic. What orjson guarantees is not checked again: keys are strings, floats
    are finite (it refuses NaN and overflow). It reads an int past 64 bits as a float, which is
    refused here as ts or seq and is, in values, the float pydantic would make of the int."""
    if type(item) is not dict or not _RECORD_KEYS.issuperset(item):
        return None
    ts = item.get("ts")
    seq = item.get("seq")
    values = item.get("values")
    flags = item.get("flags", _NO_ENTRIES)
    units = item.get("units", _NO_ENTRIES)
    # Strict mode: bool is not int, float is not int, and an explicit null flags or units is an
    # error (a null seq is not).
    if (
        (type(ts) is not int and type(ts) is not str)
        or (seq is not None and (type(seq) is not int or not 0 <= seq <= SEQ_MAX))
        or type(values) is not dict
        or not values
        or type(flags) is not dict
        or type(units) is not dict
    ):
        return None
    for value in values.values():
        if type(value) is not float and type(value) is not int:
            return None
        if value == 0 and type(value) is float:
            return None  # maybe a number that underflowed: the full way tells
    for flag in flags.values():
        if type(flag) is not str or flag not in _FLAGS:
            return None
    for unit in units.values():
        if type(unit) is not str:
            return None
    return ts, seq, values, flags, units


def decode_document(
    doc: object,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
) -> Decoded:
    """Decode an already-parsed telemetry document (an object or an array of them)."""
    reasons: list[str] = []
    if isinstance(doc, list):
        if not doc:
            reasons.append("empty array")
        elif len(doc) > limits.max_batch:
            reasons.append(f"array of {len(doc)} records over the {limits.max_batch} limit")
        items = doc if len(doc) <= limits.max_batch else []
        many = True
    elif isinstance(doc, dict):
        items, many = [doc], False
    else:
        return Decoded(reasons=[f"payload is a JSON {type(doc).__name__}, not an object or array"])
    records = [_validated(item) for item in items]
    return _decode_records(records, many, device, site_id, catalogue, recv_ms, limits, reasons)


def _validated(item: object) -> RecordFields | ValidationError:
    try:
        rec = _telemetry_one.validate_python(item)
    except ValidationError as exc:
        return exc
    return rec.ts, rec.seq, rec.values, rec.flags, rec.units


def _decode_records(
    records: Sequence[RecordFields | ValidationError],
    many: bool,
    device: Device,
    site_id: str,
    catalogue: Catalogue,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
) -> Decoded:
    """Records, or why pydantic refused them, to readings."""
    readings: list[Reading] = []
    for i, rec in enumerate(records):
        prefix = f"[{i}] " if many else ""
        if isinstance(rec, ValidationError):
            reasons.extend(_pydantic_reasons(rec, prefix))
        else:
            decode_record(
                rec, device, site_id, catalogue, recv_ms, limits, readings, reasons, prefix
            )
    return _verdict(readings, reasons)


def _verdict(readings: list[Reading], reasons: list[str]) -> Decoded:
    """A message with any reason at all is refused whole."""
    return Decoded([] if reasons else readings, reasons)


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


class TelemetryDecoder:
    """`.../telemetry`: readings."""

    __slots__ = ("catalogue", "limits")

    def __init__(self, catalogue: Catalogue, limits: DecodeLimits) -> None:
        self.catalogue = catalogue
        self.limits = limits

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        decoded = decode_telemetry(
            m.payload, device, device.site_id, self.catalogue, m.recv_ms, self.limits
        )
        if decoded.reasons:
            return "; ".join(decoded.reasons)
        batch.readings.extend(decoded.readings)
        return None


class StatusDecoder:
    """`.../status`: the device's own report of its state."""

    __slots__ = ("limits",)

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        detail, reasons = decode_status(m.payload, m.recv_ms, self.limits)
        if detail is None:
            return "; ".join(reasons)
        ts_ms = detail.pop("ts_ms")
        batch.statuses.append(DeviceStatus(device.id, m.recv_ms, ts_ms, detail["state"], detail))
        return None
