"""The parameter catalogue (domain/data/parameters.toml) as typed, immutable objects."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class UnitConversion:
    scale: float
    offset: float = 0.0

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    unit: str
    physical_min: float
    physical_max: float
    family: str
    name_zh: str
    name_en: str
    aliases: tuple[str, ...] = ()
    units: dict[str, UnitConversion] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalogue:
    parameters: dict[str, Parameter]
    by_wire_name: dict[str, Parameter]
    unit_labels: dict[str, str] = field(default_factory=dict)

    def resolve(self, wire_name: str) -> Parameter | None:
        """The parameter a wire name (canonical name or a listed alias) stands for."""
        return self.by_wire_name.get(wire_name)

    def unit_label(self, unit: str) -> str:
        """How a person reads a unit code (degC is shown as °C)."""
        return self.unit_labels.get(unit, unit)


def parse_catalogue(doc: dict) -> Catalogue:
    params: dict[str, Parameter] = {}
    wire: dict[str, Parameter] = {}
    for name, spec in doc["parameters"].items():
        p = Parameter(
            name=name,
            unit=spec["unit"],
            physical_min=float(spec["physical_min"]),
            physical_max=float(spec["physical_max"]),
            family=spec["family"],
            name_zh=spec["name_zh"],
            name_en=spec["name_en"],
            aliases=tuple(spec.get("aliases", ())),
            units={u: UnitConversion(**c) for u, c in spec.get("units", {}).items()},
        )
        params[name] = p
        for key in (name, *p.aliases):
            if key in wire:
                raise ValueError(
                    f"wire name {key!r} is listed for both {wire[key].name} and {name}"
                )
            wire[key] = p
    return Catalogue(params, wire, dict(doc.get("unit_labels", {})))


@cache
def default_catalogue() -> Catalogue:
    text = resources.files("domain").joinpath("data/parameters.toml").read_text("utf-8")
    return parse_catalogue(tomllib.loads(text))


def unit_label(unit: str) -> str:
    """A unit code as a person reads it, from the default catalogue's labels."""
    return default_catalogue().unit_label(unit)
