"""Publishes every alert change to `landun/v1/alerts/{site_id}` (QoS 1, JSON)."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from domain import strict_json
from domain.alert_json import alert_to_dict
from domain.model import Alert

log = logging.getLogger("landun.alerts.mqtt")


def alert_topic(site_id: str) -> str:
    return f"landun/v1/alerts/{site_id}"


class MqttAlertPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "landun-alerts",
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.5, 30)
        self.host, self.port = host, port
        self.published = 0

    def start(self) -> None:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def alert_changed(self, alert: Alert, action: str) -> None:
        body = strict_json.dumps({"action": action, "alert": alert_to_dict(alert)})
        # paho queues while disconnected and delivers on reconnect (QoS 1).
        info = self.client.publish(alert_topic(alert.site_id), body, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("alert publish failed: %s", mqtt.error_string(info.rc))
        self.published += 1
