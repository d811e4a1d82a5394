"""InfluxDB backend without an InfluxDB server: line protocol, Flux text, and error mapping.

The HTTP tests talk to a tiny local http.server on 127.0.0.1 that stands in for InfluxDB: real
HTTP exchanges through influxdb-client, with the status codes and bodies InfluxDB 2 sends, but
not InfluxDB itself. The contract suite (tests/test_store_contract.py) runs against a real
server when LANDUN_INFLUX_URL is set. InfluxDB is an optional extra (`landun[influx]`): without
influxdb-client these tests skip."""

from __future__ import annotations

import http.server
import inspect
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("influxdb_client", reason="the influx extra is not installed")

from domain.model import DeadLetter, Device, Reading, Site, SiteKind
from domain.params import default_catalogue
from domain.registry import Registry
from ingest.kinds import standard_decoders
from ingest.pipeline import IngestPipeline, RawMessage
from store.base import Bucket, DeviceStatus, Principal, ReadingQuery, Store, StoreUnavailable
from store.influx import (
    DELEGATED,
    InfluxConfigError,
    InfluxStore,
    flux_downsample,
    flux_float,
    flux_latest,
    flux_reading_stats,
    flux_readings,
    flux_string,
    flux_time,
    to_line_protocol,
)
from store.sqlite import SqliteStore

# One measurement per parameter family of the catalogue (every kind of site adds its own).
MEASUREMENTS = sorted({p.family for p in default_catalogue().parameters.values()})

TS = 1_795_334_400_123  # 2026-11-22T08:00:00.123Z


def _registry(site_id: str = "pool-1", device_id: str = "dev-1") -> Registry:
    reg = Registry()
    reg.add_site(Site(site_id, "Pool", SiteKind.POOL, "310104"))
    reg.add_device(Device(device_id, site_id, "pool_analyzer", ("ph",)))
    return reg


def _reading(**kw) -> Reading:
    base = dict(device_id="dev-1", site_id="pool-1", parameter="ph", ts_ms=TS, value=7.41,
                flag="N", recv_ms=TS + 877, seq=5)  # fmt: skip
    return Reading(**{**base, **kw})


# -- line protocol ----------------------------------------------------------------------------


def test_line_protocol_schema_and_ms_time() -> None:
    [line] = to_line_protocol([_reading()], _registry())
    assert line == (
        "pool_water,device=dev-1,jurisdiction=310104,parameter=ph,site=pool-1"
        ' value=7.41,flag="N",recv_ms=1795334401000i,seq=5i 1795334400123'
    )


def test_tags_escape_spaces_commas_and_equals() -> None:
    site, dev = "pool a,b=c", "dev=1 x"
    [line] = to_line_protocol([_reading(site_id=site, device_id=dev)], _registry(site, dev))
    assert line.startswith(
        r"pool_water,device=dev\=1\ x,jurisdiction=310104,parameter=ph,site=pool\ a\,b\=c "
    )


def test_string_field_escapes_quotes_and_backslashes() -> None:
    [line] = to_line_protocol([_reading(flag='C"\\')], _registry())
    assert r'flag="C\"\\"' in line


def test_newline_in_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        to_line_protocol([_reading(site_id="a\nb")], _registry("a\nb"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(712, "712.0"), (0.1 + 0.2, "0.30000000000000004"), (1e-05, "1e-05"), (-3.5, "-3.5")],
)
def test_float_fields_round_trip(value: float, text: str) -> None:
    [line] = to_line_protocol([_reading(value=value)], _registry())
    assert f"value={text}," in line
    assert float(text) == value


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="no representation"):
        to_line_protocol([_reading(value=float("nan"))], _registry())


def test_measurement_is_the_parameter_family_and_missing_seq_is_omitted() -> None:
    reg = _registry()
    [line] = to_line_protocol([_reading(parameter="room_temperature", seq=None)], reg)
    assert line.startswith("waste_store,")
    assert "seq=" not in line


def test_unknown_site_leaves_out_the_jurisdiction_tag() -> None:
    [line] = to_line_protocol([_reading(site_id="elsewhere")], _registry())
    assert "jurisdiction" not in line.split(" ")[0]


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown parameter"):
        to_line_protocol([_reading(parameter="nope")], _registry())


# -- Flux -------------------------------------------------------------------------------------


def test_flux_literals() -> None:
    assert flux_string('a"b\\c${x}') == '"a\\"b\\\\c\\${x}"'
    assert flux_time(0) == "1970-01-01T00:00:00.000Z"
    assert flux_time(TS) == "2026-11-22T08:00:00.123Z"


def test_flux_readings_with_every_filter() -> None:
    q = ReadingQuery(device_id="dev-1", site_id="pool-1", parameters=("ph", "orp"),
                     start_ms=TS, end_ms=TS + 60_000, limit=50, descending=True)  # fmt: skip
    assert flux_readings("readings", q, ["pool_water", "waste_store"]) == "\n".join(
        [
            'from(bucket: "readings")',
            "  |> range(start: 2026-11-22T08:00:00.123Z, stop: 2026-11-22T08:01:00.123Z)",
            '  |> filter(fn: (r) => (r._measurement == "pool_water"'
            ' or r._measurement == "waste_store") and r.device == "dev-1"'
            ' and r.site == "pool-1" and (r.parameter == "ph" or r.parameter == "orp"))',
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            '  |> sort(columns: ["_time"], desc: true)',
            "  |> limit(n: 50)",
        ]
    )


def test_flux_readings_open_range_reaches_past_now() -> None:
    flux = flux_readings("b", ReadingQuery(), ["pool_water"])
    # Sensor clocks run ahead of ours by minutes: "now" as the stop would hide their readings.
    assert "range(start: 1970-01-01T00:00:00Z, stop: 2100-01-01T00:00:00Z)" in flux
    assert "desc: false" in flux
    assert "r.device" not in flux


@pytest.mark.parametrize(
    ("value", "text"),
    [(7.0, "7.0"), (-3.5, "-3.5"), (1e-05, "0.00001"), (1e20, "100000000000000000000.0"),
     (0.1 + 0.2, "0.30000000000000004"), (712, "712.0")],
)  # fmt: skip
def test_flux_float_has_no_exponent(value: float, text: str) -> None:
    assert flux_float(value) == text
    assert float(text) == value


def test_flux_float_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        flux_float(float("inf"))


def test_flux_downsample() -> None:
    # TS is 08:00:00.123: the range starts at the aligned 08:00, the filter at TS itself.
    flux = flux_downsample("readings", ["pool_water"], 'dev"1', ["ph", "orp"], TS,
                           TS + 3_600_000, 300_000)  # fmt: skip
    lines = flux.splitlines()
    assert lines[0] == "stats = (column, tables=<-) => tables"
    assert lines[lines.index('from(bucket: "readings")') :] == [
        'from(bucket: "readings")',
        "  |> range(start: 2026-11-22T08:00:00.000Z, stop: 2026-11-22T09:00:00.123Z)",
        '  |> filter(fn: (r) => (r._measurement == "pool_water") and r.device == "dev\\"1"'
        ' and (r.parameter == "ph" or r.parameter == "orp")'
        ' and (r._field == "value" or r._field == "flag"))',
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        '  |> filter(fn: (r) => r._time >= 2026-11-22T08:00:00.123Z and r.flag == "N")',
        '  |> group(columns: ["parameter"])',
        '  |> aggregateWindow(every: 300000ms, fn: stats, column: "value", createEmpty: false,'
        ' timeSrc: "_start")',
        "  |> group()",
        '  |> sort(columns: ["_time", "parameter"])',
    ]
    for part in ("n: accumulator.n + 1", "total: accumulator.total + r.value",
                 "r.value < accumulator.lo", "r.value > accumulator.hi"):  # fmt: skip
        assert part in flux


def test_flux_downsample_aligns_the_range_to_the_window_and_can_keep_flagged() -> None:
    start = TS + 7 * 60_000  # 08:07:00.123
    flux = flux_downsample("b", ["pool_water", "waste_store"], "d", ["ph"], start,
                           start + 86_400_000, 3_600_000, valid_only=False)  # fmt: skip
    assert "range(start: 2026-11-22T08:00:00.000Z, stop: 2026-11-23T08:07:00.123Z)" in flux
    assert "  |> filter(fn: (r) => r._time >= 2026-11-22T08:07:00.123Z)" in flux
    assert "r.flag" not in flux
    assert "every: 3600000ms" in flux


@pytest.mark.parametrize("every_ms", [0, -60_000])
def test_flux_downsample_refuses_bad_arguments(every_ms: int) -> None:
    with pytest.raises(ValueError):
        flux_downsample("b", ["pool_water"], "d", ["ph"], 0, 1, every_ms)
    with pytest.raises(ValueError):
        flux_downsample("b", ["pool_water"], "d", [], 0, 1, 60_000)


def test_flux_latest() -> None:
    assert flux_latest("readings", ["pool_water", "waste_store"], "dev-${1}") == "\n".join(
        [
            'from(bucket: "readings")',
            "  |> range(start: 1970-01-01T00:00:00Z, stop: 2100-01-01T00:00:00Z)",
            '  |> filter(fn: (r) => (r._measurement == "pool_water"'
            ' or r._measurement == "waste_store") and r.device == "dev-\\${1}")',
            "  |> last()",
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> filter(fn: (r) => exists r.value)",
            '  |> group(columns: ["parameter"])',
            '  |> sort(columns: ["_time"])',
            '  |> last(column: "_time")',
            "  |> group()",
            '  |> sort(columns: ["parameter"])',
        ]
    )


def test_flux_reading_stats() -> None:
    flux = flux_reading_stats("readings", "pool_water", "dev-1", "ph", TS, TS + 60_000, 6.5, 1e-05)
    lines = flux.splitlines()
    assert lines[:5] == [
        'from(bucket: "readings")',
        "  |> range(start: 2026-11-22T08:00:00.123Z, stop: 2026-11-22T08:01:00.123Z)",
        '  |> filter(fn: (r) => r._measurement == "pool_water" and r.device == "dev-1"'
        ' and r.parameter == "ph" and (r._field == "value" or r._field == "flag"))',
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "  |> group()",
    ]
    assert "identity: {total: 0, valid: 0, outside: 0}" in flux
    assert 'valid: accumulator.valid + (if r.flag == "N" then 1 else 0)' in flux
    assert (
        "outside: accumulator.outside"
        ' + (if r.flag == "N" and (r.value < 6.5 or r.value > 0.00001) then 1 else 0)'
    ) in flux


@pytest.mark.parametrize(
    ("low", "high", "outside"),
    [(None, 8.5, '(if r.flag == "N" and (r.value > 8.5) then 1 else 0)'),
     (-1.0, None, '(if r.flag == "N" and (r.value < -1.0) then 1 else 0)'),
     (None, None, "(if false then 1 else 0)")],
)  # fmt: skip
def test_flux_reading_stats_open_bounds(low, high, outside: str) -> None:
    assert outside in flux_reading_stats("b", "pool_water", "d", "ph", 0, 1, low, high)


# -- the whole Store protocol ---------------------------------------------------------------


def _protocol_methods() -> set[str]:
    roles = [c for c in Store.__mro__ if c.__module__ == Store.__module__]  # Store and its roles
    return {n for c in roles for n, v in vars(c).items() if not n.startswith("_") and callable(v)}


def test_every_store_method_is_implemented_or_delegated_never_both() -> None:
    implemented = {n for n in vars(InfluxStore) if not n.startswith("_")}
    missing = _protocol_methods() - implemented - DELEGATED
    assert not missing, f"neither implemented nor delegated: {sorted(missing)}"
    assert not (implemented & DELEGATED), "implemented and delegated"
    assert _protocol_methods() >= DELEGATED, "delegates a name outside the Store protocol"


def test_implemented_methods_have_the_protocol_signatures() -> None:
    for name in _protocol_methods() - DELEGATED:
        want = inspect.signature(getattr(Store, name))
        assert inspect.signature(getattr(InfluxStore, name)) == want, name


def test_delegation_forwards_listed_names_only(tmp_path: Path) -> None:
    store = _store("http://127.0.0.1:9", tmp_path)  # never contacted
    assert store.get_user == store.relational.get_user
    store.add_user("ann", "hash", "inspector", ["310104"])
    assert store.get_user("ann") == (Principal("ann", "inspector", ("310104",)), "hash")
    store.record_delivery("hook", 1, "opened", True, 1, "", TS)
    assert [d.target for d in store.deliveries()] == ["hook"]
    assert store.last_audit_id() == 0
    # Nothing else of the SqliteStore shows through.
    for name in ("_tx", "_reader", "path", "_writer"):
        with pytest.raises(AttributeError):
            getattr(store, name)
    store.close()


# -- HTTP, against a stand-in for InfluxDB ----------------------------------------------------


@dataclass
class StandIn:
    """What the stand-in received, and how it answers: (status, content type, body)."""

    answer: Callable[[str], tuple[int, str, bytes]]
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def stand_in() -> Iterator[Callable[[Callable[[str], tuple[int, str, bytes]]], StandIn]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Callable[[str], tuple[int, str, bytes]]) -> StandIn:
        state = StandIn(answer)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                state.requests.append(("POST", self.path, body))
                status, ctype, out = state.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _store(url: str, tmp_path: Path) -> InfluxStore:
    return InfluxStore(url, "tok", "landun", "readings", SqliteStore(tmp_path / "rel.db"),
                       _registry(), timeout_s=3)  # fmt: skip


UNAUTHORIZED = (401, "application/json", b'{"code":"unauthorized","message":"unauthorized access"}')


def test_token_rejected_is_a_config_error(stand_in, tmp_path: Path) -> None:
    server = stand_in(lambda path: UNAUTHORIZED)
    store = _store(server.url, tmp_path)
    with pytest.raises(InfluxConfigError) as err:
        store.write_batch([_reading()])
    assert str(err.value) == (
        f"token rejected by InfluxDB at {server.url} (401): check LANDUN_INFLUX_TOKEN"
    )
    with pytest.raises(InfluxConfigError):
        store.query_readings(ReadingQuery())
    store.close()


def test_closed_port_is_store_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there now: connection refused.
    store = _store(f"http://127.0.0.1:{port}", tmp_path)
    with pytest.raises(StoreUnavailable, match=rf"influxdb at http://127.0.0.1:{port} unreachable"):
        store.write_batch([_reading()])
    store.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, StoreUnavailable), (429, StoreUnavailable), (404, InfluxConfigError),
     (403, InfluxConfigError)],
)  # fmt: skip
def test_status_mapping(stand_in, tmp_path: Path, status: int, error: type) -> None:
    server = stand_in(lambda path: (status, "application/json", b'{"code":"x","message":"y"}'))
    store = _store(server.url, tmp_path)
    with pytest.raises(error):
        store.write_batch([_reading()])
    store.close()


def test_ingest_does_not_retry_a_config_error(stand_in, tmp_path: Path) -> None:
    """The pipeline retries StoreUnavailable for ever; a rejected token reaches its caller at once."""
    server = stand_in(lambda path: UNAUTHORIZED)
    store = _store(server.url, tmp_path)
    pipeline = IngestPipeline(store, store.registry, standard_decoders(default_catalogue()))
    payload = b'{"ts": %d, "values": {"ph": 7.4}}' % TS
    msg = RawMessage("landun/v1/devices/dev-1/telemetry", payload, TS + 1000)
    with pytest.raises(InfluxConfigError):
        pipeline.process([msg])
    assert pipeline.metrics.store_retries == 0
    assert len(server.requests) == 1
    store.close()


def test_write_batch_is_one_synchronous_ms_write_plus_relational(stand_in, tmp_path) -> None:
    server = stand_in(lambda path: (204, "application/json", b""))
    store = _store(server.url, tmp_path)
    r = _reading()
    dead = DeadLetter("landun/v1/devices/x/telemetry", "x", TS, "unknown device x", b"{}")
    status = DeviceStatus("dev-1", TS, TS, "online", {"state": "online"})
    # The same reading twice: InfluxDB keeps one point, and cannot say so; the count includes it.
    assert store.write_batch([r, r], [dead], [status]) == 2
    [(method, path, body)] = server.requests  # returned only after the server answered
    assert method == "POST" and path.startswith("/api/v2/write?")
    assert "precision=ms" in path and "bucket=readings" in path and "org=landun" in path
    assert body.decode().splitlines() == to_line_protocol([r, r], store.registry)
    assert store.dead_letters()[0].reason == "unknown device x"
    assert store.device_statuses()["dev-1"].state == "online"
    assert store.last_seen() == {"dev-1": r.recv_ms}
    store.write_batch([_reading(recv_ms=r.recv_ms - 5)])
    assert store.last_seen() == {"dev-1": r.recv_ms}, "last seen never goes back"
    store.close()


# InfluxDB's annotated CSV for the pivoted query: one reading with seq, one without.
QUERY_CSV = b"""\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,string,string,string,long,long,double
#group,false,false,false,false,false,false,false,false,false,false,false,false,false,false
#default,_result,,,,,,,,,,,,,
,result,table,_start,_stop,_time,_measurement,device,jurisdiction,parameter,site,flag,recv_ms,seq,value
,,0,1970-01-01T00:00:00Z,2100-01-01T00:00:00Z,2026-11-22T08:00:00.123Z,pool_water,dev-1,310104,ph,pool-1,N,1795334401000,5,7.41
,,0,1970-01-01T00:00:00Z,2100-01-01T00:00:00Z,2026-11-22T08:01:00.123Z,pool_water,dev-1,310104,ph,pool-1,C,1795334461000,,7.5

"""


def test_query_readings_parses_pivoted_rows(stand_in, tmp_path: Path) -> None:
    server = stand_in(lambda path: (200, "text/csv; charset=utf-8", QUERY_CSV))
    store = _store(server.url, tmp_path)
    q = ReadingQuery(device_id="dev-1")
    got = store.query_readings(q)
    assert got == [
        _reading(),
        _reading(ts_ms=TS + 60_000, value=7.5, flag="C", recv_ms=1_795_334_461_000, seq=None),
    ]
    [(_, path, body)] = server.requests
    assert path.startswith("/api/v2/query?")
    # A query without parameters reads every family's measurement.
    assert flux_readings("readings", q, MEASUREMENTS).encode() in body.replace(
        b"\\n", b"\n"
    ).replace(b'\\"', b'"')
    store.close()


# Annotated CSV as InfluxDB sends it for flux_downsample (rows of reduce's n, total, lo, hi).
DOWNSAMPLE_CSV = b"""\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,long,double,double,double
#group,false,false,false,false,false,false,false,false,false,false
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,parameter,n,total,lo,hi
,,0,2026-11-22T08:00:00Z,2026-11-22T08:05:00Z,2026-11-22T08:00:00Z,orp,2,1400.0,690.0,710.0
,,0,2026-11-22T08:00:00Z,2026-11-22T08:05:00Z,2026-11-22T08:00:00Z,ph,4,29.6,7.2,7.6
,,0,2026-11-22T08:05:00Z,2026-11-22T08:10:00Z,2026-11-22T08:05:00Z,ph,1,7.5,7.5,7.5

"""

STATS_CSV = b"""\
#datatype,string,long,long,long,long
#group,false,false,false,false,false
#default,_result,,,,
,result,table,total,valid,outside
,,0,10,8,3

"""

EMPTY_CSV = b"\r\n"


def _sent_flux(body: bytes) -> str:
    return json.loads(body)["query"]


def test_downsample_parses_window_rows(stand_in, tmp_path: Path) -> None:
    server = stand_in(lambda path: (200, "text/csv; charset=utf-8", DOWNSAMPLE_CSV))
    store = _store(server.url, tmp_path)
    t0 = TS - 123
    got = store.downsample("dev-1", ["ph", "orp", "nope"], TS, TS + 600_000, 300_000)
    assert got == [
        Bucket(t0, "orp", 700.0, 690.0, 710.0, 2),
        Bucket(t0, "ph", pytest.approx(7.4), 7.2, 7.6, 4),
        Bucket(t0 + 300_000, "ph", 7.5, 7.5, 7.5, 1),
    ]
    [(_, _, body)] = server.requests
    assert _sent_flux(body) == flux_downsample(
        "readings", ["pool_water"], "dev-1", ["ph", "orp"], TS, TS + 600_000, 300_000
    )
    # Unknown parameters only, or an empty range: no buckets, and no request.
    assert store.downsample("dev-1", ["nope"], TS, TS + 1, 60_000) == []
    assert store.downsample("dev-1", ["ph"], TS, TS, 60_000) == []
    assert len(server.requests) == 1
    store.close()


def test_latest_readings_parses_pivoted_rows(stand_in, tmp_path: Path) -> None:
    server = stand_in(lambda path: (200, "text/csv; charset=utf-8", QUERY_CSV))
    store = _store(server.url, tmp_path)
    assert [r.flag for r in store.latest_readings("dev-1")] == ["N", "C"]
    [(_, _, body)] = server.requests
    assert _sent_flux(body) == flux_latest("readings", MEASUREMENTS, "dev-1")
    store.close()


def test_reading_stats_parses_the_counts(stand_in, tmp_path: Path) -> None:
    answers = iter([STATS_CSV, EMPTY_CSV])
    server = stand_in(lambda path: (200, "text/csv; charset=utf-8", next(answers)))
    store = _store(server.url, tmp_path)
    assert store.reading_stats("dev-1", "ph", TS, TS + 60_000, 6.5, 8.5) == (10, 8, 3)
    assert store.reading_stats("dev-1", "ph", TS, TS + 60_000, None, None) == (0, 0, 0)
    assert _sent_flux(server.requests[0][2]) == flux_reading_stats(
        "readings", "pool_water", "dev-1", "ph", TS, TS + 60_000, 6.5, 8.5
    )
    assert store.reading_stats("dev-1", "nope", TS, TS + 60_000, 1.0, 2.0) == (0, 0, 0)
    assert len(server.requests) == 2
    store.close()


# -- Core.open picks the backend by the environment -------------------------------------------


@pytest.fixture
def influx_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    for key in ("URL", "TOKEN", "ORG", "BUCKET", "RETENTION_DAYS"):
        monkeypatch.delenv(f"LANDUN_INFLUX_{key}", raising=False)

    def set_env(url: str) -> None:
        monkeypatch.setenv("LANDUN_INFLUX_URL", url)
        monkeypatch.setenv("LANDUN_INFLUX_TOKEN", "tok")
        monkeypatch.setenv("LANDUN_INFLUX_ORG", "landun")
        monkeypatch.setenv("LANDUN_INFLUX_BUCKET", "readings")

    return set_env


def test_core_open_uses_sqlite_without_influx_url(influx_env, tmp_path: Path) -> None:
    from landun.system import Core, RunConfig

    core = Core.open(RunConfig(data_dir=tmp_path))
    assert type(core.store) is SqliteStore
    core.store.close()


def test_core_open_uses_influx_when_configured(influx_env, monkeypatch, tmp_path: Path) -> None:
    """Stand-in: ensure_bucket is replaced by a recorder, so no InfluxDB is contacted; this checks
    the wiring (backend, environment, retention), not InfluxDB."""
    from landun.system import Core, RunConfig

    retention: list[int] = []
    monkeypatch.setattr(InfluxStore, "ensure_bucket", lambda self, days: retention.append(days))
    influx_env("http://127.0.0.1:9")
    monkeypatch.setenv("LANDUN_INFLUX_RETENTION_DAYS", "30")
    core = Core.open(RunConfig(data_dir=tmp_path))
    assert isinstance(core.store, InfluxStore)
    assert (core.store.url, core.store.org, core.store.bucket) == (
        "http://127.0.0.1:9", "landun", "readings"
    )  # fmt: skip
    assert core.store.relational.path == tmp_path / "landun.db"
    assert retention == [30]
    core.store.close()


def test_core_open_says_clearly_when_influx_is_unreachable(influx_env, tmp_path: Path) -> None:
    """Stand-in: a local port nothing listens on, as an InfluxDB that is down."""
    from landun.system import Core, RunConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    influx_env(f"http://127.0.0.1:{port}")
    with pytest.raises(StoreUnavailable, match=rf"influxdb at http://127.0.0.1:{port} unreachable"):
        Core.open(RunConfig(data_dir=tmp_path))


def test_core_open_names_missing_influx_settings(influx_env, monkeypatch, tmp_path) -> None:
    from landun.system import Core, RunConfig

    monkeypatch.setenv("LANDUN_INFLUX_URL", "http://127.0.0.1:9")
    with pytest.raises(InfluxConfigError, match="set LANDUN_INFLUX_TOKEN, LANDUN_INFLUX_ORG"):
        Core.open(RunConfig(data_dir=tmp_path))
