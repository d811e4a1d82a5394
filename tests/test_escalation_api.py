"""Contacts, notification settings and the escalation policy through the real API over HTTP, on
the running system (demo registry: 310104 Xuhui, 310105 Changning); and an escalation's entries
in the alert's audit trail and evidence record as the dashboard reads them."""

from __future__ import annotations

import httpx
import pytest

from alerts.escalation.escalator import Escalator
from domain.credentials import hash_secret
from domain.model import Alert, AlertFamily, Severity
from domain.timeutil import now_ms
from tests.conftest import RunningSystem
from tests.test_escalation import Receiver, RecordingOutbox

PASSWORD = "correct horse battery staple"
MANAGER = {"name": "王经理", "role": "manager", "addresses": {"sms": "13800000001"}}
CHIEF = {"name": "李科长", "role": "section_chief", "addresses": {"wecom": "xh-chiefs"}}


def _user(system: RunningSystem, name: str, role: str, *codes: str) -> httpx.Client:
    system.system.core.store.add_user(name, hash_secret(PASSWORD), role, codes)
    return system.login(name, PASSWORD)


def _reason(r: httpx.Response) -> str:
    return r.json()["detail"] if isinstance(r.json()["detail"], str) else str(r.json())


def test_admin_edits_site_and_jurisdiction_contacts(system: RunningSystem):
    admin = system.http
    r = admin.get("/api/v1/sites/pool-xh-01/contacts")
    assert r.status_code == 200 and r.json() == {
        "owner": "site:pool-xh-01", "source": "none", "contacts": []
    }  # fmt: skip
    r = admin.put("/api/v1/sites/pool-xh-01/contacts", json={"contacts": [MANAGER]})
    assert r.status_code == 200, r.text
    body = admin.get("/api/v1/sites/pool-xh-01/contacts").json()
    assert body["source"] == "store"
    assert body["contacts"][0]["addresses"]["sms"] == "13800000001"
    duty = {"name": "赵值班", "role": "duty_officer", "addresses": {"sms": "13900000002"},
            "on_call": ["sat", "sun", "2026-10-01"]}  # fmt: skip
    r = admin.put("/api/v1/jurisdictions/310104/contacts", json={"contacts": [CHIEF, duty]})
    assert r.status_code == 200, r.text
    esc = admin.get("/api/v1/jurisdictions/310104/escalation").json()
    assert [lv["after_min"] for lv in esc["policy"]["levels"]] == [0, 30, 120]
    assert esc["policy"]["levels"][1]["after_min_critical"] == 10
    assert esc["policy"]["calendars"] == ["cn-2026"]
    assert [c["name"] for c in esc["contacts"]["contacts"]] == ["李科长", "赵值班"]
    assert admin.delete("/api/v1/sites/pool-xh-01/contacts").status_code == 204
    assert admin.get("/api/v1/sites/pool-xh-01/contacts").json()["source"] == "none"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"addresses": {"sms": "12345"}}]}, 422,
         "contacts.0.addresses.sms"),
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"addresses": {"fax": "1"}}]}, 422, "extra"),
        ("/api/v1/sites/pool-xh-01/contacts", {"contacts": [MANAGER, MANAGER]}, 400,
         "contacts.1.name: '王经理' is given to more than one contact"),
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"on_call": ["2026-02-30"]}]}, 400,
         "contacts.0.on_call.0: '2026-02-30' is not a date"),
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"name": f"n{i}"} for i in range(101)]}, 422, "at most 100"),
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"name": "a\u0007b"}]}, 422, "contacts.0.name"),
        ("/api/v1/sites/pool-xh-01/contacts",
         {"contacts": [MANAGER | {"role": "Manager!"}]}, 422, "contacts.0.role"),
        ("/api/v1/sites/pool-zz-99/contacts", {"contacts": []}, 404, "unknown site pool-zz-99"),
        ("/api/v1/jurisdictions/31/contacts", {"contacts": []}, 422, "code"),
        ("/api/v1/jurisdictions/999999/contacts", {"contacts": []}, 404,
         "no site is in jurisdiction 999999"),
        ("/api/v1/users/admin/notifications",
         {"preferences": {"quiet_hours": {"start": "22:00", "end": "7:00"}}}, 422,
         "preferences.quiet_hours.end"),
        ("/api/v1/users/admin/notifications",
         {"preferences": {"quiet_hours": {"start": "22:00", "end": "07:00",
                                          "include_critical": "yes"}}}, 422, "include_critical"),
        ("/api/v1/users/admin/notifications", {"preferences": {"families": ["weather"]}}, 422,
         "preferences.families.0"),
        ("/api/v1/users/nobody/notifications", {}, 404, "no user nobody"),
    ],
)  # fmt: skip
def test_invalid_edits_get_a_precise_4xx(system: RunningSystem, path, body, status, reason):
    r = system.http.put(path, json=body)
    assert r.status_code == status, r.text
    assert reason in r.text
    if status == 422:
        assert r.json()["errors"][0]["loc"][0] in ("body", "path")


def test_a_body_over_the_limit_is_refused_before_it_is_read(system: RunningSystem):
    huge = b'{"contacts": [' + b" " * (2 << 20) + b"]}"
    r = system.http.put(
        "/api/v1/sites/pool-xh-01/contacts",
        content=huge,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_who_may_read_and_change_what(system: RunningSystem):
    insp = _user(system, "insp-xh", "inspector", "310104")
    viewer = _user(system, "viewer-xh", "viewer", "310104")
    assert insp.get("/api/v1/sites/pool-xh-01/contacts").status_code == 200
    assert insp.get("/api/v1/jurisdictions/310104/escalation").status_code == 200
    r = insp.put("/api/v1/sites/pool-xh-01/contacts", json={"contacts": []})
    assert r.status_code == 403 and "may not change contacts" in r.text
    assert insp.get("/api/v1/sites/pool-cn-01/contacts").status_code == 403
    assert insp.get("/api/v1/jurisdictions/310105/contacts").status_code == 403
    assert viewer.get("/api/v1/sites/pool-xh-01/contacts").status_code == 403
    # Every user sets their own addresses and preferences, and only theirs.
    mine = {
        "addresses": {"email": "insp@xh.example.cn", "sms": "+8613800000003"},
        "preferences": {"families": ["compliance"], "severities": [],
                        "quiet_hours": {"start": "22:00", "end": "07:00"}},
    }  # fmt: skip
    r = insp.put("/api/v1/users/insp-xh/notifications", json=mine)
    assert r.status_code == 200, r.text
    got = insp.get("/api/v1/users/insp-xh/notifications").json()
    assert got["preferences"]["quiet_hours"]["include_critical"] is False
    assert got["addresses"]["sms"] == "+8613800000003"
    assert viewer.get("/api/v1/users/insp-xh/notifications").status_code == 403
    assert viewer.put("/api/v1/users/insp-xh/notifications", json={}).status_code == 403
    assert system.http.get("/api/v1/users/insp-xh/notifications").json() == got


def test_escalation_entries_show_in_the_alert_and_its_evidence(system: RunningSystem):
    """The dashboard's alert page reads the evidence record: its notifications section lists the
    escalation's entries (api/static/app.js)."""
    admin = system.http
    admin.put("/api/v1/sites/pool-xh-01/contacts", json={"contacts": [MANAGER]})
    core = system.system.core
    # The running system's own escalator (landun run attaches one), sending to a test receiver.
    [esc] = [r for r in core.engine.rules if isinstance(r, Escalator)]
    receiver = Receiver()
    real_outbox, esc.outbox = esc.outbox, RecordingOutbox(receiver)
    try:
        now = now_ms()
        alert = core.engine.raise_alert(
            Alert(
                site_id="pool-xh-01",
                device_id=None,
                rule_id="integrity:test",
                family=AlertFamily.INTEGRITY,
                severity=Severity.WARNING,
                parameter=None,
                message="test alert",
                first_ms=now,
                last_ms=now,
            )
        )
        assert [m["to"] for m in receiver.received] == ["sms:13800000001"]
    finally:
        esc.outbox = real_outbox
        receiver.close()
    detail = admin.get(f"/api/v1/alerts/{alert.id}").json()
    mine = [(e["actor"], e["action"]) for e in detail["audit"] if e["actor"] == "escalation"]
    assert mine == [("escalation", "notification_level"), ("escalation", "notification_queued")]
    record = admin.get(f"/api/v1/alerts/{alert.id}/evidence").json()
    assert "王经理 via sms 138****0001" in [e["comment"] for e in record["audit"]]
    page = admin.get(f"/api/v1/alerts/{alert.id}/evidence", params={"format": "html"}).text
    assert "通知待发 notification queued" in page
