"""JSON as Landun writes it: strict, so every reader can parse it. Python's json writes NaN and
Infinity, which are not JSON; a value that is not a finite number is written as null."""

from __future__ import annotations

import json
import math
from typing import Any, overload


@overload
def finite(obj: dict[str, Any]) -> dict[str, Any]: ...


@overload
def finite(obj: object) -> object: ...


def finite(obj: object) -> object:
    """The object with every NaN or infinite float (numpy's too) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: object) -> str:
    """Strict JSON text (UTF-8 as is, not escaped)."""
    return json.dumps(finite(obj), ensure_ascii=False, allow_nan=False)
