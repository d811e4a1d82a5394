"""Operations and identity: health, readiness, Prometheus metrics, dead letters, login."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import REGISTRY, generate_latest

from api.auth import Caller, Ctx, issue_token, require_role, scoped_site_ids
from api.schemas import (
    DeadLetterOut,
    DeadLettersOut,
    Health,
    LoginIn,
    MeOut,
    ReadyOut,
    TokenOut,
    error_responses,
)
from api.throttle import Busy, LoginGuard
from domain.credentials import verify_secret
from domain.timeutil import ms_to_iso
from store.base import AlertQuery

router = APIRouter()
log = logging.getLogger("landun.api")

READINGS_COUNTER = "readings_stored"  # the store's counter of /healthz's readings_stored
COUNT_SAVE_S = 30.0

LOGIN_PATH = "/api/v1/auth/login"
# Counters of the HJ 212 gateway (plain attributes of ingest.hj212.gateway.Hj212Gateway).
HJ212_COUNTERS = (
    "connections_total",
    "connections_rejected",
    "idle_timeouts",
    "bytes_received",
    "packets_ok",
    "packets_dead_lettered",
    "heartbeats",
    "replies_sent",
    "sink_errors",
)
HJ212_GAUGES = ("connections_open",)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    """Request counts and a latency histogram per route template."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
        self.sums: dict[str, float] = defaultdict(float)
        self.totals: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.counts[(method, route, status)] += 1
        key = f"{method} {route}"
        self.sums[key] += seconds
        self.totals[key] += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[key][i] += 1

    def render(self) -> str:
        lines = [
            "# HELP landun_api_requests_total API requests by route and status.",
            "# TYPE landun_api_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.counts.items()):
            lines.append(
                f'landun_api_requests_total{{method="{method}",route="{route}",'
                f'status="{status}"}} {n}'
            )
        lines += [
            "# HELP landun_api_request_seconds API request latency.",
            "# TYPE landun_api_request_seconds histogram",
        ]
        for key, counts in sorted(self.buckets.items()):
            method, route = key.split(" ", 1)
            label = f'method="{method}",route="{route}"'
            for bound, n in zip(LATENCY_BUCKETS, counts, strict=True):
                lines.append(f'landun_api_request_seconds_bucket{{{label},le="{bound}"}} {n}')
            lines.append(
                f'landun_api_request_seconds_bucket{{{label},le="+Inf"}} {self.totals[key]}'
            )
            lines.append(f"landun_api_request_seconds_sum{{{label}}} {self.sums[key]:.6f}")
            lines.append(f"landun_api_request_seconds_count{{{label}}} {self.totals[key]}")
        return "\n".join(lines) + "\n"


@router.get("/healthz", response_model=Health, tags=["operations"])
def healthz(ctx: Ctx) -> Health:
    """The process is up (no authentication, for load balancers). `readings_stored` counts
    across restarts (this process's ingest plus the count saved by earlier runs)."""
    return Health(
        status="ok",
        broker_connected=ctx.broker_connected(),
        readings_stored=ctx.readings_before + ctx.metrics.readings_stored,
        dead_lettered=ctx.metrics.dead_lettered,
    )


def _saved_count(ctx: Ctx) -> int:
    return ctx.store.counter(READINGS_COUNTER)


def _save_count(ctx: Ctx) -> None:
    total = ctx.readings_before + ctx.metrics.readings_stored
    ctx.store.save_counter(READINGS_COUNTER, total)


def keep_readings_count(app: FastAPI, ctx: Ctx) -> None:
    """/healthz counts readings across restarts: the count saved in the store by the previous
    run, plus what this process's ingest has stored; saved every COUNT_SAVE_S and at shutdown
    (a process killed hard loses at most that much of the count, never a reading)."""
    inner = app.router.lifespan_context

    async def save_often() -> None:
        while True:
            await asyncio.sleep(COUNT_SAVE_S)
            try:
                await asyncio.to_thread(_save_count, ctx)
            except Exception:
                log.warning("could not save the readings count; trying again later", exc_info=True)

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Mapping[str, Any] | None]:
        ctx.readings_before = await asyncio.to_thread(_saved_count, ctx)
        saver = asyncio.create_task(save_often())
        try:
            async with inner(a) as state:
                yield state
        finally:
            saver.cancel()
            try:
                await asyncio.to_thread(_save_count, ctx)
            except Exception:
                log.warning("could not save the readings count at shutdown", exc_info=True)

    # Starlette types a lifespan as yielding None or a mapping; this one passes the wrapped
    # lifespan's state through, whichever it is.
    app.router.lifespan_context = lifespan  # type: ignore[assignment]


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready; `problems` says why"}},
)
def readyz(ctx: Ctx) -> JSONResponse:
    """Ready to serve: the store answers and ingest is connected to the broker."""
    problems = []
    try:
        ctx.store.last_audit_id()
    except Exception as exc:
        problems.append(f"store: {exc}")
    if not ctx.broker_connected():
        problems.append("ingest is not connected to the MQTT broker")
    body = {"status": "ready" if not problems else "not ready", "problems": problems}
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
def metrics(ctx: Ctx) -> PlainTextResponse:
    """Prometheus text format: ingest, alerts, API latency, notifications (and whatever else
    counts with prometheus_client in this process)."""
    open_alerts = ctx.store.list_alerts(
        AlertQuery(statuses=("open", "acknowledged"), limit=100_000)
    )
    by_family: dict[tuple[str, str], int] = defaultdict(int)
    for a in open_alerts:
        by_family[(str(a.family), str(a.severity))] += 1
    lines = [
        "# HELP landun_alerts_open Open or acknowledged alerts.",
        "# TYPE landun_alerts_open gauge",
    ]
    for (family, severity), n in sorted(by_family.items()):
        lines.append(f'landun_alerts_open{{family="{family}",severity="{severity}"}} {n}')
    api = ctx.api_metrics.render() if ctx.api_metrics is not None else ""
    text = ctx.metrics.prometheus() + "\n".join(lines) + "\n" + api + _hj212_lines(ctx)
    text += generate_latest(REGISTRY).decode()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _hj212_lines(ctx) -> str:
    if ctx.hj212 is None:
        return ""
    lines = []
    for names, kind, suffix in ((HJ212_COUNTERS, "counter", "_total"), (HJ212_GAUGES, "gauge", "")):
        for name in names:
            metric = f"landun_hj212_{name.removesuffix(suffix)}{suffix}"
            lines += [f"# TYPE {metric} {kind}", f"{metric} {getattr(ctx.hj212, name)}"]
    return "\n".join(lines) + "\n"


@router.get(
    "/api/v1/dead-letters",
    response_model=DeadLettersOut,
    tags=["ingest"],
    responses=error_responses(401, 403, 422),
)
def dead_letters(
    ctx: Ctx, who: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeadLettersOut:
    """Refused messages, newest first. Inspectors see those of their sites' devices; messages
    from unknown devices only admins see."""
    require_role(who, "admin", "inspector", doing="read dead letters")
    items = ctx.store.dead_letters(limit if who.role == "admin" else 1000)
    counts = ctx.store.dead_letter_counts()
    ids = scoped_site_ids(ctx, who)
    if ids is not None:
        allowed = {d.id for d in ctx.registry.devices.values() if d.site_id in ids}
        items = [d for d in items if d.device_id in allowed][:limit]
        counts = {}
        for d in items:
            counts[d.reason] = counts.get(d.reason, 0) + 1
    return DeadLettersOut(items=[DeadLetterOut.of(d) for d in items], counts_by_reason=counts)


@router.post(
    LOGIN_PATH,
    response_model=TokenOut,
    tags=["auth"],
    responses=error_responses(400, 401, 422, 429, 503),
)
async def login(request: Request, ctx: Ctx, body: LoginIn) -> TokenOut:
    """Exchange a user name and password for a session token (valid for 12 hours). Failed
    logins are counted per account and per client address; past the allowance the answer is
    429 with `Retry-After`."""
    guard: LoginGuard = request.app.state.login_guard
    address = request.client.host if request.client else ""
    wait = guard.throttle.retry_after(body.username, address)
    if wait:
        raise HTTPException(
            429,
            f"too many failed logins for this account or from this address; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    found = await asyncio.to_thread(ctx.store.get_user, body.username)
    try:
        # An unknown user costs the same hash as a known one: the answer time tells nothing.
        ok = await guard.hashes.run(
            verify_secret, body.password, found[1] if found else guard.dummy_hash
        )
    except Busy:
        raise HTTPException(
            503, "too many logins at once; try again in a second", headers={"Retry-After": "1"}
        ) from None
    if found is None or not ok:
        guard.throttle.failed(body.username, address)
        raise HTTPException(401, "wrong user name or password")
    who = found[0]
    token, expires = await asyncio.to_thread(
        issue_token, ctx.store, who, ctx.session_hours, "login"
    )
    return TokenOut(
        token=token,
        expires=ms_to_iso(expires) if expires else None,
        name=who.name,
        role=who.role,
        jurisdictions=list(who.jurisdictions),
    )


@router.get("/api/v1/auth/me", response_model=MeOut, tags=["auth"], responses=error_responses(401))
def me(who: Caller) -> MeOut:
    return MeOut(name=who.name, role=who.role, jurisdictions=list(who.jurisdictions), kind=who.kind)
