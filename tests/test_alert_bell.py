"""The alert bell live streams wait on: rung by PostgreSQL's NOTIFY when another process commits
an audited alert change, and by the engine in one process."""

from __future__ import annotations

import asyncio
import threading

from domain.model import Alert, AlertFamily, Severity
from store.base import AlertChange
from store.bell import Bell
from store.postgres.store import PostgresStore

T0 = 1_795_334_400_000


def _alert() -> Alert:
    return Alert(
        site_id="s1", device_id="d1", rule_id="range:ph", family=AlertFamily.COMPLIANCE,
        severity=Severity.WARNING, parameter="ph", message="pH", first_ms=T0, last_ms=T0,
        opened_ms=T0,
    )  # fmt: skip


def test_a_commit_in_another_process_rings_the_bell(pg_url: str) -> None:
    listening, writing = PostgresStore(pg_url), PostgresStore(pg_url)
    bell = Bell()
    listener = listening.listen(bell)

    async def scenario() -> tuple[bool, bool, bool]:
        listener.start()
        connected = await bell.wait(10)  # rung once listening
        quiet = await bell.wait(0.3)  # nothing committed: no ring
        threading.Timer(0.2, lambda: writing.save_alerts([AlertChange(_alert(), "opened")])).start()
        rung = await bell.wait(10)
        return connected, quiet, rung

    try:
        connected, quiet, rung = asyncio.run(scenario())
        assert connected and not quiet and rung
    finally:
        listener.stop()
        listening.close()
        writing.close()


def test_the_engines_sink_rings_waiters_on_their_own_loop() -> None:
    bell = Bell()

    async def scenario() -> bool:
        threading.Timer(0.1, bell.alert_changed, args=(_alert(), "opened")).start()
        return await bell.wait(5)

    assert asyncio.run(scenario())
