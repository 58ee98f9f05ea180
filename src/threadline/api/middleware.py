"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams).

`RequestContext`: a request id (taken from `X-Request-ID` or made), echoed in the response,
bound into every log line of the request; one access-log line and the HTTP metrics per
request. `BodyLimit`: refuses a body over the cap with 413 before any handler sees it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.api.metrics import Metrics
from threadline.api.native import error_body

log = structlog.get_logger("threadline.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        def send_with_id(message: Message) -> Awaitable[None]:
            # Not a coroutine: a streamed body's many messages pass straight to `send`.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            return send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("request_id")


ErrorBody = Callable[[str, str], dict[str, Any]]  # (path, message) -> JSON body


def native_error(_path: str, message: str) -> dict[str, Any]:
    return error_body("PAYLOAD_TOO_LARGE", message)


class BodyLimit:
    """`max_bytes(path)` is the cap of that path; `error(path, message)` the 413 body in
    the shape of the dialect that owns the path."""

    def __init__(
        self, app: ASGIApp, max_bytes: Callable[[str], int], error: ErrorBody = native_error
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_bytes(scope["path"])
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            await _too_large(send, self.error(scope["path"], too_large_message(cap)))
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await _too_large(send, self.error(scope["path"], too_large_message(cap)))


class _BodyTooLarge(HTTPException):
    """Raised from `receive`; dialect routes render it as 413 in their own shape."""

    def __init__(self) -> None:
        super().__init__(413, "The request body is too large")


def too_large_message(cap: int) -> str:
    mib = 1024 * 1024
    size = f"{cap // mib} MB" if cap >= mib and cap % mib == 0 else f"{cap} bytes"
    return f"The request body is larger than {size}"


async def _too_large(send: Send, error: dict[str, Any]) -> None:
    import json

    body = json.dumps(error).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


__all__: list[Any] = ["BodyLimit", "RequestContext"]
