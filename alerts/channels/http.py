"""One bounded HTTP POST to a vendor, its answer read as JSON: what every HTTP channel shares.
The answer comes from outside: at most RESPONSE_MAX_BYTES are read, and anything unexpected is
a DeliveryFailed with the reason."""

from __future__ import annotations

import json
from typing import Any

import httpx

from alerts.channels.base import DeliveryFailed

RESPONSE_MAX_BYTES = 64 * 1024  # vendors answer with a few hundred bytes of JSON


def post(client: httpx.Client, url: str, timeout_s: float, **kwargs: Any) -> tuple[int, bytes]:
    """(status, body) of a POST; network errors and oversized answers are DeliveryFailed."""
    try:
        with client.stream("POST", url, timeout=timeout_s, **kwargs) as r:
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > RESPONSE_MAX_BYTES:
                    raise DeliveryFailed(f"answer over {RESPONSE_MAX_BYTES} bytes")
            return r.status_code, bytes(body)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


def json_answer(status: int, body: bytes, vendor: str) -> dict[str, Any]:
    """The vendor's JSON object; an HTTP error or a body that is not one is DeliveryFailed
    (4xx other than 429 cannot succeed by trying again)."""
    if status >= 400:
        raise DeliveryFailed(f"{vendor}: HTTP {status}", retry=status >= 500 or status == 429)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise DeliveryFailed(f"{vendor}: HTTP {status} with an answer that is not a JSON object")
    return answer


def fit_utf8(head: str, text: str, tail: str, limit: int, what: str) -> str:
    """`head + text + tail` within `limit` UTF-8 bytes: the text is cut (never inside a
    character) and marked when too long; when even head and tail do not fit, DeliveryFailed."""
    whole = head + text + tail
    size = len(whole.encode())
    if size <= limit:
        return whole
    room = limit - len((head + CUT + tail).encode())
    if room < 0:
        raise DeliveryFailed(
            f"{what} is over its limit of {limit} UTF-8 bytes even without the text", retry=False
        )
    cut = text.encode()[:room].decode("utf-8", errors="ignore")
    return head + cut + CUT + tail


CUT = "…（已截断）"
