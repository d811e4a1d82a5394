"""Two `landun api` processes and a `landun ingest` over one PostgreSQL database: a site or device
edited through one api is served by the other within seconds, without a restart (the store
notifies every process of a saved registry edit and each reloads its registry), limits included;
ingest takes a device added through an api from its first message, and the alert worker judges
it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from domain.timeutil import now_ms
from landun.broker import free_port
from tests.brokers import MosquittoBroker, have_mosquitto
from tests.conftest import Publisher
from tests.postgres import fresh_database
from tests.roles_rig import Deployment, login, query, wait_until, write_registry

SOON_S = 5.0  # "within a few seconds": a bound on a hang, not a speed measurement


def _within(predicate, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < SOON_S:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {SOON_S} s: {what}")


@pytest.mark.skipif(not have_mosquitto(), reason="needs the mosquitto binary")
def test_an_edit_through_one_api_is_served_by_another(tmp_path: Path) -> None:
    write_registry(tmp_path / "registry.toml", 2)
    broker = MosquittoBroker(tmp_path)
    broker.start()
    with fresh_database() as url:
        d = Deployment(tmp_path, url, broker.url, tmp_path / "registry.toml")
        publisher = Publisher(broker.url)
        try:
            ingest = d.ingest(1)
            d.alerts(1)
            ports = free_port(), free_port()
            d.api(1, ports[0])
            d.api(2, ports[1])
            a, b = (login(p, tmp_path) for p in ports)
            site = a.get("/api/v1/sites/site-001").json()
            assert b.get("/api/v1/sites/site-001").json()["name"] == "Pool 1"

            body = {k: site[k] for k in ("kind", "jurisdiction", "profile")} | {
                "name": "Pool 1 (renamed)",
                "overrides": {"free_chlorine": {"min": 0.5}},
            }
            r = a.put("/api/v1/sites/site-001", json=body)
            assert r.status_code == 200, r.text
            took = _within(
                lambda: b.get("/api/v1/sites/site-001").json()["name"] == "Pool 1 (renamed)",
                "the renamed site through the other api",
            )
            print(f"site edit seen through the other api after {took:.2f} s")
            limits = {x["parameter"]: x for x in b.get("/api/v1/sites/site-001/limits").json()}
            assert limits["free_chlorine"]["min"] == 0.5

            # A new site and its device, through the other api this time.
            r = b.put("/api/v1/sites/site-new", json=body | {"name": "New pool"})
            assert r.status_code == 200, r.text
            device = {"site": "site-new", "kind": "pool_analyzer", "parameters": ["free_chlorine"]}
            r = b.put("/api/v1/devices/dev-new", json=device)
            assert r.status_code == 200, r.text
            _within(
                lambda: a.get("/api/v1/devices/dev-new").status_code == 200,
                "the new device through the first api",
            )
            assert a.get("/api/v1/devices/dev-new").json()["site"] == "site-new"
            ingest.wait_for("registry reloaded: 3 sites, 3 devices", SOON_S)
            # A quarter of an hour below the site's minimum: longer than the pending time.
            start = now_ms() - 20 * 60_000
            publisher.publish(
                "dev-new",
                [{"ts": start + i * 60_000, "values": {"free_chlorine": 0.1}} for i in range(16)],
            )
            stored = "SELECT count(*) FROM readings WHERE device_id = 'dev-new'"
            wait_until(lambda: query(url, stored) == [(16,)], 30, "dev-new's readings")
            assert query(url, "SELECT count(*) FROM dead_letters") == [(0,)]
            judged = "SELECT rule_id, site_id FROM alerts WHERE device_id = 'dev-new'"
            alerts = wait_until(lambda: query(url, judged), 30, "dev-new's alert")
            assert alerts == [("range:free_chlorine", "site-new")]
            assert "Traceback" not in d.logs()
        finally:
            publisher.close()
            d.stop()
            broker.stop()
