"""Untrusted text made safe for a log line: one line, no control characters, bounded length."""

from __future__ import annotations

import logging

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


class EscapingFilter(logging.Filter):
    """Escapes every log message as it is written, for messages that quote outside text
    without `log_safe`; a traceback (formatted apart from the message) keeps its lines."""

    def __init__(self, limit: int = 4000) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = log_safe(message, self.limit)
        if safe != message:
            record.msg, record.args = safe, None
        return True
