"""Starts the stages together: broker (embedded or external), store, ingest, alerts, API, sims."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from alerts.engine import AlertEngine
from alerts.standards import builtin_profiles
from api.app import AppContext, create_app
from domain.params import default_catalogue
from domain.registry import load_registry
from domain.timeutil import now_ms
from ingest.mqtt import BrokerAddress, MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestPipeline
from landun.broker import EmbeddedBroker
from landun.demo import BACKFILL_MS, demo_devices, demo_registry_path
from simulators.runner import RunnerSettings, SimulatorRunner
from store.sqlite import SqliteStore

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
    registry_path: Path | None = None  # None: the demo registry
    simulators: bool = True
    sim_interval_s: int | None = None
    client_id: str = "landun-ingest"
    shared_group: str | None = None
    tick_s: float = 5.0
    extra: dict = field(default_factory=dict)


class System:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.api_port: int | None = None
        self.broker_url: str | None = None
        self._server: uvicorn.Server | None = None
        self._stop_clock = threading.Event()

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

        registry_path = cfg.registry_path or demo_registry_path()
        registry = load_registry(registry_path)
        catalogue = default_catalogue()
        db_path = cfg.data_dir / "landun.db"
        store = SqliteStore(db_path)
        engine = AlertEngine(store, registry, builtin_profiles(), catalogue)
        pipeline = IngestPipeline(store, registry, catalogue, on_stored=engine.on_readings)
        subscriber = MqttSubscriber(
            pipeline, broker, SubscriberSettings(cfg.client_id, cfg.shared_group)
        )
        await asyncio.to_thread(subscriber.start)
        clock = threading.Thread(target=self._clock, args=(engine,), daemon=True)
        clock.start()

        sims = None
        if cfg.simulators:
            now = now_ms()
            settings = RunnerSettings(
                interval_s=cfg.sim_interval_s or 60,
                start_ms=now - BACKFILL_MS,
                backfill_until_ms=now,
            )
            sims = SimulatorRunner(broker, demo_devices(registry, now), settings)
            await asyncio.to_thread(sims.start)

        ctx = AppContext(
            store=store,
            registry=registry,
            catalogue=catalogue,
            engine=engine,
            metrics=pipeline.metrics,
            broker_connected=lambda: subscriber.connected,
        )
        app = create_app(ctx)
        uv_config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning")
        self._server = _ApiServer(uv_config)
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        serve = asyncio.create_task(self._server.serve())
        while not self._server.started and not serve.done():
            await asyncio.sleep(0.05)
        if self._server.started:
            self.api_port = self._server.servers[0].sockets[0].getsockname()[1]
            print(
                f"Landun is running.\n"
                f"  API and docs: http://{cfg.host}:{self.api_port}/docs\n"
                f"  MQTT broker:  {self.broker_url}"
                f"{' (embedded)' if embedded else ''}\n"
                f"  Database:     {db_path.resolve()}\n"
                f"  Registry:     {registry_path}\n"
                f"  Simulators:   {'on' if sims else 'off'}\n"
                f"Press Ctrl-C to stop.",
                flush=True,
            )
            self.ready.set()
        else:
            print(f"Landun could not serve the API on {cfg.host}:{cfg.port}.", flush=True)
        try:
            with contextlib.suppress(SystemExit):
                await serve
        finally:
            if sims is not None:
                await asyncio.to_thread(sims.stop)
            self._stop_clock.set()
            await asyncio.to_thread(subscriber.stop)
            clock.join(timeout=10)
            store.close()
            if embedded is not None:
                await embedded.stop()
            print("Landun stopped cleanly.", flush=True)

    def _clock(self, engine: AlertEngine) -> None:
        while not self._stop_clock.wait(self.config.tick_s):
            try:
                engine.tick()
            except Exception:
                log.exception("clock tick failed")
