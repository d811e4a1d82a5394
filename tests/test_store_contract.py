"""One contract for every store: SQLite and PostgreSQL always (PostgreSQL on a fresh database of
the server tests/postgres.py finds), InfluxDB when a server is configured.

InfluxDB runs when LANDUN_INFLUX_URL, LANDUN_INFLUX_TOKEN, LANDUN_INFLUX_ORG and
LANDUN_INFLUX_BUCKET are set (e.g. against `docker compose up influxdb`); each test uses its own
site and device ids, so runs never see each other's points in the shared bucket."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from domain.model import (
    Alert,
    AlertFamily,
    AlertStatus,
    DeadLetter,
    Device,
    Reading,
    Severity,
    Site,
    SiteKind,
)
from domain.registry import Registry
from domain.tanks import TankEvent, TankEventKind
from store.base import (
    AlertChange,
    Bucket,
    DeviceStatus,
    MailedReport,
    Principal,
    ReadingQuery,
    Store,
    StoreUnavailable,
)
from store.postgres.store import PostgresStore
from store.retention import RetentionSettings
from store.sqlite import SqliteStore
from tests.postgres import fresh_database

INFLUX_ENV = (
    "LANDUN_INFLUX_URL",
    "LANDUN_INFLUX_TOKEN",
    "LANDUN_INFLUX_ORG",
    "LANDUN_INFLUX_BUCKET",
)
T0 = 1_795_334_400_000
MIN = 60_000


@dataclass
class Backend:
    name: str
    store: Store
    block_writes: Callable[[], AbstractContextManager[None]]  # while open, writes cannot commit
    site: str
    dev_a: str
    dev_b: str


def _registry(site: str, other_site: str, dev_a: str, dev_b: str) -> Registry:
    reg = Registry()
    reg.add_site(Site(site, "Pool", SiteKind.POOL, "310104"))
    reg.add_site(Site(other_site, "Other pool", SiteKind.POOL, "310105"))
    reg.add_device(Device(dev_a, site, "pool_analyzer", ("ph", "orp")))
    reg.add_device(Device(dev_b, other_site, "pool_analyzer", ("ph", "orp")))
    return reg


@contextmanager
def _sqlite_write_lock(path: Path) -> Iterator[None]:
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def _postgres_table_lock(url: str) -> Callable[[], AbstractContextManager[None]]:
    @contextmanager
    def block() -> Iterator[None]:
        with psycopg.connect(url) as blocker:
            blocker.execute("LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE")
            yield
            blocker.rollback()

    return block


@pytest.fixture(
    params=[
        "sqlite",
        "postgres",
        pytest.param(
            "influx",
            marks=pytest.mark.skipif(
                not os.environ.get("LANDUN_INFLUX_URL"),
                reason="LANDUN_INFLUX_URL not set: no InfluxDB server here",
            ),
        ),
    ]
)
def backend(request, tmp_path: Path) -> Iterator[Backend]:
    tag = uuid.uuid4().hex[:8]
    site, dev_a, dev_b = f"site-{tag}", f"dev-a-{tag}", f"dev-b-{tag}"
    if request.param == "postgres":
        with fresh_database() as url:
            # A short lock timeout: the unavailability test waits it out once.
            store = PostgresStore(url, lock_timeout_ms=300)
            yield Backend("postgres", store, _postgres_table_lock(url), site, dev_a, dev_b)
            store.close()
        return
    path = tmp_path / "landun.db"
    relational = SqliteStore(path)
    if request.param == "sqlite":
        store: Store = relational
    else:
        from store.influx import InfluxStore

        url, token, org, bucket = (os.environ[k] for k in INFLUX_ENV)
        reg = _registry(site, f"other-{tag}", dev_a, dev_b)
        store = InfluxStore(url, token, org, bucket, relational, reg)
        store.ensure_bucket(retention_days=0)
    yield Backend(request.param, store, lambda: _sqlite_write_lock(path), site, dev_a, dev_b)
    store.close()


def _r(b: Backend, minute: int, param: str = "ph", device: str | None = None, **kw) -> Reading:
    dev = device or b.dev_a
    site = b.site if dev == b.dev_a else f"other-{b.site.removeprefix('site-')}"
    base = dict(
        device_id=dev,
        site_id=site,
        parameter=param,
        ts_ms=T0 + minute * MIN,
        value=7.0 + minute / 100,
        flag="N",
        recv_ms=T0 + minute * MIN + 1234,
        seq=minute,
    )
    return Reading(**{**base, **kw})  # fmt: skip


def _mine(b: Backend, **kw) -> list[Reading]:
    """Query restricted to this test's devices: a shared bucket holds other runs' points."""
    q = ReadingQuery(**kw)
    if q.device_id is None and q.site_id is None:
        return [r for r in b.store.query_readings(q) if r.device_id in (b.dev_a, b.dev_b)]
    return b.store.query_readings(q)


def test_round_trip_keeps_both_times_value_flag_and_seq(backend: Backend) -> None:
    readings = [_r(backend, 0), _r(backend, 1, flag="C"), _r(backend, 2, "orp", value=712.0,
                                                              seq=None)]  # fmt: skip
    assert backend.store.write_batch(readings) == 3
    assert _mine(backend, device_id=backend.dev_a) == readings


def test_duplicates_are_stored_once(backend: Backend) -> None:
    r = _r(backend, 0)
    backend.store.write_batch([r, r])
    n = backend.store.write_batch([r])
    # SQLite counts new rows (0 here); InfluxDB cannot tell and counts every reading written.
    assert 0 <= n <= 1
    assert _mine(backend, device_id=backend.dev_a) == [r]


def test_ordering_limit_and_descending(backend: Backend) -> None:
    readings = [_r(backend, m) for m in (3, 0, 2, 1)]
    backend.store.write_batch(readings)
    asc = sorted(readings, key=lambda r: r.ts_ms)
    assert _mine(backend, device_id=backend.dev_a) == asc
    assert _mine(backend, device_id=backend.dev_a, descending=True) == asc[::-1]
    assert _mine(backend, device_id=backend.dev_a, limit=2) == asc[:2]
    assert _mine(backend, device_id=backend.dev_a, limit=2, descending=True) == asc[:1:-1]


def test_filters(backend: Backend) -> None:
    a = [_r(backend, m) for m in range(4)] + [_r(backend, m, "orp", value=700.0) for m in range(4)]
    b = [_r(backend, m, device=backend.dev_b) for m in range(4)]
    backend.store.write_batch(a + b)
    assert _mine(backend, device_id=backend.dev_b) == b
    assert {r.device_id for r in _mine(backend, site_id=backend.site)} == {backend.dev_a}
    orp = _mine(backend, device_id=backend.dev_a, parameters=("orp",))
    assert [r.parameter for r in orp] == ["orp"] * 4
    both = _mine(backend, device_id=backend.dev_a, parameters=("orp", "ph"))
    assert len(both) == 8
    # Start inclusive, end exclusive.
    window = _mine(backend, device_id=backend.dev_b, start_ms=T0 + MIN, end_ms=T0 + 3 * MIN)
    assert [r.ts_ms for r in window] == [T0 + MIN, T0 + 2 * MIN]


def test_flags_are_preserved(backend: Backend) -> None:
    readings = [_r(backend, i, flag=f) for i, f in enumerate("NFMSDCTB")]
    backend.store.write_batch(readings)
    assert [r.flag for r in _mine(backend, device_id=backend.dev_a)] == list("NFMSDCTB")


def test_store_unavailable_then_recovers(backend: Backend) -> None:
    """A write that cannot be committed raises StoreUnavailable and commits nothing; the same
    batch goes through once the store is back. (InfluxDB's unreachable case is covered in
    tests/test_influx_unit.py; here the relational side is locked, which InfluxDB uses too.)"""
    dead = DeadLetter("t", None, T0, "reason", b"x")
    with backend.block_writes(), pytest.raises(StoreUnavailable):
        backend.store.write_batch([_r(backend, 0)], [dead])
    assert backend.store.dead_letters() == []
    backend.store.write_batch([_r(backend, 0)], [dead])
    assert backend.store.dead_letters() == [dead]
    assert _mine(backend, device_id=backend.dev_a) == [_r(backend, 0)]


def test_dead_letters_round_trip(backend: Backend) -> None:
    raw = bytes(range(256))
    first = DeadLetter("landun/v1/devices/x/telemetry", "x", T0, "unknown device x", raw)
    second = DeadLetter("bad/topic", None, T0 + 5, "topic is not landun/...", b"{}", "hj212")
    backend.store.write_batch([], [first, second])
    assert backend.store.dead_letters() == [second, first]  # newest first
    assert backend.store.dead_letters(since_ms=T0 + 1) == [second]
    assert backend.store.dead_letters(limit=1) == [second]
    assert backend.store.dead_letter_counts() == {
        "unknown device x": 1,
        "topic is not landun/...": 1,
    }


def test_statuses_keep_the_latest(backend: Backend) -> None:
    old = DeviceStatus(backend.dev_a, T0, T0 - 10, "online", {"state": "online", "rssi": -70})
    new = DeviceStatus(backend.dev_a, T0 + 5, None, "maintenance", {"state": "maintenance"})
    backend.store.write_batch([], statuses=[old])
    backend.store.write_batch([], statuses=[new])
    assert backend.store.device_statuses() == {backend.dev_a: new}


def test_last_seen_is_the_newest_receive_time(backend: Backend) -> None:
    a0, a1 = _r(backend, 0), _r(backend, 1)
    backend.store.write_batch([a1, a0, _r(backend, 0, device=backend.dev_b)])
    backend.store.write_batch([_r(backend, 0, recv_ms=a0.recv_ms - 1)])
    seen = backend.store.last_seen()
    assert seen[backend.dev_a] == a1.recv_ms
    assert seen[backend.dev_b] == a0.recv_ms


def test_engine_state_round_trip(backend: Backend) -> None:
    backend.store.save_state("ns", {"a": "1", "b": "2"})
    backend.store.save_state("ns", {"a": None, "b": "3"})
    assert backend.store.load_state("ns") == {"b": "3"}


def test_record_last_seen_only_moves_forward(backend: Backend) -> None:
    store = backend.store
    store.record_last_seen({backend.dev_a: T0 + MIN, backend.dev_b: T0})
    store.record_last_seen({backend.dev_a: T0, backend.dev_b: T0 + 2 * MIN})
    seen = store.last_seen()
    assert (seen[backend.dev_a], seen[backend.dev_b]) == (T0 + MIN, T0 + 2 * MIN)


def test_registry_edits_and_public_links_are_replaced_by_key(backend: Backend) -> None:
    store = backend.store
    store.save_site_edit("s2", '{"id": "s2"}')
    store.save_site_edit("s1", '{"id": "s1"}')
    store.save_site_edit("s1", '{"id": "s1", "name": "泳池"}')
    store.save_device_edit("d1", '{"id": "d1"}')
    assert store.site_edits() == {"s1": '{"id": "s1", "name": "泳池"}', "s2": '{"id": "s2"}'}
    assert list(store.site_edits()) == ["s1", "s2"]
    assert store.device_edits() == {"d1": '{"id": "d1"}'}
    store.save_public_link("s1", "a" * 24)
    store.save_public_link("s1", "b" * 24)
    assert store.public_links() == {"s1": "b" * 24}


def test_counters_and_mailed_reports(backend: Backend) -> None:
    store = backend.store
    assert store.counter("readings_stored") == 0
    store.save_counter("readings_stored", 12)
    store.save_counter("readings_stored", 3_000_000_000)  # past 32 bits
    assert store.counter("readings_stored") == 3_000_000_000
    mailed = MailedReport("310104", "week", "2026-11-22", T0)
    store.record_mailed_report(mailed)
    store.record_mailed_report(mailed)
    assert store.mailed_reports() == [mailed]


def _tank(b: Backend, tank: str, minute: int, event=TankEventKind.CLEANED) -> TankEvent:
    return TankEvent(b.dev_a, b.site, event, tank, T0 + minute * MIN, T0 + minute * MIN, "王师傅")


def test_tank_records_are_kept_once_and_the_newest_kept(backend: Backend) -> None:
    store = backend.store
    first = [_tank(backend, "T1", 0), _tank(backend, "T1", 0, TankEventKind.DISINFECTED)]
    assert store.add_tank_records(first, keep=3) == first
    again = _tank(backend, "T1", 0)
    later = [_tank(backend, "T2", 5), again, _tank(backend, "T1", 9), _tank(backend, "T1", 7)]
    assert store.add_tank_records(later, keep=3) == [later[0], later[2], later[3]]
    # T1 kept its newest three: minute 0's cleaning (before the disinfection) went.
    assert store.tank_records() == [first[1], later[3], later[2], later[0]]
    assert store.tank_records("elsewhere") == []


# -- readings aggregates ----------------------------------------------------------------------


def _ph(b: Backend, minute: int, value: float, flag: str = "N", **kw) -> Reading:
    return _r(b, minute, value=value, flag=flag, **kw)


def test_downsample_buckets_are_utc_aligned_with_mean_min_max_count(backend: Backend) -> None:
    readings = [
        _ph(backend, 1, 7.0),  # before the start: left out
        _ph(backend, 2, 7.2),
        _ph(backend, 3, 7.6),
        _ph(backend, 4, 7.4),
        _ph(backend, 6, 7.5),
        _ph(backend, 7, 9.9, "C"),  # flagged
        _ph(backend, 10, 7.1),  # at the end: left out (end exclusive)
        _r(backend, 3, "orp", value=700.0),
        _r(backend, 4, "orp", value=720.0),
        _r(backend, 3, value=1.0, device=backend.dev_b),  # another device
    ]
    backend.store.write_batch(readings)
    # The range starts at 08:02, mid-window: the first bucket is still stamped 08:00.
    start, end, five = T0 + 2 * MIN, T0 + 10 * MIN, 5 * MIN
    got = backend.store.downsample(backend.dev_a, ["ph", "orp"], start, end, five)
    assert got == [
        Bucket(T0, "orp", 710.0, 700.0, 720.0, 2),
        Bucket(T0, "ph", pytest.approx(7.4), 7.2, 7.6, 3),
        Bucket(T0 + five, "ph", 7.5, 7.5, 7.5, 1),
    ]
    with_flagged = backend.store.downsample(backend.dev_a, ["ph"], start, end, five, False)
    assert with_flagged[-1] == Bucket(T0 + five, "ph", pytest.approx(8.7), 7.5, 9.9, 2)
    hourly = backend.store.downsample(backend.dev_a, ["ph"], start, end, 60 * MIN)
    assert [(b.start_ms, b.count, b.min, b.max) for b in hourly] == [(T0, 4, 7.2, 7.6)]
    assert backend.store.downsample(backend.dev_a, ["ph"], T0 + 20 * MIN, T0 + 30 * MIN, five) == []


def test_latest_readings_are_the_newest_per_parameter(backend: Backend) -> None:
    ph = [_ph(backend, m, 7.0 + m / 10) for m in (2, 0, 1)]
    orp = [_r(backend, 0, "orp", value=700.0), _r(backend, 1, "orp", value=710.0, flag="C",
                                                   seq=None)]  # fmt: skip
    backend.store.write_batch([*ph, *orp, _r(backend, 5, device=backend.dev_b)])
    got = sorted(backend.store.latest_readings(backend.dev_a), key=lambda r: r.parameter)
    assert got == [orp[1], ph[0]]
    assert backend.store.latest_readings(f"{backend.dev_a}-none") == []


def test_reading_stats_count_all_valid_and_valid_outside(backend: Backend) -> None:
    values = [(0, 7.0, "N"), (1, 6.0, "N"), (2, 9.0, "N"), (3, 9.5, "C"), (4, 8.5, "N"),
              (5, 6.5, "N"), (6, 10.0, "N")]  # fmt: skip
    backend.store.write_batch(
        [_ph(backend, m, v, f) for m, v, f in values] + [_r(backend, 1, "orp", value=900.0)]
    )
    stats = backend.store.reading_stats
    dev = backend.dev_a
    end = T0 + 6 * MIN  # minute 6 is out of the range
    # Bounds are inclusive: 6.5 and 8.5 are inside; the flagged 9.5 is not counted as outside.
    assert stats(dev, "ph", T0, end, 6.5, 8.5) == (6, 5, 2)
    assert stats(dev, "ph", T0, end, None, 8.5) == (6, 5, 1)
    assert stats(dev, "ph", T0, end, 6.5, None) == (6, 5, 1)
    assert stats(dev, "ph", T0, end, None, None) == (6, 5, 0)
    assert stats(dev, "ph", T0 + MIN, T0 + 3 * MIN, 6.5, 8.5) == (2, 2, 2)
    assert stats(dev, "ph", T0 + 20 * MIN, T0 + 30 * MIN, 6.5, 8.5) == (0, 0, 0)


# -- relational state (delegated on InfluxDB) -------------------------------------------------


def test_users_and_tokens_round_trip(backend: Backend) -> None:
    store, tag = backend.store, backend.site
    store.add_user(f"ann-{tag}", "hash-1", "inspector", ["310104", "310105"])
    assert store.get_user(f"ann-{tag}") == (
        Principal(f"ann-{tag}", "inspector", ("310104", "310105")), "hash-1"
    )  # fmt: skip
    assert store.get_user(f"bob-{tag}") is None
    bot = Principal(f"bot-{tag}", "viewer", ("310104",), kind="token")
    store.add_token(f"th-{tag}", bot, expires_ms=T0 + MIN, label="ci")
    assert store.principal_for_token(f"th-{tag}", T0) == bot
    assert store.principal_for_token(f"th-{tag}", T0 + MIN) is None, "expired"
    assert store.principal_for_token(f"other-{tag}", T0) is None


def test_sessions_follow_their_user_and_tokens_are_listed_and_revoked(backend: Backend) -> None:
    store, tag = backend.store, backend.site
    name = f"cy-{tag}"
    store.add_user(name, "hash-1", "inspector", ["310104"])
    store.add_token(f"s1-{tag}", Principal(name, "inspector", ("310104",)), None, "login")
    store.add_user(name, "hash-1", "viewer", ["310105"])  # same password: the session stays
    assert store.principal_for_token(f"s1-{tag}", T0) == Principal(name, "viewer", ("310105",))
    assert store.set_user_disabled(name, True)
    assert store.principal_for_token(f"s1-{tag}", T0) is None
    assert store.get_user(name) is None
    assert [u.disabled for u in store.list_users() if u.user.name == name] == [True]
    assert store.set_user_disabled(name, False) and store.get_user(name) is not None
    assert not store.set_user_disabled(f"nobody-{tag}", True)
    store.add_token(f"s2-{tag}", Principal(name, "viewer", ("310105",)), None, "login")
    store.add_user(name, "hash-2", "viewer", ["310105"])  # a new password ends sessions
    assert store.principal_for_token(f"s2-{tag}", T0) is None
    store.add_token(f"s3-{tag}", Principal(name, "viewer", ("310105",)), None, "login")
    assert store.delete_user(name) and not store.delete_user(name)
    assert store.principal_for_token(f"s3-{tag}", T0) is None
    bot = Principal(f"bot2-{tag}", "viewer", ("310104",), kind="token")
    store.add_token(f"{tag}-machine-token-hash", bot, None, "ci")
    listed = {t.id: t for t in store.list_tokens(T0)}
    token_id = f"{tag}-machine-token-hash"[:16]
    assert listed[token_id].name == bot.name and listed[token_id].label == "ci"
    assert store.revoke_token(token_id) and not store.revoke_token(token_id)
    assert store.principal_for_token(f"{tag}-machine-token-hash", T0) is None


def test_alert_save_appears_in_audit_events_and_deliveries(backend: Backend) -> None:
    store = backend.store
    before = store.last_audit_id()
    alert = Alert(backend.site, backend.dev_a, "range:ph", AlertFamily.COMPLIANCE,
                  Severity.WARNING, "ph", "pH 9.1 above 8.5", T0, T0)  # fmt: skip
    store.save_alerts([AlertChange(alert, "opened")], "engine", {"k": "v"})
    assert alert.id is not None
    assert store.load_state("engine") == {"k": "v"}
    [event] = store.audit_events(before, [backend.site])
    assert (event.action, event.actor, event.alert.id) == ("opened", "system", alert.id)
    assert store.last_audit_id() == event.event_id
    assert store.audit_events(before, ["elsewhere"]) == []
    assert [a.id for a in store.open_alerts()] == [alert.id]
    alert.status = AlertStatus.ACKNOWLEDGED
    store.save_alerts([AlertChange(alert, "acknowledged", "ann", "on it")])
    assert [e.action for e in store.audit_trail(alert.id)] == ["opened", "acknowledged"]
    assert store.get_alert(alert.id).status == AlertStatus.ACKNOWLEDGED
    store.record_delivery("hook", alert.id, "opened", False, 3, "timeout", T0)
    store.record_delivery("hook", alert.id, "acknowledged", True, 1, "", T0 + 1)
    assert [(d.action, d.ok, d.attempts) for d in store.deliveries()] == [
        ("acknowledged", True, 1),
        ("opened", False, 3),
    ]


def test_notice_keys_are_claimed_once_and_deliveries_kept_by_channel(backend: Backend) -> None:
    store = backend.store
    key = f"7:1:escalated:sms:{backend.site}"
    assert store.claim_notice(key, T0) is True
    assert store.claim_notice(key, T0 + 1) is False  # another process, or after a restart
    store.release_notice(key)  # its delivery failed: it may be tried again
    assert store.claim_notice(key, T0 + 2) is True
    store.record_delivery("13800138000", 7, "escalated", False, 3, "isp.SYSTEM_ERROR", T0, "sms")
    store.record_delivery("ops", 7, "escalated", True, 1, "", T0 + 1, "wecom")
    [sms] = store.deliveries(channel="sms")
    assert (sms.channel, sms.target, sms.ok, sms.error) == (
        "sms",
        "13800138000",
        False,
        "isp.SYSTEM_ERROR",
    )
    assert [d.channel for d in store.deliveries(10)][:2] == ["wecom", "sms"]


# -- retention ----------------------------------------------------------------------------------


def test_retention_rolls_old_readings_into_hours_and_keeps_alert_evidence(
    backend: Backend,
) -> None:
    if backend.name == "influx":
        pytest.skip("InfluxDB expires readings by bucket retention")
    store = backend.store
    now = T0 + 500 * 24 * 60 * MIN
    old = [_ph(backend, m, 7.0 + (m % 7) / 10, "C" if m == 5 else "N") for m in range(120)]
    recent = _r(backend, 0, ts_ms=now - 24 * 60 * MIN)
    store.write_batch([*old, recent, _r(backend, 3, device=backend.dev_b)])
    alert = Alert(backend.site, backend.dev_a, "range:ph", AlertFamily.COMPLIANCE,
                  Severity.WARNING, "ph", "pH high", T0 + 30 * MIN, T0 + 40 * MIN)  # fmt: skip
    store.save_alerts([AlertChange(alert, "opened")])
    hourly = {
        valid: store.downsample(backend.dev_a, ["ph"], T0, T0 + 3 * 60 * MIN, 60 * MIN, valid)
        for valid in (True, False)
    }
    report = store.apply_retention(now, RetentionSettings(raw_days=400))
    assert (report.removed, report.kept_as_evidence) == (120 - 11 + 1, 11)
    evidence = [r for r in old if T0 + 30 * MIN <= r.ts_ms <= T0 + 40 * MIN]
    assert _mine(backend, device_id=backend.dev_a) == [*evidence, recent]
    assert _mine(backend, device_id=backend.dev_b) == []
    for valid, buckets in hourly.items():
        after = store.downsample(backend.dev_a, ["ph"], T0, T0 + 3 * 60 * MIN, 60 * MIN, valid)
        assert [(b.start_ms, b.count, b.min, b.max) for b in after] == [
            (b.start_ms, b.count, b.min, b.max) for b in buckets
        ]
        assert [b.mean for b in after] == pytest.approx([b.mean for b in buckets])
    assert store.apply_retention(now, RetentionSettings(raw_days=400)).removed == 0
