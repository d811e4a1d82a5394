"""Response models: what the API promises, with times as ISO 8601 UTC (`Z`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from domain.alert_json import alert_to_dict
from domain.kinds import site_kinds
from domain.model import Alert, DeadLetter, Device, Reading
from domain.timeutil import ms_to_iso
from store.base import Bucket


def _not_bool(value: object) -> object:
    """JSON true/false is not a number, though pydantic would read it as 1/0."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
# The kinds of the kinds table, as an enum in the OpenAPI schema: a kind added there is listed.
# Built from data at run time, so a checker sees a plain string.
if TYPE_CHECKING:
    KindName = str
else:
    KindName = Literal[tuple(site_kinds())]


class ReadingOut(BaseModel):
    device_id: str
    site_id: str
    parameter: str
    ts: str = Field(description="sensor time, UTC")
    received: str = Field(description="time Landun received it, UTC")
    value: float
    flag: str = Field(description="HJ 212 data flag; only N is judged for compliance")
    seq: int | None = None


def reading_dict(r: Reading) -> dict:
    """ReadingOut's fields as plain data: large pages are served from these directly, since
    validating ten thousand models costs more than the query."""
    return {
        "device_id": r.device_id,
        "site_id": r.site_id,
        "parameter": r.parameter,
        "ts": ms_to_iso(r.ts_ms),
        "received": ms_to_iso(r.recv_ms),
        "value": r.value,
        "flag": r.flag,
        "seq": r.seq,
    }


SiteStatus = Literal["normal", "over_limit", "custody_issue", "offline_or_fault", "no_data"]


class SiteStatusOut(BaseModel):
    status: SiteStatus = Field(
        description="正常 / 超标 / 医废异常 (medical-waste custody) / 离线或故障, from the site's"
        " open alerts; 暂无数据 (no_data) when none of its devices has ever reported and no alert"
        " is open"
    )
    open_alerts: int
    last_data: str | None
    last_readings: dict[str, dict]


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: KindName = Field(description="a site kind of domain/data/site_kinds.toml")
    subtype: str = Field("", max_length=64, description="one of the kind's subtypes, or none")
    jurisdiction: str = Field(pattern=r"^[0-9]{6}$", description="6-digit district code")
    address: str = Field("", max_length=500)
    profile: str = "gb37488-2019-pool"
    timezone: str = Field("Asia/Shanghai", description="a tz database name")
    # Bounds before the validator, so the OpenAPI schema states them as minimum/maximum.
    latitude: Annotated[float, Field(ge=-90, le=90), BeforeValidator(_not_bool)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180), BeforeValidator(_not_bool)] | None = None
    overrides: dict[str, dict[str, Number]] = {}


class SiteOut(BaseModel):
    id: str
    name: str
    kind: str
    jurisdiction: str
    address: str
    profile: str
    timezone: str
    latitude: float | None
    longitude: float | None
    overrides: dict
    subtype: str = ""
    current: SiteStatusOut


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    kind: str = Field(min_length=1, max_length=64)
    parameters: list[str] = []
    interval_s: Annotated[int, Field(ge=1, le=86_400), BeforeValidator(_not_bool)] = 60
    mn: str | None = Field(None, min_length=1, max_length=64)
    attributes: Annotated[
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)] | int],
        Field(
            max_length=16,
            description="kind-specific: a disinfection line's line_id, method and capacity_sets",
        ),
    ] = {}


class DeviceOut(BaseModel):
    id: str
    site: str
    kind: str
    parameters: list[str]
    interval_s: int
    mn: str | None
    has_credential: bool
    attributes: dict = {}

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            site=d.site_id,
            kind=d.kind,
            parameters=list(d.parameters),
            interval_s=d.interval_s,
            mn=d.mn,
            has_credential=bool(d.credential_hash),
            attributes=d.attributes,
        )


class ComplianceOut(BaseModel):
    site_id: str
    device_id: str
    parameter: str
    start: str
    end: str
    limit: str
    clause: str
    monitored_s: int = Field(description="valid readings x reporting interval")
    over_limit_s: int
    within_share: float | None = Field(description="share of monitored time within limits")
    alerts: int = Field(description="compliance alerts overlapping the period")
    readings: int
    excluded_flagged: int = Field(description="readings flagged invalid, not judged")
    completeness: float = Field(description="readings received / readings expected")


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class TokenOut(BaseModel):
    token: str
    expires: str | None
    name: str
    role: str
    jurisdictions: list[str]


class MeOut(BaseModel):
    name: str
    role: str
    jurisdictions: list[str]
    kind: str


class LimitOut(BaseModel):
    parameter: str
    min: float | None
    max: float | None
    unit: str
    unit_label: str = Field(description="the unit as a person reads it (°C for degC)")
    text: str
    standard: str
    clause: str
    confidence: str
    profile: str
    pending_s: int
    clear_s: int
    hysteresis: float


class ProfileOut(BaseModel):
    id: str
    title_zh: str
    title_en: str
    standard: str
    note: str
    limits: list[LimitOut]


class BucketOut(BaseModel):
    start: str = Field(description="interval start, UTC")
    parameter: str
    mean: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, b: Bucket) -> BucketOut:
        return cls(
            start=ms_to_iso(b.start_ms),
            parameter=b.parameter,
            mean=b.mean,
            min=b.min,
            max=b.max,
            count=b.count,
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
    rule_name: dict[str, str] = Field(description="the rule's name: zh and en")
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


class ErrorOut(BaseModel):
    """Every error the API returns: one message a person can act on."""

    detail: str = Field(description="what went wrong and what to do about it")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: query, path, header or body, then the field")
    msg: str
    type: str


class ValidationErrorOut(ErrorOut):
    errors: list[ValidationIssue] = Field(description="each problem found, for programs")


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    problems: list[str] = Field(description="why not ready; empty when ready")


_ERROR_MEANING = {
    400: "the request is well-formed but cannot be served as asked (see detail)",
    401: "not logged in, or the token is unknown or expired",
    403: "outside the caller's role or jurisdictions",
    404: "no such site, device or alert",
    409: "conflicts with the current state (see detail)",
    413: "the request body is larger than the server or this route takes",
    422: "the request does not match this schema",
    429: "too many failed attempts; retry after Retry-After seconds",
    503: "the store cannot take writes now; nothing was changed, retry after Retry-After",
}


class EvidenceCheckOut(BaseModel):
    alert_id: int
    valid: bool = Field(description="the copy's content hashes to the hash it states")
    same_alert: bool = Field(description="the copy is a record of this alert")
    matches_system: bool = Field(description="the copy's content is the system's record now")
    stated_sha256: str | None
    computed_sha256: str
    system_sha256: str
    detail: str


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error statuses a route may answer with, so clients (and
    schemathesis) see the real shape `{"detail": "..."}` instead of FastAPI's default."""
    return {
        code: {
            "model": ValidationErrorOut if code == 422 else ErrorOut,
            "description": _ERROR_MEANING[code],
        }
        for code in codes
    }
