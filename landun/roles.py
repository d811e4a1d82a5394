"""The separate roles of a production deployment, each its own process over one PostgreSQL
database: `landun ingest` (any number, on one shared subscription), `landun alerts` (any number,
partitions by lease) and `landun api` (any number). They meet only through the store: ingest
commits readings and the feed entry of each batch; the alert workers follow the feed; the API
records inspector actions for the workers to apply (alerts/feed.py, store/feed.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from alerts.channels.settings import build_outbox, load_channel_settings
from alerts.feed import AlertWorker, PartitionRules
from alerts.notify_mqtt import MqttAlertPublisher
from alerts.notify_webhook import WebhookNotifier, WebhookTarget
from alerts.standards import builtin_profiles
from api.actions import StoredActions
from api.app import create_app
from api.context import AppContext
from domain.mqtt_connection import BrokerAddress
from domain.params import default_catalogue
from domain.registry import Registry, load_registry
from ingest.hj212.gateway import Hj212Gateway
from ingest.hj212.sink import PipelineSink, RegistryLookup
from ingest.kinds import standard_decoders
from ingest.metrics import IngestMetrics, render_prometheus
from ingest.mqtt import MqttSubscriber, SubscriberSettings, default_client_id
from ingest.pipeline import IngestPipeline
from landun.demo import demo_registry_path
from landun.housekeeping import Housekeeper
from landun.registry_reload import RegistryReload
from landun.system import (
    Core,
    StartupError,
    _ApiServer,
    attach_escalation,
    bind_api_socket,
    dashboard_url,
    ensure_admin,
)
from store.bell import Bell
from store.factory import describe, open_ledger, open_line_ledger, open_store
from store.feed import load_feed_settings
from store.lines import PostgresLineLedger
from store.site_edits import apply_stored_edits
from store.tank_log import PostgresTankLog, TankLog

if TYPE_CHECKING:
    from store.postgres.store import PostgresStore

log = logging.getLogger("landun.roles")

SHARED_GROUP = "landun-ingest"


@dataclass
class RoleConfig:
    database_url: str
    broker: BrokerAddress | None = None
    registry_path: Path | None = None
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"  # the API's, or the /metrics endpoint's of ingest and alerts
    port: int | None = None  # None: ingest and alerts serve no /metrics
    worker: int = 0
    client_id: str | None = None
    shared_group: str = SHARED_GROUP
    hj212_port: int | None = None
    hj212_host: str = "127.0.0.1"
    webhooks: list[WebhookTarget] = field(default_factory=list)
    tick_s: float = 5.0
    admin_password: str | None = None


def _needs_postgres(cfg: RoleConfig, role: str) -> None:
    if not cfg.database_url:
        raise StartupError(
            f"{role} runs beside other processes and needs PostgreSQL: give --database"
            " postgresql://... (or LANDUN_DATABASE_URL); for one process on SQLite use landun run"
        )


def _open_postgres(cfg: RoleConfig) -> PostgresStore:
    """The store of a role that runs beside others (_needs_postgres checked its URL)."""
    from store.postgres.store import PostgresStore  # psycopg loads only for these roles

    store = open_store(cfg.data_dir / "landun.db", cfg.database_url)
    assert isinstance(store, PostgresStore)
    return store


def _registry(cfg: RoleConfig, store) -> Registry:
    registry = load_registry(cfg.registry_path or demo_registry_path())
    apply_stored_edits(store, registry)
    return registry


def _watch_registry(
    stack: contextlib.AsyncExitStack, cfg: RoleConfig, store, use: Callable[[Registry], None]
) -> None:
    """Reload the registry whenever any process saves an edit of it (landun.registry_reload)."""
    watch = store.watch_registry(RegistryReload(lambda: _registry(cfg, store), use))
    watch.start()
    stack.callback(watch.stop)


async def _until_stopped(
    app: FastAPI | None,
    host: str,
    port: int | None,
    announce: str,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve `app` (when a port is given) and wait for SIGINT/SIGTERM; then `on_stop`."""
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    server = serve = None
    if app is not None and port is not None:
        sock = bind_api_socket(host, port)
        server = _ApiServer(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serve.done():
            await asyncio.sleep(0.05)
        if not server.started:
            await serve
            raise StartupError(f"cannot serve on {host}:{port}")
        announce += f"\n  HTTP:         http://{host}:{sock.getsockname()[1]}"
    print(announce, flush=True)
    await stop.wait()
    on_stop()
    if server is not None and serve is not None:
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await serve


def _metrics_app(render: Callable[[], str], healthy: Callable[[], bool]) -> FastAPI:
    """/metrics and /healthz of a role without the API."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return render()

    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        ok = healthy()
        return PlainTextResponse("ok" if ok else "unhealthy", status_code=200 if ok else 503)

    return app


# -- landun ingest --------------------------------------------------------------------------------


async def run_ingest(cfg: RoleConfig) -> None:
    _needs_postgres(cfg, "ingest")
    if cfg.broker is None and cfg.hj212_port is None:
        raise StartupError("landun ingest needs --broker mqtt://... (or --hj212-port)")
    settings = load_feed_settings()
    async with contextlib.AsyncExitStack() as stack:
        store = _open_postgres(cfg)
        stack.callback(store.close)
        ledger = open_ledger(cfg.data_dir / "landun.db", cfg.database_url)
        stack.callback(ledger.close)
        line_ledger = open_line_ledger(cfg.data_dir / "landun.db", cfg.database_url)
        stack.callback(line_ledger.close)
        registry = _registry(cfg, store)
        store.enable_feed(settings.partitions, {d.id: d.site_id for d in registry.devices.values()})
        # Every kind of event enters the feed in the transaction that records it.
        from store.postgres.ledger import PostgresLedger  # psycopg loads only for these roles

        assert isinstance(ledger, PostgresLedger) and isinstance(line_ledger, PostgresLineLedger)
        ledger.enable_feed(settings.partitions)
        line_ledger.enable_feed(settings.partitions)
        tanks = PostgresTankLog(store, settings.partitions)
        decoders = standard_decoders(
            default_catalogue(), waste=ledger, lines=line_ledger, tanks=tanks
        )
        pipeline = IngestPipeline(store, registry, decoders)
        stack.callback(pipeline.stop)
        lookup = RegistryLookup(registry)

        def use(fresh: Registry) -> None:
            sites = {d.id: d.site_id for d in fresh.devices.values()}
            store.enable_feed(settings.partitions, sites)
            pipeline.registry = lookup.registry = fresh

        # A device added through an api is taken from its first message, without a restart.
        _watch_registry(stack, cfg, store, use)
        subscriber = None
        if cfg.broker is not None:
            client_id = cfg.client_id or default_client_id(cfg.worker)
            subscriber = MqttSubscriber(
                pipeline, cfg.broker, SubscriberSettings(client_id, cfg.shared_group)
            )
            await asyncio.to_thread(subscriber.start)
            stack.push_async_callback(asyncio.to_thread, subscriber.stop)
        lines = [
            "Landun ingest is running.",
            f"  MQTT broker:  {cfg.broker.url if cfg.broker else 'none'}",
            f"  Database:     {describe(Path(), cfg.database_url)}",
        ]
        if cfg.hj212_port is not None:
            gateway = Hj212Gateway(lookup, PipelineSink(pipeline))
            port = await gateway.start(cfg.hj212_host, cfg.hj212_port)
            stack.push_async_callback(gateway.stop)
            lines.append(f"  HJ 212 (TCP): {cfg.hj212_host}:{port}")
        app = _metrics_app(
            lambda: render_prometheus(pipeline.metrics),
            lambda: subscriber is None or subscriber.connected,
        )
        await _until_stopped(app, cfg.host, cfg.port, "\n".join(lines), pipeline.stop)
    print("Landun ingest stopped cleanly.", flush=True)


# -- landun alerts --------------------------------------------------------------------------------


async def run_alerts(cfg: RoleConfig) -> None:
    _needs_postgres(cfg, "alerts")
    settings = load_feed_settings()
    db_path = cfg.data_dir / "landun.db"
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(db_path, cfg.database_url)
        stack.callback(store.close)
        ledger = open_ledger(db_path, cfg.database_url)
        stack.callback(ledger.close)
        registry_path = cfg.registry_path or demo_registry_path()

        lines = open_line_ledger(db_path, cfg.database_url)  # one for all partitions
        stack.callback(lines.close)
        tank_log = TankLog(store)  # the whole register: a partition's rule judges its own sites
        outbox = build_outbox(load_channel_settings(), store)
        outbox.start()
        stack.push_async_callback(asyncio.to_thread, outbox.stop)
        url = dashboard_url(None)

        def build(registry: Registry, part_store, part_ledger) -> PartitionRules:
            core = Core.build(
                registry, db_path, registry_path, store=part_store, ledger=part_ledger,
                lines=lines, tank_log=tank_log,
            )  # fmt: skip
            # Each level is claimed in the store, so partitions and workers never send one twice.
            attach_escalation(core.engine, outbox, url)
            hear = core.pipeline.listener
            assert hear is not None  # Core.build's pipeline tells its engine
            return PartitionRules(core.engine, hear.stored, hear.events, hear.dead)

        sinks: list = []
        if cfg.broker is not None:
            ingest_id = default_client_id(cfg.worker)
            client_id = cfg.client_id or ingest_id.replace("landun-ingest", "landun-alerts", 1)
            publisher = MqttAlertPublisher(cfg.broker, client_id)
            publisher.start()
            stack.callback(publisher.stop)
            sinks.append(publisher)
        if cfg.webhooks:
            webhooks = WebhookNotifier(cfg.webhooks, store)
            webhooks.start()
            stack.push_async_callback(asyncio.to_thread, webhooks.stop)
            sinks.append(webhooks)
        worker = AlertWorker(
            store, ledger, lambda: _registry(cfg, store), build, settings, sinks, cfg.tick_s,
        )  # fmt: skip
        worker.start()
        stack.push_async_callback(asyncio.to_thread, worker.stop)
        # Retention runs here, on a thread of its own: a readings run can take minutes.
        housekeeper = Housekeeper.for_store(store, cfg.tick_s)
        housekeeper.start()
        stack.callback(housekeeper.stop)
        app = _metrics_app(lambda: _worker_metrics(worker), lambda: True)
        announce = (
            f"Landun alerts is running ({settings.partitions} partitions).\n"
            f"  Database:     {describe(Path(), cfg.database_url)}"
        )
        await _until_stopped(app, cfg.host, cfg.port, announce)
    print("Landun alerts stopped cleanly.", flush=True)


def _worker_metrics(worker: AlertWorker) -> str:
    m = worker.metrics
    prefix = "landun_alerts"
    lines = []
    for name, kind, help_text, value in (
        ("feed_entries_total", "counter", "Feed entries evaluated.", m.entries),
        ("readings_total", "counter", "Readings evaluated.", m.readings),
        ("commits_total", "counter", "Transactions of alert changes and cursor.", m.commits),
        ("takeovers_total", "counter", "Partitions taken.", m.takeovers),
        ("dropped_total", "counter", "Partitions left or lost.", m.dropped),
        ("actions_total", "counter", "Inspector actions applied.", m.actions),
        ("poison_total", "counter", "Feed entries set aside as dead letters.", m.poison),
        ("partitions_held", "gauge", "Partitions this worker holds.", len(m.partitions)),
        ("lag_seconds", "gauge", "Receive to evaluation, newest entry.", m.lag_ms_last / 1000),
    ):
        lines += [
            f"# HELP {prefix}_{name} {help_text}",
            f"# TYPE {prefix}_{name} {kind}",
            f"{prefix}_{name} {value}",
        ]
    return "\n".join(lines) + "\n"


# -- landun api -----------------------------------------------------------------------------------


async def run_api(cfg: RoleConfig) -> None:
    _needs_postgres(cfg, "api")
    settings = load_feed_settings()
    db_path = cfg.data_dir / "landun.db"
    async with contextlib.AsyncExitStack() as stack:
        store = _open_postgres(cfg)
        stack.callback(store.close)
        ledger = open_ledger(db_path, cfg.database_url)
        stack.callback(ledger.close)
        registry = _registry(cfg, store)
        store.feed_partitions(settings.partitions)
        admin = ensure_admin(store, cfg.data_dir, cfg.admin_password)
        actions = StoredActions(store, registry, builtin_profiles(), settings.partitions)
        bell = Bell()
        ctx = AppContext(
            store=store,
            registry=registry,
            catalogue=default_catalogue(),
            engine=actions,
            metrics=IngestMetrics(),
            ledger=ledger,
            public_url=os.environ.get("LANDUN_PUBLIC_URL"),
            bell=bell,
        )
        listener = store.listen(bell)
        listener.start()
        stack.callback(listener.stop)

        def use(fresh: Registry) -> None:
            ctx.registry = fresh
            actions.use_registry(fresh)

        # Site and device edits made through any api reach this one's registry.
        _watch_registry(stack, cfg, store, use)
        announce = f"Landun api is running.\n  Log in:       {admin}"

        def stopping() -> None:
            ctx.stopping.set()  # live streams end instead of holding the server open
            bell.ring()

        await _until_stopped(create_app(ctx), cfg.host, cfg.port, announce, stopping)
    print("Landun api stopped cleanly.", flush=True)
