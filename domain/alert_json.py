"""The one JSON shape of an alert, shared by the API, the MQTT alert topic and webhooks."""

from __future__ import annotations

from domain.model import Alert
from domain.rule_names import rule_name
from domain.strict_json import finite
from domain.timeutil import ms_to_iso


def _iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_iso(ms)


def alert_to_dict(a: Alert) -> dict:
    """Strict-JSON-ready: a value that is not a finite number is None."""
    out = {
        "id": a.id or 0,
        "site_id": a.site_id,
        "device_id": a.device_id,
        "rule_id": a.rule_id,
        "family": str(a.family),
        "severity": str(a.severity),
        "status": str(a.status),
        "parameter": a.parameter,
        "message": a.message,
        "first": ms_to_iso(a.first_ms),
        "last": ms_to_iso(a.last_ms),
        "first_value": a.first_value,
        "last_value": a.last_value,
        "worst_value": a.worst_value,
        "worst": _iso(a.worst_ms),
        "count": a.count,
        "limit": a.limit,
        "evidence": a.evidence,
        "rule_name": {lang: rule_name(a.rule_id, a.parameter, lang) for lang in ("zh", "en")},
        "opened": ms_to_iso(a.opened_ms),
        "updated": ms_to_iso(a.updated_ms),
        "resolved": _iso(a.resolved_ms),
    }
    return finite(out)
