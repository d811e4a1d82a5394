"""ASGI middleware around every request: request counting (5xx included), security headers, and
the request-body guard (size limit and authentication before a body is read).

Pure ASGI rather than `@app.middleware("http")`: the guard must answer before the body is
received, and counting must see exceptions that never become a response inside the app."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException

from api.context import AppContext

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The dashboard is self-contained (no inline script or style, no CDN); API-made HTML pages
# (/docs, evidence records) get their inline blocks allowed by hash, see _csp_for_html.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_INLINE = {
    "script": re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.S | re.I),
    "style": re.compile(rb"<style[^>]*>(.*?)</style>", re.S | re.I),
}


def _csp_for_html(body: bytes) -> str:
    """The CSP with the page's own inline scripts and styles allowed by their SHA-256."""
    csp = CSP
    for kind, pattern in _INLINE.items():
        hashes = [
            "'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
            for m in pattern.findall(body)
            if m.strip()
        ]
        if hashes:
            csp = csp.replace(f"{kind}-src 'self'", f"{kind}-src 'self' {' '.join(hashes)}")
    return csp


class SecurityHeaders:
    """CSP, framing, sniffing and referrer headers on every response the app makes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def send_with_headers(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    start = message  # held until the page is seen, to hash its inline blocks
                    return
            elif start is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                MutableHeaders(scope=start)["content-security-policy"] = _csp_for_html(body)
                await send(start)
                message = {**message, "body": bytes(body)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestMetrics:
    """Counts every request by route template and status, including unhandled errors (500)."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            status = 500
            raise
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            if self.ctx.api_metrics is not None:  # set by create_app, with this middleware
                self.ctx.api_metrics.observe(
                    scope["method"], path, status, time.perf_counter() - started
                )


class BodyGuard:
    """Refuses request bodies above the configured size with 413 before reading them (by
    Content-Length, and by counting when the body is chunked), and refuses bodies from callers
    without a valid token (except on the open paths, e.g. login) before reading them."""

    def __init__(
        self,
        app: ASGIApp,
        ctx: AppContext,
        authenticate: Callable[[AppContext, str | None], Awaitable[bool]],
        open_paths: set[str],
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.authenticate = authenticate
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limits = self.ctx.limits
        verify = scope["path"].endswith("/evidence/verify")
        limit = limits.evidence_copy_bytes if verify else limits.max_body_bytes
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is not None and (not length.isascii() or not length.isdigit()):
            await _reply(scope, receive, send, 400, "Content-Length must be a whole number")
            return
        if length is not None and int(length) > limit:
            await _reply(scope, receive, send, 413, _too_large(limit))
            return
        if not chunked and not int(length or 0):
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self.open_paths and not await self.authenticate(
            self.ctx, headers.get("authorization")
        ):
            # A body of a stated length within the limit is left to the server to discard: a
            # connection closed while it still arrives is reset (TCP), and a reset can destroy
            # this answer before the client reads it. A client waiting for "100 Continue" never
            # sends it, and a chunked one may not end: those connections close.
            waits = "100-continue" in headers.get("expect", "").lower()
            await _reply(
                scope,
                receive,
                send,
                401,
                "not logged in or token unknown: a request body needs"
                " 'Authorization: Bearer <token>' (POST /api/v1/auth/login gives one)",
                {"WWW-Authenticate": "Bearer"},
                close=chunked or waits,
            )
            return
        await self.app(scope, _counting(receive, limit), send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than this server takes ({limit} bytes at most)"


def _counting(receive: Receive, limit: int) -> Receive:
    """A receive that stops a chunked body as soon as it passes the limit."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large(limit))
        return message

    return counted


async def _reply(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    close: bool = True,
) -> None:
    # Connection: close, so the server need not read the body that was refused.
    extra = {"Connection": "close"} if close else {}
    response = JSONResponse(
        {"detail": detail}, status_code=status, headers={**(headers or {}), **extra}
    )
    await response(scope, receive, send)
