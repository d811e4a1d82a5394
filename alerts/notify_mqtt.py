"""Publishes every alert change to `landun/v1/alerts/{site_id}` (QoS 1, JSON)."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from domain import strict_json
from domain.alert_json import alert_to_dict
from domain.model import Alert
from domain.mqtt_connection import (
    BrokerAddress,
    FailureLog,
    connect_options,
    connect_or_retry,
    new_client,
)

log = logging.getLogger("landun.alerts.mqtt")


def alert_topic(site_id: str) -> str:
    return f"landun/v1/alerts/{site_id}"


class MqttAlertPublisher:
    def __init__(self, broker: BrokerAddress, client_id: str = "landun-alerts") -> None:
        self.broker = broker
        self.client = new_client(broker, client_id)
        # paho annotates whole seconds but computes with any number.
        self.client.reconnect_delay_set(0.5, 30)  # type: ignore[arg-type]
        self.failures = FailureLog(log, broker, f"alert publisher {client_id}")
        self.failures.attach(self.client)
        self.client.on_connect = self._on_connect
        self.published = 0

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.failures.connected(rc)

    def start(self) -> None:
        """Raises BrokerUnusable if the broker's certificate is rejected; a broker that is not
        up yet is retried, and paho queues the alerts meanwhile."""
        connect_or_retry(self.client, self.broker, self.failures, **connect_options(self.broker))
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
