"""Alert engine behaviour through the real pipeline: broker, ingest, SQLite, engine, API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.channels.webhook import SIGNATURE_HEADER
from alerts.notify_webhook import WebhookTarget
from domain.timeutil import now_ms
from landun.system import RunConfig
from tests.conftest import Publisher, demo_config, start_system, wait_for

DEVICE = "pool-xh-01-wq"
SITE = "pool-xh-01"
MINUTE = 60_000


def send_chlorine(pub: Publisher, start: int, values: list[float], flag: str = "N") -> None:
    for i, v in enumerate(values):
        rec = {"ts": start + i * MINUTE, "values": {"free_chlorine": v}}
        if flag != "N":
            rec["flags"] = {"free_chlorine": flag}
        pub.publish(DEVICE, rec)


def readings_count(system, device: str = DEVICE) -> int:
    """Readings stored for the device, or -1 until they have been judged as well."""
    n = len(system.http.get("/api/v1/readings", params={"device": device}).json())
    return n if system.judged() else -1  # counted first: a later batch cannot slip in between


def alerts(system, **params) -> list[dict]:
    return system.http.get("/api/v1/alerts", params=params).json()


def config(broker, tmp_path, **kw) -> RunConfig:
    return demo_config(broker.url, tmp_path / "var", "landun-ingest-engine", **kw)


def test_value_oscillating_around_the_limit_raises_one_alert_then_clears(system, publisher):
    start = now_ms() - 120 * MINUTE
    low = [0.25] * 12
    hover = [0.29, 0.31, 0.28, 0.32, 0.29, 0.33] * 5  # inside by less than the 0.05 margin
    back = [0.6] * 12
    send_chlorine(publisher, start, low + hover + back)
    n = len(low + hover + back)
    wait_for(lambda: readings_count(system) == n, what="all readings")
    found = alerts(system)
    assert len(found) == 1
    alert = found[0]
    assert alert["status"] == "resolved"
    assert alert["worst_value"] == 0.25
    detail = system.http.get(f"/api/v1/alerts/{alert['id']}").json()
    changes = [e for e in detail["audit"] if e["actor"] != "escalation"]  # not alert changes
    assert [e["action"] for e in changes] == ["opened", "resolved"]
    # The episode runs from the first low reading to the last reading outside the margin.
    assert alert["first"] == detail["first"]
    assert detail["evidence"]["readings"]["from_ms"] == start


def test_flagged_values_raise_no_compliance_alert(system, publisher):
    start = now_ms() - 60 * MINUTE
    send_chlorine(publisher, start, [0.05] * 20, flag="M")
    wait_for(lambda: readings_count(system) == 20, what="flagged readings stored")
    rows = system.http.get("/api/v1/readings", params={"device": DEVICE}).json()
    assert {r["flag"] for r in rows} == {"M"}
    assert alerts(system, family="compliance") == []


def test_flagged_readings_inside_an_episode_are_counted_as_excluded(system, publisher):
    start = now_ms() - 60 * MINUTE
    send_chlorine(publisher, start, [0.1] * 12)
    send_chlorine(publisher, start + 12 * MINUTE, [0.1] * 3, flag="C")
    send_chlorine(publisher, start + 15 * MINUTE, [0.1] * 2)
    wait_for(lambda: readings_count(system) == 17, what="readings")
    # Stored is not yet judged: wait until the alert has seen the last reading.
    alert = wait_for(
        lambda: [a for a in alerts(system) if a["count"] == 14], what="the alert over all readings"
    )[0]
    assert alert["evidence"]["excluded_flagged"] == 3


def test_restart_keeps_one_alert_and_remembers_a_pending_violation(broker, tmp_path):
    cfg = config(broker, tmp_path)
    start = now_ms() - 120 * MINUTE
    running = start_system(cfg)
    pub = Publisher(broker.url, "restart-device")
    try:
        send_chlorine(pub, start, [0.1] * 12)  # an open alert
        other = "pool-xh-02-wq"
        for i in range(6):  # a pending violation, 6 of 10 minutes
            pub.publish(other, {"ts": start + i * MINUTE, "values": {"ph": 8.4}})
        wait_for(lambda: readings_count(running) == 12 and readings_count(running, other) == 6)
        assert len(alerts(running)) == 1
    finally:
        running.stop()
    running = start_system(cfg)
    try:
        send_chlorine(pub, start + 12 * MINUTE, [0.1] * 5)
        for i in range(6, 11):
            pub.publish(other, {"ts": start + i * MINUTE, "values": {"ph": 8.4}})
        wait_for(lambda: readings_count(running) == 17 and readings_count(running, other) == 11)
        found = wait_for(lambda: len(alerts(running)) == 2 and alerts(running), what="2 alerts")
        by_rule = {a["rule_id"]: a for a in found}
        assert by_rule["range:free_chlorine"]["count"] == 17
        ph = by_rule["range:ph"]
        assert ph["status"] == "open"
        assert ph["evidence"]["readings"]["from_ms"] == start  # pending began before restart
    finally:
        running.stop()
        pub.close()


def test_silent_device_raises_offline_alert_on_the_clock_and_clears_when_back(system, publisher):
    engine = system.system.core.engine
    publisher.publish(DEVICE, {"ts": now_ms() - MINUTE, "values": {"ph": 7.4}})
    wait_for(lambda: readings_count(system) == 1, what="a reading")
    # No message arrives; only the clock moves (20 minutes on: past the 15 min minimum timeout).
    engine.tick(now_ms() + 20 * MINUTE)
    offline = alerts(system, family="integrity")
    devices = {a["device_id"] for a in offline}
    assert DEVICE in devices and "pool-xh-02-wq" in devices  # never heard of: also silent
    never = next(a for a in offline if a["device_id"] == "pool-xh-02-wq")
    assert "has never reported" in never["message"] and never["evidence"]["never_reported"]
    mine = next(a for a in offline if a["device_id"] == DEVICE)
    assert mine["rule_id"] == "integrity:offline" and mine["status"] == "open"
    assert "silent since" in mine["message"] and not mine["evidence"]["never_reported"]
    engine.tick(now_ms() + 21 * MINUTE)
    assert len(alerts(system, family="integrity")) == len(offline)  # no duplicates
    publisher.publish(DEVICE, {"ts": now_ms(), "values": {"ph": 7.4}})
    wait_for(lambda: readings_count(system) == 2, what="the device back")
    engine.tick(now_ms())
    mine = next(a for a in alerts(system, family="integrity") if a["device_id"] == DEVICE)
    assert mine["status"] == "resolved"


def test_inspector_lifecycle_with_audit_and_clear_errors(system, publisher):
    send_chlorine(publisher, now_ms() - 60 * MINUTE, [0.1] * 12)
    alert = wait_for(lambda: alerts(system), what="an alert")[0]
    url = f"/api/v1/alerts/{alert['id']}"
    r = system.http.post(f"{url}/acknowledge", json={"comment": "calling the pool manager"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    again = system.http.post(f"{url}/acknowledge", json={})
    assert again.status_code == 409
    assert again.json()["detail"] == f"alert {alert['id']} is already acknowledged"
    r = system.http.post(f"{url}/comments", json={"comment": "dosing pump replaced"})
    assert r.status_code == 200
    r = system.http.post(f"{url}/resolve", json={"comment": "verified on site"})
    assert r.json()["status"] == "resolved"
    # The escalation's own entries (who was told, by the wall clock's working hours) aside.
    audit = [e for e in r.json()["audit"] if e["actor"] != "escalation"]
    assert [(e["action"], e["comment"]) for e in audit] == [
        ("opened", ""),
        ("acknowledged", "calling the pool manager"),
        ("commented", "dosing pump replaced"),
        ("resolved", "verified on site"),
    ]
    assert system.http.post(f"{url}/resolve", json={}).status_code == 409
    missing = system.http.post("/api/v1/alerts/999999/acknowledge", json={})
    assert missing.status_code == 404 and missing.json()["detail"] == "alert 999999 does not exist"
    assert system.http.post(f"{url}/comments", json={"comment": ""}).status_code == 422


def test_alert_changes_are_published_on_the_alert_topic(system, broker, publisher):
    got: list[dict] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="alert-listener")
    sub.on_message = lambda c, u, m: got.append({"topic": m.topic, **json.loads(m.payload)})
    host, port = broker.url.removeprefix("mqtt://").split(":")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(host, int(port))
    sub.loop_start()
    sub.subscribe("landun/v1/alerts/#", qos=1)
    assert subscribed.wait(10)
    try:
        send_chlorine(publisher, now_ms() - 60 * MINUTE, [0.1] * 12)
        msg = wait_for(lambda: got, what="an alert message")[0]
        assert msg["topic"] == f"landun/v1/alerts/{SITE}"
        assert msg["action"] == "opened"
        assert msg["alert"]["limit"]["standard"] == "GB 37488-2019"
        # Critical (0.1 < 0.2 mg/L) and unacknowledged: announced again on the clock.
        system.system.core.engine.tick(now_ms() + 2 * 3_600_000)
        wait_for(lambda: any(m["action"] == "renotified" for m in got), what="a re-notification")
    finally:
        sub.disconnect()
        sub.loop_stop()


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    secret = "s3cret"
    received: ClassVar[list[tuple[dict, bool]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        self.received.append((json.loads(body), self.headers[SIGNATURE_HEADER] == want))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _server(status: int) -> tuple[ThreadingHTTPServer, type[_Receiver]]:
    handler = type("Handler", (_Receiver,), {"status": status, "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.fixture
def webhook_servers():
    ok, ok_handler = _server(200)
    failing, failing_handler = _server(503)
    yield (ok, ok_handler), (failing, failing_handler)
    ok.shutdown()
    failing.shutdown()


def test_webhooks_are_signed_retried_and_failures_recorded(broker, tmp_path, webhook_servers):
    (ok, ok_handler), (failing, failing_handler) = webhook_servers
    targets = [
        WebhookTarget(f"http://127.0.0.1:{ok.server_port}/hook", "s3cret", 3, 0.01),
        WebhookTarget(f"http://127.0.0.1:{failing.server_port}/hook", "s3cret", 3, 0.01),
    ]
    running = start_system(config(broker, tmp_path, webhooks=targets))
    pub = Publisher(broker.url, "webhook-device")
    try:
        send_chlorine(pub, now_ms() - 60 * MINUTE, [0.1] * 12)
        wait_for(lambda: ok_handler.received, what="a webhook call")
        body, signed = ok_handler.received[0]
        assert signed and body["action"] == "opened" and body["alert"]["site_id"] == SITE
        store = running.system.core.store
        failed = wait_for(
            lambda: [d for d in store.deliveries() if not d.ok], what="a recorded failure"
        )
        assert failed[0].attempts == 3 and failed[0].error == "HTTP 503"
        assert len(failing_handler.received) == 3
        assert any(d.ok and d.attempts == 1 for d in store.deliveries())
        # What could not be delivered is visible to an admin through the API.
        undelivered = running.http.get("/api/v1/webhook-deliveries", params={"failed": True})
        assert undelivered.status_code == 200
        assert {(d["target"], d["attempts"], d["error"]) for d in undelivered.json()} == {
            (targets[1].url, 3, "HTTP 503")
        }
    finally:
        running.stop()
        pub.close()


def test_detector_alerts_open_before_a_restart_are_cleared_after_it(broker, tmp_path):
    cfg = config(broker, tmp_path)
    pub = Publisher(broker.url, "restart-flagged")
    start = now_ms() - 30 * MINUTE
    running = start_system(cfg)
    try:
        send_chlorine(pub, start, [0.6] * 3, flag="C")  # calibration: only flagged data
        flagged = wait_for(
            lambda: alerts(running, rule="integrity:flagged:free_chlorine", status="open"),
            what="the flagged-data alert",
        )
        assert len(flagged) == 1
    finally:
        running.stop()
    running = start_system(cfg)
    try:
        send_chlorine(pub, start + 3 * MINUTE, [0.6])  # valid data again
        wait_for(
            lambda: alerts(running, rule="integrity:flagged:free_chlorine", status="resolved"),
            what="the flagged-data alert resolved by the restarted system",
        )
    finally:
        running.stop()
        pub.close()
