"""The registry of a process that runs beside others (`landun api`, `landun ingest`): when any
of them saves a site or device edit, the store notifies every process (store.postgres.notify),
and each loads its registry again as at start (the file with the stored edits) and swaps it in.
Requests and batches in flight keep the registry they began with."""

from __future__ import annotations

import logging
from collections.abc import Callable

from domain.registry import Registry

log = logging.getLogger("landun.registry")


class RegistryReload:
    """Rung by the store's listener: `load` builds the registry, `use` swaps it in."""

    def __init__(self, load: Callable[[], Registry], use: Callable[[Registry], None]) -> None:
        self.load = load
        self.use = use

    def ring(self) -> None:
        try:
            fresh = self.load()
            self.use(fresh)
        except Exception:  # an unreadable file or edit, the store away: keep the one in hand
            log.exception("registry not reloaded after an edit; the current one stays")
            return
        log.info("registry reloaded: %d sites, %d devices", len(fresh.sites), len(fresh.devices))
