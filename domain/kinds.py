"""The site kinds (domain/data/site_kinds.toml): which kinds of site exist, their names, sub-types,
default standards profile and detector event profile, so a new kind is data, not code."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

# What a kind without an event profile of its own is scored with (the behaviour before kinds
# were data: one profile for every device).
DEFAULT_EVENT_PROFILE = "pool"


@dataclass(frozen=True, slots=True)
class Subtype:
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Kind:
    id: str
    name_zh: str
    name_en: str
    default_profile: str
    event_profile: str = DEFAULT_EVENT_PROFILE
    subtypes: dict[str, Subtype] = field(default_factory=dict)


_KIND_KEYS = {"name_zh", "name_en", "default_profile", "event_profile", "subtypes"}


def parse_kinds(doc: dict) -> dict[str, Kind]:
    out = {}
    for kind_id, spec in doc["kinds"].items():
        unknown = sorted(set(spec) - _KIND_KEYS)
        if unknown:
            raise ValueError(f"site kind {kind_id}: unknown key {unknown[0]!r}")
        out[kind_id] = Kind(
            id=kind_id,
            name_zh=spec["name_zh"],
            name_en=spec["name_en"],
            default_profile=spec["default_profile"],
            event_profile=spec.get("event_profile", DEFAULT_EVENT_PROFILE),
            subtypes={k: Subtype(**v) for k, v in spec.get("subtypes", {}).items()},
        )
    return out


@cache
def site_kinds() -> dict[str, Kind]:
    text = resources.files("domain").joinpath("data/site_kinds.toml").read_text("utf-8")
    return parse_kinds(tomllib.loads(text))


def check_kind(kind: str, subtype: str = "") -> str:
    """`kind` if the kinds table has it (and `subtype`, when given, is one of its sub-types);
    ValueError naming the known ones otherwise."""
    kinds = site_kinds()
    known = kinds.get(kind)
    if known is None:
        raise ValueError(f"unknown site kind {kind!r} (known: {', '.join(sorted(kinds))})")
    if subtype and subtype not in known.subtypes:
        names = ", ".join(sorted(known.subtypes)) or "none"
        raise ValueError(f"site kind {kind}: unknown subtype {subtype!r} (known: {names})")
    return kind
