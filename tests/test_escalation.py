"""Escalation on a simulated clock, on SQLite and PostgreSQL: an alert nobody acknowledges goes
from the inspector and the venue to the section chief, then the director; each level's messages
arrive at a stand-in receiver once each, in order; acknowledging stops the chain; a restart
neither resends nor skips a level; working hours, holidays, the on-call rota and each person's
preferences decide who is told.

The real outbox and channels (alerts/channels) are built on another branch; here a small outbox
written for these tests (test scaffolding, `RecordingOutbox`) hands each notice at once to a real
HTTP server standing in for the receivers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import httpx
import pytest

from alerts.channels.base import Notice, Recipient
from alerts.engine import AlertEngine
from alerts.escalation.escalator import Escalator
from alerts.escalation.policy import EscalationSettings
from alerts.settings_files import SettingsError, use_config_dir
from alerts.standards import builtin_profiles
from alerts.startup_settings import load_settings
from domain.model import Alert, AlertFamily, Device, Severity, Site, SiteKind
from domain.notify import ContactList, UserNotify, jurisdiction_owner, site_owner, user_owner
from domain.params import default_catalogue
from domain.registry import Registry
from domain.timeutil import iso_to_ms
from store.base import Store
from store.postgres.store import PostgresStore
from store.sqlite import SqliteStore
from tests.postgres import fresh_database

DATA = resources.files("alerts").joinpath("data")
MIN = 60_000
SITE, DEVICE, CODE = "pool-a", "pool-a-wq", "310104"
MONDAY_10 = iso_to_ms("2026-12-07T10:00:00+08:00")  # a working Monday morning

SITE_CONTACTS = ContactList.model_validate(
    {"contacts": [{"name": "王经理", "role": "manager", "addresses": {"sms": "13800000001"}}]}
)
JURISDICTION_CONTACTS = ContactList.model_validate(
    {
        "contacts": [
            {"name": "李科长", "role": "section_chief", "addresses": {"wecom": "xh-chiefs"}},
            {"name": "张局长", "role": "director", "addresses": {"email": "zhang@xh.example.cn"}},
            {
                "name": "赵值班",
                "role": "duty_officer",
                "addresses": {"sms": "13900000002"},
                "on_call": ["sun", "2026-10-01"],
            },
        ]
    }
)


# -- the stand-in receiver and the test outbox (scaffolding) -------------------------------------


class Receiver:
    """A real HTTP server recording every message POSTed to it, in arrival order."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def who(self) -> list[tuple[int, str]]:
        return [(m["level"], m["to"]) for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingOutbox:
    """Test scaffolding standing in for the real outbox: delivers each notice at once to the
    receiver, and, as the real one does, refuses a key it has delivered before."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.keys: set[str] = set()

    def submit(self, notice: Notice) -> bool:
        if notice.key in self.keys:
            return False
        self.keys.add(notice.key)
        body = {
            "alert": notice.alert_id,
            "level": notice.level,
            "action": notice.action,
            "to": f"{notice.recipient.channel}:{notice.recipient.address}",
            "name": notice.recipient.name,
            "title": notice.title,
            "text": notice.text,
        }
        httpx.post(self.receiver.url, json=body, timeout=10).raise_for_status()
        return True


class SimClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# -- fixtures -------------------------------------------------------------------------------------


def _registry() -> Registry:
    reg = Registry()
    reg.add_site(Site(SITE, "阳光游泳馆", SiteKind.POOL, CODE))
    reg.add_device(Device(DEVICE, SITE, "pool_analyzer", ("free_chlorine",)))
    return reg


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[tuple]:
    """How to open the store again (a restart opens a new one on the same database)."""
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "landun.db")
    else:
        with fresh_database() as url:
            yield lambda: PostgresStore(url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _people(store: Store) -> None:
    store.add_user("insp", "x", "inspector", (CODE,))
    store.add_user("other", "x", "inspector", ("310105",))
    settings = UserNotify.model_validate({"addresses": {"email": "insp@xh.example.cn"}})
    store.save_notify_settings(user_owner("insp"), settings.model_dump_json(), "admin", 0)
    store.save_notify_settings(site_owner(SITE), SITE_CONTACTS.model_dump_json(), "admin", 0)
    doc = JURISDICTION_CONTACTS.model_dump_json()
    store.save_notify_settings(jurisdiction_owner(CODE), doc, "admin", 0)


class World:
    """Store, engine and escalator on one simulated clock; `restart` opens new ones."""

    def __init__(self, open_store, receiver: Receiver, now: int) -> None:
        self.open_store = open_store
        self.receiver = receiver
        self.clock = SimClock(now)
        self.registry = _registry()
        self.store = open_store()
        _people(self.store)
        self._start()

    def _start(self) -> None:
        self.engine = AlertEngine(
            self.store, self.registry, builtin_profiles(), default_catalogue(), clock=self.clock
        )
        self.escalator = Escalator.attach(self.engine, RecordingOutbox(self.receiver), "https://ld")

    def restart(self) -> None:
        self.store.close()
        self.store = self.open_store()
        self._start()

    def open_alert(self, severity: Severity = Severity.WARNING, family=AlertFamily.COMPLIANCE):
        alert = Alert(
            site_id=SITE,
            device_id=DEVICE,
            rule_id="range:free_chlorine",
            family=family,
            severity=severity,
            parameter="free_chlorine",
            message="free chlorine 0.1 mg/L below 0.3",
            first_ms=self.clock.now - 10 * MIN,
            last_ms=self.clock.now,
        )
        return self.engine.raise_alert(alert)

    def at(self, minutes: float) -> None:
        """Advance the simulated clock to `minutes` after the start and run the engine's tick."""
        self.clock.now = self.start + int(minutes * MIN)
        self.engine.tick()

    def actions(self, alert_id: int) -> list[str]:
        return [e.action for e in self.store.audit_trail(alert_id)]

    def close(self) -> None:
        self.store.close()


@contextmanager
def world(db, receiver: Receiver, start: int = MONDAY_10) -> Iterator[World]:
    w = World(db, receiver, start)
    w.start = start
    try:
        yield w
    finally:
        w.close()


INSPECTOR = (0, "email:insp@xh.example.cn")
MANAGER = (0, "sms:13800000001")
CHIEF = (1, "wecom:xh-chiefs")
DIRECTOR = (2, "email:zhang@xh.example.cn")


# -- the chain ------------------------------------------------------------------------------------


def test_unacknowledged_alert_escalates_level_by_level_once_each_in_order(db, receiver):
    with world(db, receiver) as w:
        alert = w.open_alert()
        assert receiver.who() == [INSPECTOR, MANAGER]  # at once, on the alert's opening
        for minutes in (0, 1, 29.9):
            w.at(minutes)
        assert receiver.who() == [INSPECTOR, MANAGER]
        w.at(30)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]
        for minutes in (31, 60, 119.9):
            w.at(minutes)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]
        w.at(120)
        for minutes in (121, 600, 6000):
            w.at(minutes)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF, DIRECTOR]
        chief = receiver.received[2]
        assert chief["title"] == "【第1级升级·警告】阳光游泳馆：游离性余氯超出限值"
        assert "已 **30 分钟**未确认" in chief["text"]
        assert f"https://ld/#/alert/{alert.id}" in chief["text"]
        trail = w.store.audit_trail(alert.id)
        levels = [e.comment for e in trail if e.action == "notification_level"]
        assert [c.split(" (")[0] for c in levels] == ["level 0", "level 1", "level 2"]
        assert "unacknowledged 30 min, working hours" in levels[1]
        queued = [e.comment for e in trail if e.action == "notification_queued"]
        assert queued == [
            "insp via email i***@xh.example.cn",
            "王经理 via sms 138****0001",
            "李科长 via wecom xh-chiefs",
            "张局长 via email z***@xh.example.cn",
        ]


def test_critical_alert_escalates_after_the_critical_delay(db, receiver):
    with world(db, receiver) as w:
        w.open_alert(Severity.CRITICAL)
        w.at(9.9)
        assert receiver.who() == [INSPECTOR, MANAGER]
        w.at(10)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]
        assert receiver.received[2]["title"].startswith("【第1级升级·严重】")


def test_acknowledging_stops_the_chain(db, receiver):
    with world(db, receiver) as w:
        alert = w.open_alert()
        w.at(5)
        w.engine.acknowledge(alert.id, "insp")
        w.at(31)
        w.at(500)
        assert receiver.who() == [INSPECTOR, MANAGER]
        assert w.actions(alert.id).count("notification_level") == 1


def test_resolving_stops_the_chain(db, receiver):
    with world(db, receiver) as w:
        alert = w.open_alert()
        w.at(31)
        w.engine.resolve(alert.id, "insp")
        w.at(500)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]


def test_a_restart_mid_chain_neither_resends_nor_skips_a_level(db, receiver):
    with world(db, receiver) as w:
        alert = w.open_alert()
        w.at(31)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]
        w.restart()  # a new engine, escalator and outbox on the same database
        w.at(31)
        w.at(60)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF]
        w.at(120)
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF, DIRECTOR]
        assert w.actions(alert.id).count("notification_level") == 3


def test_levels_missed_while_stopped_go_out_in_order_after_the_restart(db, receiver):
    with world(db, receiver) as w:
        w.open_alert()
        w.restart()
        w.at(180)  # down through both thresholds: both levels now, in order
        assert receiver.who() == [INSPECTOR, MANAGER, CHIEF, DIRECTOR]


def test_two_escalators_on_one_store_send_each_level_once(db, receiver):
    """As with several alert processes: each (alert, level) is claimed once in the store."""
    with world(db, receiver) as w:
        w.open_alert()
        other_store = w.open_store()
        try:
            other = Escalator(other_store, w.registry, RecordingOutbox(receiver), clock=w.clock)
            now = w.start + 121 * MIN
            threads = [
                threading.Thread(target=e.tick, args=(now,)) for e in (w.escalator, other) * 3
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            other_store.close()
        assert sorted(receiver.who()) == sorted([INSPECTOR, MANAGER, CHIEF, DIRECTOR])


# -- working hours, holidays, on call -------------------------------------------------------------

ON_CALL = (0, "sms:13900000002")


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        # National Day, a Thursday: a holiday, so the on-call officer and the venue.
        ("2026-10-01T10:00:00+08:00", [ON_CALL, MANAGER]),
        # Saturday 10 October, worked instead (调休): the inspector.
        ("2026-10-10T10:00:00+08:00", [INSPECTOR, MANAGER]),
        # Monday 02:00 is still Sunday's duty day: Sunday's on-call officer.
        ("2026-12-07T02:00:00+08:00", [ON_CALL, MANAGER]),
        # Monday 18:00 is Monday's duty, and nobody is on call then: the venue only.
        ("2026-12-07T18:00:00+08:00", [MANAGER]),
    ],
)
def test_working_hours_holidays_and_the_on_call_rota_route_level_0(db, receiver, local, expected):
    with world(db, receiver, start=iso_to_ms(local)) as w:
        alert = w.open_alert()
        assert receiver.who() == expected
        level = w.store.audit_trail(alert.id)[1]
        assert level.action == "notification_level"
        assert ("outside working hours" in level.comment) == (INSPECTOR not in expected)


# -- preferences ----------------------------------------------------------------------------------


def _prefer(store: Store, **preferences) -> None:
    doc = UserNotify.model_validate(
        {"addresses": {"email": "insp@xh.example.cn"}, "preferences": preferences}
    )
    store.save_notify_settings(user_owner("insp"), doc.model_dump_json(), "insp", 0)


def test_preferences_filter_families_and_severities(db, receiver):
    with world(db, receiver) as w:
        _prefer(w.store, families=["integrity"])
        alert = w.open_alert()
        assert receiver.who() == [MANAGER]
        skipped = [e.comment for e in w.store.audit_trail(alert.id) if e.action.endswith("skipped")]
        assert skipped == ["insp: family compliance not chosen"]
        _prefer(w.store, severities=["critical"])
        w.engine.resolve(alert.id, "insp")
        receiver.received.clear()
        w.open_alert(Severity.CRITICAL)
        assert receiver.who() == [INSPECTOR, MANAGER]


def test_quiet_hours_hold_back_warnings_but_not_critical_alerts_unless_asked(db, receiver):
    # 12:00-13:00 quiet (a lunch break) inside working hours, so the inspector is the target.
    lunch = iso_to_ms("2026-12-07T12:30:00+08:00")
    with world(db, receiver, start=lunch) as w:
        _prefer(w.store, quiet_hours={"start": "12:00", "end": "13:00"})
        warning = w.open_alert()
        assert receiver.who() == [MANAGER]
        w.engine.resolve(warning.id, "insp")
        receiver.received.clear()
        critical = w.open_alert(Severity.CRITICAL)
        assert receiver.who() == [INSPECTOR, MANAGER]
        w.engine.resolve(critical.id, "insp")
        receiver.received.clear()
        _prefer(w.store, quiet_hours={"start": "12:00", "end": "13:00", "include_critical": True})
        w.open_alert(Severity.CRITICAL)
        assert receiver.who() == [MANAGER]


# -- what the escalator does when delivery fails ---------------------------------------------------


def test_a_failed_delivery_goes_into_the_audit_trail(db, receiver):
    with world(db, receiver) as w:
        alert = w.open_alert()
        manager = Recipient("sms", "13800000001", "王经理")
        notice = Notice(
            alert.id, 0, "opened", "warning", "compliance", SITE, "t", "x", "u", manager
        )
        w.escalator.delivery_result(notice, False, "HTTP 500 after 5 attempts")
        last = w.store.audit_trail(alert.id)[-1]
        assert (last.actor, last.action) == ("escalation", "notification_failed")
        assert last.comment == "王经理 via sms 138****0001: HTTP 500 after 5 attempts"


def test_packaged_policy_loads_with_its_calendar() -> None:
    settings = EscalationSettings.load()
    policy = settings.policy_for(CODE)
    assert [lv.after_min for lv in policy.levels] == [0, 30, 120]
    assert policy.levels[1].after_min_critical == 10
    cal = settings.calendars["cn-2026"]
    assert len(cal.holidays) == 33 and len(cal.workdays) == 6


# -- hostile or wrong settings files fail at start with file, key and reason ----------------------

ESCALATION = DATA.joinpath("escalation.toml").read_text("utf-8")


@pytest.fixture
def packaged_after() -> Iterator[None]:
    yield
    load_settings(None)


def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "etc" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return tmp_path / "etc"


@pytest.mark.parametrize(
    ("name", "change", "key", "reason"),
    [
        ("escalation.toml", ("after_min = 120", "after_min = 120\nafter_hours = 2"),
         "policies.district.levels.2.after_hours", "unknown key"),
        ("escalation.toml", ('notify = ["jurisdiction:director"]', 'notify = ["everyone"]'),
         "policies.district.levels.2.notify.0", "String should match pattern"),
        ("escalation.toml", ("after_min = 120", "after_min = 20"),
         "policies.district", "levels must come in order of their delays (warning alerts)"),
        ("escalation.toml", ("after_min = 0", "after_min = -5"),
         "policies.district.levels.0.after_min", "greater than or equal to 0"),
        ("escalation.toml", ('calendars = ["cn-2026"]', 'calendars = ["../../etc/passwd"]'),
         "policies.district.calendars.0", "String should match pattern"),
        ("escalation.toml", ('calendars = ["cn-2026"]', 'calendars = ["cn-2099"]'),
         "calendars", "no calendar holidays/cn-2099.toml"),
        ("escalation.toml", ('default_policy = "district"', 'default_policy = "city"'),
         "", "default_policy 'city' is not among the policies"),
        ("escalation.toml", ('timezone = "Asia/Shanghai"', 'timezone = "../../etc/passwd"'),
         "", "is not a time zone"),
        ("escalation.toml", ('start = "08:30"', 'start = "18:30"'),
         "policies.district.working_hours", "start 18:30 is not before end 17:30"),
        ("escalation.toml", ("[jurisdictions]", '[jurisdictions]\n"310104" = "nope"'),
         "", "jurisdiction 310104: no policy 'nope'"),
        ("escalation.toml", ("[jurisdictions]", "[jurisdictions"), "", "not valid TOML"),
        ("holidays/cn-2026.toml", ("2026-01-04,  #", "2027-01-04,  #"),
         "", "2027-01-04 is not in 2026"),
        ("holidays/cn-2026.toml", ("2026-01-04,  #", "2026-01-01,  #"),
         "", "2026-01-01 is both a holiday and a working day"),
    ],
)  # fmt: skip
def test_a_wrong_policy_or_calendar_fails_with_file_key_and_reason(
    tmp_path, packaged_after, name, change, key, reason
):
    text = DATA.joinpath(name).read_text("utf-8")
    assert change[0] in text
    etc = _etc(tmp_path, {name: text.replace(change[0], change[1], 1)})
    with pytest.raises(SettingsError) as info:
        load_settings(etc)
    err = info.value
    assert err.file == str(etc / name)
    assert err.key == key
    assert reason in err.reason


CONTACTS_OK = """
[sites."pool-a"]
contacts = [{ name = "王经理", role = "manager", addresses = { sms = "13800000001" } }]
[jurisdictions."310104"]
contacts = [{ name = "赵值班", role = "duty_officer", on_call = ["sun"] }]
"""


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("13800000001", "12345"), "sites.pool-a.contacts.0.addresses.sms", "should match"),
        (('sms = "1', 'fax = "1'), "sites.pool-a.contacts.0.addresses.fax", "unknown key"),
        (('"sun"', '"someday"'), "jurisdictions.310104.contacts.0.on_call.0", "should match"),
        (('"sun"', '"2026-02-30"'), "jurisdictions.310104.contacts.0.on_call.0",
         "'2026-02-30' is not a date"),
        (('role = "duty_officer"', 'role = "manager"'), "", ""),  # a valid change
        (('[jurisdictions."310104"]', '[jurisdictions."31"]'), "jurisdictions.31.[key]", "pattern"),
        (('name = "赵值班"', 'name = "bad\\u0007name"'),
         "jurisdictions.310104.contacts.0.name", "should match"),
        (('"pool-a"', '"pool-z"'), "sites.pool-z", "no such site"),
    ],
)  # fmt: skip
def test_a_wrong_contacts_file_fails_with_file_key_and_reason(
    tmp_path, packaged_after, change, key, reason
):
    etc = _etc(tmp_path, {"contacts.toml": CONTACTS_OK.replace(change[0], change[1], 1)})
    use_config_dir(etc)
    if not key:
        assert EscalationSettings.load(_registry()).contacts.sites["pool-a"]
        return
    with pytest.raises(SettingsError) as info:
        EscalationSettings.load(_registry())
    assert (info.value.file, info.value.key) == (str(etc / "contacts.toml"), key)
    assert reason in info.value.reason
