"""The store interface, by role: each stage depends on the roles it uses (ReadingStore,
AlertStore, AccountStore, ...), and `Store`, all of them together, is what the backends
(store.sqlite, store.postgres, store.influx for readings) implement and landun/ hands around."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from domain.model import Alert, DeadLetter, Reading
from domain.tanks import TankEvent


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    recv_ms: int
    ts_ms: int | None
    state: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadingQuery:
    device_id: str | None = None
    site_id: str | None = None
    parameters: tuple[str, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int = 10_000
    descending: bool = False


@dataclass(frozen=True, slots=True)
class AlertQuery:
    site_ids: tuple[str, ...] = ()
    device_id: str | None = None
    rule_id: str | None = None
    family: str | None = None
    severity: str | None = None
    statuses: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    alert_id: int
    at_ms: int
    actor: str
    action: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert to insert or update; `action` (opened, acknowledged, ...) goes to the audit
    trail, None for a plain update of its counters."""

    alert: Alert
    action: str | None
    actor: str = "system"
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt series to deliver a notice (or an alert change) through a channel."""

    target: str  # the channel's address: URL, robot name, e-mail, phone
    alert_id: int
    action: str
    ok: bool
    attempts: int
    error: str
    at_ms: int
    channel: str = "webhook"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user, or a machine token acting with a role."""

    name: str
    role: str  # admin | inspector | viewer
    jurisdictions: tuple[str, ...] = ()  # empty for admin: every jurisdiction
    kind: str = "user"  # user | token


# Hex digits of a token's SHA-256 that name it (TokenInfo.id): 64 bits, unique in practice.
TOKEN_ID_CHARS = 16


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token or login session, without the token itself. `id` is the start of the
    token's SHA-256: it names the token for revoking and cannot be used to log in."""

    id: str
    name: str
    kind: str  # user (a login session) | token (a machine's API token)
    role: str
    jurisdictions: tuple[str, ...]
    label: str
    created_ms: int
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class UserInfo:
    user: Principal
    disabled: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """One downsampled interval of one parameter."""

    start_ms: int
    parameter: str
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An audited alert change with its place in the stream (for SSE resume)."""

    event_id: int
    action: str
    actor: str
    comment: str
    at_ms: int
    alert: Alert


@dataclass(frozen=True, slots=True)
class MailedReport:
    """A scheduled report mailed to a jurisdiction's recipients (mailed once)."""

    jurisdiction: str
    period: str  # week | month
    last_day: str  # the report's last day, ISO date
    mailed_ms: int


class StoreUnavailable(RuntimeError):
    """The store cannot take writes now (locked, disk full, unreachable); retry later."""


class ReadingStore(Protocol):
    """Readings, and what ingest learns of each device beside them (status, last heard)."""

    def write_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter] = (),
        statuses: Sequence[DeviceStatus] = (),
    ) -> int:
        """Commit one ingest batch atomically; return how many readings were new (duplicates are
        ignored). Raises StoreUnavailable when nothing could be committed."""
        ...

    def query_readings(self, q: ReadingQuery) -> list[Reading]: ...

    def downsample(
        self,
        device_id: str,
        parameters: Sequence[str],
        start_ms: int,
        end_ms: int,
        every_ms: int,
        valid_only: bool = True,
    ) -> list[Bucket]: ...

    def latest_readings(self, device_id: str) -> list[Reading]:
        """The newest reading of each parameter of a device."""
        ...

    def reading_stats(
        self,
        device_id: str,
        parameter: str,
        start_ms: int,
        end_ms: int,
        low: float | None,
        high: float | None,
    ) -> tuple[int, int, int]:
        """(all readings, valid readings, valid readings outside [low, high]) in the range."""
        ...

    def device_statuses(self) -> dict[str, DeviceStatus]: ...

    def last_seen(self) -> dict[str, int]:
        """Receive time of the newest reading per device."""
        ...

    def record_last_seen(self, seen: Mapping[str, int]) -> None:
        """Move devices' last-seen times forward (an older time than the stored one is ignored):
        for a readings backend that keeps them elsewhere (store.influx)."""
        ...


class DeadLetterStore(Protocol):
    """Messages ingest refused, with their reasons (written by `ReadingStore.write_batch`)."""

    def dead_letters(self, limit: int = 100, since_ms: int | None = None) -> list[DeadLetter]: ...

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per reason, those already deleted by retention included."""
        ...

    def prune_dead_letters(self, raw_before_ms: int, rows_before_ms: int) -> tuple[int, int]:
        """Clear the raw bytes of dead letters received before `raw_before_ms`, delete those
        before `rows_before_ms` (kept in the counts); (raw cleared, rows deleted)."""
        ...


class AlertReader(Protocol):
    """Alerts and their audit trail, as the API and the notifiers read them."""

    def open_alerts(self) -> list[Alert]: ...

    def get_alert(self, alert_id: int) -> Alert | None: ...

    def list_alerts(self, q: AlertQuery) -> list[Alert]: ...

    def audit_trail(self, alert_id: int) -> list[AuditEntry]: ...

    def last_audit_id(self) -> int: ...

    def audit_events(
        self, after_id: int, site_ids: Sequence[str] | None = None, limit: int = 500
    ) -> list[AuditEvent]:
        """Audited alert changes after `after_id`, oldest first, optionally for some sites."""
        ...


class AlertStore(AlertReader, Protocol):
    """The alert stage's own: it alone writes alert changes, together with its checkpoint, the
    engine state (`load_state`, `save_state`, the `state` of `save_alerts`) its rules need
    after a restart or a take-over. Namespaces are the rules' (`threshold`, `custody`), per
    partition where alert workers hold partitions; no other stage keeps anything there."""

    def save_alerts(
        self,
        changes: Sequence[AlertChange],
        state_namespace: str = "",
        state: dict[str, str | None] | None = None,
    ) -> None:
        """Insert or update alerts (ids are assigned to new ones), append their audit entries,
        and upsert engine state, in one transaction."""
        ...

    def load_state(self, namespace: str) -> dict[str, str]: ...

    def save_state(self, namespace: str, items: dict[str, str | None]) -> None:
        """Upsert engine state; a None value deletes the key."""
        ...


class NoticeStore(Protocol):
    """What notifying people of alerts keeps: deliveries, claimed notices, escalation steps
    and their audit entries, and the notification settings edited through the API."""

    def record_delivery(
        self,
        target: str,
        alert_id: int,
        action: str,
        ok: bool,
        attempts: int,
        error: str,
        at_ms: int,
        channel: str = "webhook",
    ) -> None: ...

    def deliveries(self, limit: int = 100, channel: str | None = None) -> list[Delivery]:
        """Newest first; only `channel`'s when given."""
        ...

    def claim_notice(self, key: str, at_ms: int) -> bool:
        """Take a notice key before sending it: True for the first claim, False when the key
        was claimed already (by this process, an earlier run or another process)."""
        ...

    def release_notice(self, key: str) -> None:
        """Give a claimed key back after its delivery finally failed, so it may be tried again."""
        ...

    def notify_settings(self, owners: Sequence[str]) -> dict[str, str]:
        """Stored notification settings (JSON) of these owners (`site:<id>`, `jurisdiction:<code>`,
        `user:<name>`); owners never edited are absent."""
        ...

    def save_notify_settings(self, owner: str, doc: str | None, actor: str, at_ms: int) -> None:
        """Replace an owner's notification settings; None deletes them."""
        ...

    def claim_escalation(
        self, alert_id: int, level: int, at_ms: int, audit: Sequence[AuditEntry]
    ) -> bool:
        """Record that the alert reached this escalation level, with its audit entries, in one
        transaction; False (and nothing written) when the level was claimed already or the
        alert is no longer open (acknowledged or resolved)."""
        ...

    def escalation_steps(self, alert_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        """Alert id -> {level: when it was reached} for the alerts that reached any."""
        ...

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Add entries to alerts' audit trails (notifications sent or failed)."""
        ...


class AccountStore(Protocol):
    """People (users with a password hash) and tokens (login sessions, machines' API tokens)."""

    def add_user(
        self, name: str, password_hash: str, role: str, jurisdictions: Sequence[str]
    ) -> None:
        """Add or replace a user (enabled). A new password ends the user's login sessions."""
        ...

    def get_user(self, name: str) -> tuple[Principal, str] | None:
        """The user and their password hash; None for an unknown or disabled user."""
        ...

    def list_users(self) -> list[UserInfo]: ...

    def set_user_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (ending the user's login sessions) or enable a user; False if unknown."""
        ...

    def delete_user(self, name: str) -> bool:
        """Delete a user and their login sessions; False if unknown."""
        ...

    def add_token(
        self, token_hash: str, principal: Principal, expires_ms: int | None, label: str = ""
    ) -> None: ...

    def principal_for_token(self, token_hash: str, now_ms: int) -> Principal | None:
        """Who a valid token acts for: a login session with its user's current role and
        jurisdictions (None once the user is disabled or deleted), a machine token with its
        own."""
        ...

    def list_tokens(self, now_ms: int) -> list[TokenInfo]:
        """Tokens and login sessions that have not expired, newest first."""
        ...

    def revoke_token(self, token_id: str) -> bool:
        """Delete the token with this id (TokenInfo.id); False if none has it."""
        ...


class RegistryStore(Protocol):
    """What the API adds to the registry file: site and device edits (each the registry
    file's JSON document of it, laid over the file at start, store.site_edits) and the
    sites' public page links."""

    def site_edits(self) -> dict[str, str]:
        """Site id -> the edited site."""
        ...

    def save_site_edit(self, site_id: str, doc: str) -> None: ...

    def device_edits(self) -> dict[str, str]:
        """Device id -> the edited device."""
        ...

    def save_device_edit(self, device_id: str, doc: str) -> None: ...

    def public_links(self) -> dict[str, str]:
        """Site id -> the public id its page answers to now."""
        ...

    def save_public_link(self, site_id: str, public_id: str) -> None:
        """Give the site a new public id (the old one names nothing from then on)."""
        ...


class TankStore(Protocol):
    """The tank cleaning and disinfection register (store.tank_log)."""

    def add_tank_records(self, events: Sequence[TankEvent], keep: int) -> list[TankEvent]:
        """Add the records (one delivered again is kept once) and keep each tank's newest
        `keep`; return the records that were new. Raises StoreUnavailable."""
        ...

    def tank_records(self, site_id: str | None = None) -> list[TankEvent]:
        """The records of every tank (of one site, or of all), by site, tank and time."""
        ...


class OperationsStore(Protocol):
    """What the service's housekeeping keeps across restarts: counters (/healthz) and the
    reports already mailed."""

    def counter(self, name: str) -> int:
        """A saved counter; 0 if never saved."""
        ...

    def save_counter(self, name: str, value: int) -> None: ...

    def mailed_reports(self) -> list[MailedReport]: ...

    def record_mailed_report(self, report: MailedReport) -> None: ...


class Store(
    ReadingStore,
    DeadLetterStore,
    AlertStore,
    NoticeStore,
    AccountStore,
    RegistryStore,
    TankStore,
    OperationsStore,
    Protocol,
):
    """Every role in one: what a backend implements."""

    def close(self) -> None: ...
