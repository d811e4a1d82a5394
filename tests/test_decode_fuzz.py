"""Thousands of random payloads through the real pipeline and a real SQLite file: no exception
escapes, and every message ends up either stored or dead-lettered."""

from __future__ import annotations

import json
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.decode import DecodeLimits, decode_telemetry
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
    pipeline = IngestPipeline(store, REGISTRY, CATALOGUE)
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
