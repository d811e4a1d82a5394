"""Time conventions: stored times are UTC epoch milliseconds; text forms carry an explicit zone."""

from __future__ import annotations

import time
from datetime import datetime

SHANGHAI = "Asia/Shanghai"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_iso(ms: int) -> str:
    """ISO 8601 in UTC with an explicit `Z`, millisecond precision. (time.gmtime: twice as
    fast as datetime, which matters when a page of readings carries 20,000 of them.)"""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def iso_to_ms(text: str) -> int:
    """Parse ISO 8601 that states its zone (offset or Z); a naive time is an error."""
    dt = datetime.fromisoformat(text.replace("z", "Z"))
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone offset")
    return int(dt.timestamp() * 1000)
