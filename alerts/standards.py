"""Standards profiles (alerts/data/standards/*.toml): the limits a site is judged against."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path

from domain.model import Site
from domain.params import unit_label

_RULE_KEYS = ("pending_s", "clear_s", "critical_after_s")


@dataclass(frozen=True, slots=True)
class Limit:
    parameter: str
    unit: str
    clause: str
    confidence: str
    standard: str
    profile: str
    min: float | None = None
    max: float | None = None
    hysteresis: float = 0.0
    critical_min: float | None = None
    critical_max: float | None = None
    pending_s: int = 600
    clear_s: int = 600
    critical_after_s: int = 3600
    advisory: bool = False

    def violated(self, v: float) -> bool:
        return (self.min is not None and v < self.min) or (self.max is not None and v > self.max)

    def clearly_inside(self, v: float) -> bool:
        """Inside by the hysteresis margin: only then may an episode start to clear."""
        lo_ok = self.min is None or v >= self.min + self.hysteresis
        hi_ok = self.max is None or v <= self.max - self.hysteresis
        return lo_ok and hi_ok

    def far_out(self, v: float) -> bool:
        return (self.critical_min is not None and v < self.critical_min) or (
            self.critical_max is not None and v > self.critical_max
        )

    def badness(self, v: float) -> float:
        """How far outside the band a value is (0 inside); orders 'worst value'."""
        if self.min is not None and v < self.min:
            return self.min - v
        if self.max is not None and v > self.max:
            return v - self.max
        return 0.0

    @property
    def unit_label(self) -> str:
        return unit_label(self.unit)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}–{self.max:g} {self.unit_label}"
        if self.min is not None:
            return f"≥{self.min:g} {self.unit_label}"
        return f"≤{self.max:g} {self.unit_label}"

    def as_dict(self) -> dict:
        return {
            "parameter": self.parameter,
            "min": self.min,
            "max": self.max,
            "unit": self.unit,
            "unit_label": self.unit_label,
            "text": self.describe(),
            "standard": self.standard,
            "clause": self.clause,
            "confidence": self.confidence,
            "profile": self.profile,
            "pending_s": self.pending_s,
            "clear_s": self.clear_s,
            "hysteresis": self.hysteresis,
        }


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    title_zh: str
    title_en: str
    standard: str
    site_kind: str
    limits: dict[str, Limit]
    note: str = ""


def parse_profile(doc: dict) -> Profile:
    rules = doc.get("rules", {})
    limits = {}
    for param, spec in doc.get("limits", {}).items():
        merged = {k: rules[k] for k in _RULE_KEYS if k in rules} | spec
        limits[param] = Limit(
            parameter=param,
            standard=doc["standard"],
            profile=doc["id"],
            **{k: v for k, v in merged.items()},
        )
    return Profile(
        id=doc["id"],
        title_zh=doc["title_zh"],
        title_en=doc["title_en"],
        standard=doc["standard"],
        site_kind=doc["site_kind"],
        limits=limits,
        note=doc.get("note", ""),
    )


@cache
def builtin_profiles() -> dict[str, Profile]:
    folder = resources.files("alerts").joinpath("data/standards")
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            p = parse_profile(tomllib.loads(entry.read_text("utf-8")))
            out[p.id] = p
    return out


def load_profile_file(path: Path) -> Profile:
    return parse_profile(tomllib.loads(path.read_text("utf-8")))


def limits_for_site(site: Site, profiles: dict[str, Profile]) -> dict[str, Limit]:
    """The site's profile with its per-parameter overrides applied."""
    profile = profiles.get(site.profile)
    if profile is None:
        raise KeyError(f"site {site.id}: unknown standards profile {site.profile!r}")
    limits = dict(profile.limits)
    for param, override in site.limit_overrides.items():
        base = limits.get(param)
        if base is None:
            raise KeyError(f"site {site.id}: override for {param!r}, which {profile.id} lacks")
        clause = override.get("clause", f"{base.clause}; site override")
        limits[param] = replace(base, **(override | {"clause": clause}))
    return limits
