"""What the API needs from the rest of the system, handed over at startup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from alerts.engine import AlertEngine
from domain.params import Catalogue
from domain.registry import Registry
from ingest.metrics import IngestMetrics
from store.base import Store
from store.ledger import WasteLedger


@dataclass
class AppContext:
    store: Store
    registry: Registry
    catalogue: Catalogue
    engine: AlertEngine
    metrics: IngestMetrics
    broker_connected: Callable[[], bool] = field(default=lambda: True)
    session_hours: float = 12.0
    api_metrics: object = None  # api.routes_ops.ApiMetrics, set by create_app
    ledger: WasteLedger | None = None  # medical-waste bag ledger (api.routes_waste)
    public_url: str | None = None  # base of public page links; None: the API's own address
    public: object = None  # api.routes_public.PublicState, made on first use
