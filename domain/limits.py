"""Limits a site is judged against: one parameter's band from a standard (Limit), a standards
profile (Profile, loaded from alerts/data/standards/ by alerts.standards), and a site's limits
with its overrides applied. Shared by the alert engine and the API."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import ConfigDict

from domain.model import Site
from domain.params import unit_label


@dataclass(frozen=True, slots=True)
class Limit:
    __pydantic_config__ = ConfigDict(extra="forbid")

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
