"""Response models: what the API promises, with times as ISO 8601 UTC (`Z`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from domain.alert_json import alert_to_dict
from domain.model import Alert, DeadLetter, Reading
from domain.timeutil import ms_to_iso


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
        return cls(**alert_to_dict(a))


class AuditOut(BaseModel):
    at: str
    actor: str
    action: str
    comment: str


class AlertDetail(AlertOut):
    audit: list[AuditOut]


class ActionIn(BaseModel):
    comment: str = Field("", max_length=4000, description="why; kept in the audit trail")


class CommentIn(BaseModel):
    comment: str = Field(min_length=1, max_length=4000)


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
