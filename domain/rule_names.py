"""What each alert rule is called, in Chinese and English, and the alert stage's own audit
comments in Chinese (domain/data/rule_names.toml)."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from domain.params import default_catalogue


@cache
def _data() -> dict[str, dict]:
    text = resources.files("domain").joinpath("data/rule_names.toml").read_text("utf-8")
    return tomllib.loads(text)


def _names() -> dict[str, dict[str, str]]:
    return _data()["rules"]


def parameter_name(parameter: str | None, lang: str) -> str:
    """A parameter's name in zh or en; an unknown one by its id."""
    if parameter is None:
        return ""
    p = default_catalogue().parameters.get(parameter)
    if p is None:
        return parameter
    return p.name_zh if lang == "zh" else p.name_en


def rule_name(rule_id: str, parameter: str | None, lang: str) -> str:
    """The rule's name in zh or en, with its parameter; an unlisted rule by its id."""
    parts = rule_id.split(":")
    for key in (rule_id, ":".join(parts[:2]), parts[0]):
        entry = _names().get(key)
        if entry is not None:
            return entry[lang].format(parameter=parameter_name(parameter, lang)).strip()
    return rule_id


def comment_zh(comment: str) -> str | None:
    """One of the alert stage's own audit comments in Chinese; None for any other text."""
    return _data()["comments"].get(comment)
