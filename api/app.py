"""FastAPI application: the inspectors' HTTP interface. Every error is JSON with a message a
person can act on."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import (
    dashboard,
    routes_accounts,
    routes_alerts,
    routes_compliance,
    routes_deliveries,
    routes_limits,
    routes_lines,
    routes_notify,
    routes_ops,
    routes_public,
    routes_readings,
    routes_reports,
    routes_sites,
    routes_tanks,
    routes_waste,
)
from api.auth import bearer_valid
from api.context import AppContext
from api.middleware import SECURITY_HEADERS, BodyGuard, RequestMetrics, SecurityHeaders
from api.routes_ops import LOGIN_PATH, ApiMetrics
from api.throttle import LoginGuard
from store.base import StoreUnavailable

log = logging.getLogger("landun.api")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def create_app(ctx: AppContext) -> FastAPI:
    # /docs and /redoc with their scripts served from the package, not a CDN: sites run on
    # closed networks.
    app = FastAPIOffline(
        favicon_url="/favicon.ico",
        swagger_ui_parameters={"validatorUrl": None},
        title="Landun API",
        version="1",
        description=(
            "Online monitoring for public-health supervision (非接触式监管): readings, alerts"
            " with evidence, compliance. Authenticate with `Authorization: Bearer <token>`"
            " from `POST /api/v1/auth/login` or `landun tokens create`."
        ),
    )
    app.state.ctx = ctx
    app.state.login_guard = LoginGuard.for_context(ctx)
    ctx.api_metrics = ApiMetrics()
    routers = (routes_ops, routes_readings, routes_alerts, routes_sites, routes_limits)
    for module in (
        *routers,
        routes_compliance,
        routes_waste,
        routes_tanks,
        routes_lines,
        routes_deliveries,
        routes_accounts,
        routes_public,
        routes_reports,
        routes_notify,
    ):
        app.include_router(module.router)
    dashboard.mount(app)
    routes_ops.keep_readings_count(app, ctx)

    # The last added runs first: count everything, then headers on everything, then the guard.
    app.add_middleware(BodyGuard, ctx=ctx, authenticate=bearer_valid, open_paths={LOGIN_PATH})
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, ctx=ctx)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from starlette.routing import Match

        detail, headers = exc.detail, exc.headers
        if exc.status_code == 405:
            # Starlette's Allow names the first route on the path only; list every method.
            allowed = [
                method
                for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
                if any(
                    r.matches({**request.scope, "method": method})[0] is Match.FULL
                    for r in request.app.router.routes
                )
            ]
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed on this path; use {', '.join(allowed)}"
        elif exc.status_code == 404 and detail == "Not Found":
            detail = f"no such path {request.url.path}; the API is described at /docs"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body is not JSON in UTF-8"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": _validation_message(exc), "errors": _plain(exc.errors())}, status_code=422
        )

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the store is unavailable, nothing was changed; try again: {exc}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", ref, request.method, request.url.path)
        # Answered outside the middleware stack (by Starlette's outermost layer): its own headers.
        return JSONResponse(
            {"detail": f"internal error, logged as {ref}; please report it"},
            status_code=500,
            headers=SECURITY_HEADERS,
        )

    return app


def _plain(errors: Sequence[dict]) -> list[dict]:
    """Validation errors without objects that JSON cannot carry (exceptions in ctx)."""
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
