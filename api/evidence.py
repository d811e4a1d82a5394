"""The evidence record of an alert: everything an inspector needs to act on it and to show the
party (Administrative Penalty Law 2021, art. 41), as JSON, CSV or a printable bilingual page
(Chinese first, times in the site's zone and in UTC, A4).

The record carries the SHA-256 of its canonical content, so a copy kept on file can be checked
later: `canonical_bytes` is the JSON of the record without the fields that are not evidence
(when it was generated, the device's state now, the hash itself), keys sorted, no spaces,
UTF-8. POST a JSON copy to /api/v1/alerts/{id}/evidence/verify to have it recomputed."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from api.context import AppContext
from domain.alert_json import alert_to_dict
from domain.model import DATA_FLAGS, Alert
from domain.params import unit_label
from domain.rule_names import comment_zh, parameter_name, rule_name
from domain.timeutil import SHANGHAI, ms_to_iso, now_ms
from store.base import ReadingQuery

# Raw readings shown around the episode, so the record shows how it started and ended.
MARGIN_MS = 60 * 60_000
MAX_READINGS = 20_000
# Fields of a record that are not part of the evidence, so not hashed.
UNHASHED = ("generated", "device_status_now", "sha256")

# Words of the printed record, Chinese then English.
WORDS: dict[str, tuple[str, str]] = {
    "warning": ("一般", "warning"),
    "critical": ("严重", "critical"),
    "open": ("未处理", "open"),
    "acknowledged": ("已确认", "acknowledged"),
    "resolved": ("已办结", "resolved"),
    "opened": ("告警产生", "opened"),
    "escalated": ("升级", "escalated"),
    "renotified": ("再次提醒", "reminder"),
    "commented": ("批注", "comment"),
    "notification_level": ("通知升级至", "notification level"),
    "notification_queued": ("通知待发", "notification queued"),
    "notification_sent": ("通知已送达", "notification sent"),
    "notification_failed": ("通知失败", "notification failed"),
    "notification_skipped": ("按个人设置未通知", "not notified (preferences)"),
    "compliance": ("超标", "compliance"),
    "integrity": ("离线或故障", "data integrity"),
    "water_quality": ("水质异常", "water quality"),
    "custody": ("医废监管", "medical-waste custody"),
}
FLAG_ZH = {
    "N": "正常",
    "F": "停运",
    "M": "维护",
    "S": "手工输入",
    "D": "故障",
    "C": "校准",
    "T": "超量程",
    "B": "通信异常",
}


def _when(ms: int | None, zone: ZoneInfo) -> dict | None:
    """A time in UTC and in the site's zone."""
    if ms is None:
        return None
    return {"utc": ms_to_iso(ms), "local": _local(ms, zone)}


def _local(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


def _summary(alert: Alert, unit: str, lang: str) -> str:
    """What happened, in one sentence, from the alert's fields (not its English message)."""
    name = rule_name(alert.rule_id, alert.parameter, lang)
    minutes = (alert.last_ms - alert.first_ms) // 60_000
    limit = alert.limit.get("text", "")
    if lang == "zh":
        text = name
        if alert.worst_value is not None:
            text += f"，最差值 {alert.worst_value:g} {unit}".rstrip()
        if limit:
            text += f"，限值 {limit}"
        return f"{text}，持续 {minutes} 分钟。"
    text = name
    if alert.worst_value is not None:
        text += f"; worst value {alert.worst_value:g} {unit}".rstrip()
    if limit:
        text += f", limit {limit}"
    return f"{text}; lasted {minutes} min."


def evidence_record(ctx: AppContext, alert: Alert) -> dict:
    site = ctx.registry.sites.get(alert.site_id)
    device = ctx.registry.devices.get(alert.device_id or "")
    tz_name = site.timezone if site else SHANGHAI
    zone = ZoneInfo(tz_name)
    unit = unit_label(alert.limit.get("unit", "")) if alert.limit else ""
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
                    "ts_local": _local(r.ts_ms, zone),
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
    ongoing = alert.resolved_ms is None
    record = {
        "generated": ms_to_iso(now_ms()),
        "alert": alert_to_dict(alert),
        "rule": {
            "id": alert.rule_id,
            "name_zh": rule_name(alert.rule_id, alert.parameter, "zh"),
            "name_en": rule_name(alert.rule_id, alert.parameter, "en"),
        },
        "parameter": None
        if alert.parameter is None
        else {
            "id": alert.parameter,
            "name_zh": parameter_name(alert.parameter, "zh"),
            "name_en": parameter_name(alert.parameter, "en"),
            "unit": unit,
        },
        "summary": {"zh": _summary(alert, unit, "zh"), "en": _summary(alert, unit, "en")},
        "site": {
            "id": alert.site_id,
            "name": site.name if site else None,
            "address": site.address if site else None,
            "jurisdiction": site.jurisdiction if site else None,
            "standards_profile": site.profile if site else None,
            "timezone": tz_name,
        },
        "device": {
            "id": alert.device_id,
            "kind": device.kind if device else None,
            "reporting_interval_s": device.interval_s if device else None,
        },
        "device_status_now": None
        if status is None
        else {"state": status.state, "received": ms_to_iso(status.recv_ms)} | status.detail,
        "limit": alert.limit,
        "episode": {
            "start": _when(alert.first_ms, zone),
            "last_seen": _when(alert.last_ms, zone),
            "end": None if ongoing else _when(alert.last_ms, zone),
            "resolved": _when(alert.resolved_ms, zone),
            "ongoing": ongoing,
        },
        "worst": {
            "value": alert.worst_value,
            "unit": unit,
            "at": _when(alert.worst_ms, zone),
        },
        "duration_s": (alert.last_ms - alert.first_ms) // 1000,
        "readings_window": {
            "from": ms_to_iso(alert.first_ms - MARGIN_MS),
            "to": ms_to_iso((alert.resolved_ms or alert.last_ms) + MARGIN_MS),
        },
        "readings": readings,
        "audit": [
            {
                "at": ms_to_iso(e.at_ms),
                "at_local": _local(e.at_ms, zone),
                "actor": e.actor,
                "action": e.action,
                "comment": e.comment,
                "comment_zh": comment_zh(e.comment) if e.actor == "system" else None,
            }
            for e in ctx.store.audit_trail(alert.id or 0)
        ],
        "times_note": (
            f"times in UTC (Z) and in the site's zone {tz_name}; sensor time (ts) and receive"
            " time are both kept"
        ),
    }
    record["sha256"] = record_hash(record)
    return record


def canonical_bytes(record: dict) -> bytes:
    """The record's evidence content in one byte form: what its hash is computed over."""
    content = {k: v for k, v in record.items() if k not in UNHASHED}
    return json.dumps(
        content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def record_hash(record: dict) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def evidence_csv(record: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    a = record["alert"]
    for key in ("id", "site_id", "device_id", "rule_id", "severity", "status", "first", "last"):
        w.writerow([f"# {key}", a[key]])
    w.writerow(["# limit", record["limit"].get("text", ""), record["limit"].get("clause", "")])
    w.writerow(["# timezone", record["site"]["timezone"]])
    w.writerow(["# sha256", record["sha256"]])
    w.writerow(["ts", "ts_local", "received", "parameter", "value", "flag", "flag_meaning",
                "in_episode"])  # fmt: skip
    for r in record["readings"]:
        w.writerow(
            [r["ts"], r["ts_local"], r["received"], r["parameter"], r["value"], r["flag"],
             r["flag_meaning"], int(r["in_episode"])]
        )  # fmt: skip
    return buf.getvalue()


def _both(key: str) -> str:
    zh, en = WORDS.get(key, (key, key))
    return f"{zh} {en}"


def _time_html(when: dict | None) -> str:
    """A time as the site's local time first, then UTC."""
    if when is None:
        return "—"
    local = when["local"].replace("T", " ")
    return f"{html.escape(local)}<br><span class='utc'>UTC {html.escape(when['utc'])}</span>"


def _duration(seconds: int) -> str:
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours} 小时 {minutes} 分钟 / {hours} h {minutes} min"
    return f"{minutes} 分钟 / {minutes} min"


def _reading_row(r: dict) -> str:
    e = html.escape
    flag = r["flag"]
    return (
        f"<tr class='{'in' if r['in_episode'] else ''}'>"
        f"<td>{e(r['ts_local'].replace('T', ' '))}</td><td>{e(r['ts'])}</td>"
        f"<td>{e(parameter_name(r['parameter'], 'zh'))}</td><td class='num'>{r['value']:g}</td>"
        f"<td>{e(flag)} {e(FLAG_ZH.get(flag, ''))} {e(r['flag_meaning'])}</td></tr>"
    )


def evidence_html(record: dict) -> str:
    """A self-contained printable page (no scripts, no external assets), A4."""
    e = html.escape
    a, s, lim, ep = record["alert"], record["site"], record["limit"], record["episode"]
    rule, worst, p = record["rule"], record["worst"], record["parameter"]
    tz = s["timezone"]
    if worst["value"] is None:
        worst_text = "无（本规则不适用） / none (not applicable to this rule)"
    else:
        worst_text = f"{worst['value']:g} {worst['unit']}".strip()
    worst_html = e(worst_text) + (f"<br>{_time_html(worst['at'])}" if worst["at"] else "")
    end = (
        _time_html(ep["end"])
        if not ep["ongoing"]
        else f"持续中 ongoing（最近 last seen {_time_html(ep['last_seen'])}）"
    )
    dev = record["device"]
    device_text = e(str(dev["id"] or "—"))
    if dev["kind"]:
        device_text += e(f" ({dev['kind']}, {dev['reporting_interval_s']} s)")
    facts = [
        ("告警编号 Alert no.", e(str(a["id"]))),
        ("场所 Site", e(f"{s['name']} ({s['id']})") + "<br>" + e(s["address"] or "")),
        ("辖区 Jurisdiction", e(str(s["jurisdiction"]))),
        ("设备 Device", device_text),
        ("规则 Rule", f"{e(rule['name_zh'])}<br>{e(rule['name_en'])} <code>{e(rule['id'])}</code>"),
        ("说明 Summary", f"{e(record['summary']['zh'])}<br>{e(record['summary']['en'])}"),
        ("指标 Parameter", e(f"{p['name_zh']} {p['name_en']}") if p else "—"),
        ("类别 Family", e(_both(a["family"]))),
        ("级别 Severity", e(_both(a["severity"]))),
        ("状态 Status", e(_both(a["status"]))),
        ("标准 Standard", e(lim.get("standard", "") or "—")),
        ("条款 Clause", e(lim.get("clause", "") or "—")),
        ("限值 Limit", e(lim.get("text", "") or "—")),
        (f"开始 Start ({tz} / UTC)", _time_html(ep["start"])),
        (f"结束 End ({tz} / UTC)", end),
        ("持续时间 Duration", e(_duration(record["duration_s"]))),
        ("最差值 Worst value", worst_html),
    ]  # fmt: skip
    table = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in facts)
    unit = f" ({e(p['unit'])})" if p and p["unit"] else ""
    rows = "".join(_reading_row(r) for r in record["readings"])
    audit = "".join(
        f"<tr><td>{e(x['at_local'].replace('T', ' '))}</td><td>{e(x['at'])}</td>"
        f"<td>{e(x['actor'])}</td><td>{e(_both(x['action']))}</td>"
        f"<td>{e(' / '.join(c for c in (x['comment_zh'], x['comment']) if c))}</td></tr>"
        for x in record["audit"]
    )
    n_in = sum(r["in_episode"] for r in record["readings"])
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>证据记录 Evidence record — 告警 alert {a["id"]}</title>
<style>
body{{font-family:"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","PingFang SC",
"Microsoft YaHei",system-ui,sans-serif;margin:2em;color:#111;font-size:10.5pt}}
h1{{font-size:16pt;margin:0 0 .3em}}h2{{font-size:12pt;margin:1.2em 0 .4em}}
table{{border-collapse:collapse;margin:.5em 0;width:100%}}
th,td{{border:1px solid #999;padding:.2em .4em;text-align:left;vertical-align:top}}
table.facts th{{width:11em;background:#f1f3f6}}thead{{display:table-header-group}}
tr.in td{{background:#fde2e2}}td.num{{text-align:right}}.utc{{color:#555;font-size:.9em}}
.hash{{font-family:monospace;word-break:break-all}}.note{{font-size:.9em;color:#333}}
@page{{size:A4;margin:15mm 12mm}}
@media print{{body{{margin:0;font-size:9.5pt}}tr{{page-break-inside:avoid}}
h2{{page-break-after:avoid}}tr.in td{{-webkit-print-color-adjust:exact;print-color-adjust:exact}}}}
</style></head><body>
<h1>在线监测证据记录<br>Online monitoring evidence record</h1>
<p class="note">生成时间 Generated: {e(record["generated"])} (UTC).
时间以场所所在时区 {e(tz)} 显示，并附 UTC。Times in the site's zone {e(tz)}, with UTC.</p>
<table class="facts">{table}</table>
<h2>内容校验 Content hash (SHA-256)</h2>
<p class="hash">{e(record["sha256"])}</p>
<p class="note">校验方法：将本记录的 JSON 副本提交至 POST /api/v1/alerts/{a["id"]}/evidence/verify，
系统重新计算哈希，并与系统中该告警的当前记录比对。To verify a copy, POST its JSON form to
/api/v1/alerts/{a["id"]}/evidence/verify: the hash is recomputed over its content and compared
with the system's record of the alert.</p>
<h2>原始数据 Raw readings ({len(record["readings"])};
告警时段内 {n_in} 条，阴影标示 / {n_in} in the episode, shaded)</h2>
<table class="readings"><thead><tr><th>时间 Time ({e(tz)})</th><th>时间 Time (UTC)</th>
<th>指标 Parameter</th><th>数值 Value{unit}</th><th>数据标志 Flag</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>处理记录 Audit trail</h2>
<table><thead><tr><th>时间 Time ({e(tz)})</th><th>时间 Time (UTC)</th><th>人员 Actor</th>
<th>操作 Action</th><th>意见 Comment</th></tr></thead><tbody>{audit}</tbody></table>
</body></html>"""
