"""HJ 212 codec: CRC, decoding, errors, encoding round trip, split packets, stream framing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.hj212.codec import (
    Hj212Error,
    Packet,
    Reassembler,
    SplitError,
    Stream,
    crc16,
    decode,
    encode,
    format_cp,
    parse_segment,
    reply_9011,
    reply_9012,
    reply_9014,
)
from domain.hj212.codes import load_code_entries, load_code_map

WORKED_EXAMPLE = (
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
    b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
)


def reference_crc(data: bytes) -> int:
    """The standard's appendix A algorithm, bit by bit, independent of the codec's table."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            shifted_out = reg & 1
            reg >>= 1
            if shifted_out:
                reg ^= 0xA001
    return reg


def hand_frame(segment: str, crc: str | None = None, length: str | None = None) -> bytes:
    """A frame assembled by hand (not by the encoder under test)."""
    data = segment.encode()
    crc = crc if crc is not None else f"{reference_crc(data):04X}"
    length = length if length is not None else str(len(data)).zfill(4)
    return b"##" + length.encode() + data + crc.encode() + b"\r\n"


REALTIME_SEGMENT = (
    "QN=20260801085800123;ST=32;CN=2011;PW=123456;MN=LD0000000000000000000001;Flag=5;"
    "CP=&&DataTime=20260801085800;w01001-Rtd=7.41,w01001-Flag=N;"
    "w01010-Avg=27.1,w01010-Min=26.9,w01010-Max=27.3,w01010-Flag=N&&"
)


# --- CRC -----------------------------------------------------------------------------------


def test_worked_example_crc_is_1c80() -> None:
    segment = WORKED_EXAMPLE[6:-6]
    assert len(segment) == 101
    assert reference_crc(segment) == 0x1C80
    assert crc16(segment) == 0x1C80


def test_crc_is_not_modbus() -> None:
    # CRC-16/MODBUS of the same bytes differs; the HJ 212 variant XORs the byte into the
    # register's high-byte-shifted value, so the two must not be confused.
    segment = WORKED_EXAMPLE[6:-6]
    modbus = 0xFFFF
    for byte in segment:
        modbus ^= byte
        for _ in range(8):
            modbus = (modbus >> 1) ^ 0xA001 if modbus & 1 else modbus >> 1
    assert modbus != 0x1C80


@given(st.binary(max_size=300))
def test_crc_matches_reference(data: bytes) -> None:
    assert crc16(data) == reference_crc(data)


# --- decoding ------------------------------------------------------------------------------


def test_worked_example_decodes() -> None:
    packet = decode(WORKED_EXAMPLE)
    assert packet.qn == "20160801085857223"
    assert (packet.st, packet.cn, packet.pw) == ("32", "1062", "100000")
    assert packet.mn == "010000A8900016F000169DC0"
    assert packet.flag == 5
    assert packet.wants_reply and not packet.is_split
    assert packet.version == 1
    assert packet.cp == {"RtdInterval": "30"}
    assert packet.data_time_ms is None


def test_crc_is_compared_case_insensitively() -> None:
    assert decode(WORKED_EXAMPLE.replace(b"1C80\r\n", b"1c80\r\n")).cn == "1062"


def test_realtime_packet_built_by_hand_decodes() -> None:
    packet = decode(hand_frame(REALTIME_SEGMENT))
    assert packet.cn == "2011"
    assert packet.items == {
        "w01001": {"Rtd": "7.41", "Flag": "N"},
        "w01010": {"Avg": "27.1", "Min": "26.9", "Max": "27.3", "Flag": "N"},
    }
    assert packet.cp["DataTime"] == "20260801085800"
    # 08:58 in China is 00:58 UTC
    assert packet.data_time_ms == int(datetime(2026, 8, 1, 0, 58, tzinfo=UTC).timestamp() * 1000)


def test_data_time_zone_is_a_parameter() -> None:
    utc_packet = decode(hand_frame(REALTIME_SEGMENT), tz=UTC)
    cst_packet = decode(hand_frame(REALTIME_SEGMENT))
    assert utc_packet.data_time_ms - cst_packet.data_time_ms == 8 * 3600 * 1000


def test_field_order_is_free_and_cp_may_come_first_only_when_alone() -> None:
    segment = "MN=M1;Flag=4;CN=2051;PW=pw;ST=32;QN=20260801085800123;CP=&&DataTime=20260801085800&&"
    packet = decode(hand_frame(segment))
    assert (packet.mn, packet.cn, packet.flag, packet.wants_reply) == ("M1", "2051", 4, False)


def test_unknown_header_fields_are_kept() -> None:
    segment = "QN=20260801085800123;ST=32;CN=2011;PW=p;MN=M1;Flag=9;RF=1;CP=&&&&"
    packet = decode(hand_frame(segment))
    assert packet.extra == {"RF": "1"}
    assert packet.version == 2  # HJ 212-2025 loggers send Flag=9
    assert packet.wants_reply


def test_split_flag_and_parts() -> None:
    segment = "QN=20260801085800123;ST=32;CN=2011;PW=p;MN=M1;Flag=7;PNUM=3;PNO=2;CP=&&&&"
    packet = decode(hand_frame(segment))
    assert packet.is_split and packet.wants_reply
    assert (packet.pnum, packet.pno, packet.version) == (3, 2, 1)


def _error(frame: bytes, **kwargs: object) -> str:
    with pytest.raises(Hj212Error) as info:
        decode(frame, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def test_error_bad_crc_names_both_values() -> None:
    frame = WORKED_EXAMPLE.replace(b"1C80\r\n", b"1C08\r\n")
    assert _error(frame) == "bad CRC: packet says 1C08, computed 1C80"


def test_error_length_mismatch() -> None:
    frame = hand_frame(REALTIME_SEGMENT, length="0101")
    n = len(REALTIME_SEGMENT)
    assert _error(frame) == f"length field says 0101 but data segment is {n} bytes"


def test_error_missing_header() -> None:
    assert _error(WORKED_EXAMPLE[2:]) == "missing header ##"


def test_error_truncated() -> None:
    assert _error(WORKED_EXAMPLE[:50]).startswith("truncated packet")
    assert _error(b"##01\r\n").startswith("truncated packet")


def test_error_oversized() -> None:
    n = len(WORKED_EXAMPLE)
    assert _error(WORKED_EXAMPLE, max_bytes=100) == f"packet of {n} bytes over the 100 byte limit"


def test_error_non_digit_length_and_non_hex_crc() -> None:
    assert "is not 4 digits" in _error(b"##01x1" + WORKED_EXAMPLE[6:])
    assert "is not 4 hex digits" in _error(WORKED_EXAMPLE.replace(b"1C80\r\n", b"1CZ0\r\n"))


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("QN=20260801085800123;ST=32;CN=9999;PW=p;MN=M;Flag=4;CP=&&&&", "unknown CN 9999"),
        ("QN=2026;ST=32;CN=2011;PW=p;MN=M;CP=&&&&", "field QN malformed"),
        ("QN=20260801085800123;CN=2011;PW=p;MN=M;CP=&&&&", "field ST missing"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&&&", None),  # QN is optional
        ("ST=32;CN=20a1;PW=p;MN=M;CP=&&&&", "field CN malformed"),
        ("ST=32;CN=2011;MN=M;CP=&&&&", "field PW missing"),
        ("ST=32;CN=2011;PW=p;MN=;CP=&&&&", "field MN malformed: empty"),
        ("ST=32;CN=2011;PW=p;MN=M;Flag=x;CP=&&&&", "field Flag malformed"),
        ("ST=32;CN=2011;PW=p;MN=M;Flag=7;CP=&&&&", "field Flag says split packet"),
        ("ST=32;CN=2011;PW=p;MN=M;Flag=7;PNUM=2;PNO=3;CP=&&&&", "field PNO malformed"),
        ("ST=32;CN=2011;PW=p;MN=M", "field CP missing"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&DataTime=1", "field CP malformed: not closed"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&w01001-Rtd&&", "field CP malformed: item"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&a=1;a=2&&", "field CP malformed: a given twice"),
        ("ST=32;ST=33;CN=2011;PW=p;MN=M;CP=&&&&", "field ST malformed: given twice"),
        ("ST=32;CN;PW=p;MN=M;CP=&&&&", "field 'CN' malformed"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&DataTime=20261301000000&&", "field DataTime malformed"),
        ("ST=32;CN=2011;PW=p;MN=M;CP=&&DataTime=202608010858&&", "field DataTime malformed"),
    ],
)
def test_data_segment_errors(segment: str, reason: str | None) -> None:
    if reason is None:
        assert decode(hand_frame(segment)).qn is None
    else:
        assert _error(hand_frame(segment)).startswith(reason)


def test_cp_tolerates_spaces_and_empty_items() -> None:
    packet = parse_segment("ST=32;CN=2011;PW=p;MN=M;CP=&&w01001-Rtd =7.4, w01001-Flag=N;;&&")
    assert packet.items == {"w01001": {"Rtd": "7.4", "Flag": "N"}}


# --- encoding and replies --------------------------------------------------------------------

codes = st.from_regex(r"[aw][0-9]{5}", fullmatch=True)
suffixes = st.sampled_from(["Rtd", "Avg", "Min", "Max", "Cou", "Flag", "ZsRtd"])
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:g}"),
    st.sampled_from(list("NFMSDCTB")),
)


@settings(max_examples=200)
@given(
    items=st.dictionaries(codes, st.dictionaries(suffixes, values, min_size=1), max_size=20),
    data_time=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    flag=st.integers(0, 255).filter(lambda f: not f & 2),
    mn=st.from_regex(r"[0-9A-Za-z_]{1,24}", fullmatch=True),
)
def test_encode_decode_round_trip(
    items: dict[str, dict[str, str]], data_time: datetime, flag: int, mn: str
) -> None:
    stamp = data_time.strftime("%Y%m%d%H%M%S")
    cp = format_cp({"DataTime": stamp}, items)
    fields = {"QN": "20260801085800123", "ST": "32", "CN": "2051", "PW": "123456"}
    fields |= {"MN": mn, "Flag": str(flag), "CP": cp}
    packet = decode(encode(fields))
    assert packet.items == items
    assert packet.cp["DataTime"] == stamp
    assert (packet.mn, packet.flag, packet.cn) == (mn, flag, "2051")
    cst = timezone(timedelta(hours=8))
    assert packet.data_time_ms == int(data_time.replace(tzinfo=cst).timestamp()) * 1000


def test_encode_matches_worked_example() -> None:
    fields = {
        "QN": "20160801085857223",
        "ST": "32",
        "CN": "1062",
        "PW": "100000",
        "MN": "010000A8900016F000169DC0",
        "Flag": "5",
        "CP": "RtdInterval=30",
    }
    assert encode(fields) == WORKED_EXAMPLE


def test_encode_rejects_separators_in_values() -> None:
    with pytest.raises(Hj212Error, match="field MN malformed"):
        encode({"ST": "32", "CN": "2011", "PW": "p", "MN": "a;b", "CP": ""})
    with pytest.raises(Hj212Error, match="field CP malformed"):
        encode({"ST": "32", "CN": "2011", "PW": "p", "MN": "m", "CP": "a=1&&b=2"})


def test_reply_9014_carries_the_request_qn() -> None:
    request = decode(hand_frame(REALTIME_SEGMENT))
    reply = decode(reply_9014(request))
    assert (reply.qn, reply.st, reply.cn) == (request.qn, "91", "9014")
    assert (reply.pw, reply.mn, reply.flag) == (request.pw, request.mn, 4)
    assert not reply.wants_reply and reply.cp == {}


def test_replies_keep_the_logger_version() -> None:
    request = decode(hand_frame("QN=20260801085800123;ST=32;CN=1062;PW=p;MN=M;Flag=9;CP=&&&&"))
    assert decode(reply_9014(request)).flag == 8
    assert decode(reply_9011(request)).cp == {"QnRtn": "1"}
    assert decode(reply_9012(request, exe_rtn=2)).cp == {"ExeRtn": "2"}


def test_reply_without_request_qn_uses_now() -> None:
    request = decode(hand_frame("ST=32;CN=2011;PW=p;MN=M;Flag=5;CP=&&&&"))
    now = datetime(2026, 8, 1, 0, 58, 0, 123000, tzinfo=UTC)
    assert decode(reply_9014(request, now=now)).qn == "20260801085800123"


# --- split packets ---------------------------------------------------------------------------


def _part(pno: int, pnum: int, cp: str, qn: str = "20260801085800123") -> tuple[Packet, bytes]:
    segment = f"QN={qn};ST=32;CN=2011;PW=p;MN=M;Flag=7;PNUM={pnum};PNO={pno};CP=&&{cp}&&"
    raw = hand_frame(segment)
    return decode(raw), raw


def test_reassembler_merges_parts_in_any_order() -> None:
    parts = [
        _part(1, 3, "DataTime=20260801085800;w01001-Rtd=7.4"),
        _part(2, 3, "DataTime=20260801085800;w01010-Rtd=27.1,w01010-Flag=N"),
        _part(3, 3, "w01003-Rtd=0.3"),
    ]
    asm = Reassembler()
    assert asm.add(*parts[2], now=0.0) is None
    assert asm.add(*parts[0], now=0.1) is None
    assert asm.add(*parts[0], now=0.2) is None  # a resent part is ignored
    result = asm.add(*parts[1], now=0.3)
    assert result is not None
    merged, raw = result
    assert set(merged.items) == {"w01001", "w01010", "w01003"}
    assert merged.items["w01010"] == {"Rtd": "27.1", "Flag": "N"}
    assert not merged.is_split and merged.wants_reply
    assert merged.pnum is None and merged.data_time_ms == parts[0][0].data_time_ms
    assert raw == parts[0][1] + parts[1][1] + parts[2][1]
    assert asm.expire(now=1000.0) == []


def test_reassembler_expires_and_evicts() -> None:
    asm = Reassembler(max_pending=2, expiry_s=10.0)
    asm.add(*_part(1, 2, "a=1", qn="20260801085800001"), now=0.0)
    asm.add(*_part(1, 2, "a=1", qn="20260801085800002"), now=1.0)
    asm.add(*_part(1, 2, "a=1", qn="20260801085800003"), now=2.0)  # evicts ...001
    evicted = asm.expire(now=5.0)
    assert [i.qn for i in evicted] == ["20260801085800001"]
    assert evicted[0].reason == (
        "incomplete split packet QN=20260801085800001 CN=2011: got parts 1 of 2"
    )
    assert [i.qn for i in asm.expire(now=11.5)] == ["20260801085800002"]
    assert [i.qn for i in asm.drain()] == ["20260801085800003"]


def test_reassembler_rejects_disagreeing_parts() -> None:
    asm = Reassembler()
    asm.add(*_part(1, 2, "DataTime=20260801085800"), now=0.0)
    with pytest.raises(SplitError, match="disagree on DataTime") as info:
        asm.add(*_part(2, 2, "DataTime=20260801090000"), now=0.1)
    assert info.value.raw.count(b"##") == 2
    with pytest.raises(SplitError, match="disagree on PNUM"):
        asm.add(*_part(1, 2, "x=1"), now=0.2)
        asm.add(*_part(2, 3, "x=1"), now=0.3)


def test_reassembler_bounds_the_bytes_of_one_packet() -> None:
    asm = Reassembler(max_bytes=200)
    asm.add(*_part(1, 3, "a=" + "1" * 60), now=0.0)
    with pytest.raises(SplitError, match="over the 200 byte limit") as info:
        asm.add(*_part(2, 3, "b=" + "2" * 60), now=0.1)
    assert info.value.raw.count(b"##") == 2
    assert asm.drain() == []


# --- stream framing --------------------------------------------------------------------------


def _frames(stream: Stream, *chunks: bytes) -> tuple[list[bytes], list[str]]:
    frames: list[bytes] = []
    errors: list[str] = []
    for chunk in chunks:
        for item in stream.feed(chunk):
            if isinstance(item, bytes):
                frames.append(item)
            else:
                errors.append(item.reason)
    errors += [e.reason for e in stream.close()]
    return frames, errors


GOOD = [
    WORKED_EXAMPLE,
    hand_frame(REALTIME_SEGMENT),
    hand_frame("QN=20260801085800123;ST=32;CN=9015;PW=p;MN=M;Flag=9;CP=&&&&"),
]


@settings(max_examples=300)
@given(
    order=st.lists(st.sampled_from(GOOD), min_size=1, max_size=6),
    garbage=st.lists(st.text(alphabet="abc XYZ0123\r\n&;=", max_size=30), min_size=7, max_size=7),
    cuts=st.lists(st.integers(0, 2000), max_size=30),
)
def test_stream_random_chunking_with_garbage(
    order: list[bytes], garbage: list[str], cuts: list[int]
) -> None:
    # Garbage has no "#", so it never forms a header with itself or a neighbouring frame.
    tail = b"".join(frame + g.encode() for frame, g in zip(order, garbage[1:], strict=False))
    data = garbage[0].encode() + tail
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    frames, errors = _frames(Stream(), *chunks)
    assert frames == order
    assert all("garbage" in e for e in errors)
    assert all(decode(f) for f in frames)


def test_stream_reports_garbage_once_per_run() -> None:
    frames, errors = _frames(Stream(), b"hello ", b"world", WORKED_EXAMPLE, b"\r\n", b"tail")
    assert frames == [WORKED_EXAMPLE]
    assert errors == [
        "discarded 11 bytes of garbage before header ##",
        "discarded 6 bytes of garbage before header ##",
    ]


def test_stream_header_inside_a_run_of_hashes() -> None:
    frames, errors = _frames(Stream(), b"x#", b"#", WORKED_EXAMPLE)
    assert frames == [WORKED_EXAMPLE]
    assert errors == ["discarded 3 bytes of garbage before header ##"]


def test_stream_drops_oversized_packet_and_resyncs() -> None:
    big = hand_frame("ST=32;CN=2011;PW=p;MN=M;CP=&&" + "a=1;" * 100 + "&&")
    frames, errors = _frames(Stream(max_packet=200), big[:50], big[50:], WORKED_EXAMPLE)
    assert frames == [WORKED_EXAMPLE]
    assert errors == [f"packet of {len(big)} bytes over the 200 byte limit"]


def test_stream_bounds_a_frame_without_terminator() -> None:
    stream = Stream(max_packet=200)
    frames, errors = _frames(stream, b"##0100" + b"x" * 500, WORKED_EXAMPLE)
    assert frames == [WORKED_EXAMPLE]
    assert errors == ["packet of over 200 bytes without \\r\\n, over the byte limit"]


def test_stream_never_grows_on_endless_garbage() -> None:
    stream = Stream(max_packet=1024)
    reported = 0
    for _ in range(1000):
        reported += len(stream.feed(b"z" * 1000))
        assert len(stream._buf) <= 1 and len(stream._junk) <= 1024
    assert reported >= 400  # reported as it goes, not held until the next header


def test_stream_never_grows_on_a_run_of_hashes() -> None:
    stream = Stream(max_packet=1024)
    reported = 0
    for _ in range(1000):
        reported += len(stream.feed(b"#" * 1000))
        assert stream.buffered <= 2 and len(stream._junk) <= 1024
    assert reported >= 400
    # The last two "#" of the run are the header of the frame that ends it.
    frames, _ = _frames(stream, WORKED_EXAMPLE[2:])
    assert frames == [WORKED_EXAMPLE]


def test_stream_frame_in_one_byte_reads() -> None:
    stream = Stream()
    frames = [f for b in WORKED_EXAMPLE for f in stream.feed(bytes([b]))]
    assert frames == [WORKED_EXAMPLE] and stream.buffered == 0


def test_stream_truncated_by_next_header_and_bad_length() -> None:
    frames, errors = _frames(Stream(), WORKED_EXAMPLE[:40], b"##ab" + WORKED_EXAMPLE)
    assert frames == [WORKED_EXAMPLE]
    assert errors == [
        "truncated packet: next ## arrived before \\r\\n",
        "length field 'ab##' is not 4 digits",
    ]


def test_stream_reports_partial_frame_on_close() -> None:
    frames, errors = _frames(Stream(), WORKED_EXAMPLE, WORKED_EXAMPLE[:30])
    assert frames == [WORKED_EXAMPLE]
    assert errors == ["truncated packet: connection ended after 30 bytes"]


def test_stream_passes_wrong_length_frames_to_decode() -> None:
    frame = hand_frame(REALTIME_SEGMENT, length="0101")
    frames, errors = _frames(Stream(), frame + WORKED_EXAMPLE)
    assert frames == [frame, WORKED_EXAMPLE] and errors == []
    assert "length field says 0101" in _error(frames[0])


# --- code map --------------------------------------------------------------------------------


def test_default_code_map() -> None:
    code_map = load_code_map()
    assert code_map["w01001"] == "ph"
    assert code_map["w01010"] == "temperature"
    assert code_map["w01003"] == "turbidity"
    assert {"free_chlorine", "combined_chlorine", "orp"} <= set(code_map.values())
    assert all(e.source and e.confidence for e in load_code_entries().values())


def test_site_code_map_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[codes.w20999]\nparameter = "free_chlorine"\nsource = "vendor X"\n')
    assert load_code_map(path) == {"w20999": "free_chlorine"}
    path.write_text('[codes.w20999]\nparameter = "chlorine"\n')
    with pytest.raises(ValueError, match="unknown parameter 'chlorine'"):
        load_code_map(path)
