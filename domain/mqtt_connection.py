"""How Landun's clients reach the MQTT broker: address, TLS, login, protocol, as one value.

Ingest, the alert publisher and the simulators all build their paho client with `new_client`, so
TLS, logins and the protocol version work alike everywhere. A login never comes from the URL (a
URL shows in the process list and in logs): `landun/broker_options.py` reads it from the
environment or a file. Building the TLS context reads the CA and key files; nothing connects
here."""

from __future__ import annotations

import dataclasses
import logging
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# scheme -> (TLS, paho transport, default port)
SCHEMES: dict[str, tuple[bool, str, int]] = {
    "mqtt": (False, "tcp", 1883),
    "tcp": (False, "tcp", 1883),
    "mqtts": (True, "tcp", 8883),
    "ssl": (True, "tcp", 8883),
    "ws": (False, "websockets", 80),
    "wss": (True, "websockets", 443),
}
MQTT_VERSIONS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class BrokerUnusable(Exception):
    """The broker cannot be used as configured (its certificate was rejected, a TLS file is
    unreadable): retrying would not help, so the process says why and stops."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None  # None with TLS: the system's trusted CAs
    cert_file: Path | None = None  # client certificate, for brokers that require one
    key_file: Path | None = None
    check_hostname: bool = True
    transport: str = "tcp"  # or "websockets"
    ws_path: str = "/mqtt"
    mqtt_version: str = "3.1.1"  # or "5"

    @classmethod
    def parse(cls, url: str, **options: object) -> BrokerAddress:
        """`mqtt://host:1883`, `mqtts://host:8883`, `ws://host/mqtt`, `wss://...`; `options`
        are the other fields (TLS files, login, protocol)."""
        u = urlparse(url if "://" in url else f"mqtt://{url}")
        if u.scheme not in SCHEMES:
            raise ValueError(f"broker URL {url!r}: scheme must be one of {', '.join(SCHEMES)}")
        if u.username is not None or u.password is not None:
            raise ValueError(
                "the broker URL must not carry a login (it would show in the process list):"
                " use LANDUN_BROKER_USERNAME and LANDUN_BROKER_PASSWORD or --broker-password-file"
            )
        tls, transport, port = SCHEMES[u.scheme]
        address = cls(
            u.hostname or "127.0.0.1",
            u.port or port,
            tls=tls,
            transport=transport,
            ws_path=u.path or "/mqtt",
        )
        return dataclasses.replace(address, **options)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.mqtt_version not in MQTT_VERSIONS:
            raise ValueError(f"MQTT version {self.mqtt_version!r}: one of {list(MQTT_VERSIONS)}")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("a CA or client certificate needs TLS: mqtts:// or wss://")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    @property
    def url(self) -> str:
        """The address without the login: safe to print."""
        if self.transport == "websockets":
            scheme, path = ("wss" if self.tls else "ws"), self.ws_path
        else:
            scheme, path = ("mqtts" if self.tls else "mqtt"), ""
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def v5(self) -> bool:
        return self.mqtt_version == "5"

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name checked (unless told otherwise), TLS 1.2 at least."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUnusable(f"{self.url}: TLS files: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.check_hostname
        return ctx


def new_client(
    broker: BrokerAddress, client_id: str, persistent: bool = False, manual_ack: bool = False
) -> mqtt.Client:
    """A paho client for `broker`; `persistent` keeps the session (and its queued messages)
    while the client is away."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5 says it at connect time instead (connect_options).
        clean_session=None if broker.v5 else not persistent,
        protocol=MQTT_VERSIONS[broker.mqtt_version],
        transport=broker.transport,  # type: ignore[arg-type]
        manual_ack=manual_ack,
    )
    if broker.transport == "websockets":
        client.ws_set_options(path=broker.ws_path)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(broker.tls_context())
        # paho checks the host name itself unless the context does, or it is told not to.
        client.tls_insecure_set(not broker.check_hostname)
    return client


class ConnectOptions(TypedDict, total=False):
    """The MQTT 5 keyword arguments of `Client.connect` (none for 3.1.1)."""

    clean_start: bool
    properties: Properties


def connect_options(
    broker: BrokerAddress,
    persistent: bool = False,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> ConnectOptions:
    """Keyword arguments of `Client.connect` for `broker`: MQTT 5's clean start, session expiry
    and receive maximum (the most unacknowledged messages the broker may send this client)."""
    if not broker.v5:
        return {}
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = max(1, min(receive_maximum, 0xFFFF))
    return {"clean_start": not persistent, "properties": props}


def connect_or_retry(
    client: mqtt.Client,
    broker: BrokerAddress,
    failures: FailureLog,
    keepalive_s: int = 60,
    **options: Unpack[ConnectOptions],
) -> None:
    """Connect now, before paho's network loop starts. A certificate the TLS setup rejects
    raises BrokerUnusable (one clear line, no retrying: the configuration is wrong); any other
    failure (a broker not up yet) is logged and left to paho's reconnect loop."""
    try:
        client.connect(broker.host, broker.port, keepalive_s, **options)
    except (OSError, BrokerUnusable) as exc:
        if is_configuration_error(exc):
            raise BrokerUnusable(f"{broker.url}: {describe_failure(exc)}") from None
        failures.failed(describe_failure(exc))
        client.connect_async(broker.host, broker.port, keepalive_s, **options)


def describe_failure(exc: BaseException | None) -> str:
    """One line saying why a connection attempt failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__


def is_configuration_error(exc: BaseException) -> bool:
    """A failure retrying cannot cure: the certificate, key or CA is wrong."""
    return isinstance(exc, ssl.SSLCertVerificationError | BrokerUnusable)


class FailureLog:
    """Logs why connecting fails once per distinct reason: a broker that keeps refusing gives one
    clear line, not one every retry (the repeats go to DEBUG). A success resets it."""

    def __init__(self, logger: logging.Logger, broker: BrokerAddress, who: str) -> None:
        self.logger = logger
        self.where = f"{who} -> {broker.url}"
        self._last: str | None = None

    def failed(self, reason: str) -> None:
        level = logging.DEBUG if reason == self._last else logging.ERROR
        self._last = reason
        self.logger.log(level, "%s: %s; retrying", self.where, reason)

    def succeeded(self) -> None:
        self._last = None

    def attach(self, client: mqtt.Client) -> None:
        """Report paho's own failed (re)connects and refused logins through this log."""

        def on_connect_fail(_client: mqtt.Client, _userdata: object) -> None:
            # paho calls this from inside its `except OSError`: the error is the current one.
            self.failed(describe_failure(sys.exc_info()[1]))

        client.on_connect_fail = on_connect_fail

    def connected(self, reason_code: object) -> bool:
        """For on_connect: False (and logged) when the broker refused the login."""
        if getattr(reason_code, "is_failure", False):
            self.failed(f"the broker refused the login: {reason_code}")
            return False
        self.succeeded()
        return True
