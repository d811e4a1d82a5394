"""Untrusted text made safe for a log line: one line, no control characters, bounded length."""

from __future__ import annotations

DEFAULT_LIMIT = 200


def log_safe(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """Text from outside (a topic, a device id, a reason quoting a payload) as a log line may
    carry it: newlines, NUL and other unprintable characters become escapes, so a sender
    cannot forge log lines or hide text from a terminal, and the length is capped."""
    s = str(text)
    clipped = len(s) > limit
    s = s[:limit]
    if not s.isprintable():
        s = "".join(c if c.isprintable() else _escape(c) for c in s)
    return s + "…" if clipped else s


def _escape(c: str) -> str:
    code = ord(c)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
