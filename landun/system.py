"""Starts the stages together: broker (embedded or external), store, ingest, alerts, API, sims."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from alerts.channels.outbox import OutboxService
from alerts.channels.settings import ChannelSettings, build_outbox, load_channel_settings
from alerts.clock_skew import ClockSkewRule
from alerts.custody import CustodyRule
from alerts.cycles import CycleRule
from alerts.detector_rule import DetectorRule
from alerts.detectors.settings import load_detector_settings
from alerts.engine import AlertEngine
from alerts.escalation.escalator import Escalator
from alerts.notify_mqtt import MqttAlertPublisher
from alerts.notify_webhook import WebhookNotifier, WebhookTarget
from alerts.offline import OfflineRule
from alerts.standards import builtin_profiles
from alerts.tanks import TankRule, TankSettings
from api.app import create_app
from api.context import AppContext
from api.reports.mail import MailSettings, start_report_mailer
from domain.credentials import hash_secret
from domain.limits import limits_for_site
from domain.model import DeadLetter
from domain.mqtt_connection import BrokerAddress
from domain.params import Catalogue, default_catalogue
from domain.registry import Registry, load_registry
from domain.tableware import LineEvent
from domain.tanks import TankEvent
from domain.timeutil import now_ms
from domain.waste import WasteEvent
from ingest.hj212.gateway import Hj212Gateway
from ingest.hj212.sink import PipelineSink, RegistryLookup
from ingest.kinds import standard_decoders
from ingest.mqtt import MqttSubscriber, SubscriberSettings, default_client_id
from ingest.pipeline import IngestListener, IngestPipeline
from landun.broker import EmbeddedBroker
from landun.demo import (
    demo_anchor,
    demo_devices,
    demo_loggers,
    demo_registry_path,
    demo_settings,
    newest_sensor_time,
)
from landun.housekeeping import Housekeeper
from simulators.hj212_logger import Hj212LoggerRunner
from simulators.runner import SimulatorRunner
from store.base import Store
from store.factory import describe, open_ledger, open_line_ledger, open_store
from store.ledger import WasteLedger
from store.lines import LineLedger
from store.site_edits import apply_stored_edits
from store.tank_log import TankLog

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
    broker_url: str | None = None  # None (and no `broker`): start the embedded broker
    broker: BrokerAddress | None = None  # the full address (TLS, login); wins over broker_url
    broker_port: int = 1883  # embedded broker's port (0: any free port)
    data_dir: Path = Path("var")
    database_url: str | None = None  # postgresql://...; None: SQLite in data_dir
    registry_path: Path | None = None  # None: the demo registry
    simulators: bool = True
    sim_interval_s: int | None = None
    client_id: str | None = None  # None: landun-ingest-<host>-<worker>
    worker: int = 0
    shared_group: str | None = None
    hj212_port: int | None = None  # None: no HJ 212 gateway
    hj212_host: str = "127.0.0.1"
    webhooks: list[WebhookTarget] = field(default_factory=list)
    admin_password: str | None = None  # None: generate one on first start and print it
    tick_s: float = 5.0
    # Seconds open requests get to finish once a stop is asked for (live streams end at once).
    shutdown_grace_s: float = 2.0
    # base of the public status page links (扫码知卫生); None: LANDUN_PUBLIC_URL, else the API's
    public_url: str | None = None
    # SMTP for the scheduled reports (定期通报); None: LANDUN_SMTP_* or no mailing
    report_mail: MailSettings | None = None
    # notification channels (alerts/channels); None: channels.toml and the config dir's notify.toml
    channels: ChannelSettings | None = None


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
    lines: LineLedger | None = None  # disinfection lines' cycles and batches

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
        store: Store | None = None,
        ledger: WasteLedger | None = None,
        lines: LineLedger | None = None,
        tank_log: TankLog | None = None,
    ) -> Core:
        """Wire store, engine, rules and pipeline; `clock` lets a replay run on simulated time
        (landun/evaluate.py) through exactly the production wiring. An alert worker passes
        one partition's registry, store and ledger (alerts/feed.py) to get the same rules."""
        catalogue = default_catalogue()
        given = store is not None
        store = store if store is not None else open_store(db_path, database_url)
        if not given and os.environ.get("LANDUN_INFLUX_URL"):
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
        ledger = ledger or open_ledger(db_path, database_url)
        custody = CustodyRule(registry, ledger)
        skew = ClockSkewRule(registry, detectors.clock_skew)
        tank_log = tank_log or TankLog(store)
        tanks = TankRule(registry, tank_log, TankSettings.load())
        lines = lines or open_line_ledger(db_path, database_url)
        cycles = CycleRule(registry, lines)
        engine.rules += [offline, DetectorRule(registry, catalogue, detectors), custody, skew]
        engine.rules += [tanks, cycles]

        def on_events(events: Sequence) -> None:
            offline.observe(events)  # a bag scanner's events are its sign of life
            custody.on_events([e for e in events if isinstance(e, WasteEvent)], engine)
            tanks.on_events([e for e in events if isinstance(e, TankEvent)], engine)
            line_events = [e for e in events if isinstance(e, LineEvent)]
            if line_events:
                cycles.on_events(line_events, engine)

        def on_dead(dead: list[DeadLetter]) -> None:
            offline.dead_letters(dead)
            skew.dead_letters(dead, engine)

        decoders = standard_decoders(catalogue, waste=ledger, lines=lines, tanks=tank_log)
        listener = IngestListener(engine.on_readings, on_events, on_dead)
        pipeline = IngestPipeline(store, registry, decoders, listener=listener)
        return cls(
            registry_path, registry, catalogue, db_path, store, engine, pipeline, ledger,
            database_url, lines,
        )  # fmt: skip

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()
        self.ledger.close()
        self.store.close()


def dashboard_url(configured: str | None) -> str:
    """Where people's notices link to: the configured public address, else LANDUN_PUBLIC_URL."""
    return configured or os.environ.get("LANDUN_PUBLIC_URL", "")


def attach_escalation(engine: AlertEngine, outbox: OutboxService, url: str) -> Escalator:
    """Escalation on the engine's clock; the outbox's final word on each notice goes into the
    alert's audit trail."""
    escalator = Escalator.attach(engine, outbox, url)
    outbox.on_outcome = lambda notice, ok, _attempts, error: escalator.delivery_result(
        notice, ok, error
    )
    return escalator


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
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # not made yet on PostgreSQL
        # Created owner-only: never readable by others, not even for a moment.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(password + "\n")
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


class StartupError(Exception):
    """A part of Landun could not start; the message is one line saying what to do."""


def bind_api_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts: a busy port must stop the
    whole start-up before ingest connects with a client id another instance may be using."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot serve the API on {host}:{port} ({exc.strerror}); is another Landun"
            " running? Stop it, or choose another port with --port"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class System:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.api_port: int | None = None
        self.hj212_port: int | None = None
        self.broker_url: str | None = None
        self.core: Core | None = None
        self._server: uvicorn.Server | None = None
        self._stopping = threading.Event()
        self._api: AppContext | None = None
        self.outbox: OutboxService | None = None  # where notices to people are submitted

    def request_stop(self) -> None:
        self._stopping.set()
        if self._api is not None:
            self._api.stopping.set()  # live streams end instead of holding the server open
        if self._server is not None:
            self._server.should_exit = True

    async def run(self) -> None:
        """Start every part, in order, then serve until asked to stop. If a part cannot start,
        the parts already started are stopped in reverse order and StartupError is raised."""
        cfg = self.config
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        async with contextlib.AsyncExitStack() as stack:
            api_socket = bind_api_socket(cfg.host, cfg.port)
            stack.callback(api_socket.close)
            broker, embedded = await self._start_broker(stack)
            self.broker_url = broker.url  # never the login
            client_id = cfg.client_id or default_client_id(cfg.worker)
            core = self.core = Core.open(cfg)
            stack.callback(core.close)
            self.admin_note = ensure_admin(core.store, cfg.data_dir, cfg.admin_password)
            alerts_out = MqttAlertPublisher(broker, f"{client_id}-alerts")
            alerts_out.start()
            stack.callback(alerts_out.stop)
            core.engine.sinks.append(alerts_out)
            if cfg.webhooks:
                webhooks = WebhookNotifier(cfg.webhooks, core.store)
                webhooks.start()
                stack.push_async_callback(asyncio.to_thread, webhooks.stop)
                core.engine.sinks.append(webhooks)
            outbox = self.outbox = build_outbox(cfg.channels or load_channel_settings(), core.store)
            outbox.start()
            stack.push_async_callback(asyncio.to_thread, outbox.stop)
            attach_escalation(core.engine, outbox, dashboard_url(cfg.public_url))
            subscriber = MqttSubscriber(
                core.pipeline, broker, SubscriberSettings(client_id, cfg.shared_group)
            )
            await asyncio.to_thread(subscriber.start)
            stack.push_async_callback(asyncio.to_thread, subscriber.stop)
            clock = Clock(core.engine, cfg.tick_s)
            clock.start()
            stack.callback(clock.stop)
            housekeeper = Housekeeper.for_store(core.store, cfg.tick_s)
            housekeeper.start()
            stack.callback(housekeeper.stop)
            gateway = await self._start_hj212(stack, core)
            sims = False
            if cfg.simulators:
                sims = await self._start_simulators(stack, core, broker, f"{client_id}-simulators")
            ctx = AppContext(
                store=core.store,
                registry=core.registry,
                catalogue=core.catalogue,
                engine=core.engine,
                metrics=core.pipeline.metrics,
                broker_connected=lambda: subscriber.connected,
                ledger=core.ledger,
                lines=core.lines,
                hj212=gateway,
                public_url=cfg.public_url or os.environ.get("LANDUN_PUBLIC_URL"),
            )
            self._api = ctx
            mailer = start_report_mailer(ctx, cfg.report_mail or MailSettings.from_env())
            if mailer is not None:
                stack.push_async_callback(asyncio.to_thread, mailer.stop)
            self._server = _ApiServer(
                uvicorn.Config(
                    create_app(ctx),
                    log_level="warning",
                    # uvicorn passes it to asyncio.timeout, which takes a float; its annotation
                    # says int.
                    timeout_graceful_shutdown=cfg.shutdown_grace_s,  # type: ignore[arg-type]
                )
            )
            serve = asyncio.create_task(self._server.serve(sockets=[api_socket]))
            while not self._server.started and not serve.done():
                await asyncio.sleep(0.05)
            if not self._server.started:
                await serve
                raise StartupError(f"the API on {cfg.host}:{cfg.port} did not start")
            self.api_port = api_socket.getsockname()[1]
            self._announce(core, embedded, sims)
            self.ready.set()
            if self._stopping.is_set():
                self._server.should_exit = True
            with contextlib.suppress(SystemExit):
                await serve
        print("Landun stopped cleanly.", flush=True)

    async def _start_broker(self, stack: contextlib.AsyncExitStack) -> tuple[BrokerAddress, bool]:
        """The named broker, or the embedded one started; True if embedded."""
        cfg = self.config
        if cfg.broker is not None:
            return cfg.broker, False
        if cfg.broker_url is not None:
            return BrokerAddress.parse(cfg.broker_url), False
        embedded = EmbeddedBroker("127.0.0.1", cfg.broker_port)
        try:
            # amqtt logs a traceback of its own when its bind fails: find a busy port first.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((embedded.host, embedded.port))
            await embedded.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await embedded.stop()
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise StartupError(
                f"cannot start the embedded MQTT broker on {embedded.host}:{embedded.port}"
                f" ({reason}); is another broker running? Use it with --broker"
                " mqtt://HOST:PORT, or let Landun pick a free port with --broker-port 0"
            ) from None
        stack.push_async_callback(embedded.stop)
        return BrokerAddress.parse(embedded.url), True

    async def _start_hj212(
        self, stack: contextlib.AsyncExitStack, core: Core
    ) -> Hj212Gateway | None:
        """The HJ 212 gateway when a port was given, or on a free loopback port when the demo
        simulates HJ 212 loggers."""
        cfg = self.config
        port = cfg.hj212_port
        if port is None and cfg.simulators and any(d.mn for d in core.registry.devices.values()):
            port = 0
        if port is None:
            return None
        gateway = Hj212Gateway(RegistryLookup(core.registry), PipelineSink(core.pipeline))
        try:
            self.hj212_port = await gateway.start(cfg.hj212_host, port)
        except OSError as exc:
            raise StartupError(
                f"cannot serve HJ 212 on {cfg.hj212_host}:{port} ({exc.strerror});"
                " choose another port with --hj212-port"
            ) from None
        stack.push_async_callback(gateway.stop)
        return gateway

    async def _start_simulators(
        self, stack: contextlib.AsyncExitStack, core: Core, broker: BrokerAddress, client_id: str
    ) -> bool:
        """The demo's simulated devices, continuing the data the store already holds."""
        cfg = self.config
        now = now_ms()
        anchor = demo_anchor(cfg.data_dir, now)
        devices = demo_devices(core.registry, anchor)
        loggers = demo_loggers(core.registry, anchor)
        ids = [d.device_id for d in devices] + [d.device_id for d in loggers]
        newest = await asyncio.to_thread(newest_sensor_time, core.store, ids)
        settings = demo_settings(anchor, now, newest, cfg.sim_interval_s or 60)
        sims = SimulatorRunner(broker, devices, settings, client_id=client_id)
        await asyncio.to_thread(sims.start)
        stack.push_async_callback(asyncio.to_thread, sims.stop)
        if loggers and self.hj212_port is not None:
            tcp = Hj212LoggerRunner(
                "127.0.0.1",
                self.hj212_port,
                loggers,
                settings,
                mn_of={d.device_id: core.registry.devices[d.device_id].mn or "" for d in loggers},
            )
            tcp.start()
            stack.push_async_callback(asyncio.to_thread, tcp.stop)
        return True

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
    housekeeper = Housekeeper.for_store(core.store, cfg.tick_s)
    housekeeper.start()
    gateway = Hj212Gateway(RegistryLookup(core.registry), PipelineSink(core.pipeline))
    port = await gateway.start(cfg.hj212_host, cfg.hj212_port or 0)
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    local = cfg.hj212_host in ("127.0.0.1", "::1", "localhost")
    reach = "this machine only" if local else "the network"
    print(
        f"HJ 212 gateway listening on {cfg.hj212_host}:{port} ({reach});"
        f" database {describe(core.db_path, core.database_url)}",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        housekeeper.stop()
        clock.stop()
        core.close()
