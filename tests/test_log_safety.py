"""Logs cannot be forged or flooded from outside: untrusted text is escaped, and dead letters
are one INFO line per interval with counts per kind of reason."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from domain.logtext import EscapingFilter, log_safe
from domain.params import default_catalogue
from domain.registry import load_registry
from ingest.dead_letter_log import DeadLetterLog
from ingest.kinds import standard_decoders
from ingest.pipeline import IngestPipeline, RawMessage
from landun.demo import demo_registry_path
from store.sqlite import SqliteStore


def test_log_safe_escapes_control_characters_and_bounds_length() -> None:
    assert log_safe("landun/v1/devices/x\n2026 INFO forged/telemetry") == (
        "landun/v1/devices/x\\x0a2026 INFO forged/telemetry"
    )
    assert log_safe("a\x00b\x1b[31mc\u2028d\ud800") == "a\\x00b\\x1b[31mc\\u2028d\\ud800"
    assert log_safe("泳池-1 pH") == "泳池-1 pH"
    assert log_safe("x" * 500, 10) == "x" * 10 + "…"


def test_escaping_filter_keeps_one_record_on_one_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(EscapingFilter())
    logger = logging.getLogger("landun.test.escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("message on %s", "topic\nFAKE LINE\x00")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "message on topic\\x0aFAKE LINE\\x00\n"


def test_dead_letters_are_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    summary = DeadLetterLog(logging.getLogger("landun.test.dead"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="landun.test.dead"):
        for n in range(1000):
            summary.record(f"discarded {n} bytes of garbage before header ##")
            summary.record(f"unknown device pool-{n}\nforged")
        assert caplog.records == []
        now[0] = 60.0
        summary.record("empty payload")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("2001 dead letters in the last 60 s: ")
    assert "1000 × discarded N bytes of garbage before header ##" in line
    assert "1000 × unknown device pool-N\\x0aforged" in line
    assert "1 × empty payload" in line and "\n" not in line


def test_pipeline_logs_no_line_per_dead_letter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(
        store, load_registry(demo_registry_path()), standard_decoders(default_catalogue())
    )
    bad = [RawMessage(f"landun/v1/devices/x{n}\n/telemetry", b"{", 1) for n in range(200)]
    with caplog.at_level(logging.INFO, logger="landun.ingest"):
        assert pipeline.process(bad)
        assert [r for r in caplog.records if "dead letter" in r.getMessage()] == []
        pipeline.stop()
    (line,) = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    assert line.startswith("200 dead letters in the last")
    assert "200 × topic '…' is not landun/v1/devices/<id>/<kind>" in line
    assert len(store.dead_letters(1000)) == 200
    store.close()
