"""Every JSON Landun writes is strict JSON (no NaN, no Infinity), and webhook targets are served
independently: a receiver that hangs and fails does not hold up another."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notify_mqtt import MqttAlertPublisher
from alerts.notify_webhook import WebhookNotifier, WebhookTarget
from domain.alert_json import alert_to_dict
from domain.model import Alert, AlertFamily, Severity
from domain.mqtt_connection import BrokerAddress
from store.base import AlertChange
from store.sqlite import SqliteStore
from tests.conftest import wait_for

T0 = 1_795_334_400_000


def strict_loads(text: str | bytes) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def nan_alert() -> Alert:
    return Alert(
        "pool-1", "pool-1-wq", "integrity:spike:ph", AlertFamily.INTEGRITY, Severity.WARNING,
        "ph", "ph spike (score nan)", T0, T0, first_value=math.nan, last_value=math.inf,
        worst_value=7.2, evidence={"score": math.nan, "rate_per_min": -math.inf, "n": [1.0, math.nan]},
    )  # fmt: skip


def test_alert_json_and_store_round_trip_are_strict(tmp_path: Path) -> None:
    body = alert_to_dict(nan_alert())
    strict_loads(json.dumps(body, allow_nan=False))
    assert body["evidence"] == {"score": None, "rate_per_min": None, "n": [1.0, None]}
    assert (body["first_value"], body["last_value"]) == (None, None)
    store = SqliteStore(tmp_path / "landun.db")
    alert = nan_alert()
    store.save_alerts([AlertChange(alert, "opened")], "engine", {})
    [event] = store.audit_events(0, ["pool-1"])
    assert event.alert.evidence == {"score": None, "rate_per_min": None, "n": [1.0, None]}
    store.close()


def test_mqtt_alert_announcement_is_strict(broker) -> None:
    got: list[bytes] = []
    host, port = broker.url.removeprefix("mqtt://").split(":")
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="strict-sub")
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("landun/v1/alerts/#", qos=1)
    sub.connect(host, int(port))
    sub.loop_start()
    publisher = MqttAlertPublisher(BrokerAddress.parse(broker.url), client_id="strict-pub")
    publisher.start()
    try:
        wait_for(lambda: sub.is_connected() and publisher.client.is_connected(), what="connected")
        wait_for(lambda: publisher.alert_changed(nan_alert(), "opened") or got, what="an alert")
        msg = strict_loads(got[0])
        assert msg["alert"]["evidence"]["score"] is None  # type: ignore[index]
    finally:
        publisher.stop()
        sub.disconnect()
        sub.loop_stop()


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    received: list[bytes]
    release: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(body)
        self.release.wait(30)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _server(status: int, release: threading.Event) -> tuple[ThreadingHTTPServer, type[_Receiver]]:
    attrs = {"status": status, "received": [], "release": release}
    handler = type("Handler", (_Receiver,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.fixture
def receivers() -> Iterator[tuple[type[_Receiver], type[_Receiver], threading.Event, list[str]]]:
    open_now, held = threading.Event(), threading.Event()
    open_now.set()
    good, good_handler = _server(200, open_now)
    bad, bad_handler = _server(503, held)
    urls = [f"http://127.0.0.1:{s.server_port}/hook" for s in (good, bad)]
    yield good_handler, bad_handler, held, urls
    held.set()
    good.shutdown()
    bad.shutdown()


def test_a_hanging_failing_receiver_does_not_delay_another(tmp_path: Path, receivers) -> None:
    good, bad, held, (good_url, bad_url) = receivers
    store = SqliteStore(tmp_path / "landun.db")
    notifier = WebhookNotifier(
        [WebhookTarget(good_url, "s", 3, 0.01, 60.0), WebhookTarget(bad_url, "s", 3, 0.01, 60.0)],
        store,
    )
    notifier.start()
    try:
        alerts = []
        for n in range(5):
            alert = nan_alert()
            alert.id = n + 1
            alerts.append(alert)
            notifier.alert_changed(alert, "opened")
        # All five reach the good receiver while the bad one still holds its first request.
        wait_for(lambda: len(good.received) == 5, what="five deliveries to the good receiver")
        assert len(bad.received) == 1
        assert all(strict_loads(b)["alert"]["evidence"]["score"] is None for b in good.received)
        held.set()
        failed = wait_for(
            lambda: [d for d in store.deliveries() if not d.ok and d.alert_id == 5],
            what="the last change recorded as undelivered",
        )
        assert failed[0].attempts == 3 and failed[0].error == "HTTP 503"
        assert len(bad.received) == 15  # 3 attempts each, then given up
        delivered = [d for d in store.deliveries() if d.ok]
        assert sorted(d.alert_id for d in delivered) == [1, 2, 3, 4, 5]
        assert {d.target for d in delivered} == {good_url}
    finally:
        notifier.stop()
        store.close()


def test_api_evidence_and_live_stream_are_strict(system) -> None:
    """An alert whose detector statistics were NaN: its evidence answers 200 and the live
    stream carries it as strict JSON (a browser's JSON.parse drops a bare NaN)."""
    store = system.system.core.store
    before = store.last_audit_id()
    alert = nan_alert()
    alert.site_id, alert.device_id = "pool-xh-01", "pool-xh-01-wq"
    store.save_alerts([AlertChange(alert, "opened")], "test", {})
    record = system.http.get(f"/api/v1/alerts/{alert.id}/evidence")
    assert record.status_code == 200
    assert strict_loads(record.text)["alert"]["evidence"]["score"] is None  # type: ignore[index]
    headers = {"Last-Event-ID": str(before)}
    with system.http.stream("GET", "/api/v1/alerts/stream", headers=headers) as response:
        data = next(line for line in response.iter_lines() if line.startswith("data: "))
    event = strict_loads(data.removeprefix("data: "))
    assert event["alert"]["id"] == alert.id  # type: ignore[index]
    assert event["alert"]["evidence"]["rate_per_min"] is None  # type: ignore[index]
