"""The alert worker of a deployment with separate roles (`landun alerts`): it holds partitions
of the alert state by lease, reads each partition's committed feed entries after its cursor, and
writes the alert changes with the cursor advance in one transaction (store/feed.py).

Each held partition has an engine of its own, with the rules wired as in `landun run`, over the
sites of that partition only. The engine's writes are held by a PartitionStore and committed by
the worker together with the cursor; its announcements wait for that commit. A partition whose
write fails (store away, lease lost) is dropped and rebuilt from the store (open alerts, engine
state, cursor) when it is next taken: nothing decided in memory is written unless the cursor
moves with it, so a crash never opens an alert twice nor loses one."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from alerts.detector_rule import DetectorRule
from alerts.engine import AlertEngine
from domain.model import Alert, DeadLetter, Reading
from domain.registry import Registry
from domain.timeutil import now_ms
from store.base import AlertChange, Store, StoreUnavailable
from store.feed import SITE_EDITED, Event, FeedEntry, FeedSettings, partition_of, poison_letter
from store.ledger import WasteLedger

log = logging.getLogger("landun.alerts.feed")

VERBS = {"acknowledged": "acknowledge", "resolved": "resolve", "commented": "comment"}
REPLAY_CHUNK = 5_000  # stored readings replayed at a time at a take-over (bounds the memory)


@dataclass
class PartitionRules:
    """One partition's engine and the entry points ingest's hooks call in `landun run`."""

    engine: AlertEngine
    on_readings: Callable[[list[Reading]], None]
    on_events: Callable[[list[Event]], None] | None = None
    on_dead: Callable[[list[DeadLetter]], None] | None = None


# (the partition's registry, its store and ledger) -> its rules
Builder = Callable[[Registry, Store, WasteLedger], PartitionRules]


class PartitionStore:
    """The store as one partition's engine and rules see it: open alerts of its sites only,
    engine state in a namespace of its own, and writes held for the worker's transaction."""

    def __init__(self, store: Store, part: int, sites: set[str]) -> None:
        self._store = store
        self.part = part
        self.sites = sites
        self.writes: list[tuple] = []

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def _ns(self, namespace: str) -> str:
        return f"{namespace}/p{self.part}"

    def open_alerts(self) -> list[Alert]:
        return [a for a in self._store.open_alerts() if a.site_id in self.sites]

    def load_state(self, namespace: str) -> dict[str, str]:
        return self._store.load_state(self._ns(namespace))

    def save_alerts(
        self,
        changes: Sequence[AlertChange],
        state_namespace: str = "",
        state: dict[str, str | None] | None = None,
    ) -> None:
        self.writes.append(("alerts", list(changes), self._ns(state_namespace), dict(state or {})))

    def save_state(self, namespace: str, items: dict[str, str | None]) -> None:
        self.writes.append(("state", self._ns(namespace), dict(items)))

    def close(self) -> None:
        """The shared store stays open."""


class PartitionLedger:
    """The waste ledger as one partition's custody rule sees it: bags of its sites only."""

    def __init__(self, ledger: WasteLedger, sites: set[str]) -> None:
        self._ledger = ledger
        self.sites = sites

    def __getattr__(self, name: str):
        return getattr(self._ledger, name)

    def held_bags(self, site_id: str | None = None):
        return [b for b in self._ledger.held_bags(site_id) if b.site_id in self.sites]

    def incomplete_handovers(self, recv_from_ms: int, recv_to_ms: int):
        bags = self._ledger.incomplete_handovers(recv_from_ms, recv_to_ms)
        return [b for b in bags if b.site_id in self.sites]

    def close(self) -> None:
        """The shared ledger stays open."""


class MutedEngine:
    """The engine as detectors replaying stored readings see it: the open alerts are the
    engine's, and what they decide on the past is neither written nor announced (the worker
    that judged those readings did that)."""

    def __init__(self, engine: AlertEngine) -> None:
        self._engine = engine

    def open_alerts(self, rule_prefixes: tuple[str, ...]) -> list[Alert]:
        return self._engine.open_alerts(rule_prefixes)

    def raise_alert(self, alert: Alert, value: float | None = None) -> Alert:
        return alert

    def clear_alert(self, site_id: str, device_id: str | None, rule_id: str, why: str) -> None:
        """Decided on the past: nothing to do."""


class HeldAnnouncements:
    """The engine's sink: announcements wait until their changes are committed."""

    def __init__(self) -> None:
        self.held: list[tuple[Alert, str]] = []

    def alert_changed(self, alert: Alert, action: str) -> None:
        self.held.append((alert, action))


@dataclass
class Partition:
    part: int
    epoch: int
    pos: int
    rules: PartitionRules
    store: PartitionStore
    heard: HeldAnnouncements
    judging: list[FeedEntry] = field(default_factory=list)  # the entries being evaluated
    # Entries read and not judged yet (younger than hold_ms): the next read starts after them.
    waiting: list[FeedEntry] = field(default_factory=list)

    def read_from(self) -> int:
        return self.waiting[-1].pos if self.waiting else self.pos


@dataclass
class WorkerMetrics:
    entries: int = 0
    readings: int = 0
    commits: int = 0
    takeovers: int = 0
    dropped: int = 0
    actions: int = 0
    poison: int = 0  # entries set aside as dead letters
    replayed: int = 0  # stored readings replayed into detectors at take-overs
    lag_ms_last: int = 0
    partitions: dict[int, int] = field(default_factory=dict)  # held partition -> its cursor


def partition_registry(registry: Registry, part: int, partitions: int) -> Registry:
    sites = {k: s for k, s in registry.sites.items() if partition_of(k, partitions) == part}
    devices = {k: d for k, d in registry.devices.items() if d.site_id in sites}
    by_mn = {mn: d for mn, d in registry.by_mn.items() if d in devices}
    return Registry(sites=sites, devices=devices, by_mn=by_mn)


class AlertWorker:
    """`registry` is called at every take-over, so site edits reach a rebuilt partition."""

    def __init__(
        self,
        store,
        ledger: WasteLedger,
        registry: Callable[[], Registry],
        build: Builder,
        settings: FeedSettings,
        sinks: Sequence = (),
        tick_s: float = 5.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.registry = registry
        self.build = build
        self.settings = settings
        self.sinks = list(sinks)
        self.tick_s = tick_s
        self.clock = clock
        self.metrics = WorkerMetrics()
        self.parts: dict[int, Partition] = {}
        self.leases = store.leases(settings)
        self._rebuild = False  # a partition was left to be rebuilt: check the leases now
        # partition -> the last entry of a batch whose evaluation failed: up to it, entries are
        # evaluated one at a time, so the one that fails is found and set aside
        self._isolate: dict[int, int] = {}
        self._failed_once: dict[int, int] = {}  # partition -> the entry retried after a rebuild
        self._stop = threading.Event()
        # Rung when entries or inspector actions arrive (and at stop): an idle loop sleeps on it.
        self._wake = Doorbell()
        self._held_until: int | None = None  # when the oldest entry held back becomes ready
        self._judged_at = 0  # when entries were last judged
        self._listener = store.feed_listen(self._wake)
        self._thread = threading.Thread(target=self._run, name="landun-alert-worker", daemon=True)

    def start(self) -> None:
        self.store.feed_partitions(self.settings.partitions)
        self._listener.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.ring()
        self._thread.join(timeout=30)
        self._listener.stop()
        self.leases.close()

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_lease = 0.0
        next_tick = self.clock() + self.tick_s * 1000
        tick_due: list[int] = []  # partitions whose rules are still to tick this time
        while not self._stop.is_set():
            self._wake.clear()  # a ring from here on is for entries this round may not see
            self._held_until = None
            now = self.clock()
            try:
                if now >= next_lease or self._rebuild:
                    self._rebuild = False
                    next_lease = now + self.settings.lease_check_s * 1000
                    self._balance()
                busy = self._apply_actions()
                if self.parts:
                    limit = self.settings.batch_entries
                    cursors = {
                        part: p.read_from()
                        for part, p in self.parts.items()
                        if len(p.waiting) < limit
                    }
                    fetched = self.store.feed_read_many(cursors, limit) if cursors else {}
                    judged: list[tuple[Partition, int]] = []
                    for part, p in list(self.parts.items()):
                        entries = p.waiting + fetched.get(part, [])
                        if entries and part in self.parts:
                            busy |= self._follow_or_drop(p, entries, judged)
                        if judged and judged[-1][0] is p and p.heard.held:
                            # An alert changed: committed and announced at once, not after
                            # the other partitions are judged (a transaction more, only then).
                            self._commit(*judged.pop())
                    self._commit_all([(p, pos, ()) for p, pos in judged])
                if now >= next_tick:
                    next_tick = now + self.tick_s * 1000
                    tick_due = sorted(self.parts)
                # One partition's time-driven rules a round, between judging the feed: ticking
                # them all at once held every partition's entries for as long.
                while tick_due:
                    due = self.parts.get(tick_due.pop())
                    if due is not None:
                        due.rules.engine.tick(now)
                        if due.store.writes or due.heard.held:
                            self._commit(due, due.pos)
                        break
                busy |= bool(tick_due)
            except StoreUnavailable as exc:
                log.warning("store unavailable, partitions left, retrying: %s", exc)
                self._drop_all()
                self._stop.wait(self.settings.lease_check_s)
                next_lease, busy = 0.0, True
            except Exception:
                log.exception("alert worker step failed; leases are checked again")
                self._drop_all()
                self._stop.wait(self.settings.lease_check_s)
                next_lease, busy = 0.0, True
            if busy:
                continue
            if self._held_until is None:
                self._wake.wait(self.settings.poll_s)
            else:
                # Entries wait out their hold, and rounds are judge_every_ms apart: entries
                # arriving meanwhile are judged with them, in larger batches (the detectors are
                # vectorised: a reading costs less in a larger batch).
                until = max(self._held_until, self._judged_at + self.settings.judge_every_ms)
                self._stop.wait(max(0.0, (until - self.clock()) / 1000))
        self._drop_all()

    def _balance(self) -> None:
        """Hold a fair share of the partitions: ceil(partitions / live workers)."""
        if self.leases.slot is None:
            for part in list(self.parts):
                self._drop(part, "reconnecting its leases")
            self.leases.connect()
        held = self.leases.held()
        for part in set(self.parts) - held:  # a lease the server no longer has
            self._drop(part, "its lease is gone")
        total = self.settings.partitions
        share = math.ceil(total / max(1, self.leases.members()))
        for part in sorted(self.parts, reverse=True)[: max(0, len(self.parts) - share)]:
            self._drop(part, "rebalancing")
            self.leases.release(part)
        start = ((self.leases.slot or 0) * share) % total
        registry = None
        for i in range(total):
            if len(self.parts) >= share:
                break
            part = (start + i) % total
            if part not in self.parts and self.leases.take(part):
                try:
                    registry = registry or self.registry()
                    self._take(part, registry)
                except Exception:
                    self.leases.release(part)
                    raise

    def _take(self, part: int, whole: Registry) -> None:
        registry = partition_registry(whole, part, self.settings.partitions)
        pos, epoch = self.store.feed_claim(part)
        store = PartitionStore(self.store, part, set(registry.sites))
        ledger = PartitionLedger(self.ledger, set(registry.sites))
        rules = self.build(registry, store, ledger)
        self._replay(part, rules, registry)
        heard = HeldAnnouncements()
        rules.engine.sinks = [heard]
        self.parts[part] = Partition(part, epoch, pos, rules, store, heard)
        self.metrics.takeovers += 1
        self.metrics.partitions[part] = pos
        # Anything the build wrote (a rule's first bookmarks) goes with the first commit.
        log.info("took partition %d at entry %d (epoch %d)", part, pos, epoch)

    def _replay(self, part: int, rules: PartitionRules, registry: Registry) -> None:
        """Rebuild the detectors' windows from the partition's stored readings already judged,
        as the worker that judged them held them: the readings after the cursor are then
        judged as that worker would have judged them. Threshold state and the other rules'
        bookmarks are in the store already."""
        detectors = [r for r in rules.engine.rules if isinstance(r, DetectorRule)]
        if not detectors or not registry.devices:
            return
        muted = MutedEngine(rules.engine)
        since = self.clock() - int(self.settings.replay_h * 3_600_000)
        replayed = 0
        for chunk in self.store.feed_history(part, sorted(registry.devices), since, REPLAY_CHUNK):
            for rule in detectors:
                rule.observe(chunk, cast(AlertEngine, muted))  # the part detectors use
            replayed += len(chunk)
        self.metrics.replayed += replayed
        log.info("partition %d: %d stored readings replayed into its detectors", part, replayed)

    def _drop(self, part: int, why: str) -> None:
        p = self.parts.pop(part, None)
        self.metrics.partitions.pop(part, None)
        if p is not None:
            self.metrics.dropped += 1
            log.info("left partition %d at entry %d: %s", part, p.pos, why)

    def _drop_all(self) -> None:
        for part in list(self.parts):
            self._drop(part, "leases lost or stopping")
        self.leases.close()

    # -- one partition --------------------------------------------------------------------------

    def _follow_or_drop(
        self, p: Partition, entries: list[FeedEntry], judged: list[tuple[Partition, int]]
    ) -> bool:
        try:
            return self._follow(p, entries, judged)
        except Exception as exc:
            self._evaluation_failed(p, exc)
            return True

    def _evaluation_failed(self, p: Partition, exc: Exception) -> None:
        """The engine's memory may hold part of the failed evaluation, so its writes are
        discarded and the partition rebuilt from the store. A batch is then evaluated again one
        entry at a time. A single entry is retried once after the rebuild, which reloads the
        registry too (an entry of a device added since is judged then); failing again, it is
        poison: set aside as a dead letter with the cursor moved past it, in one transaction,
        instead of failing forever."""
        batch, p.judging = p.judging, []
        p.store.writes.clear()
        p.heard.held.clear()
        why = f"{type(exc).__name__}: {exc}"
        if len(batch) == 1 and self._failed_once.get(p.part) == batch[0].pos:
            del self._failed_once[p.part]
            self._set_aside(p, batch[0], why, exc)
        elif len(batch) == 1:
            log.warning("partition %d failed on entry %d (%s); retried once rebuilt",
                        p.part, batch[0].pos, why)  # fmt: skip
            self._failed_once[p.part] = batch[0].pos
        elif batch:
            log.warning(
                "partition %d failed on entries %d..%d (%s); evaluating them one at a time",
                p.part, batch[0].pos, batch[-1].pos, why,
            )  # fmt: skip
            self._isolate[p.part] = batch[-1].pos
        else:
            log.exception("partition %d failed after entry %d", p.part, p.pos)
        if p.part in self.parts:
            self._drop(p.part, "evaluation failed")
            self.leases.release(p.part)
        self._rebuild = True

    def _set_aside(
        self, p: Partition, entry: FeedEntry, why: str, exc: Exception | None = None
    ) -> None:
        """Record a poison entry and move the cursor past it (logged once, counted)."""
        reason = f"feed entry {p.part}/{entry.pos} set aside: {why}"
        log.error("%s", reason, exc_info=exc)
        p.store.writes.append(("poison", poison_letter(entry, reason[:1000], self.clock())))
        self._commit(p, entry.pos)
        if p.pos == entry.pos:
            self.metrics.poison += 1

    def _follow(
        self, p: Partition, entries: list[FeedEntry], judged: list[tuple[Partition, int]]
    ) -> bool:
        """Judge the partition's next entries old enough to be in order, as one batch; its
        writes and new cursor go to `judged`, committed with the other partitions'."""
        limit = self.settings.batch_entries
        held = ready = _prefix(entries[:limit], self.clock() - self.settings.hold_ms)
        if len(held) < len(entries):
            at = entries[len(held)].committed_ms + self.settings.hold_ms
            self._held_until = at if self._held_until is None else min(self._held_until, at)
        if not ready:
            p.waiting = entries
            return False
        if ready[0].poison is not None:
            p.waiting = entries[1:]
            self._set_aside(p, ready[0], ready[0].poison)
            return True
        ready = _until_poison(ready)
        if self._isolate.get(p.part, 0) >= ready[0].pos:
            ready = ready[:1]
        else:
            self._isolate.pop(p.part, None)
        p.waiting = entries[len(ready) :]
        p.judging = ready
        readings = [r for e in ready for r in e.readings]
        events = [x for e in ready for x in e.events]
        dead = [d for e in ready for d in e.dead]
        rules = p.rules
        if readings:
            rules.on_readings(readings)
        if events and rules.on_events is not None:
            rules.on_events(events)
        if dead and rules.on_dead is not None:
            rules.on_dead(dead)
        p.judging = []
        self.metrics.readings += len(readings)
        self.metrics.entries += len(ready)
        judged.append((p, ready[-1].pos))
        self._judged_at = self.clock()
        if readings:
            self.metrics.lag_ms_last = self.clock() - max(r.recv_ms for r in readings)
        return len(ready) == limit or len(ready) < len(held)  # more to read, or a batch cut short

    def _apply_actions(self) -> bool:
        if not self.parts:
            return False
        actions = self.store.pending_actions(sorted(self.parts))
        for a in actions:
            p = self.parts.get(a.part)
            if p is None:
                continue
            if a.action == SITE_EDITED:
                # Rebuilt from the store with the edit at the next lease check (soon).
                self._commit(p, p.pos, [(a.id, None)])
                if p.part in self.parts:
                    self._drop(p.part, f"site {a.comment} was edited")
                    self.leases.release(p.part)
                self._rebuild = True
                continue
            error = None
            try:
                getattr(p.rules.engine, VERBS[a.action])(a.alert_id, a.actor, a.comment)
            except KeyError as exc:
                error = f"not found: {exc.args[0]}"
            except ValueError as exc:
                error = f"conflict: {exc}"
            self._commit(p, p.pos, [(a.id, error)])
            self.metrics.actions += 1
        return bool(actions)

    def _commit(self, p: Partition, pos: int, actions_done: Sequence = ()) -> None:
        self._commit_all([(p, pos, actions_done)])

    def _commit_all(self, commits: Sequence[tuple[Partition, int, Sequence]]) -> None:
        """Each partition's held writes and its cursor at the given position, all in one
        transaction (one round trip per loop, however many partitions moved); then the
        announcements. On failure the partitions are dropped: their memory is ahead of the
        store, and whoever takes them next rebuilds from it."""
        if not commits:
            return
        try:
            self.store.feed_commit_many(
                [(p.part, p.epoch, pos, p.store.writes, done) for p, pos, done in commits]
            )
        except Exception as exc:
            for p, _, _ in commits:
                if p.part in self.parts:
                    self._drop(p.part, f"its write failed ({exc})")
                    self.leases.release(p.part)
            return
        self.metrics.commits += 1
        for p, pos, _ in commits:
            p.store.writes.clear()
            p.pos = pos
            self.metrics.partitions[p.part] = pos
            held, p.heard.held = p.heard.held, []
            for alert, action in held:
                for sink in self.sinks:
                    try:
                        sink.alert_changed(alert, action)
                    except Exception:
                        log.exception("alert sink %r failed", sink)


class Doorbell(threading.Event):
    """A threading event with the bell's `ring` (store.postgres.notify.Listener rings it)."""

    def ring(self) -> None:
        self.set()


def _prefix(entries: list[FeedEntry], cutoff: int) -> list[FeedEntry]:
    """The entries before the first one committed after `cutoff`."""
    out = []
    for e in entries:
        if e.committed_ms > cutoff:
            break
        out.append(e)
    return out


def _until_poison(entries: list[FeedEntry]) -> list[FeedEntry]:
    """The entries before the first that cannot be decoded (set aside on its own)."""
    for i, e in enumerate(entries):
        if e.poison is not None:
            return entries[:i]
    return entries
