"""Response models: what the API promises, with times as ISO 8601 UTC (`Z`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from domain.model import Alert, DeadLetter, Reading
from domain.timeutil import ms_to_iso


def _iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_iso(ms)


class ReadingOut(BaseModel):
    device_id: str
    site_id: str
    parameter: str
    ts: str = Field(description="sensor time, UTC")
    received: str = Field(description="time Landun received it, UTC")
    value: float
    flag: str = Field(description="HJ 212 data flag; only N is judged for compliance")
    seq: int | None = None

    @classmethod
    def of(cls, r: Reading) -> ReadingOut:
        return cls(
            device_id=r.device_id,
            site_id=r.site_id,
            parameter=r.parameter,
            ts=ms_to_iso(r.ts_ms),
            received=ms_to_iso(r.recv_ms),
            value=r.value,
            flag=r.flag,
            seq=r.seq,
        )


class AlertOut(BaseModel):
    id: int
    site_id: str
    device_id: str | None
    rule_id: str
    family: str
    severity: str
    status: str
    parameter: str | None
    message: str
    first: str
    last: str
    first_value: float | None
    last_value: float | None
    worst_value: float | None
    worst: str | None
    count: int
    limit: dict
    evidence: dict
    opened: str
    updated: str
    resolved: str | None

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        return cls(
            id=a.id or 0,
            site_id=a.site_id,
            device_id=a.device_id,
            rule_id=a.rule_id,
            family=str(a.family),
            severity=str(a.severity),
            status=str(a.status),
            parameter=a.parameter,
            message=a.message,
            first=ms_to_iso(a.first_ms),
            last=ms_to_iso(a.last_ms),
            first_value=a.first_value,
            last_value=a.last_value,
            worst_value=a.worst_value,
            worst=_iso(a.worst_ms),
            count=a.count,
            limit=a.limit,
            evidence=a.evidence,
            opened=ms_to_iso(a.opened_ms),
            updated=ms_to_iso(a.updated_ms),
            resolved=_iso(a.resolved_ms),
        )


class DeadLetterOut(BaseModel):
    topic: str
    device_id: str | None
    received: str
    reason: str
    source: str
    raw: str = Field(description="the payload as text (invalid UTF-8 replaced), at most 64 KiB")
    raw_bytes: int

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterOut:
        return cls(
            topic=d.topic,
            device_id=d.device_id,
            received=ms_to_iso(d.recv_ms),
            reason=d.reason,
            source=d.source,
            raw=d.raw.decode("utf-8", "replace"),
            raw_bytes=len(d.raw),
        )


class DeadLettersOut(BaseModel):
    items: list[DeadLetterOut]
    counts_by_reason: dict[str, int]


class Health(BaseModel):
    status: str
    broker_connected: bool
    readings_stored: int
    dead_lettered: int
