"""The pipeline decodes each message kind through its decoder table (ingest.kinds): an unknown
kind is a dead letter saying exactly what was refused, a kind registered here is decoded with no
change to the pipeline, and the HJ 212 gateway hands the pipeline typed messages over a real TCP
socket (SQLite store, demo registry)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.hj212.codec import decode, encode, format_cp
from domain.model import Device
from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.decode import DecodeLimits
from ingest.decoders import Batch, DecoderTable
from ingest.hj212.decoder import Hj212Decoder
from ingest.hj212.gateway import Hj212Gateway
from ingest.hj212.sink import PipelineSink, RegistryLookup
from ingest.kinds import standard_decoders
from ingest.messages import HJ212_ROUTE, Hj212Message, Message, RawMessage
from ingest.pipeline import IngestListener, IngestPipeline
from landun.demo import demo_registry_path
from store.base import ReadingQuery
from store.sqlite import SqliteStore

POOL = "pool-xh-01-wq"  # a pool_analyzer of the demo registry
SCANNER = "hosp-xh-01-scan"  # a waste_scanner
HJ_DEVICE = "pool-cn-03-hj"
HJ_MN = "LD310105POOLCN0300000001"
SAFETY = 5.0  # seconds; bounds a hang, never a timing assertion


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "landun.db")
    yield s
    s.close()


def pipeline(store: SqliteStore, decoders: DecoderTable, **kw) -> IngestPipeline:
    return IngestPipeline(store, load_registry(demo_registry_path()), decoders, **kw)


def msg(device: str, route: str, body: object) -> RawMessage:
    return RawMessage(f"landun/v1/devices/{device}/{route}", json.dumps(body).encode(), now_ms())


def test_an_unknown_route_is_a_dead_letter_naming_the_routes_taken(store: SqliteStore) -> None:
    p = pipeline(store, standard_decoders(default_catalogue()))
    assert p.process([msg(POOL, "config", {"interval_s": 5})])
    (dead,) = store.dead_letters(10)
    assert (dead.device_id, dead.topic) == (POOL, f"landun/v1/devices/{POOL}/config")
    assert (
        dead.reason
        == "config messages are not accepted here (routes taken: hj212, status, telemetry)"
    )


def test_events_of_a_device_kind_without_a_decoder_name_the_kinds_taken(
    store: SqliteStore,
) -> None:
    recorded: list = []
    ledger = ListLedger(recorded)
    p = pipeline(store, standard_decoders(default_catalogue(), waste=ledger))
    bag = {"ts": now_ms(), "event": "bag_stored", "bag_id": "B-1"}
    assert p.process([msg(POOL, "events", bag), msg(SCANNER, "events", bag)])
    (dead,) = store.dead_letters(10)
    assert dead.reason == (
        f"device {POOL} is a pool_analyzer: its events messages are not accepted here"
        " (only those of waste_scanner devices)"
    )
    assert [e.bag_id for e in recorded] == ["B-1"]  # the scanner's, in the given ledger


def test_no_ledger_no_events(store: SqliteStore) -> None:
    """A pipeline given no ledger takes no events at all, and says so."""
    p = pipeline(store, standard_decoders(default_catalogue()))
    assert p.process([msg(SCANNER, "events", {"ts": now_ms(), "event": "bag_stored"})])
    (dead,) = store.dead_letters(10)
    assert dead.reason.startswith("events messages are not accepted here")


def test_two_decoders_for_one_kind_are_refused() -> None:
    table = standard_decoders(default_catalogue())
    with pytest.raises(ValueError, match="two decoders for telemetry messages of \\* devices"):
        table.add("telemetry", Hj212Decoder(default_catalogue(), DecodeLimits()))


# -- a kind registered by a test ----------------------------------------------------------------


@dataclass(frozen=True)
class Counted:
    device_id: str
    count: int


@dataclass
class ListLedger:
    """A ledger in a list: events are new the first time they are seen."""

    items: list
    calls: int = 0

    def record(self, events: Sequence) -> list:
        self.calls += 1
        fresh = [e for e in events if e not in self.items]
        self.items.extend(fresh)
        return fresh


class CounterDecoder:
    """`.../counter`: `{"count": n}`, a non-negative integer, recorded in its ledger."""

    def __init__(self, ledger: ListLedger) -> None:
        self.ledger = ledger

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        count = json.loads(m.payload).get("count")
        if type(count) is not int or count < 0:
            return f"count {count!r} is not a non-negative integer"
        batch.add_events(self.ledger, [Counted(device.id, count)])
        return None


def test_a_kind_registered_here_is_decoded_without_touching_the_pipeline(
    store: SqliteStore,
) -> None:
    ledger = ListLedger([])
    table = standard_decoders(default_catalogue()).add(
        "counter", CounterDecoder(ledger), "pool_analyzer"
    )
    heard: list = []
    p = pipeline(store, table, listener=IngestListener(events=heard.extend))
    batch = [
        msg(POOL, "counter", {"count": 3}),
        msg(POOL, "counter", {"count": -1}),
        msg(SCANNER, "counter", {"count": 4}),  # registered for pool analyzers only
        msg(POOL, "counter", {"count": 5}),
        msg(POOL, "telemetry", {"ts": now_ms(), "values": {"ph": 7.4}}),  # the others still work
    ]
    assert p.process(batch)
    assert p.process(batch[:1])  # redelivered: the ledger says it is not new
    # One ledger call per batch, in the batch's order; only new events are heard.
    assert ledger.calls == 2
    assert ledger.items == heard == [Counted(POOL, 3), Counted(POOL, 5)]
    reasons = sorted(d.reason for d in store.dead_letters(10))
    assert reasons == [
        "count -1 is not a non-negative integer",
        f"device {SCANNER} is a waste_scanner: its counter messages are not accepted here"
        " (only those of pool_analyzer devices)",
    ]
    assert p.metrics.readings_stored == 1


# -- the HJ 212 gateway hands over typed messages -----------------------------------------------


class Recording:
    """The standard HJ 212 decoder, keeping what the pipeline handed it."""

    def __init__(self) -> None:
        self.inner = Hj212Decoder(default_catalogue(), DecodeLimits())
        self.seen: list[Message] = []

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        self.seen.append(m)
        return self.inner.decode(m, device, batch)


def hj212_packet(items: dict[str, dict[str, str]], qn: str, data_time_ms: int) -> bytes:
    cst = datetime.fromtimestamp(data_time_ms / 1000, UTC) + timedelta(hours=8)
    fields = {"QN": qn, "ST": "32", "CN": "2011", "PW": "123456", "MN": HJ_MN, "Flag": "5"}
    fields["CP"] = format_cp({"DataTime": cst.strftime("%Y%m%d%H%M%S")}, items)
    return encode(fields)


def test_the_gateway_hands_the_pipeline_a_typed_message_end_to_end(store: SqliteStore) -> None:
    recording = Recording()
    table = DecoderTable().add(HJ212_ROUTE, recording)
    p = pipeline(store, table)
    ts = (now_ms() - 60_000) // 1000 * 1000
    good = hj212_packet({"w01001": {"Rtd": "7.38", "Flag": "N"}}, "20260801085800001", ts)
    bad_flag = hj212_packet({"w01001": {"Rtd": "7.2", "Flag": "X"}}, "20260801085800002", ts)
    out_of_range = hj212_packet({"w01001": {"Rtd": "19.2"}}, "20260801085800003", ts)

    async def main() -> str:
        gateway = Hj212Gateway(RegistryLookup(p.registry), PipelineSink(p))
        port = await gateway.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            local = writer.get_extra_info("sockname")
            # The last is answered only after the garbage before it is recorded.
            for packet in (good, bad_flag, out_of_range, b"garbage\r\n" + good):
                writer.write(packet)
                reply = await asyncio.wait_for(reader.readuntil(b"\r\n"), SAFETY)
                assert decode(reply).cn == "9014"  # answered once recorded, stored or refused
            writer.close()
        finally:
            await gateway.stop()
        return f"{local[0]}:{local[1]}"

    peer = asyncio.run(main())
    assert all(type(m) is Hj212Message for m in recording.seen) and len(recording.seen) == 4
    first = recording.seen[0]
    assert isinstance(first, Hj212Message)
    assert (first.device_id, first.peer, first.payload) == (HJ_DEVICE, peer, good)
    assert (first.record.ts_ms, first.record.values, first.record.flags) == (
        ts, {"ph": 7.38}, {"ph": "N"},
    )  # fmt: skip
    rows = store.query_readings(ReadingQuery(device_id=HJ_DEVICE))
    assert [(r.parameter, r.ts_ms, r.value, r.flag) for r in rows] == [("ph", ts, 7.38, "N")]
    dead = store.dead_letters(10)[::-1]  # oldest first
    # Refused by the decoder or by the gateway itself, every dead letter says where it came from.
    assert {(d.topic, d.source) for d in dead} == {(f"hj212://{peer}", "hj212")}
    assert [d.reason for d in dead[:2]] == [
        "ph: data flag 'X' is not one of N, F, M, S, D, C, T, B",
        "ph=19.2 outside physical range 0–14 pH",
    ]
    assert [d.raw for d in dead[:2]] == [bad_flag, out_of_range]
    assert [d.device_id for d in dead[:2]] == [HJ_DEVICE, HJ_DEVICE]
    assert dead[2].reason == "discarded 9 bytes of garbage before header ##"
    assert len(dead) == 3
