"""Thousands of random payloads through the real pipeline and a real SQLite file: no exception
escapes, and every message ends up either stored or dead-lettered. The decoder's fast path is
checked against its full path on generated well-formed and subtly malformed JSON."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.model import Device
from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.decode import (
    Decoded,
    DecodeLimits,
    decode_document,
    decode_plain,
    decode_telemetry,
    parse_json,
)
from ingest.kinds import standard_decoders
from ingest.pipeline import IngestPipeline, RawMessage
from landun.demo import demo_registry_path
from store.sqlite import SqliteStore

REGISTRY = load_registry(demo_registry_path())
CATALOGUE = default_catalogue()
DEVICE = REGISTRY.devices["pool-xh-01-wq"]
NOW = now_ms()

wire_names = st.sampled_from([*CATALOGUE.by_wire_name, "chlorine", "", "ph ", "PH"])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([7.4, 0.6, 712, 0.31, 27.4]),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
timestamps = st.one_of(
    st.integers(min_value=NOW - 40 * 86_400_000, max_value=NOW + 600_000),
    st.sampled_from(["2026-11-22T08:00:00+08:00", "2026-11-22T08:00:00", "yesterday", ""]),
    json_scalars,
)
records = st.fixed_dictionaries(
    {"ts": timestamps, "values": st.dictionaries(wire_names, numbers, max_size=6)},
    optional={
        "seq": st.one_of(st.integers(min_value=-5, max_value=10**12), json_scalars),
        "flags": st.dictionaries(wire_names, st.sampled_from(list("NFMSDCTBX")), max_size=3),
        "units": st.dictionaries(wire_names, st.sampled_from(["degF", "K", "mg/L", "?"])),
        "extra": json_scalars,
    },
)
documents = st.one_of(records, st.lists(records, max_size=5), json_scalars)


def _dump(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


payloads = st.one_of(
    documents.map(_dump),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_decoder_never_raises_and_always_decides(payload: bytes) -> None:
    decoded = decode_telemetry(payload, DEVICE, DEVICE.site_id, CATALOGUE, NOW, DecodeLimits())
    assert bool(decoded.readings) != bool(decoded.reasons)
    for r in decoded.readings:
        p = CATALOGUE.parameters[r.parameter]
        assert p.physical_min <= r.value <= p.physical_max


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=20))
def test_every_message_is_stored_or_dead_lettered(tmp_path_factory, batch: list[bytes]) -> None:
    db = tmp_path_factory.mktemp("fuzz") / "landun.db"
    store = SqliteStore(db)
    pipeline = IngestPipeline(store, REGISTRY, standard_decoders(CATALOGUE))
    topic = "landun/v1/devices/pool-xh-01-wq/telemetry"
    msgs = [RawMessage(topic, p, NOW) for p in batch]
    assert pipeline.process(msgs)
    store.close()
    conn = sqlite3.connect(db)
    dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    stored_msgs = sum(
        1
        for p in batch
        if not decode_telemetry(p, DEVICE, DEVICE.site_id, CATALOGUE, NOW, DecodeLimits()).reasons
    )
    conn.close()
    assert dead + stored_msgs == len(batch)
    assert pipeline.metrics.dead_lettered == dead


# The fast path (orjson and a hand check of the plain shape) must decide every payload exactly as
# the full path (stdlib json, pydantic) does, or decline it. JSON is generated as text, so that
# duplicate keys, number spellings, huge ints, NaN literals and lone surrogates reach the parsers.
def _obj(members: list[tuple[str, str]], ascii_keys: bool) -> str:
    """JSON object text from (key, value text) pairs, duplicates kept."""
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_keys)}:{v}" for k, v in members) + "}"


good_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        ["7.4", "0.6", "712", "0.31", "27.4", "81", "-0", "-0.0", "1E2", "7.40", "1e-400"]
    ),
)
odd_numbers = st.sampled_from(
    ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 400, "true", "false", "null", '"7.4"',
     "[]", "{}", "[7.4]"]
)  # fmt: skip
good_keys = st.one_of(wire_names, st.sampled_from(["温度", "T", "temp", "FCl"]))
odd_keys = st.just("\ud800")
good_ts = st.one_of(
    st.integers(min_value=NOW - 40 * 86_400_000, max_value=NOW + 600_000).map(str),
    st.integers(min_value=NOW - 86_400_000, max_value=NOW).map(str),
    st.sampled_from(['"2026-11-22T08:00:00+08:00"', '"2026-11-22T08:00:00"', '"yesterday"', '""']),
    st.sampled_from([str(2**63), str(-(2**63)), str(2**64 - 1), "-0", "0"]),
)
odd_ts = st.sampled_from(
    ["null", "true", f"{NOW}.0", f"{NOW / 1000}e3", str(2**64), str(10**30), "[]", "{}"]
)
good_seq = st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map(str), st.just("null"))
odd_seq = st.one_of(
    st.integers(min_value=-(2**64), max_value=-1).map(str),
    st.sampled_from(["true", "false", "1.0", '"1"', str(2**64), "[]", "{}"]),
)
good_flags = st.sampled_from(['"N"', '"C"', '"B"', '"F"'])
odd_flags = st.sampled_from(['"X"', '""', '"n"', "null", "1", "true", '["N"]', "{}"])
good_units = st.sampled_from(['"degF"', '"K"', '"degC"', '"mg/L"', '"mV"', '"?"', '""', '"单位"'])
odd_units = st.sampled_from(["null", "1", "true", "[]", '{"a": 1}'])
mostly = st.integers(0, 9).map(bool)


@st.composite
def record_texts(draw: st.DrawFn) -> str:
    """A telemetry record as JSON text. A clean one has the plain shape (though its values may
    be unknown, out of range or out of time); in any other, each part may be malformed."""
    clean = draw(st.integers(0, 2).map(bool))

    def part(good: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> str:
        return draw(good if clean else st.one_of(good, good, odd))

    ascii_keys = draw(st.booleans())
    keys = good_keys if clean else st.one_of(good_keys, odd_keys)

    def entries(good: st.SearchStrategy[str], odd: st.SearchStrategy[str], min_size: int) -> str:
        values = good if clean else st.one_of(good, good, odd)
        pairs = draw(st.lists(st.tuples(keys, values), min_size=min_size, max_size=5))
        return _obj(pairs, ascii_keys)

    members = []
    if clean or draw(mostly):
        members.append(("ts", part(good_ts, odd_ts)))
    if draw(st.booleans()):
        members.append(("seq", part(good_seq, odd_seq)))
    if clean or draw(mostly):
        members.append(("values", entries(good_numbers, odd_numbers, int(clean))))
    for name, good, odd in (("flags", good_flags, odd_flags), ("units", good_units, odd_units)):
        if draw(st.booleans()):
            members.append((name, entries(good, odd, 0)))
        elif not clean and not draw(mostly):
            members.append((name, draw(st.sampled_from(["null", "[]", '"N"', "1"]))))
    if not clean and not draw(mostly):  # an extra key, or a second copy of a known one
        name = draw(st.sampled_from(["extra", "ts", "seq", "values", "flags", "Values"]))
        members.append((name, draw(st.one_of(good_numbers, odd_numbers, good_ts))))
    return _obj(draw(st.permutations(members)), ascii_keys)


document_texts = st.one_of(
    record_texts(),
    record_texts(),
    st.lists(record_texts(), max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
)
nothing = st.just("")
text_payloads = st.tuples(
    st.one_of(nothing, nothing, st.sampled_from([" ", "\ufeff", "\n\t", "x"])),
    document_texts,
    st.one_of(nothing, nothing, st.sampled_from([" \r\n", "\x00", " x", ",", "]", "{}"])),
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))
LIMITS = [
    DecodeLimits(),
    DecodeLimits(),
    DecodeLimits(max_depth=3),
    DecodeLimits(max_depth=4),
    DecodeLimits(max_batch=2),
    DecodeLimits(max_payload_bytes=80),
    DecodeLimits(max_age_ms=86_400_000),
]
OPEN_DEVICE = dataclasses.replace(DEVICE, parameters=())
NARROW_DEVICE = dataclasses.replace(DEVICE, parameters=("ph", "temperature"))


def _full_path(payload: bytes, device: Device, limits: DecodeLimits) -> Decoded:
    """What every payload went through before the fast path existed."""
    doc, why = parse_json(payload, limits)
    if why:
        return Decoded(reasons=[why])
    return decode_document(doc, device, device.site_id, CATALOGUE, NOW, limits)


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text_payloads,
    st.sampled_from([DEVICE, OPEN_DEVICE, NARROW_DEVICE]),
    st.sampled_from(LIMITS),
)
def test_fast_path_decides_as_the_full_path_or_declines(
    payload: bytes, device: Device, limits: DecodeLimits
) -> None:
    full = _full_path(payload, device, limits)
    fast = decode_plain(payload, device, device.site_id, CATALOGUE, NOW, limits)
    event("fast path" if fast is not None else "full path")
    if fast is not None:
        assert fast == full
        assert [type(r.value) for r in fast.readings] == [float] * len(fast.readings)
    assert decode_telemetry(payload, device, device.site_id, CATALOGUE, NOW, limits) == full


PLAIN = {"ts": NOW - 60_000, "seq": 7, "values": {"free_chlorine": 0.62, "ph": 7, "orp": 712}}


@pytest.mark.parametrize(
    "doc",
    [
        PLAIN,
        {**PLAIN, "ts": "2026-11-22T08:00:00+08:00", "seq": None},
        {**PLAIN, "flags": {"orp": "C"}, "units": {"orp": "mV"}},
        {**PLAIN, "values": {"temperature": 81}, "units": {"temperature": "degF"}},
        {**PLAIN, "values": {"ph": 19.2, "chlorine": 1}, "flags": {"orp": "C"}},
        {
            **PLAIN,
            "ts": NOW + 3_600_000,
            "values": {"temperature": 20},
            "units": {"temperature": "K"},
        },
        [PLAIN, {**PLAIN, "values": {"ph": 0}}],
    ],
)
def test_plain_documents_take_the_fast_path_with_the_full_paths_result(doc: object) -> None:
    payload = json.dumps(doc).encode()
    fast = decode_plain(payload, DEVICE, DEVICE.site_id, CATALOGUE, NOW, DecodeLimits())
    assert fast is not None
    assert fast == _full_path(payload, DEVICE, DecodeLimits())


@pytest.mark.parametrize(
    ("payload", "limits"),
    [
        (b'{"ts": true, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 1795334400000.0, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 18446744073709551616, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 1, "seq": -1, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 1, "seq": 18446744073709551616, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 1, "seq": false, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": true}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": "7.4"}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 1e400}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": NaN}}', DecodeLimits()),
        (b'{"ts": 1, "values": {}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 7.4}, "flags": null}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 7.4}, "flags": {"ph": "X"}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 7.4}, "flags": {"ph": ["N"]}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 7.4}, "units": {"ph": 1}}', DecodeLimits()),
        (b'{"ts": 1, "values": {"ph": 7.4}, "colour": "blue"}', DecodeLimits()),
        (b'{"ts": 1, "values": {"\\ud800": 7.4}}', DecodeLimits()),
        (b'\xef\xbb\xbf{"ts": 1, "values": {"ph": 7.4}}', DecodeLimits()),
        (b'[{"ts": 1, "values": {"ph": 7.4}}, {"ts": 1}]', DecodeLimits()),
        (b"[]", DecodeLimits()),
        (b'[{"ts": 1, "values": {"ph": 7.4}}] ', DecodeLimits(max_batch=0)),
        (b'{"ts": 1, "values": {"ph": 7.4}}', DecodeLimits(max_depth=3)),
        (b'{"ts": 1, "values": {"ph": 7.4}}', DecodeLimits(max_payload_bytes=16)),
        (b"", DecodeLimits()),
        (b"7.4", DecodeLimits()),
    ],
)
def test_unusual_payloads_are_left_to_the_full_path(payload: bytes, limits: DecodeLimits) -> None:
    assert decode_plain(payload, DEVICE, DEVICE.site_id, CATALOGUE, NOW, limits) is None
    full = _full_path(payload, DEVICE, limits)
    assert decode_telemetry(payload, DEVICE, DEVICE.site_id, CATALOGUE, NOW, limits) == full
