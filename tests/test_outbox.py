"""The outbox (alerts/channels/outbox.py): a worker per target, backoff, token-bucket rate
limits and dedup, on a real SQLite store; backoff and rate run on a fake clock (counts and
order, never wall-clock speed). The whole system: undelivered notices in the API and on
/metrics."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from alerts.channels.base import DeliveryFailed, Notice, Recipient
from alerts.channels.outbox import ChannelPolicy, OutboxService
from alerts.channels.registry import Secret
from alerts.channels.settings import ChannelSettings, load_channel_settings
from alerts.channels.wecom import Robot, WecomChannel, WecomConfig
from store.sqlite import SqliteStore
from tests.conftest import demo_config, start_system, wait_for
from tests.vendors import Wecom


class FakeClock:
    """Time that moves only when a worker waits: backoff and rate limits cost no real time."""

    def __init__(self) -> None:
        self.t = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        with self._lock:
            self.t += seconds
        return False


class Recorder:
    """A channel that notes (time, address, key) of each send; `failing` addresses raise."""

    name = "wecom"

    def __init__(self, clock: FakeClock, failing: dict[str, DeliveryFailed] | None = None):
        self.clock = clock
        self.failing = failing or {}
        self.sent: list[tuple[float, str, str]] = []
        self.tries: list[tuple[float, str]] = []

    def send(self, notice: Notice) -> None:
        address = notice.recipient.address
        self.tries.append((self.clock(), address))
        if address in self.failing:
            raise self.failing[address]
        self.sent.append((self.clock(), address, notice.key))


def notice(address: str, alert_id: int = 1, level: int = 0, channel: str = "wecom") -> Notice:
    return Notice(
        alert_id, level, "opened", "warning", "compliance", "pool-1", "余氯低", "余氯 0.1 mg/L",
        "http://landun.test/alerts/1", Recipient(channel, address),
    )  # fmt: skip


def counted(channel: str, outcome: str) -> float:
    labels = {"channel": channel, "outcome": outcome}
    return REGISTRY.get_sample_value("landun_notifications_total", labels) or 0.0


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "landun.db")
    yield s
    s.close()


def _outbox(store, channel, clock: FakeClock, **policy) -> OutboxService:
    return OutboxService(
        {"wecom": channel},
        store,
        {"wecom": ChannelPolicy(**({"max_attempts": 3, "backoff_s": 1.0} | policy))},
        clock=clock,
        wait=clock.wait,
    )


def test_a_failing_receiver_keeps_failing_while_every_other_target_is_served(store) -> None:
    vendor = Wecom({"k-a", "k-b", "k-c", "k-down"})
    vendor.down.add("k-down")
    channel = WecomChannel(
        f"{vendor.stand_in.url}/cgi-bin/webhook/send",
        {"a": "k-a", "b": "k-b", "c": "k-c", "down": "k-down"},
    )
    clock = FakeClock()
    outbox = _outbox(store, channel, clock)
    outbox.start()
    try:
        for alert_id in range(1, 6):
            for robot in ("down", "a", "b", "c"):
                assert outbox.submit(notice(robot, alert_id))
        # Every message to the three good robots arrives while the dead one holds its first.
        wait_for(
            lambda: all(len(vendor.contents.get(f"k-{r}", [])) == 5 for r in "abc"),
            what="five messages to each good robot",
        )
        down_requests = [q for _, q, _ in vendor.stand_in.requests if q.get("key") == "k-down"]
        assert len(down_requests) == 1
        vendor.up_again.set()  # now it answers 503, and keeps failing
        failed = wait_for(
            lambda: len(f := [d for d in store.deliveries() if not d.ok]) == 5 and f,
            what="the dead robot's five notices given up",
        )
        assert {(d.target, d.attempts, d.error) for d in failed} == {("down", 3, "WeCom: HTTP 503")}
        assert sorted(d.alert_id for d in failed) == [1, 2, 3, 4, 5]
        delivered = [d for d in store.deliveries(channel="wecom") if d.ok]
        assert sorted(d.target for d in delivered) == sorted("abc" * 5)
        assert all(d.attempts == 1 for d in delivered)
    finally:
        outbox.stop()
        vendor.stand_in.close()


def test_one_key_is_sent_once_across_a_restart_and_a_second_process(store) -> None:
    clock = FakeClock()
    first = Recorder(clock)
    outbox = _outbox(store, first, clock)
    outbox.start()
    before = counted("wecom", "duplicate")
    assert outbox.submit(notice("ops")) is True
    assert outbox.submit(notice("ops")) is False  # the same person, level and episode
    assert outbox.submit(notice("ops", level=1)) is True  # the next level is a new message
    wait_for(lambda: len(first.sent) == 2, what="two sends")
    outbox.stop()
    # A restart: a new outbox on the same store does not send it again.
    again = Recorder(clock)
    restarted = _outbox(store, again, clock)
    other = _outbox(store, again, clock)  # a second process on the same database
    restarted.start()
    other.start()
    try:
        restarted.submit(notice("ops"))
        restarted.submit(notice("ops", alert_id=2))
        other.submit(notice("ops", alert_id=2))
        wait_for(lambda: counted("wecom", "duplicate") - before >= 3, what="duplicates counted")
        wait_for(lambda: again.sent, what="the new episode's message")
    finally:
        restarted.stop()
        other.stop()
    assert [key for _, _, key in again.sent] == ["2:0:opened:wecom:ops"]
    assert len([d for d in store.deliveries() if d.ok]) == 3


def test_a_finally_failed_notice_gives_its_key_back(store) -> None:
    clock = FakeClock()
    channel = Recorder(clock, {"ops": DeliveryFailed("down", retry=False)})
    outbox = _outbox(store, channel, clock)
    told: list[tuple[str, bool, int, str]] = []
    outbox.on_outcome = lambda n, ok, attempts, error: told.append((n.key, ok, attempts, error))
    outbox.start()
    try:
        assert outbox.submit(notice("ops"))
        wait_for(lambda: told, what="the failure told")
        assert told == [("1:0:opened:wecom:ops", False, 1, "down")]
        assert outbox.submit(notice("ops"))  # may be tried again
        wait_for(lambda: len(store.deliveries()) == 2, what="the second failure recorded")
    finally:
        outbox.stop()
    assert len(channel.tries) == 2  # not retried: the failure said trying again cannot help
    assert store.claim_notice(notice("ops").key, 0)  # the key is free


def test_backoff_doubles_up_to_its_cap_and_waits_as_the_vendor_asks(store) -> None:
    clock = FakeClock()
    channel = Recorder(
        clock,
        {
            "flaky": DeliveryFailed("busy"),
            "limited": DeliveryFailed("WeCom errcode 45009", retry_after_s=60.0),
        },
    )
    outbox = _outbox(store, channel, clock, max_attempts=5, backoff_s=1.0, backoff_max_s=4.0)
    outbox.start()
    try:
        outbox.submit(notice("flaky"))
        wait_for(lambda: len(store.deliveries()) == 1, what="flaky given up")
        start = clock()
        outbox.submit(notice("limited"))
        wait_for(lambda: len(store.deliveries()) == 2, what="limited given up")
    finally:
        outbox.stop()
    flaky = [t for t, a in channel.tries if a == "flaky"]
    assert [b - a for a, b in itertools.pairwise(flaky)] == [1.0, 2.0, 4.0, 4.0]
    limited = [t - start for t, a in channel.tries if a == "limited"]
    assert [b - a for a, b in itertools.pairwise(limited)] == [60.0] * 4
    first = store.deliveries()[1]
    assert (first.target, first.attempts, first.error) == ("flaky", 5, "busy")


def test_the_rate_limit_holds_in_every_minute(store) -> None:
    clock = FakeClock()
    channel = Recorder(clock)
    # channels.toml's WeCom policy: 20 a minute at most as 10 at once plus 10 a minute.
    wecom = load_channel_settings().policies["wecom"]
    outbox = _outbox(store, channel, clock, per_minute=wecom.per_minute, burst=wecom.burst)
    outbox.start()
    try:
        for alert_id in range(1, 51):
            outbox.submit(notice("ops", alert_id))
        wait_for(lambda: len(channel.sent) == 50, what="fifty sends")
    finally:
        outbox.stop()
    times = [t for t, _, _ in channel.sent]
    assert times[:10] == [0.0] * 10  # the burst
    most = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert most <= 20  # WeCom's and DingTalk's 20 messages a minute per robot
    assert times[-1] == pytest.approx(240.0)  # the other 40 at 10 a minute


def test_a_full_queue_is_recorded_at_once_and_submit_never_waits(store) -> None:
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        name = "wecom"

        def send(self, notice: Notice) -> None:
            entered.set()
            release.wait(30)

    clock = FakeClock()
    outbox = _outbox(store, Stuck(), clock, queue_max=1)
    outbox.start()
    try:
        outbox.submit(notice("ops", 1))
        entered.wait(10)  # the worker holds the first
        outbox.submit(notice("ops", 2))  # waits in the queue
        outbox.submit(notice("ops", 3))  # no room: recorded now
        [full] = store.deliveries()
        assert (full.alert_id, full.ok, full.error) == (
            3,
            False,
            "delivery queue full: notice not sent",
        )
        outbox.submit(notice("ops", 4, channel="pager"))
        assert store.deliveries()[0].error == "no channel 'pager' is configured"
    finally:
        release.set()
        outbox.stop()


def test_undelivered_notices_show_in_the_api_and_on_metrics(broker, tmp_path, monkeypatch):
    vendor = Wecom({"k-ops"})
    monkeypatch.setenv("LANDUN_TEST_WECOM_KEY", "k-ops")
    robots = {"ops": Robot(key=Secret(env="LANDUN_TEST_WECOM_KEY"))}
    settings = ChannelSettings(
        {"wecom": ChannelPolicy(max_attempts=1)},
        configs={
            "wecom": WecomConfig(url=f"{vendor.stand_in.url}/cgi-bin/webhook/send", robots=robots)
        },
    )
    running = start_system(
        demo_config(broker.url, tmp_path / "var", "landun-ingest-outbox", channels=settings)
    )
    try:
        outbox = running.system.outbox
        assert outbox is not None
        outbox.submit(notice("ops"))
        wait_for(lambda: vendor.contents.get("k-ops"), what="the first message")
        vendor.down.add("k-ops")  # the second message finds the robot down
        vendor.up_again.set()
        outbox.submit(notice("ops", 2))
        failed = wait_for(
            lambda: running.http.get(
                "/api/v1/notification-deliveries", params={"failed": True, "channel": "wecom"}
            ).json(),
            what="the failure in the API",
        )
        assert [(d["channel"], d["target"], d["alert_id"], d["error"]) for d in failed] == [
            ("wecom", "ops", 2, "WeCom: HTTP 503")
        ]
        every = running.http.get("/api/v1/notification-deliveries").json()
        assert [(d["alert_id"], d["ok"]) for d in every] == [(2, False), (1, True)]
        assert running.http.get("/api/v1/webhook-deliveries").json() == []  # webhooks only
        assert running.metric('landun_notifications_total{channel="wecom",outcome="failed"}') >= 1
        assert running.metric('landun_notifications_total{channel="wecom",outcome="sent"}') >= 1
        assert running.anon.get("/api/v1/notification-deliveries").status_code == 401
    finally:
        running.stop()
        vendor.stand_in.close()
