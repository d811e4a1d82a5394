"""The notification tables both backends share: contacts and preferences as edited through the
API, and the escalation levels each alert reached (a level is claimed once, atomically, so any
number of alert processes may run the escalator)."""

from __future__ import annotations

from collections.abc import Sequence

from store.base import AuditEntry

SQLITE_SCHEMA = """
-- Contacts of a site or jurisdiction and users' own notification settings, as JSON checked by
-- domain.notify; owner is site:<id>, jurisdiction:<code> or user:<name>.
CREATE TABLE IF NOT EXISTS notify_settings (
    owner TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
-- The escalation levels each alert reached: the key is the claim, so a level is notified once.
CREATE TABLE IF NOT EXISTS escalation_steps (
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    level INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (alert_id, level)
) WITHOUT ROWID;
"""

POSTGRES_SCHEMA = """
-- Contacts of a site or jurisdiction and users' own notification settings, as JSON checked by
-- domain.notify; owner is site:<id>, jurisdiction:<code> or user:<name>.
CREATE TABLE notify_settings (
    owner text PRIMARY KEY,
    doc text NOT NULL,
    updated_ms bigint NOT NULL,
    updated_by text NOT NULL
);
-- The escalation levels each alert reached: the key is the claim, so a level is notified once.
CREATE TABLE escalation_steps (
    alert_id bigint NOT NULL REFERENCES alerts (id),
    level integer NOT NULL,
    at_ms bigint NOT NULL,
    PRIMARY KEY (alert_id, level)
);
"""

MIGRATION_NAME = "notification settings, escalation steps"

UPSERT_SETTINGS = (
    "INSERT INTO notify_settings (owner, doc, updated_ms, updated_by) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (owner) DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms,"
    " updated_by = excluded.updated_by"
)
DELETE_SETTINGS = "DELETE FROM notify_settings WHERE owner = ?"

# Inserted only while the alert is open (not acknowledged, not resolved) and the level is new.
CLAIM = (
    "INSERT INTO escalation_steps (alert_id, level, at_ms)"
    " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM alerts WHERE id = ? AND status = 'open')"
    " ON CONFLICT DO NOTHING"
)
INSERT_AUDIT = (
    "INSERT INTO alert_audit (alert_id, at_ms, actor, action, comment) VALUES (?, ?, ?, ?, ?)"
)


def settings_query(owners: Sequence[str]) -> str:
    return f"SELECT owner, doc FROM notify_settings WHERE owner IN ({', '.join('?' * len(owners))})"


def steps_query(alert_ids: Sequence[int]) -> str:
    marks = ", ".join("?" * len(alert_ids))
    return f"SELECT alert_id, level, at_ms FROM escalation_steps WHERE alert_id IN ({marks})"


def claim_args(alert_id: int, level: int, at_ms: int) -> tuple[int, int, int, int]:
    return (alert_id, level, at_ms, alert_id)


def audit_rows(entries: Sequence[AuditEntry]) -> list[tuple]:
    return [(e.alert_id, e.at_ms, e.actor, e.action, e.comment) for e in entries]


def steps_by_alert(rows: Sequence[tuple[int, int, int]]) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for alert_id, level, at_ms in rows:
        out.setdefault(alert_id, {})[level] = at_ms
    return out
