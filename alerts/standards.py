"""Standards profiles (alerts/data/standards/*.toml): the limits a site is judged against."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from alerts.settings_files import STRICT, check_keys, checked, parse_toml, standards_texts
from domain.model import Site
from domain.params import unit_label

_RULE_KEYS = ("pending_s", "clear_s", "critical_after_s")


@dataclass(frozen=True, slots=True)
class Limit:
    __pydantic_config__ = STRICT

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


_PROFILE_KEYS = {"id", "title_zh", "title_en", "standard", "site_kind", "note", "rules", "limits"}


def parse_profile(doc: dict, file: str = "standards profile") -> Profile:
    """The profile of `doc`, or SettingsError naming the file, the key and the reason."""
    check_keys(doc, _PROFILE_KEYS, file)
    rules = doc.get("rules", {})
    check_keys(rules, set(_RULE_KEYS), file, "rules")
    head = {k: checked(str, doc.get(k), file, k) for k in ("id", "standard")}
    limits = {}
    for param, spec in doc.get("limits", {}).items():
        merged = {k: rules[k] for k in _RULE_KEYS if k in rules} | spec
        # The parameter, standard and profile of a limit come from the file, not the table.
        check_keys(
            spec,
            set(Limit.__slots__) - {"parameter", "standard", "profile"},
            file,
            f"limits.{param}",
        )
        limits[param] = checked(
            Limit,
            {**merged, "parameter": param, "standard": head["standard"], "profile": head["id"]},
            file,
            f"limits.{param}",
        )
    return Profile(
        id=head["id"],
        title_zh=checked(str, doc.get("title_zh"), file, "title_zh"),
        title_en=checked(str, doc.get("title_en"), file, "title_en"),
        standard=head["standard"],
        site_kind=checked(str, doc.get("site_kind"), file, "site_kind"),
        limits=limits,
        note=checked(str, doc.get("note", ""), file, "note"),
    )


@cache
def builtin_profiles() -> dict[str, Profile]:
    """The packaged profiles, with the config dir's standards/*.toml replacing or adding."""
    out = {}
    for file, text in standards_texts().values():
        p = parse_profile(parse_toml(file, text), file)
        out[p.id] = p
    return out


def load_profile_file(path: Path) -> Profile:
    return parse_profile(parse_toml(str(path), path.read_text("utf-8")), str(path))


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
