"""What the API needs from the rest of the system, handed over at startup."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from domain.limits import Limit, Profile
from domain.model import Alert
from domain.params import Catalogue
from domain.registry import Registry
from store.base import (
    AccountStore,
    AlertReader,
    DeadLetterStore,
    NoticeStore,
    OperationsStore,
    ReadingStore,
    RegistryStore,
    TankStore,
)
from store.bell import Bell
from store.ledger import WasteLedger
from store.lines import LineLedger

if TYPE_CHECKING:
    from api.routes_ops import ApiMetrics
    from api.routes_public import PublicState


@dataclass(frozen=True)
class ApiLimits:
    """What one client may ask of the API. Defaults suit a district's inspectors; the numbers
    bound memory and CPU per request, not business rules."""

    # Request bodies are small JSON documents (a site, a comment); 1 MiB is far above any.
    max_body_bytes: int = 1 << 20
    # A JSON copy of an evidence record sent back to be verified: one with the most readings a
    # record holds is ~6 MB. Only the verify route takes a body this large.
    evidence_copy_bytes: int = 16 << 20
    # Failed logins per account: a burst, then one more every refill period.
    login_account_burst: int = 10
    login_account_refill_s: float = 60.0
    # Failed logins per client address (any account): a larger burst for shared offices.
    login_address_burst: int = 100
    login_address_refill_s: float = 6.0
    # Buckets kept at most per kind (accounts, addresses); the oldest full ones go first.
    login_buckets_max: int = 10_000
    # Password hashes computed at once, and logins allowed to wait for one: the rest of the API
    # keeps its threads and (on a small machine) a core while someone guesses. One hash at a
    # time still serves several logins a second.
    hash_workers: int = 1
    hash_waiting_max: int = 32


class AlertActions(Protocol):
    """What the API asks of the alert stage: the engine itself in `landun run`
    (alerts.engine.AlertEngine), or actions through the store in `landun api`
    (api.actions.StoredActions). landun/ picks one."""

    profiles: dict[str, Profile]

    def site_limits(self, site_id: str) -> dict[str, Limit]: ...

    def forget_limits(self, site_id: str) -> None: ...

    def acknowledge(self, alert_id: int, actor: str, comment: str = "") -> Alert: ...

    def resolve(self, alert_id: int, actor: str, comment: str = "") -> Alert: ...

    def comment(self, alert_id: int, actor: str, comment: str) -> Alert: ...


class IngestCounters(Protocol):
    """What the API shows of ingest: ingest.metrics.IngestMetrics (all zeros in `landun api`,
    which runs no ingest)."""

    readings_stored: int
    dead_lettered: int

    def prometheus(self) -> str: ...


class ApiStore(
    ReadingStore,
    DeadLetterStore,
    AlertReader,
    NoticeStore,
    AccountStore,
    RegistryStore,
    TankStore,
    OperationsStore,
    Protocol,
):
    """The store as the API uses it: every role but the alert stage's writes and checkpoint
    (inspector actions reach alerts through `AlertActions`)."""


@dataclass
class AppContext:
    store: ApiStore
    registry: Registry
    catalogue: Catalogue
    engine: AlertActions
    metrics: IngestCounters
    broker_connected: Callable[[], bool] = field(default=lambda: True)
    session_hours: float = 12.0
    api_metrics: ApiMetrics | None = None  # set by create_app
    ledger: WasteLedger | None = None  # medical-waste bag ledger (api.routes_waste)
    lines: LineLedger | None = None  # disinfection lines' events (api.routes_lines)
    readings_before: int = 0  # readings stored by earlier runs (api.routes_ops)
    limits: ApiLimits = field(default_factory=ApiLimits)
    # The HJ 212 gateway, when this process runs one: its counters go to /metrics.
    hj212: object | None = None
    # Seconds since some fixed point; login throttling reads it (tests pass a fixed clock).
    clock: Callable[[], float] | None = None
    # Set when the process is asked to stop: live streams end so the server can shut down.
    stopping: threading.Event = field(default_factory=threading.Event)
    public_url: str | None = None  # base of public page links; None: the API's own address
    public: PublicState | None = None  # made on first use
    # Rung when alert changes are committed (store.bell): live streams wait on it; None: poll.
    bell: Bell | None = None
