"""MQTT over TLS on a real Mosquitto TLS listener, with a throwaway CA made here (openssl CLI):
readings arrive over TLS with a client certificate and a login from the environment; a wrong CA,
an expired certificate and a wrong host name each end in one clear line, not a reconnect loop;
the password never shows in argv or the start-up banner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from domain.mqtt_connection import BrokerAddress, BrokerUnusable, new_client
from domain.params import default_catalogue
from domain.registry import load_registry
from ingest.kinds import standard_decoders
from ingest.mqtt import MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestPipeline
from landun.broker import free_port
from landun.cli import main
from landun.demo import demo_registry_path
from landun.mosquitto_export import hash_password
from store.sqlite import SqliteStore
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(
    not have_mosquitto() or shutil.which("openssl") is None, reason="needs mosquitto and openssl"
)
ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "ingest", "tls-test-password-7f3e"
DEVICE = "pool-xh-01-wq"


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # a CA that signed nothing the broker uses
    server: tuple[Path, Path]  # for localhost
    expired: tuple[Path, Path]  # for localhost, no longer valid
    wrong_host: tuple[Path, Path]  # valid, for another host name
    client: tuple[Path, Path]


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
            "-subj", f"/CN={name}", "-days", "2")  # fmt: skip
    return crt, key


def make_cert(d: Path, name: str, ca: tuple[Path, Path], host: str, days: int) -> tuple[Path, Path]:
    """A certificate signed by `ca`; a negative `days` makes one that has already expired."""
    key, csr, crt, ext = (d / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
    ext.write_text(f"subjectAltName=DNS:{host}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/CN={host}")  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
            str(abs(hash(name)) % 10**9), "-out", crt, "-days", str(days), "-extfile", ext)  # fmt: skip
    return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    return Pki(
        ca=ca[0],
        other_ca=make_ca(d, "other-ca")[0],
        server=make_cert(d, "server", ca, "localhost", 2),
        expired=make_cert(d, "expired", ca, "localhost", -1),
        wrong_host=make_cert(d, "wrong-host", ca, "broker.elsewhere.example", 2),
        client=make_cert(d, "client", ca, "landun-ingest", 2),
    )


class TlsBroker(MosquittoBroker):
    """Mosquitto with only a TLS listener that requires a client certificate and a login."""

    def __init__(self, workdir: Path, pki: Pki, server: tuple[Path, Path]) -> None:
        passwd = workdir / "passwd"
        passwd.write_text(f"{USER}:{hash_password(PASSWORD)}\n")
        passwd.chmod(0o600)
        super().__init__(workdir, extra=f"allow_anonymous false\npassword_file {passwd}\n")
        self.tls = (
            f"cafile {pki.ca}\ncertfile {server[0]}\nkeyfile {server[1]}\n"
            "require_certificate true\n"
        )

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    def write_config(self) -> None:
        super().write_config()
        text = self.conf.read_text()
        self.conf.write_text(text.replace("\n", "\n" + self.tls, 1))


def start_broker(tmp_path: Path, pki: Pki, server: tuple[Path, Path]) -> TlsBroker:
    b = TlsBroker(tmp_path, pki, server)
    b.start()
    return b


def address(b: TlsBroker, pki: Pki, ca: Path | None = None) -> BrokerAddress:
    return BrokerAddress.parse(
        b.url,
        username=USER,
        password=PASSWORD,
        ca_file=ca or pki.ca,
        cert_file=pki.client[0],
        key_file=pki.client[1],
    )


def test_readings_arrive_over_tls(tmp_path: Path, pki: Pki) -> None:
    b = start_broker(tmp_path, pki, pki.server)
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(
        store, load_registry(demo_registry_path()), standard_decoders(default_catalogue())
    )
    sub = MqttSubscriber(pipeline, address(b, pki), SubscriberSettings("tls-ingest"))
    device = new_client(address(b, pki), "tls-device")  # same CA, client cert and login
    try:
        sub.start()
        assert sub.subscribed
        device.connect("localhost", b.port)
        device.loop_start()
        now = int(time.time() * 1000)
        for k in range(20):
            body = f'{{"ts": {now - k * 60_000}, "values": {{"ph": 7.2}}}}'
            topic = f"landun/v1/devices/{DEVICE}/telemetry"
            device.publish(topic, body, qos=1).wait_for_publish(10)
        wait_for(lambda: pipeline.metrics.acked == 20, what="20 messages over TLS")
        assert pipeline.metrics.readings_stored == 20
    finally:
        device.disconnect()
        device.loop_stop()
        sub.stop()
        store.close()
        b.stop()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        # Mosquitto sends its CA along, which the client's CA did not sign.
        ("wrong CA", "(unable to get local issuer|self-signed certificate in) certificate"),
        ("expired", "certificate has expired"),
        ("wrong host", "Hostname mismatch"),
    ],
)
def test_a_certificate_that_fails_gives_one_clear_error(
    tmp_path: Path, pki: Pki, case: str, reason: str
) -> None:
    server = {"expired": pki.expired, "wrong host": pki.wrong_host}.get(case, pki.server)
    b = start_broker(tmp_path, pki, server)
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(
        store, load_registry(demo_registry_path()), standard_decoders(default_catalogue())
    )
    ca = pki.other_ca if case == "wrong CA" else pki.ca
    sub = MqttSubscriber(pipeline, address(b, pki, ca), SubscriberSettings("tls-bad"))
    try:
        with pytest.raises(BrokerUnusable) as err:
            sub.start()
        message = str(err.value)
        assert "\n" not in message
        assert re.search(f"^{b.url}: TLS: the broker's certificate was rejected: {reason}", message)
    finally:
        store.close()
        b.stop()


def landun_run(tmp_path: Path, b: TlsBroker, pki: Pki, ca: Path) -> subprocess.Popen:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    argv = [
        sys.executable, "-m", "landun.cli", "run", "--no-simulators", "--port", str(free_port()),
        "--data-dir", str(tmp_path / "var"), "--broker", b.url, "--broker-ca", str(ca),
        "--broker-cert", str(pki.client[0]), "--broker-key", str(pki.client[1]),
        "--broker-password-file", str(tmp_path / "pw"), "--client-id", "tls-landun",
    ]  # fmt: skip
    env = {**os.environ, "LANDUN_BROKER_USERNAME": USER}
    env.pop("LANDUN_BROKER_PASSWORD", None)
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_landun_run_over_tls_keeps_the_password_out_of_argv_and_banner(
    tmp_path: Path, pki: Pki
) -> None:
    b = start_broker(tmp_path, pki, pki.server)
    proc = landun_run(tmp_path, b, pki, pki.ca)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(4)]
        assert banner[0] == "Landun is running.\n", (banner, proc.stderr)
        assert f"MQTT broker:  {b.url}\n" in banner[2]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        b.stop()
    assert PASSWORD not in cmdline
    assert PASSWORD not in "".join(banner) + out + err
    assert "Landun stopped cleanly." in out


def test_landun_run_with_a_wrong_ca_stops_with_one_line(tmp_path: Path, pki: Pki) -> None:
    b = start_broker(tmp_path, pki, pki.server)
    proc = landun_run(tmp_path, b, pki, pki.other_ca)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        b.stop()
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(
        f"landun run: cannot use the broker {b.url}: TLS: the broker's certificate was"
        " rejected: (unable to get local issuer|self-signed) certificate.*",
        lines[-1],
    ), err
    assert "Traceback" not in err

    assert PASSWORD not in out + err


def test_simulate_publishes_over_tls(tmp_path: Path, pki: Pki, monkeypatch) -> None:
    """`landun simulate` takes the same broker options; its readings reach ingest over TLS."""
    b = start_broker(tmp_path, pki, pki.server)
    store = SqliteStore(tmp_path / "landun.db")
    pipeline = IngestPipeline(
        store, load_registry(demo_registry_path()), standard_decoders(default_catalogue())
    )
    sub = MqttSubscriber(pipeline, address(b, pki), SubscriberSettings("tls-sim-ingest"))
    monkeypatch.setenv("LANDUN_BROKER_USERNAME", USER)
    monkeypatch.setenv("LANDUN_BROKER_PASSWORD", PASSWORD)
    try:
        sub.start()
        rc = main(
            [
                "simulate", "--broker", b.url, "--broker-ca", str(pki.ca),
                "--broker-cert", str(pki.client[0]), "--broker-key", str(pki.client[1]),
                "--registry", str(demo_registry_path()), "--sites", "1", "--speed", "3600",
                "--duration", "10m",
            ]
        )  # fmt: skip
        assert rc == 0
        wait_for(lambda: pipeline.metrics.readings_stored >= 9 * 6, what="simulated readings")
    finally:
        sub.stop()
        store.close()
        b.stop()
