"""Dead-letter retention on a fixed clock: raw bytes go after `raw_days`, rows after `row_days`,
the counts per reason stay."""

from __future__ import annotations

from pathlib import Path

from domain.model import DeadLetter
from store.dead_letter_retention import DAY_MS, DeadLetterRetention, RetentionPolicy, load_policy
from store.sqlite import SqliteStore

NOW = 1_795_334_400_000
TOPIC = "landun/v1/devices/pool-1-wq/telemetry"


def dead(age_days: float, reason: str) -> DeadLetter:
    return DeadLetter(TOPIC, "pool-1-wq", NOW - int(age_days * DAY_MS), reason, b"garbage" * 100)


def test_default_policy_is_data() -> None:
    policy = load_policy()
    assert 0 < policy.raw_days <= policy.row_days and policy.every_minutes > 0


def test_retention_clears_raw_then_deletes_rows_and_keeps_counts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "landun.db")
    store.write_batch(
        [],
        [
            *(dead(500, "empty payload"), dead(450, "not JSON"), dead(100, "empty payload")),
            *(dead(1, "empty payload"), dead(1, "not JSON")),
        ],
        [],
    )
    now = [NOW]
    retention = DeadLetterRetention(store, RetentionPolicy(30, 400, 60), clock=lambda: now[0])
    retention.maybe_run()
    kept = store.dead_letters()
    assert sorted(round((NOW - d.recv_ms) / DAY_MS) for d in kept) == [1, 1, 100]
    assert {round((NOW - d.recv_ms) / DAY_MS): len(d.raw) for d in kept} == {1: 700, 100: 0}
    assert store.dead_letter_counts() == {"empty payload": 3, "not JSON": 2}

    # Not due again within the hour; due after it.
    now[0] = NOW + 30 * DAY_MS
    store.write_batch([], [dead(-30, "not JSON")], [])
    now[0] = NOW + 59 * 60_000
    retention.maybe_run()
    assert len(store.dead_letters()) == 4
    now[0] = NOW + 371 * DAY_MS  # the 100-day-old one is now 471 days old
    retention.maybe_run()
    kept = store.dead_letters()
    assert [round((now[0] - d.recv_ms) / DAY_MS) for d in kept] == [341, 372, 372]
    assert all(d.raw == b"" for d in kept)
    assert store.dead_letter_counts() == {"empty payload": 3, "not JSON": 3}
    store.close()
