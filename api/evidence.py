"""The evidence record of an alert: everything an inspector needs to act on it and to show the
party (Administrative Penalty Law 2021, art. 41), as JSON, CSV or a printable HTML page."""

from __future__ import annotations

import csv
import html
import io

from api.context import AppContext
from domain.alert_json import alert_to_dict
from domain.model import DATA_FLAGS, Alert
from domain.timeutil import ms_to_iso, now_ms
from store.base import ReadingQuery

# Raw readings shown around the episode, so the record shows how it started and ended.
MARGIN_MS = 60 * 60_000
MAX_READINGS = 20_000


def evidence_record(ctx: AppContext, alert: Alert) -> dict:
    site = ctx.registry.sites.get(alert.site_id)
    device = ctx.registry.devices.get(alert.device_id or "")
    readings = []
    if alert.device_id is not None:
        q = ReadingQuery(
            device_id=alert.device_id,
            parameters=(alert.parameter,) if alert.parameter else (),
            start_ms=alert.first_ms - MARGIN_MS,
            end_ms=(alert.resolved_ms or alert.last_ms) + MARGIN_MS + 1,
            limit=MAX_READINGS,
        )
        for r in ctx.store.query_readings(q):
            readings.append(
                {
                    "ts": ms_to_iso(r.ts_ms),
                    "received": ms_to_iso(r.recv_ms),
                    "parameter": r.parameter,
                    "value": r.value,
                    "flag": r.flag,
                    "flag_meaning": DATA_FLAGS.get(r.flag, "unknown"),
                    "in_episode": alert.first_ms <= r.ts_ms <= alert.last_ms,
                    "seq": r.seq,
                }
            )
    status = ctx.store.device_statuses().get(alert.device_id or "")
    return {
        "generated": ms_to_iso(now_ms()),
        "alert": alert_to_dict(alert),
        "site": {
            "id": alert.site_id,
            "name": site.name if site else None,
            "address": site.address if site else None,
            "jurisdiction": site.jurisdiction if site else None,
            "standards_profile": site.profile if site else None,
        },
        "device": {
            "id": alert.device_id,
            "kind": device.kind if device else None,
            "reporting_interval_s": device.interval_s if device else None,
            "last_known_status": None
            if status is None
            else {"state": status.state, "received": ms_to_iso(status.recv_ms)} | status.detail,
        },
        "limit": alert.limit,
        "duration_s": (alert.last_ms - alert.first_ms) // 1000,
        "readings_window": {
            "from": ms_to_iso(alert.first_ms - MARGIN_MS),
            "to": ms_to_iso((alert.resolved_ms or alert.last_ms) + MARGIN_MS),
        },
        "readings": readings,
        "audit": [
            {"at": ms_to_iso(e.at_ms), "actor": e.actor, "action": e.action, "comment": e.comment}
            for e in ctx.store.audit_trail(alert.id or 0)
        ],
        "times_note": "all times UTC; sensor time (ts) and receive time are both kept",
    }


def evidence_csv(record: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    a = record["alert"]
    for key in ("id", "site_id", "device_id", "rule_id", "severity", "status", "first", "last"):
        w.writerow([f"# {key}", a[key]])
    w.writerow(["# limit", record["limit"].get("text", ""), record["limit"].get("clause", "")])
    w.writerow(["ts", "received", "parameter", "value", "flag", "flag_meaning", "in_episode"])
    for r in record["readings"]:
        w.writerow(
            [r["ts"], r["received"], r["parameter"], r["value"], r["flag"], r["flag_meaning"],
             int(r["in_episode"])]
        )  # fmt: skip
    return buf.getvalue()


def evidence_html(record: dict) -> str:
    """A self-contained printable page (no scripts, no external assets)."""
    e = html.escape
    a, s, lim = record["alert"], record["site"], record["limit"]
    rows = "".join(
        f"<tr class='{'in' if r['in_episode'] else ''}'><td>{e(r['ts'])}</td>"
        f"<td>{e(r['parameter'])}</td><td>{r['value']:g}</td><td>{e(r['flag'])}</td></tr>"
        for r in record["readings"]
    )
    audit = "".join(
        f"<li>{e(x['at'])} {e(x['actor'])}: {e(x['action'])} {e(x['comment'])}</li>"
        for x in record["audit"]
    )
    facts = [
        ("告警编号 Alert", a["id"]),
        ("场所 Site", f"{s['name']} ({s['id']}), {s['address']}"),
        ("辖区 Jurisdiction", s["jurisdiction"]),
        ("设备 Device", a["device_id"]),
        ("规则 Rule", a["rule_id"]),
        ("级别 Severity", a["severity"]),
        ("状态 Status", a["status"]),
        ("限值 Limit", lim.get("text", "")),
        ("依据 Standard and clause", lim.get("clause", "")),
        ("开始 First (UTC)", a["first"]),
        ("最近 Last (UTC)", a["last"]),
        ("持续 Duration", f"{record['duration_s'] // 60} min"),
        ("最差值 Worst value", a["worst_value"]),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>证据记录 Evidence record — alert {a["id"]}</title>
<style>
body{{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#111}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #999;padding:.25em .5em;
text-align:left;font-size:.9em}}tr.in td{{background:#fde2e2}}
@media print{{body{{margin:1cm}}}}
</style></head><body>
<h1>在线监测证据记录 / Online monitoring evidence record</h1>
<p>Generated {e(record["generated"])}. {e(record["times_note"])}.</p>
<table>{table}</table>
<h2>原始数据 Raw readings ({len(record["readings"])}; episode shaded)</h2>
<table><tr><th>ts (UTC)</th><th>parameter</th><th>value</th><th>flag</th></tr>{rows}</table>
<h2>处理记录 Audit trail</h2><ul>{audit}</ul>
</body></html>"""
