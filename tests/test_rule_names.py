"""Every alert rule has a name in Chinese and English (domain/data/rule_names.toml), so the
evidence record and the dashboard never show a bare rule id."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import alerts
import alerts.detectors
from alerts import clock_skew, custody, offline
from domain.params import default_catalogue
from domain.rule_names import _data, comment_zh, rule_name


def _rule_ids() -> set[str]:
    ids = {offline.RULE_ID, clock_skew.RULE_ID, "integrity:flagged:ph"}
    ids |= {v for k, v in vars(custody).items() if k.startswith("RULE_")}
    for info in pkgutil.iter_modules(alerts.detectors.__path__):
        kind = getattr(importlib.import_module(f"alerts.detectors.{info.name}"), "KIND", None)
        if kind is not None:
            family = "quality" if kind == "water_quality_event" else "integrity"
            ids.add(f"{family}:{kind}:ph")
    ids |= {f"range:{p}" for p in default_catalogue().parameters}
    return ids


def test_every_rule_the_code_raises_has_a_name_in_both_languages():
    ids = _rule_ids()
    assert len(ids) > 30
    for rid in ids:
        zh, en = rule_name(rid, "ph", "zh"), rule_name(rid, "ph", "en")
        assert zh != rid and en != rid, rid
        assert any("\u4e00" <= c <= "\u9fff" for c in zh) and en.isascii(), rid


def test_names_carry_the_parameter_in_the_page_language():
    assert rule_name("range:free_chlorine", "free_chlorine", "zh") == "游离性余氯超出限值"
    assert rule_name("integrity:stuck:orp", "orp", "en") == "ORP: sensor stuck"
    assert rule_name("custody:weight_loss", None, "zh") == "医疗废物交接重量减少"
    assert rule_name("something:new", None, "en") == "something:new"  # an unknown rule: its id


def test_the_alert_stage_comments_translated_are_the_ones_it_writes():
    source = "".join(p.read_text() for p in Path(alerts.__file__).parent.glob("*.py"))
    for comment in _data()["comments"]:
        assert f'"{comment}"' in source, comment
    assert comment_zh("breach far or long: critical") == "超标程度或持续时间达到严重级别"
    assert comment_zh("phoned the pool") is None  # an inspector's words stay as written
