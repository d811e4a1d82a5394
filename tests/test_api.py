"""The inspectors' API through HTTP on the real running system: broker, ingest, SQLite, alert
engine, API. One system with a known data set serves most tests; tests that stop the broker or
restart the system start their own.

Jurisdictions: 310104 (Xuhui: pool-xh-01..03) and 310105 (Changning: pool-cn-01..03). An
inspector of 310104 must never see or change anything of 310105."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from api.auth import token_hash
from domain.credentials import hash_secret
from domain.timeutil import ms_to_iso, now_ms
from landun.accounts import create_token
from landun.system import RunConfig
from store.base import Principal
from tests.brokers import AmqttBroker, MosquittoBroker, have_mosquitto
from tests.conftest import (
    Publisher,
    RunningSystem,
    demo_config,
    raw_request,
    start_system,
    wait_for,
)

MINUTE = 60_000
HOUR = 3_600_000
SHANGHAI = timezone(timedelta(hours=8))
PASSWORD = "correct horse battery staple"

XH1, XH2, XH3 = "pool-xh-01-wq", "pool-xh-02-wq", "pool-xh-03-wq"
CN1, CN2 = "pool-cn-01-wq", "pool-cn-02-wq"
XH_SITES = {"pool-xh-01", "pool-xh-02", "pool-xh-03", "hosp-xh-01", "water-xh-01", "tw-xh-01"}
CN_SITES = {"pool-cn-01", "pool-cn-02", "pool-cn-03", "water-cn-01"}

# pool-xh-01's free chlorine in the hour from H: 15 readings below the 0.3 mg/L minimum, then 45
# inside (values vary so the stuck-sensor detector stays quiet).
XH1_CHLORINE = [0.10 + 0.01 * (i % 3) for i in range(15)] + [
    0.50 + 0.01 * (i % 4) for i in range(45)
]
# Its pH in the first 10 minutes: two readings flagged M (maintenance), stored but not judged.
XH1_PH_FLAGGED = 9.0
XH1_PH = [(7.2, "N"), (7.3, "N"), (7.4, "N"), (XH1_PH_FLAGGED, "M"), (XH1_PH_FLAGGED, "M"),
          (7.5, "N"), (7.6, "N"), (7.2, "N"), (7.3, "N"), (7.4, "N")]  # fmt: skip
VALID_PH = [v for v, flag in XH1_PH if flag == "N"]
# Free chlorine in the next hour: 3 valid, 2 flagged C (calibration) at minutes 61 and 62.
XH1_NEXT_HOUR = [(60, 0.51, "N"), (61, 0.05, "C"), (62, 0.05, "C"), (63, 0.52, "N"), (64, 0.5, "N")]


@dataclass
class World:
    """The running system, its known data and a client per role."""

    running: RunningSystem
    hour: int  # H: start of the hour holding pool-xh-01's known data, epoch ms
    admin: httpx.Client
    insp_xh: httpx.Client  # inspector of 310104
    insp_cn: httpx.Client  # inspector of 310105
    viewer_xh: httpx.Client  # viewer of 310104

    def alert_of(self, device: str, rule: str) -> dict:
        found = self.admin.get("/api/v1/alerts", params={"device": device, "rule": rule}).json()
        assert len(found) == 1, found
        return found[0]


def _broker(workdir: Path) -> MosquittoBroker | AmqttBroker:
    return MosquittoBroker(workdir) if have_mosquitto() else AmqttBroker()


def _config(broker_url: str, data_dir: Path, client_id: str) -> RunConfig:
    # The clock never ticks by itself: offline alerts only when a test asks.
    return demo_config(broker_url, data_dir, client_id, tick_s=3600.0)


def _record(ts: int, values: dict[str, float], flags: dict[str, str] | None = None) -> dict:
    rec: dict = {"ts": ts, "values": values}
    if flags:
        rec["flags"] = flags
    return rec


def _publish_known_data(pub: Publisher, hour: int, now: int) -> None:
    xh1 = []
    for i, value in enumerate(XH1_CHLORINE):
        values = {"free_chlorine": value}
        flags = {}
        if i < len(XH1_PH):
            values["ph"], flag = XH1_PH[i]
            if flag != "N":
                flags["ph"] = flag
        xh1.append(_record(hour + i * MINUTE, values, flags))
    for minute, value, flag in XH1_NEXT_HOUR:
        flags = {"free_chlorine": flag} if flag != "N" else None
        xh1.append(_record(hour + minute * MINUTE, {"free_chlorine": value}, flags))
    pub.publish(XH1, xh1)
    # pool-xh-02: a pH no buffered pool reaches (physically possible, so stored): integrity.
    pub.publish(XH2, _record(now - MINUTE, {"ph": 4.5}))
    # pool-xh-03: free chlorine 0.25-0.26 mg/L for 15 min, still going: an open warning.
    start = now - 15 * MINUTE
    pub.publish(
        XH3,
        [_record(start + i * MINUTE, {"free_chlorine": 0.25 + 0.01 * (i % 2)}) for i in range(15)],
    )
    # pool-cn-01: pH 8.6 (beyond the 8.5 critical bound) for 15 min: an open critical alert.
    pub.publish(CN1, [_record(start + i * MINUTE, {"ph": 8.6 + 0.05 * (i % 2)}) for i in range(15)])
    pub.publish(CN2, [_record(start + i * MINUTE, {"ph": 7.4 + 0.1 * (i % 2)}) for i in range(5)])
    for device in (XH1, CN1, "ghost-01"):
        pub.publish(device, b"{not json")


def _known_alerts(admin: httpx.Client) -> bool:
    """The alerts the known data must raise: three compliance alerts (pool-xh-01's resolved)
    and pool-xh-02's integrity alert."""
    alerts = admin.get("/api/v1/alerts").json()
    compliance = {(a["device_id"], a["status"]) for a in alerts if a["family"] == "compliance"}
    return compliance == {(XH1, "resolved"), (XH3, "open"), (CN1, "open")} and any(
        a["device_id"] == XH2 and a["family"] == "integrity" for a in alerts
    )


def _count(client: httpx.Client, **params) -> int:
    return len(client.get("/api/v1/readings", params=params).json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("api")
    broker = _broker(workdir)
    broker.start()
    running = start_system(_config(broker.url, workdir / "var", "landun-ingest-api"))
    store = running.system.core.store
    for name, role, scope in (
        ("insp_xh", "inspector", ["310104"]),
        ("insp_cn", "inspector", ["310105"]),
        ("viewer_xh", "viewer", ["310104"]),
    ):
        store.add_user(name, hash_secret(PASSWORD), role, scope)
    now = now_ms()
    hour = (now - 3 * HOUR) // HOUR * HOUR
    pub = Publisher(broker.url, "api-test-devices")
    admin = running.http
    try:
        _publish_known_data(pub, hour, now)
        wait_for(
            lambda: (
                _count(admin, device=XH1) == 75
                and _count(admin, device=XH3) == 15
                and _count(admin, device=CN1) == 15
                and _count(admin, device=CN2) == 5
                and _count(admin, device=XH2) == 1
                and len(admin.get("/api/v1/dead-letters").json()["items"]) == 3
            ),
            what="the known data stored",
        )
        wait_for(lambda: _known_alerts(admin), what="the known alerts")
        clients = [running.login(n, PASSWORD) for n in ("insp_xh", "insp_cn", "viewer_xh")]
        yield World(running, hour, admin, *clients)
        for c in clients:
            c.close()
    finally:
        pub.close()
        running.stop()
        broker.stop()


def _error(r: httpx.Response, status: int) -> str:
    """The response is the given error, as JSON with a message; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    return detail


def _at(ms: int) -> str:
    """A time as an inspector in Shanghai would type it (with its zone)."""
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).isoformat()


# -- identity ---------------------------------------------------------------------------------


def test_login_gives_a_session_and_every_refusal_says_what_to_do(world):
    anon = world.running.anon
    r = anon.post("/api/v1/auth/login", json={"username": "insp_xh", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token"].startswith("ld_")
    assert (body["name"], body["role"], body["jurisdictions"]) == (
        "insp_xh",
        "inspector",
        ["310104"],
    )
    assert body["expires"].endswith("Z")
    wrong = anon.post("/api/v1/auth/login", json={"username": "insp_xh", "password": "nope-nope"})
    assert _error(wrong, 401) == "wrong user name or password"
    nobody = anon.post("/api/v1/auth/login", json={"username": "nobody", "password": "whatever"})
    assert _error(nobody, 401) == "wrong user name or password"  # no hint that a user exists
    missing = anon.get("/api/v1/sites")
    assert "Authorization: Bearer" in _error(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    bad = anon.get("/api/v1/sites", headers={"Authorization": "Bearer ld_made-up"})
    assert _error(bad, 401) == "token unknown or expired: log in again"
    me = anon.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json() == {
        "name": "insp_xh",
        "role": "inspector",
        "jurisdictions": ["310104"],
        "kind": "user",
    }
    _error(anon.get("/api/v1/auth/me"), 401)


def test_cli_tokens_act_with_their_role_and_scope_until_they_expire(world, capsys):
    args = argparse.Namespace(
        name="provincial-platform",
        role="viewer",
        jurisdiction=["310105"],
        days=30,
        label="test",
        data_dir=str(world.running.system.config.data_dir),
        database=None,
    )
    assert create_token(args) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    client = httpx.Client(
        base_url=world.running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    with client:
        me = client.get("/api/v1/auth/me").json()
        assert me == {
            "name": "provincial-platform",
            "role": "viewer",
            "jurisdictions": ["310105"],
            "kind": "token",
        }
        assert {s["id"] for s in client.get("/api/v1/sites").json()} == CN_SITES
        _error(client.post(f"/api/v1/alerts/{world.alert_of(CN1, 'range:ph')['id']}/comments",
                           json={"comment": "a viewer may not"}), 403)  # fmt: skip
    # A token past its expiry (as `tokens create` stores them, with an expiry time) is refused.
    expired = "ld_expired-for-the-test"
    world.running.system.core.store.add_token(
        token_hash(expired), Principal("old-platform", "viewer", ("310105",), "token"), now_ms() - 1
    )
    r = world.running.anon.get("/api/v1/sites", headers={"Authorization": f"Bearer {expired}"})
    assert _error(r, 401) == "token unknown or expired: log in again"


# -- sites and devices ------------------------------------------------------------------------


def test_sites_show_status_from_open_alerts_and_last_readings(world):
    sites = {s["id"]: s for s in world.admin.get("/api/v1/sites").json()}
    assert sites.keys() >= XH_SITES | CN_SITES
    # pool-xh-01's compliance alert resolved when chlorine came back; nothing else is open.
    assert sites["pool-xh-01"]["current"]["status"] == "normal"
    assert sites["pool-xh-01"]["current"]["open_alerts"] == 0
    assert sites["pool-xh-02"]["current"]["status"] == "offline_or_fault"
    assert sites["pool-xh-03"]["current"]["status"] == "over_limit"
    assert sites["pool-xh-03"]["current"]["open_alerts"] == 1
    assert sites["pool-cn-02"]["current"]["status"] == "normal"
    # A site none of whose devices ever reported is not 正常 but 暂无数据.
    assert sites["pool-cn-03"]["current"]["status"] == "no_data"
    assert sites["pool-cn-03"]["current"]["last_data"] is None
    last = sites["pool-xh-01"]["current"]["last_readings"]
    assert last["free_chlorine"] == {
        "value": 0.5,
        "ts": ms_to_iso(world.hour + 64 * MINUTE),
        "flag": "N",
    }
    assert last["ph"] == {
        "value": 7.4,
        "ts": ms_to_iso(world.hour + 9 * MINUTE),
        "flag": "N",
    }
    assert sites["pool-xh-01"]["current"]["last_data"] == ms_to_iso(world.hour + 64 * MINUTE)
    assert sites["pool-cn-03"]["current"]["last_data"] is None
    one = world.admin.get("/api/v1/sites/pool-xh-03").json()
    assert one["name"].startswith("康健社区游泳池") and one["jurisdiction"] == "310104"
    assert one["current"]["status"] == "over_limit"
    assert _error(world.admin.get("/api/v1/sites/pool-zz-99"), 404) == "unknown site pool-zz-99"
    profiles = {p["id"] for p in world.viewer_xh.get("/api/v1/profiles").json()}
    assert {"gb37488-2019-pool", "cj244-pool"} <= profiles
    limits = world.viewer_xh.get("/api/v1/sites/pool-xh-01/limits").json()
    assert {x["parameter"]: x["min"] for x in limits}["free_chlorine"] == 0.3


def test_site_edits_are_for_admins_and_bad_ones_are_refused_with_reasons(world):
    site = {"name": "新泳池", "kind": "pool", "jurisdiction": "310104"}
    for client, role in ((world.viewer_xh, "viewer"), (world.insp_xh, "inspector")):
        msg = _error(client.put("/api/v1/sites/pool-xh-01", json=site), 403)
        assert msg.startswith(f"{role} ") and "may not change sites" in msg
    bad_code = world.admin.put("/api/v1/sites/pool-xh-09", json=site | {"jurisdiction": "31010"})
    assert "jurisdiction" in _error(bad_code, 422)
    assert bad_code.json()["errors"][0]["loc"] == ["body", "jurisdiction"]
    unknown = world.admin.put("/api/v1/sites/pool-xh-09", json=site | {"profile": "gb-0000"})
    msg = _error(unknown, 400)
    assert "unknown standards profile 'gb-0000'" in msg and "gb37488-2019-pool" in msg
    for overrides, expect in (
        ({"chlorine": {"min": 0.4}}, "sets no limit for 'chlorine'"),
        ({"free_chlorine": {"minimum": 0.4}}, "unknown setting 'minimum'"),
        ({"free_chlorine": {"min": 2.0}}, "min 2 is above max 1"),
        ({"free_chlorine": {"pending_s": -5}}, "not a usable value"),
        ({"free_chlorine": {"min": True}}, "not true or false"),
    ):
        r = world.admin.put("/api/v1/sites/pool-xh-09", json=site | {"overrides": overrides})
        assert expect in _error(r, 400 if "true" not in expect else 422)
    extra = world.admin.put("/api/v1/sites/pool-xh-09", json=site | {"owner": "x"})
    assert "owner" in _error(extra, 422)
    # None of the refused edits reached the registry.
    _error(world.admin.get("/api/v1/sites/pool-xh-09"), 404)


def test_devices_are_listed_in_scope_and_bad_edits_are_refused(world):
    admin_ids = {d["id"] for d in world.admin.get("/api/v1/devices").json()}
    assert {XH1, XH2, XH3, CN1, CN2, "pool-cn-03-hj"} <= admin_ids
    mine = world.insp_xh.get("/api/v1/devices").json()
    water = {"water-xh-01-wq", "water-xh-01-tank"}
    lines = {"tw-xh-01-line1", "tw-xh-01-line2"}
    assert {d["id"] for d in mine} == {
        XH1,
        XH2,
        XH3,
        "hosp-xh-01-scan",
        "hosp-xh-01-env",
        *water,
    } | lines
    one = world.insp_xh.get(f"/api/v1/devices/{XH1}").json()
    assert one["site"] == "pool-xh-01" and one["interval_s"] == 60 and not one["has_credential"]
    assert "free_chlorine" in one["parameters"]
    by_site = world.admin.get("/api/v1/devices", params={"site": "pool-cn-03"}).json()
    assert [(d["id"], d["mn"]) for d in by_site] == [("pool-cn-03-hj", "LD310105POOLCN0300000001")]
    _error(world.admin.get("/api/v1/devices/nothing-here"), 404)
    _error(world.admin.get("/api/v1/devices", params={"site": "pool-zz-99"}), 404)
    device = {"site": "pool-xh-01", "kind": "pool_analyzer", "parameters": ["ph"]}
    _error(world.viewer_xh.put(f"/api/v1/devices/{XH1}", json=device), 403)
    _error(world.insp_xh.put(f"/api/v1/devices/{XH1}", json=device), 403)
    nosite = world.admin.put("/api/v1/devices/new-1", json=device | {"site": "pool-zz-99"})
    assert _error(nosite, 400) == "unknown site pool-zz-99"
    noparam = world.admin.put("/api/v1/devices/new-1", json=device | {"parameters": ["chlorine"]})
    assert _error(noparam, 400) == "unknown parameter 'chlorine'"
    duplicate = world.admin.put(
        f"/api/v1/devices/{XH1}", json=device | {"mn": "LD310105POOLCN0300000001"}
    )
    assert "already belongs to pool-cn-03-hj" in _error(duplicate, 409)
    _error(world.admin.put("/api/v1/devices/new-1", json=device | {"interval_s": 0}), 422)
    # Refused edits changed nothing.
    assert world.admin.get(f"/api/v1/devices/{XH1}").json()["mn"] is None
    _error(world.admin.get("/api/v1/devices/new-1"), 404)


def test_site_and_device_edits_survive_a_restart(broker, tmp_path):
    cfg = _config(broker.url, tmp_path / "var", "landun-ingest-api-restart")
    site = {
        "name": "漕河泾游泳馆",
        "kind": "pool",
        "jurisdiction": "310104",
        "address": "上海市徐汇区",
        "overrides": {"free_chlorine": {"min": 0.4}},
        "latitude": 31.17,
        "longitude": 121.4,
    }
    device = {"site": "pool-xh-09", "kind": "pool_analyzer", "parameters": ["free_chlorine"]}
    running = start_system(cfg)
    try:
        r = running.http.put("/api/v1/sites/pool-xh-09", json=site)
        assert r.status_code == 200 and r.json()["current"]["status"] == "no_data"
        r = running.http.put("/api/v1/devices/pool-xh-09-wq", json=device | {"mn": "LD-XH09"})
        assert r.status_code == 200 and r.json()["mn"] == "LD-XH09"
    finally:
        running.stop()
    running = start_system(cfg)
    try:
        got = running.http.get("/api/v1/sites/pool-xh-09").json()
        assert {k: got[k] for k in site} == site
        assert running.http.get("/api/v1/devices/pool-xh-09-wq").json()["site"] == "pool-xh-09"
        limits = {
            x["parameter"]: x for x in running.http.get("/api/v1/sites/pool-xh-09/limits").json()
        }
        assert limits["free_chlorine"]["min"] == 0.4  # the engine judges with the override
        taken = running.http.put(f"/api/v1/devices/{XH1}", json=device | {"mn": "LD-XH09"})
        assert "already belongs to pool-xh-09-wq" in _error(taken, 409)
    finally:
        running.stop()


# -- readings ---------------------------------------------------------------------------------


def test_readings_by_device_and_site_with_filters(world):
    api = world.insp_xh
    h = world.hour
    rows = api.get("/api/v1/readings", params={"device": XH1, "parameter": "ph"}).json()
    assert [(r["value"], r["flag"]) for r in rows] == XH1_PH
    assert rows[0] == rows[0] | {
        "device_id": XH1,
        "site_id": "pool-xh-01",
        "parameter": "ph",
        "ts": ms_to_iso(h),
    }
    both = api.get("/api/v1/readings", params={"device": XH1, "parameter": ["ph", "free_chlorine"]})
    assert len(both.json()) == 75
    site_rows = api.get("/api/v1/readings", params={"site": "pool-xh-01"}).json()
    assert len(site_rows) == 75 and {r["device_id"] for r in site_rows} == {XH1}
    window = {"start": _at(h + 10 * MINUTE), "end": _at(h + 20 * MINUTE)}
    part = api.get(
        "/api/v1/readings", params={"device": XH1, "parameter": "free_chlorine", **window}
    ).json()
    assert [r["ts"] for r in part] == [ms_to_iso(h + i * MINUTE) for i in range(10, 20)]
    newest = api.get(
        "/api/v1/readings", params={"device": XH1, "newest_first": "true", "limit": 2}
    ).json()
    assert [r["ts"] for r in newest] == [ms_to_iso(h + 64 * MINUTE), ms_to_iso(h + 63 * MINUTE)]


def test_readings_page_with_x_next_start_without_gaps_or_repeats(world):
    params = {"device": XH1, "parameter": "free_chlorine", "limit": 25}
    seen: list[str] = []
    pages = 0
    while True:
        r = world.admin.get("/api/v1/readings", params=params)
        seen += [row["ts"] for row in r.json()]
        pages += 1
        if "x-next-start" not in r.headers:
            break
        params["start"] = r.headers["x-next-start"]
    assert pages == 3
    assert len(seen) == len(set(seen)) == 65 and seen == sorted(seen)


def test_readings_as_csv(world):
    r = world.admin.get(
        "/api/v1/readings", params={"device": XH1, "parameter": "ph", "format": "csv"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert f'filename="landun-{XH1}-readings.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == [
        "device_id",
        "site_id",
        "parameter",
        "ts",
        "received",
        "value",
        "flag",
        "seq",
    ]
    assert len(rows) == 11
    assert rows[1][:4] == [XH1, "pool-xh-01", "ph", ms_to_iso(world.hour)]
    assert [(float(x[5]), x[6]) for x in rows[1:]] == XH1_PH


def test_readings_refuse_what_they_cannot_answer(world):
    api = world.admin
    naive = api.get("/api/v1/readings", params={"device": XH1, "start": "2026-11-22T08:00:00"})
    assert "start must state its zone" in _error(naive, 400)
    backwards = api.get(
        "/api/v1/readings",
        params={"device": XH1, "start": _at(world.hour + HOUR), "end": _at(world.hour)},
    )
    assert _error(backwards, 400) == "end must be after start"
    same = api.get(
        "/api/v1/readings", params={"device": XH1, "start": _at(world.hour), "end": _at(world.hour)}
    )
    assert _error(same, 400) == "end must be after start"
    unknown = api.get("/api/v1/readings", params={"device": XH1, "parameter": "chlorine"})
    assert "unknown parameter 'chlorine'" in _error(unknown, 400)
    assert "free_chlorine" in unknown.json()["detail"]  # the message lists what is known
    assert _error(api.get("/api/v1/readings"), 400) == "give device or site"
    _error(api.get("/api/v1/readings", params={"device": "pool-zz-99-wq"}), 404)
    epoch = api.get("/api/v1/readings", params={"device": XH1, "start": "0.5"})
    assert "ISO 8601" in _error(epoch, 422)
    _error(api.get("/api/v1/readings", params={"device": XH1, "limit": 0}), 422)
    _error(api.get("/api/v1/readings", params={"device": XH1, "format": "xml"}), 422)


def test_downsampled_buckets_and_flagged_readings(world):
    h = world.hour
    period = {"start": _at(h), "end": _at(h + 2 * HOUR), "every": "1h"}
    got = world.insp_xh.get(
        "/api/v1/readings/downsampled",
        params={"device": XH1, "parameter": ["free_chlorine", "ph"], **period},
    ).json()
    buckets = {(b["start"], b["parameter"]): b for b in got}
    chlorine = buckets[(ms_to_iso(h), "free_chlorine")]
    assert chlorine["count"] == 60
    assert chlorine["mean"] == pytest.approx(sum(XH1_CHLORINE) / 60)
    assert (chlorine["min"], chlorine["max"]) == (0.10, 0.53)
    ph = buckets[(ms_to_iso(h), "ph")]
    assert ph["count"] == 8 and ph["max"] == 7.6  # the flagged 9.0 are left out
    assert ph["mean"] == pytest.approx(sum(VALID_PH) / 8)
    later = buckets[(ms_to_iso(h + HOUR), "free_chlorine")]
    assert later["count"] == 3 and later["min"] == 0.5
    assert len(got) == 3
    flagged = world.insp_xh.get(
        "/api/v1/readings/downsampled",
        params={"device": XH1, "parameter": "ph", "include_flagged": "true", **period},
    ).json()
    assert [(b["count"], b["max"]) for b in flagged] == [(10, XH1_PH_FLAGGED)]
    too_many = world.admin.get(
        "/api/v1/readings/downsampled",
        params={
            "device": XH1,
            "parameter": "ph",
            "every": "1m",
            "start": "2000-01-01T00:00:00Z",
            "end": "2026-01-01T00:00:00Z",
        },
    )
    assert "more than 100000 buckets" in _error(too_many, 400)
    _error(world.admin.get("/api/v1/readings/downsampled", params={"device": XH1}), 422)
    bad = world.admin.get(
        "/api/v1/readings/downsampled", params={"device": XH1, "parameter": "ph", "every": "2h"}
    )
    _error(bad, 422)


# -- alerts -----------------------------------------------------------------------------------


def test_alert_list_filters(world):
    api = world.admin

    def listed(**params) -> list[dict]:
        r = api.get("/api/v1/alerts", params=params)
        assert r.status_code == 200
        return r.json()

    def ids(**params) -> set[tuple[str, str]]:
        return {(a["device_id"], a["rule_id"]) for a in listed(**params)}

    # The compliance alerts follow from the standards and the known data exactly; detectors
    # (data integrity) may add their own, so those are checked by what the filter promises.
    xh1 = (XH1, "range:free_chlorine")
    xh3 = (XH3, "range:free_chlorine")
    cn1 = (CN1, "range:ph")
    assert ids(family="compliance") == {xh1, xh3, cn1}
    assert ids(site="pool-xh-03", family="compliance") == {xh3}
    assert ids(jurisdiction="310104", family="compliance") == {xh1, xh3}
    assert ids(jurisdiction="310105", family="compliance") == {cn1}
    assert {a["site_id"] for a in listed(jurisdiction="310104")} <= XH_SITES
    assert ids(rule="range:free_chlorine") == {xh1, xh3}
    assert ids(device=XH1, family="compliance") == {xh1}
    integrity = listed(family="integrity")
    assert {a["family"] for a in integrity} == {"integrity"}
    assert any(a["device_id"] == XH2 and a["status"] == "open" for a in integrity)
    assert {a["family"] for a in listed(device=XH2)} == {"integrity"}
    assert ids(severity="warning", family="compliance") == {xh3}
    assert {a["severity"] for a in listed(severity="critical")} == {"critical"}
    # pool-cn-01's is resolved too once an inspector has resolved it.
    assert xh1 in ids(status="resolved", family="compliance") <= {xh1, cn1}
    still_open = listed(status=["open", "acknowledged"])
    assert {a["status"] for a in still_open} <= {"open", "acknowledged"}
    assert xh1 not in {(a["device_id"], a["rule_id"]) for a in still_open}
    # since: last seen at or after; until: first seen before.
    assert ids(family="compliance", until=_at(world.hour + HOUR)) == {xh1}
    assert xh1 not in ids(since=_at(world.hour + HOUR))
    assert ids(device="pool-zz-99-wq") == set()
    assert ids(jurisdiction="999999") == set()
    assert len(listed(limit=1)) == 1
    _error(api.get("/api/v1/alerts", params={"severity": "urgent"}), 422)
    _error(api.get("/api/v1/alerts", params={"site": "pool-zz-99"}), 404)
    _error(api.get("/api/v1/alerts", params={"since": "2026-11-22T08:00:00"}), 400)


def test_one_alert_with_its_audit_trail(world):
    alert = world.alert_of(XH1, "range:free_chlorine")
    got = world.viewer_xh.get(f"/api/v1/alerts/{alert['id']}").json()
    assert got["status"] == "resolved" and got["severity"] == "critical"
    assert got["first"] == ms_to_iso(world.hour) and got["worst_value"] == 0.10
    assert got["limit"]["standard"] == "GB 37488-2019"
    changes = [e for e in got["audit"] if e["actor"] != "escalation"]  # not alert changes
    assert [e["action"] for e in changes][:2] == ["opened", "resolved"]
    assert _error(world.admin.get("/api/v1/alerts/999999"), 404) == "alert 999999 does not exist"
    _error(world.admin.get("/api/v1/alerts/0"), 422)
    _error(world.admin.get(f"/api/v1/alerts/{2**63}"), 422)
    _error(world.admin.get("/api/v1/alerts/abc"), 422)


def test_inspector_actions_roles_and_conflicts(world):
    cn1 = world.alert_of(CN1, "range:ph")
    url = f"/api/v1/alerts/{cn1['id']}"
    xh3 = world.alert_of(XH3, "range:free_chlorine")
    for action in ("acknowledge", "resolve", "comments"):
        msg = _error(world.viewer_xh.post(f"/api/v1/alerts/{xh3['id']}/{action}",
                                          json={"comment": "viewers only look"}), 403)  # fmt: skip
        assert msg.startswith("viewer 'viewer_xh' may not")
    ack = world.insp_cn.post(f"{url}/acknowledge", json={"comment": "phoned the pool"})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    again = world.insp_cn.post(f"{url}/acknowledge", json={})
    assert _error(again, 409) == f"alert {cn1['id']} is already acknowledged"
    note = world.insp_cn.post(f"{url}/comments", json={"comment": "dosing pump checked"})
    assert note.status_code == 200
    _error(world.insp_cn.post(f"{url}/comments", json={"comment": ""}), 422)
    done = world.insp_cn.post(f"{url}/resolve", json={"comment": "verified on site"})
    assert done.json()["status"] == "resolved" and done.json()["resolved"] is not None
    assert _error(world.insp_cn.post(f"{url}/resolve", json={}), 409).endswith("already resolved")
    audit = [(e["actor"], e["action"], e["comment"]) for e in done.json()["audit"]]
    audit = [e for e in audit if e[0] != "escalation"]  # notifications, not alert changes
    assert audit[-3:] == [
        ("insp_cn", "acknowledged", "phoned the pool"),
        ("insp_cn", "commented", "dosing pump checked"),
        ("insp_cn", "resolved", "verified on site"),
    ]
    assert _error(world.admin.post("/api/v1/alerts/999999/resolve", json={}), 404)
    _error(world.admin.post(f"{url}/comments", json={"comment": "x" * 4001}), 422)


def test_evidence_record_as_json_csv_and_printable_html(world):
    alert = world.alert_of(XH1, "range:free_chlorine")
    url = f"/api/v1/alerts/{alert['id']}/evidence"
    record = world.insp_xh.get(url).json()
    assert record["site"] == record["site"] | {"id": "pool-xh-01", "jurisdiction": "310104"}
    assert record["site"]["name"].startswith("徐汇区游泳馆")
    assert record["device"]["id"] == XH1 and record["device"]["reporting_interval_s"] == 60
    assert record["limit"]["min"] == 0.3 and "GB 37488-2019" in record["limit"]["clause"]
    readings = record["readings"]
    # The window runs from an hour before the episode to an hour after it ended: all 65.
    assert len(readings) == 65 and {r["parameter"] for r in readings} == {"free_chlorine"}
    assert all(r["in_episode"] for r in readings if r["value"] < 0.3 and r["flag"] == "N")
    assert readings[0]["in_episode"] and not readings[-1]["in_episode"]
    calibrating = [r for r in readings if r["flag"] == "C"]
    assert len(calibrating) == 2 and calibrating[0]["flag_meaning"] == "calibration"
    changes = [a for a in record["audit"] if a["actor"] != "escalation"]  # not alert changes
    assert [a["action"] for a in changes][:2] == ["opened", "resolved"]
    assert record["duration_s"] >= 14 * 60

    r = world.insp_xh.get(url, params={"format": "csv"})
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(r.text)))
    assert ["# id", str(alert["id"])] in rows
    assert any(row[0] == "# limit" and "GB 37488-2019" in row[2] for row in rows)
    assert ["# sha256", record["sha256"]] in rows and ["# timezone", "Asia/Shanghai"] in rows
    header = rows.index(
        ["ts", "ts_local", "received", "parameter", "value", "flag", "flag_meaning", "in_episode"]
    )
    assert len(rows) - header - 1 == 65

    page = world.insp_xh.get(url, params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert record["limit"]["clause"] in html and "@media print" in html
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert html.count("<tr class='in'>") == sum(r["in_episode"] for r in readings)
    _error(world.insp_xh.get(url, params={"format": "pdf"}), 422)
    _error(world.admin.get("/api/v1/alerts/999999/evidence"), 404)


def test_evidence_record_is_bilingual_chinese_first_with_local_and_utc_times(world):
    alert = world.alert_of(XH1, "range:free_chlorine")
    url = f"/api/v1/alerts/{alert['id']}/evidence"
    record = world.insp_xh.get(url).json()
    assert record["rule"] == {
        "id": "range:free_chlorine",
        "name_zh": "游离性余氯超出限值",
        "name_en": "Free chlorine outside its limit",
    }
    assert record["summary"]["zh"].startswith("游离性余氯超出限值，最差值 0.1 mg/L")
    assert record["summary"]["en"].startswith("Free chlorine outside its limit; worst value 0.1")
    episode = record["episode"]
    # The episode began at H (pool-xh-01's first low reading): in UTC and in Shanghai time.
    start = datetime.fromtimestamp(world.hour / 1000, SHANGHAI)
    assert episode["start"] == {"utc": ms_to_iso(world.hour), "local": start.isoformat()}
    assert episode["ongoing"] is False and episode["end"]["local"].endswith("+08:00")
    assert record["worst"]["value"] == 0.1 and record["worst"]["at"]["local"].endswith("+08:00")
    assert record["site"]["timezone"] == "Asia/Shanghai"
    assert record["readings"][0]["ts_local"] == start.isoformat()

    html = world.insp_xh.get(url, params={"format": "html"}).text
    assert html.index("在线监测证据记录") < html.index("Online monitoring evidence record")
    for text in (
        "游离性余氯超出限值", "Free chlorine outside its limit", "range:free_chlorine",
        "GB 37488-2019", record["limit"]["clause"], "0.3–1 mg/L",
        start.strftime("%Y-%m-%d %H:%M:%S"), f"UTC {ms_to_iso(world.hour)}",
        "时间 Time (Asia/Shanghai)", "时间 Time (UTC)", "已办结 resolved", "告警产生 opened",
        record["sha256"], "@page{size:A4", "14 分钟 / 14 min", "已恢复到限值内并持续至解除时间",
    ):  # fmt: skip
        assert text in html, text
    assert "None" not in html and ">Last<" not in html


def test_evidence_without_a_worst_value_says_none_not_none(world):
    from api.evidence import evidence_html

    alert = world.alert_of(XH3, "range:free_chlorine")
    record = world.insp_xh.get(f"/api/v1/alerts/{alert['id']}/evidence").json()
    assert record["episode"]["ongoing"] is True and record["episode"]["end"] is None
    html = world.insp_xh.get(f"/api/v1/alerts/{alert['id']}/evidence?format=html").text
    assert "持续中 ongoing" in html
    # A rule without a value (a device gone silent) reads 无 / none, never Python's None.
    silent = record | {"worst": {"value": None, "unit": "", "at": None}, "parameter": None}
    page = evidence_html(silent)
    assert "无（本规则不适用） / none" in page and "None" not in page


def test_evidence_hash_verifies_an_unchanged_copy_and_catches_a_changed_one(world):
    alert = world.alert_of(XH1, "range:free_chlorine")
    url = f"/api/v1/alerts/{alert['id']}/evidence"
    copy = world.insp_xh.get(url).json()
    assert len(copy["sha256"]) == 64
    again = world.insp_xh.get(url).json()
    # Generated at another moment, the same evidence has the same hash.
    assert again["sha256"] == copy["sha256"]
    verify = f"{url}/verify"
    ok = world.insp_xh.post(verify, json=copy).json()
    assert ok["valid"] is True and ok["same_alert"] is True and ok["matches_system"] is True
    assert ok["computed_sha256"] == ok["system_sha256"] == copy["sha256"]
    assert "identical to the system's record" in ok["detail"]
    changed = json.loads(json.dumps(copy))
    changed["readings"][3]["value"] = 0.35
    bad = world.insp_xh.post(verify, json=changed).json()
    assert bad["valid"] is False and bad["matches_system"] is False
    assert "changed" in bad["detail"]
    # Altered and hashed again: self-consistent, but not what the system holds.
    from api.evidence import record_hash

    forged = changed | {"sha256": record_hash(changed)}
    rehashed = world.insp_xh.post(verify, json=forged).json()
    assert rehashed["valid"] is True and rehashed["matches_system"] is False
    assert "differs from the system's record" in rehashed["detail"]
    other = world.alert_of(XH3, "range:free_chlorine")["id"]
    elsewhere = world.insp_xh.post(f"/api/v1/alerts/{other}/evidence/verify", json=copy).json()
    assert elsewhere["same_alert"] is False and f"alert {other}" in elsewhere["detail"]
    # The README's way to check a copy by hand agrees.
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (recipe,) = [x for x in readme.splitlines() if x.startswith("python3 -c 'import hashlib")]
    for doc, want in ((copy, "True"), (changed, "False")):
        out = subprocess.run(
            recipe.removesuffix(" < alert-7.json").replace("python3", sys.executable, 1),
            shell=True, input=json.dumps(doc, ensure_ascii=False), capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == want
    # Hostile copies get a reason, never a 500.
    _error(world.insp_xh.post(verify, content=b"{not json"), 400)
    _error(world.insp_xh.post(verify, json=[1, 2]), 400)
    _error(world.insp_xh.post(verify, json={"sha256": 5}), 400)
    _error(world.insp_xh.post(verify, content=b"[" * 5000 + b"]" * 5000), 400)
    deep = b'{"sha256":"x","a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert world.insp_xh.post(verify, content=deep).status_code in (200, 400)
    # Refused on its declared size before it is read (a plain socket: an HTTP client sending
    # the whole 17 MB may see the connection close before it reads the answer).
    head = (
        f"POST {verify} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {world.insp_xh.headers['authorization']}\r\n"
        f"Content-Length: {17 * 1024 * 1024}\r\n"
    )
    status, text = raw_request(world.running.system.api_port, head, b'{"sha256":"')
    assert status == 413 and "at most" in text
    cn = world.alert_of(CN1, "range:ph")["id"]
    _error(world.insp_xh.post(f"/api/v1/alerts/{cn}/evidence/verify", json=copy), 403)


def test_compliance_over_a_known_hour(world):
    period = {"site": "pool-xh-01", "start": _at(world.hour), "end": _at(world.hour + HOUR)}
    rows = {
        r["parameter"]: r for r in world.insp_xh.get("/api/v1/compliance", params=period).json()
    }
    chlorine = rows["free_chlorine"]
    assert chlorine == chlorine | {
        "site_id": "pool-xh-01",
        "device_id": XH1,
        "readings": 60,
        "excluded_flagged": 0,
        "monitored_s": 3600,
        "over_limit_s": 900,
        "within_share": 0.75,
        "completeness": 1.0,
        "alerts": 1,
        "limit": "0.3–1 mg/L",
    }
    assert "GB 37488-2019" in chlorine["clause"]
    ph = rows["ph"]
    assert (ph["readings"], ph["excluded_flagged"], ph["over_limit_s"]) == (10, 2, 0)
    assert (ph["within_share"], ph["completeness"]) == (1.0, round(10 / 60, 4))
    assert rows["turbidity"]["within_share"] is None and rows["turbidity"]["readings"] == 0
    # Over a week, completeness counts from the device's first reading, not the week's start.
    week = {"site": "pool-xh-01", "start": _at(world.hour + HOUR - 7 * 24 * HOUR),
            "end": _at(world.hour + HOUR)}  # fmt: skip
    weekly = {
        r["parameter"]: r for r in world.insp_xh.get("/api/v1/compliance", params=week).json()
    }
    assert weekly["free_chlorine"]["completeness"] == 1.0
    assert weekly["ph"]["completeness"] == round(10 / 60, 4)
    assert weekly["turbidity"]["completeness"] == 0.0  # it never reported
    # pool-xh-03 has reported for 15 minutes: over a week ending at its last reading, it is
    # complete, not 0.15 %.
    (last,) = world.admin.get(
        "/api/v1/readings", params={"device": XH3, "newest_first": "true", "limit": 1}
    ).json()
    end = datetime.fromisoformat(last["ts"]).timestamp() * 1000 + MINUTE
    week = {"site": "pool-xh-03", "start": _at(end - 7 * 24 * HOUR), "end": _at(end)}
    (xh3,) = [
        r for r in world.admin.get("/api/v1/compliance", params=week).json()
        if r["parameter"] == "free_chlorine"
    ]  # fmt: skip
    assert (xh3["readings"], xh3["completeness"]) == (15, 1.0)
    naive = world.admin.get("/api/v1/compliance", params={"end": "2026-11-22T08:00:00"})
    assert "end must state its zone" in _error(naive, 400)
    backwards = world.admin.get(
        "/api/v1/compliance", params={"start": _at(world.hour), "end": _at(world.hour - HOUR)}
    )
    _error(backwards, 400)
    _error(world.admin.get("/api/v1/compliance", params={"site": "pool-zz-99"}), 404)


# -- the live stream --------------------------------------------------------------------------


class EventStream:
    """Reads Server-Sent Events from an open streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        self.lines = response.iter_lines()

    def next_alert_event(self) -> tuple[int, dict]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields.get("event") == "alert":
                return int(fields["id"]), json.loads(fields["data"])
            else:
                fields = {}  # the retry hint or a keep-alive comment
        raise AssertionError("stream ended")


def _stream(client: httpx.Client, last_event_id: int | None = None):
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    return client.stream("GET", "/api/v1/alerts/stream", headers=headers)


def test_stream_delivers_changes_in_scope_and_resumes_after_last_event_id(world):
    xh3 = world.alert_of(XH3, "range:free_chlorine")["id"]
    cn1 = world.alert_of(CN1, "range:ph")["id"]

    def comment(client: httpx.Client, alert_id: int, text: str) -> None:
        r = client.post(f"/api/v1/alerts/{alert_id}/comments", json={"comment": text})
        assert r.status_code == 200

    with _stream(world.admin) as a, _stream(world.insp_xh) as x:
        admin_events, xh_events = EventStream(a), EventStream(x)
        comment(world.admin, cn1, "changning only")
        comment(world.insp_xh, xh3, "sse one")
        comment(world.insp_xh, xh3, "sse two")
        seen = [admin_events.next_alert_event() for _ in range(3)]
        assert [e["comment"] for _, e in seen] == ["changning only", "sse one", "sse two"]
        first_id, first = seen[0]
        assert first["action"] == "commented" and first["alert"]["id"] == cn1
        assert first["actor"] == "admin" and first["alert"]["site_id"] == "pool-cn-01"
        # The Xuhui inspector's first event is the Xuhui one: the Changning change never came.
        got = [xh_events.next_alert_event() for _ in range(2)]
        assert [(i, e["comment"]) for i, e in got] == [(i, e["comment"]) for i, e in seen[1:]]
    with _stream(world.admin, first_id) as resumed:
        events = EventStream(resumed)
        assert [events.next_alert_event() for _ in range(2)] == seen[1:]
    with _stream(world.insp_xh, first_id - 1) as resumed:
        # Resuming from before the Changning event still leaves it out.
        assert EventStream(resumed).next_alert_event() == seen[1]
    with _stream(world.insp_cn, first_id - 1) as resumed:
        assert EventStream(resumed).next_alert_event() == seen[0]
    bad = world.admin.get("/api/v1/alerts/stream", headers={"Last-Event-ID": "yesterday"})
    assert _error(bad, 400) == "Last-Event-ID must be an event id from this stream"


# -- operations -------------------------------------------------------------------------------


def test_health_readiness_and_metrics(world):
    anon = world.running.anon
    health = anon.get("/healthz").json()
    assert health["status"] == "ok" and health["broker_connected"] is True
    assert health["readings_stored"] >= 111 and health["dead_lettered"] >= 3
    ready = anon.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "problems": []}
    world.admin.get("/api/v1/sites")  # at least one timed API request
    text = anon.get("/metrics").text
    assert "landun_ingest_" in text
    assert 'landun_alerts_open{family="compliance",severity="warning"}' in text
    assert 'landun_api_request_seconds_bucket{method="GET",route="/api/v1/sites",le="+Inf"}' in text


def test_readings_stored_in_healthz_survives_a_restart(broker, tmp_path):
    cfg = _config(broker.url, tmp_path / "var", "landun-ingest-api-count")
    running = start_system(cfg)
    pub = Publisher(broker.url, "count-test-device")
    start = now_ms() - 30 * MINUTE
    try:
        pub.publish(CN2, [_record(start + i * MINUTE, {"ph": 7.3, "orp": 700}) for i in range(20)])
        wait_for(lambda: running.anon.get("/healthz").json()["readings_stored"] == 40)
    finally:
        running.stop()
    running = start_system(cfg)
    try:
        assert running.anon.get("/healthz").json()["readings_stored"] == 40
        pub.publish(CN2, _record(start + 25 * MINUTE, {"ph": 7.31}))
        wait_for(lambda: running.anon.get("/healthz").json()["readings_stored"] == 41)
    finally:
        pub.close()
        running.stop()


def test_docs_work_offline_from_the_package_and_the_favicon_is_served(world):
    """/docs and /redoc load only what the app itself serves: nothing from a CDN."""
    import re

    anon = world.running.anon
    for page in ("/docs", "/redoc"):
        r = anon.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "http://" not in r.text and "https://" not in r.text, page
        refs = re.findall(r"(?:src|href|spec-url)=\"([^\"]+)\"|url: '([^']+)'", r.text)
        assets = {a or b for a, b in refs}
        assert "/openapi.json" in assets and "/favicon.ico" in assets, assets
        assert len(assets) >= 3, assets
        for asset in assets:
            assert asset.startswith("/") and not asset.startswith("//"), asset
            got = anon.get(asset)
            assert got.status_code == 200 and len(got.content) > 100, asset
    icon = anon.get("/favicon.ico")
    assert icon.headers["content-type"] == "image/x-icon" and icon.content[:4] == b"\0\0\1\0"


def test_units_read_as_people_write_them(world):
    limits = {x["parameter"]: x for x in world.admin.get("/api/v1/sites/pool-xh-01/limits").json()}
    temperature = limits["temperature"]
    assert (temperature["unit"], temperature["unit_label"]) == ("degC", "°C")
    assert temperature["text"] == "23–30 °C"
    assert limits["free_chlorine"]["unit_label"] == "mg/L"


def test_readyz_is_503_with_a_reason_when_the_broker_is_gone(tmp_path):
    # Its own broker: this test stops it, and an embedded broker cannot be stopped twice.
    broker = _broker(tmp_path)
    broker.start()
    running = start_system(_config(broker.url, tmp_path / "var", "landun-ingest-api-ready"))
    try:
        assert running.anon.get("/readyz").status_code == 200
        broker.stop()
        r = wait_for(
            lambda: (r := running.anon.get("/readyz")).status_code == 503 and r,
            what="readyz to notice the broker is gone",
        )
        assert r.json() == {
            "status": "not ready",
            "problems": ["ingest is not connected to the MQTT broker"],
        }
        assert running.anon.get("/healthz").json()["broker_connected"] is False
    finally:
        running.stop()


def test_dead_letters_by_role(world):
    everything = world.admin.get("/api/v1/dead-letters").json()
    assert {d["device_id"] for d in everything["items"]} == {XH1, CN1, "ghost-01"}
    assert sum(everything["counts_by_reason"].values()) == 3
    mine = world.insp_xh.get("/api/v1/dead-letters").json()
    assert [d["device_id"] for d in mine["items"]] == [XH1]
    item = mine["items"][0]
    assert item["raw"] == "{not json" and item["raw_bytes"] == 9
    assert item["topic"] == f"landun/v1/devices/{XH1}/telemetry"
    assert item["reason"].startswith("not JSON")
    assert mine["counts_by_reason"] == {item["reason"]: 1}
    theirs = world.insp_cn.get("/api/v1/dead-letters").json()
    assert [d["device_id"] for d in theirs["items"]] == [CN1]
    msg = _error(world.viewer_xh.get("/api/v1/dead-letters"), 403)
    assert msg == "viewer 'viewer_xh' may not read dead letters"
    _error(world.admin.get("/api/v1/dead-letters", params={"limit": 0}), 422)


# -- scope isolation --------------------------------------------------------------------------


def test_an_inspector_never_sees_or_changes_another_jurisdiction(world):
    api = world.insp_xh
    h = world.hour
    assert {s["id"] for s in api.get("/api/v1/sites").json()} == XH_SITES
    assert {d["site"] for d in api.get("/api/v1/devices").json()} <= XH_SITES
    refused = [
        api.get("/api/v1/sites/pool-cn-01"),
        api.get("/api/v1/sites/pool-cn-01/limits"),
        api.get(f"/api/v1/devices/{CN1}"),
        api.get("/api/v1/devices", params={"site": "pool-cn-01"}),
        api.get("/api/v1/readings", params={"device": CN1}),
        api.get("/api/v1/readings", params={"site": "pool-cn-01"}),
        api.get("/api/v1/readings", params={"device": CN1, "format": "csv"}),
        api.get("/api/v1/readings/downsampled", params={"device": CN1, "parameter": "ph"}),
        api.get("/api/v1/alerts", params={"site": "pool-cn-01"}),
        api.get("/api/v1/compliance", params={"site": "pool-cn-01"}),
    ]
    for r in refused:
        assert "jurisdiction 310105, outside yours (310104)" in _error(r, 403)
    assert _error(api.get("/api/v1/alerts", params={"jurisdiction": "310105"}), 403) == (
        "jurisdiction 310105 is outside yours"
    )
    cn1 = world.alert_of(CN1, "range:ph")
    url = f"/api/v1/alerts/{cn1['id']}"
    before = world.admin.get(url).json()
    for r in (
        api.get(url),
        api.get(f"{url}/evidence"),
        api.get(f"{url}/evidence", params={"format": "html"}),
        api.post(f"{url}/acknowledge", json={"comment": "not mine"}),
        api.post(f"{url}/resolve", json={"comment": "not mine"}),
        api.post(f"{url}/comments", json={"comment": "not mine"}),
    ):
        _error(r, 403)
    after = world.admin.get(url).json()
    assert after["status"] == before["status"] and after["audit"] == before["audit"]
    listed = api.get("/api/v1/alerts").json()
    assert listed and {a["site_id"] for a in listed} <= XH_SITES
    assert {r["site_id"] for r in api.get("/api/v1/compliance").json()} <= XH_SITES
    # Neither does a site filter leak readings of another site's devices.
    rows = api.get("/api/v1/readings", params={"site": "pool-xh-03", "start": _at(h - HOUR)}).json()
    assert rows and {r["device_id"] for r in rows} == {XH3}
    # And the other way round.
    other = world.insp_cn
    assert {s["id"] for s in other.get("/api/v1/sites").json()} == CN_SITES
    _error(other.get(f"/api/v1/alerts/{world.alert_of(XH3, 'range:free_chlorine')['id']}"), 403)
    assert {a["site_id"] for a in other.get("/api/v1/alerts").json()} <= CN_SITES


# -- every error is JSON ----------------------------------------------------------------------


def test_malformed_requests_get_json_errors_never_a_500(world):
    api = world.admin
    base = world.running.base_url
    xh3 = world.alert_of(XH3, "range:free_chlorine")["id"]
    cases = [
        (api.get("/api/v1/no-such-thing"), 404),
        (api.delete(f"/api/v1/alerts/{xh3}"), 405),
        (api.post(f"/api/v1/alerts/{xh3}/comments", content=b"{not json",
                  headers={"Content-Type": "application/json"}), 422),
        (api.post(f"/api/v1/alerts/{xh3}/comments", content=b"\xff\xfe\x00",
                  headers={"Content-Type": "application/json"}), 400),
        (api.post(f"/api/v1/alerts/{xh3}/comments", json=["a", "list"]), 422),
        (api.put("/api/v1/sites/x", content=b"", headers={"Content-Type": "application/json"}), 422),
        (api.get(f"/api/v1/alerts/{10**30}"), 422),
        (api.get("/api/v1/alerts", params={"until": "0.5"}), 422),
        (api.get("/api/v1/alerts/stream", headers={"Last-Event-ID": "²".encode("latin-1")}), 400),
        (api.get("/api/v1/alerts/stream", headers={"Last-Event-ID": "9" * 40}), 400),
        (httpx.post(f"{base}/api/v1/auth/login", data={"username": "form"}), 422),
    ]  # fmt: skip
    for response, status in cases:
        _error(response, status)
    allow = api.delete(f"/api/v1/devices/{XH1}")
    assert allow.headers["allow"] == "GET, PUT"
    assert _error(allow, 405) == "DELETE is not allowed on this path; use GET, PUT"
