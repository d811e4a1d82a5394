"""LISTEN/NOTIFY for the alert bell (store.bell): writers NOTIFY in the transaction that commits
an audited alert change (delivered at commit, once per transaction), and each API process
listens on a connection of its own and rings its bell. The alert feed has a channel of its own:
ingest notifies after committing entries, the API after recording an inspector action, and the
alert workers wake on it instead of sleeping."""

from __future__ import annotations

import logging
import threading

import psycopg

from store.bell import Bell
from store.postgres.db import redact

log = logging.getLogger("landun.store")

CHANNEL = "landun_alerts"
NOTIFY = f"NOTIFY {CHANNEL}"
# Saved registry edits (tables site_edits and device_edits, api.routes_sites): notified in
# the transaction that saves one, so every process holding the registry reloads it.
REGISTRY_CHANNEL = "landun_registry"
FEED_CHANNEL = "landun_feed"
# Sent after the commit, in a statement of its own: a transaction that notifies holds a
# cluster-wide lock through its commit, which would queue the ingest writers one behind another.
NOTIFY_FEED = f"NOTIFY {FEED_CHANNEL}"


class Listener:
    """Rings `bell` at every notification on `channel`; reconnects (and rings, as changes may
    have been missed meanwhile) after a lost connection."""

    def __init__(self, url: str, bell: Bell, retry_s: float = 2.0, channel: str = CHANNEL) -> None:
        self.url = url
        self.bell = bell
        self.channel = channel
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="landun-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.bell.ring()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.bell.ring()
            except psycopg.OperationalError as exc:
                where = redact(self.url)
                log.warning("%s notifications from %s lost, retrying: %s", self.channel, where, exc)
                self._stop.wait(self.retry_s)
