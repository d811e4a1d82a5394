"""Starts the stages together: broker (embedded or external), store, ingest, alerts, API, sims."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from alerts.clock_skew import ClockSkewRule
from alerts.custody import CustodyRule
from alerts.detector_rule import DetectorRule
from alerts.detectors.settings import load_detector_settings
from alerts.engine import AlertEngine
from alerts.notify_mqtt import MqttAlertPublisher
from alerts.notify_webhook import WebhookNotifier, WebhookTarget
from alerts.offline import OfflineRule
from alerts.standards import builtin_profiles, limits_for_site
from api.app import create_app
from api.context import AppContext
from api.routes_sites import apply_stored_edits
from domain.credentials import hash_secret
from domain.params import Catalogue, default_catalogue
from domain.registry import Registry, load_registry
from domain.timeutil import now_ms
from ingest.hj212.gateway import Hj212Gateway
from ingest.hj212.sink import PipelineSink, RegistryLookup
from ingest.mqtt import BrokerAddress, MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestPipeline
from landun.broker import EmbeddedBroker
from landun.demo import BACKFILL_MS, demo_devices, demo_registry_path
from simulators.runner import RunnerSettings, SimulatorRunner
from store.base import Store
from store.factory import describe, open_ledger, open_store
from store.ledger import WasteLedger

log = logging.getLogger("landun")


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: System handles SIGINT/SIGTERM so that every stage
    shuts down in order (uvicorn would re-raise SIGTERM and kill the process half-way)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    broker_url: str | None = None  # None: start the embedded broker
    broker_port: int = 1883  # embedded broker's port (0: any free port)
    data_dir: Path = Path("var")
    database_url: str | None = None  # postgresql://...; None: SQLite in data_dir
    registry_path: Path | None = None  # None: the demo registry
    simulators: bool = True
    sim_interval_s: int | None = None
    client_id: str = "landun-ingest"
    shared_group: str | None = None
    hj212_port: int | None = None  # None: no HJ 212 gateway
    hj212_host: str = "127.0.0.1"
    webhooks: list[WebhookTarget] = field(default_factory=list)
    admin_password: str | None = None  # None: generate one on first start and print it
    tick_s: float = 5.0


@dataclass
class Core:
    """What every process mode shares: registry, store, alert engine, ingest pipeline."""

    registry_path: Path | None
    registry: Registry
    catalogue: Catalogue
    db_path: Path
    store: Store
    engine: AlertEngine
    pipeline: IngestPipeline
    ledger: WasteLedger
    database_url: str | None = None

    @classmethod
    def open(cls, cfg: RunConfig) -> Core:
        """The configured registry and store, on the wall clock."""
        registry_path = cfg.registry_path or demo_registry_path()
        return cls.build(
            load_registry(registry_path),
            cfg.data_dir / "landun.db",
            registry_path,
            database_url=cfg.database_url,
        )

    @classmethod
    def build(
        cls,
        registry: Registry,
        db_path: Path,
        registry_path: Path | None = None,
        clock: Callable[[], int] = now_ms,
        database_url: str | None = None,
    ) -> Core:
        """Wire store, engine, rules and pipeline; `clock` lets a replay run on simulated time
        (simulators/evaluate.py) through exactly the production wiring."""
        catalogue = default_catalogue()
        store = open_store(db_path, database_url)
        if os.environ.get("LANDUN_INFLUX_URL"):
            # Readings in InfluxDB, everything else in SQLite; influxdb-client loads only if used.
            try:
                from store.influx import InfluxStore
            except ImportError as exc:
                store.close()
                raise SystemExit(
                    f"LANDUN_INFLUX_URL is set but InfluxDB support is not installed ({exc});"
                    " pip install 'landun[influx]'"
                ) from exc
            try:
                store = InfluxStore.from_env(store, registry, catalogue)
                store.ensure_bucket(int(os.environ.get("LANDUN_INFLUX_RETENTION_DAYS", "0")))
            except BaseException:
                store.close()  # the SqliteStore, or the InfluxStore with it
                raise
        apply_stored_edits(store, registry)
        profiles = builtin_profiles()
        for site in registry.sites.values():
            limits_for_site(site, profiles)  # a bad profile or override fails here, not later
        engine = AlertEngine(store, registry, profiles, catalogue, clock=clock)
        detectors = load_detector_settings()
        offline = OfflineRule(registry, detectors.offline, store.last_seen(), clock())
        ledger = open_ledger(db_path, database_url)
        custody = CustodyRule(registry, ledger)
        skew = ClockSkewRule(registry, detectors.clock_skew)
        engine.rules += [offline, DetectorRule(registry, catalogue, detectors), custody, skew]

        def on_events(events: list) -> None:
            offline.observe(events)  # a bag scanner's events are its sign of life
            custody.on_events(events, engine)

        pipeline = IngestPipeline(
            store,
            registry,
            catalogue,
            on_stored=engine.on_readings,
            ledger=ledger,
            on_events=on_events,
            on_dead=lambda dead: skew.dead_letters(dead, engine),
        )
        return cls(
            registry_path, registry, catalogue, db_path, store, engine, pipeline, ledger,
            database_url,
        )  # fmt: skip

    def close(self) -> None:
        self.ledger.close()
        self.store.close()


def ensure_admin(store: Store, data_dir: Path, password: str | None) -> str:
    """Make sure an admin exists; on first start with no password given, generate one, keep it
    in `<data-dir>/admin-password.txt` (mode 0600) and say so."""
    path = data_dir / "admin-password.txt"
    if password is not None:
        store.add_user("admin", hash_secret(password), "admin", ())
        return "admin / the configured password"
    if store.get_user("admin") is None:
        password = secrets.token_urlsafe(12)
        store.add_user("admin", hash_secret(password), "admin", ())
        data_dir.mkdir(parents=True, exist_ok=True)  # with PostgreSQL, nothing else made it
        path.write_text(password + "\n")
        path.chmod(0o600)
    if path.exists():
        return f"admin / {path.read_text().strip()}  (from {path})"
    return "admin / the password set with `landun users add`"


class Clock:
    """Runs the engine's time-driven rules every `tick_s` seconds on its own thread."""

    def __init__(self, engine: AlertEngine, tick_s: float) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landun-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.engine.tick()
            except Exception:
                log.exception("clock tick failed")


class System:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.api_port: int | None = None
        self.hj212_port: int | None = None
        self.broker_url: str | None = None
        self.core: Core | None = None
        self._server: uvicorn.Server | None = None

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def run(self) -> None:
        cfg = self.config
        embedded = None
        if cfg.broker_url is None:
            embedded = EmbeddedBroker("127.0.0.1", cfg.broker_port)
            await embedded.start()
            self.broker_url = embedded.url
        else:
            self.broker_url = cfg.broker_url
        broker = BrokerAddress.parse(self.broker_url)

        core = self.core = Core.open(cfg)
        self.admin_note = ensure_admin(core.store, cfg.data_dir, cfg.admin_password)
        alerts_out = MqttAlertPublisher(
            broker.host, broker.port, broker.username, broker.password, f"{cfg.client_id}-alerts"
        )
        alerts_out.start()
        core.engine.sinks.append(alerts_out)
        webhooks = None
        if cfg.webhooks:
            webhooks = WebhookNotifier(cfg.webhooks, core.store)
            webhooks.start()
            core.engine.sinks.append(webhooks)
        subscriber = MqttSubscriber(
            core.pipeline, broker, SubscriberSettings(cfg.client_id, cfg.shared_group)
        )
        await asyncio.to_thread(subscriber.start)
        clock = Clock(core.engine, cfg.tick_s)
        clock.start()
        gateway = None
        if cfg.hj212_port is not None:
            gateway = Hj212Gateway(RegistryLookup(core.registry), PipelineSink(core.pipeline))
            self.hj212_port = await gateway.start(cfg.hj212_host, cfg.hj212_port)

        sims = None
        if cfg.simulators:
            now = now_ms()
            settings = RunnerSettings(
                interval_s=cfg.sim_interval_s or 60,
                start_ms=now - BACKFILL_MS,
                backfill_until_ms=now,
            )
            sims = SimulatorRunner(broker, demo_devices(core.registry, now), settings)
            await asyncio.to_thread(sims.start)

        ctx = AppContext(
            store=core.store,
            registry=core.registry,
            catalogue=core.catalogue,
            engine=core.engine,
            metrics=core.pipeline.metrics,
            broker_connected=lambda: subscriber.connected,
            ledger=core.ledger,
        )
        self._server = _ApiServer(
            uvicorn.Config(create_app(ctx), host=cfg.host, port=cfg.port, log_level="warning")
        )
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        serve = asyncio.create_task(self._server.serve())
        while not self._server.started and not serve.done():
            await asyncio.sleep(0.05)
        if self._server.started:
            self.api_port = self._server.servers[0].sockets[0].getsockname()[1]
            self._announce(core, embedded is not None, sims is not None)
            self.ready.set()
        else:
            print(f"Landun could not serve the API on {cfg.host}:{cfg.port}.", flush=True)
        try:
            with contextlib.suppress(SystemExit):
                await serve
        finally:
            if sims is not None:
                await asyncio.to_thread(sims.stop)
            if gateway is not None:
                await gateway.stop()
            await asyncio.to_thread(subscriber.stop)
            clock.stop()
            if webhooks is not None:
                await asyncio.to_thread(webhooks.stop)
            alerts_out.stop()
            core.close()
            if embedded is not None:
                await embedded.stop()
            print("Landun stopped cleanly.", flush=True)

    def _announce(self, core: Core, embedded: bool, sims: bool) -> None:
        cfg = self.config
        lines = [
            "Landun is running.",
            f"  API and docs: http://{cfg.host}:{self.api_port}/docs",
            f"  MQTT broker:  {self.broker_url}{' (embedded)' if embedded else ''}",
        ]
        if self.hj212_port is not None:
            lines.append(f"  HJ 212 (TCP): {cfg.hj212_host}:{self.hj212_port}")
        lines += [
            f"  Database:     {describe(core.db_path, core.database_url)}",
            f"  Registry:     {core.registry_path}",
            f"  Simulators:   {'on' if sims else 'off'}",
            f"  Log in:       {self.admin_note}",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)


async def run_hj212_gateway(cfg: RunConfig, ready: threading.Event | None = None) -> None:
    """A standalone HJ 212 gateway feeding the store and alert engine directly (no broker)."""
    core = Core.open(cfg)
    clock = Clock(core.engine, cfg.tick_s)
    clock.start()
    gateway = Hj212Gateway(RegistryLookup(core.registry), PipelineSink(core.pipeline))
    port = await gateway.start(cfg.hj212_host, cfg.hj212_port or 0)
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"HJ 212 gateway listening on {cfg.hj212_host}:{port};"
        f" database {describe(core.db_path, core.database_url)}",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        clock.stop()
        core.close()
