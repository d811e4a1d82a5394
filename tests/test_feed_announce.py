"""An alert worker (alerts/feed.py) on PostgreSQL, in this process: when a round judges several
partitions, a partition whose alert opened is committed and announced before the round's next
partition is judged, so an alert does not wait for the others; the alert and its partition's
cursor are still stored together, and once."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from alerts.engine import AlertEngine
from alerts.feed import AlertWorker, PartitionRules
from alerts.standards import builtin_profiles
from domain.model import Alert, Reading
from domain.params import default_catalogue
from domain.registry import Registry, load_registry
from store.factory import open_ledger
from store.feed import load_feed_settings, partition_of
from store.postgres.store import PostgresStore
from tests.roles_rig import MINUTE, T0, query, write_registry

RULE = "range:free_chlorine"


def _low_chlorine(device: str, site: str) -> list[Reading]:
    """Twelve minutes far below the limit: longer than the range rule's pending time."""
    return [
        Reading(device, site, "free_chlorine", T0 + k * MINUTE, 0.1, "N", T0 + k * MINUTE)
        for k in range(12)
    ]


def test_an_alert_is_announced_before_the_rounds_next_partition_is_judged(
    pg_url: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(load_feed_settings(), hold_ms=0, judge_every_ms=0)
    write_registry(tmp_path / "registry.toml", 40)
    whole = load_registry(tmp_path / "registry.toml")
    # Two devices whose sites fall in different partitions.
    by_part: dict[int, tuple[str, str]] = {}
    for d in whole.devices.values():
        by_part.setdefault(partition_of(d.site_id, settings.partitions), (d.id, d.site_id))
    (pa, (dev_a, site_a)), (pb, (dev_b, site_b)) = sorted(by_part.items())[:2]

    events: list[tuple[str, object]] = []
    lock = threading.Lock()

    def note(kind: str, what: object) -> None:
        with lock:
            events.append((kind, what))

    def build(registry: Registry, part_store, part_ledger) -> PartitionRules:
        engine = AlertEngine(part_store, registry, builtin_profiles(), default_catalogue())
        part = part_store.part

        def on_readings(readings: list[Reading]) -> None:
            note("judged", part)
            engine.on_readings(readings)

        return PartitionRules(engine, on_readings)

    class Sink:
        def alert_changed(self, alert: Alert, action: str) -> None:
            note(action, alert.site_id)

    store = PostgresStore(pg_url)
    writer = PostgresStore(pg_url)
    ledger = open_ledger(tmp_path / "unused.db", pg_url)
    writer.enable_feed(settings.partitions, {d.id: d.site_id for d in whole.devices.values()})
    worker = AlertWorker(store, ledger, lambda: whole, build, settings, [Sink()], tick_s=3600)
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while len(worker.parts) < settings.partitions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(worker.parts) == settings.partitions
        # One batch, one transaction: both partitions' entries are judged in one round.
        writer.write_batch(_low_chlorine(dev_a, site_a) + _low_chlorine(dev_b, site_b))
        while time.monotonic() < deadline:
            with lock:
                if sum(1 for kind, _ in events if kind == "opened") == 2:
                    break
            time.sleep(0.05)
    finally:
        worker.stop()
        for s in (store, writer, ledger):
            s.close()

    with lock:
        order = [e for e in events if e[0] in ("judged", "opened")]
    assert order == [("judged", pa), ("opened", site_a), ("judged", pb), ("opened", site_b)]
    stored = query(pg_url, "SELECT site_id, count(*) FROM alerts WHERE rule_id = %s GROUP BY 1",
                   (RULE,))  # fmt: skip
    assert sorted(stored) == sorted([(site_a, 1), (site_b, 1)])
    cursors = dict(query(pg_url, "SELECT part, pos FROM feed_cursors WHERE part = ANY(%s)",
                         ([pa, pb],)))  # fmt: skip
    assert cursors == {pa: 1, pb: 1}
