"""The HJ 212 code map: monitoring-factor code (``w01001``) -> Landun parameter (``ph``).

The map is data (``data/codes.toml``) because HJ 212 has no codes for most pool parameters:
which code a logger sends for free chlorine is a per-site configuration, not a fact of the
protocol. A site may pass its own file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from domain.params import default_catalogue

DEFAULT_CODES_FILE = Path(__file__).parent / "data" / "codes.toml"

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{1,15}")


@dataclass(frozen=True)
class CodeEntry:
    code: str
    parameter: str
    source: str
    confidence: str


def load_code_entries(path: str | Path | None = None) -> dict[str, CodeEntry]:
    """Every entry of a code file, with its source note; raises ValueError on a bad file."""
    file = Path(path) if path is not None else DEFAULT_CODES_FILE
    with file.open("rb") as fh:
        doc = tomllib.load(fh)
    known = default_catalogue().parameters
    entries: dict[str, CodeEntry] = {}
    for code, spec in doc.get("codes", {}).items():
        if not _CODE.fullmatch(code):
            raise ValueError(f"{file}: code {code!r} is not a HJ 212 factor code")
        parameter = spec.get("parameter")
        if parameter not in known:
            raise ValueError(f"{file}: code {code} maps to unknown parameter {parameter!r}")
        entries[code] = CodeEntry(
            code=code,
            parameter=parameter,
            source=str(spec.get("source", "")),
            confidence=str(spec.get("confidence", "")),
        )
    return entries


def load_code_map(path: str | Path | None = None) -> dict[str, str]:
    """Code -> Landun parameter name, from ``path`` or the bundled default file."""
    return {code: entry.parameter for code, entry in load_code_entries(path).items()}
