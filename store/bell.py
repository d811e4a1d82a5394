"""A bell the store rings when alert changes are committed, so live streams wait on it instead
of polling: across processes (`landun api`) PostgreSQL rings it through LISTEN/NOTIFY
(store.postgres.notify); an engine can ring it as one of its sinks. `landun run` polls."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from domain.model import Alert


class Bell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def ring(self) -> None:
        """From any thread: wake every waiter."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(event.set)

    def alert_changed(self, alert: Alert, action: str) -> None:
        """As an engine sink: the change is committed when sinks hear of it."""
        self.ring()

    async def wait(self, timeout: float) -> bool:
        """Until the next ring (True) or `timeout` seconds (False)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(waiter)
