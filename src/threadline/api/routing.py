"""A route class per dialect: every error raised while handling one of its requests
(validation, auth, rate limit, domain errors, values the store cannot hold, crashes) is
rendered in that dialect's own error shape by the `render` function the dialect supplies,
and every route declares those error responses in `/openapi.json` from the dialect's one
table (`error_responses`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Route

from threadline.api import idempotency
from threadline.api.bounds import CheckedRequest, Unrepresentable, check_params
from threadline.domain import errors
from threadline.domain.errors import ThreadlineError
from threadline.domain.events import Failed

log = structlog.get_logger(__name__)

ErrorRenderer = Callable[[Request, ThreadlineError | RequestValidationError], Response]
Responses = dict[int | str, dict[str, Any]]

# What each error status means, as every dialect's routes may answer it.
ERROR_STATUSES: dict[int, str] = {
    400: "Invalid request: a malformed or unrepresentable value, or a missing field",
    401: "Missing, unknown or revoked API key",
    403: "Not allowed: role, inactive user, or not enough credits",
    404: "Not found (an object of another org is not found too)",
    409: "Conflicts with an existing object",
    413: "The request body is too large",
    422: "Well-formed, but this server cannot serve it (e.g. a model not configured)",
    429: "Rate limited (see Retry-After)",
    500: "Internal error",
    502: "An upstream (model, fetch, search) failed",
    503: "Temporarily unavailable",
    504: "An upstream timed out",
}


def error_responses(model: type[BaseModel], statuses: tuple[int, ...]) -> Responses:
    """The `responses=` of a dialect's routes: each status with the dialect's error body."""
    return {status: {"model": model, "description": ERROR_STATUSES[status]} for status in statuses}


def streamed(media_type: str, description: str, *, or_json: bool = False) -> Responses:
    """A 200 that is a stream (`media_type`), or JSON when the request did not ask for one."""
    content: dict[str, Any] = {media_type: {"schema": {"type": "string"}}}
    if or_json:
        content["application/json"] = {"schema": {"type": "object"}}
    return {200: {"description": description, "content": content}}


def merged(*routers: APIRouter) -> APIRouter:
    """One router holding the routes of several, each route as it was built at import.

    Not `include_router`: FastAPI re-builds every included route (its dependencies, its
    models) once per app, on the first request that reaches the router, on the event loop
    (about 5 ms a route here: a 200-400 ms stall on a new process's first requests). Routes
    added as they are were built once, when their module was imported. Nested routers and
    include-time options are refused, so nothing an include would add is lost."""
    combined = APIRouter()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute | Route):
                raise TypeError(f"{route!r}: only plain routes can be merged")
        combined.routes.extend(router.routes)
    return combined


class InternalError(ThreadlineError):
    status = 500
    code = "INTERNAL_ERROR"


class MethodNotAllowed(ThreadlineError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


def route_class(render: ErrorRenderer, responses: Responses | None = None) -> type[APIRoute]:
    """`responses`: the error responses every route of the dialect declares (a route's own
    `responses=` entries take precedence)."""
    shared = responses or {}

    class DialectRoute(APIRoute):
        renderer = staticmethod(render)  # what app-level errors on this dialect's paths use

        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            kwargs["responses"] = {**shared, **(kwargs.get("responses") or {})}
            # listed IDEMPOTENT in its dependencies: honours Idempotency-Key (api/idempotency.py)
            self.idempotent = idempotency.takes_part(kwargs.get("dependencies"))
            if self.idempotent and 400 in shared:
                kwargs["responses"] = {**idempotency.responses(shared[400]), **kwargs["responses"]}
            super().__init__(path, endpoint, **kwargs)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            idempotent = self.idempotent

            async def handle(request: Request) -> Response:
                request = CheckedRequest(request.scope, request.receive)
                try:
                    check_params(request)
                    if idempotent:
                        return await idempotency.handle(request, handler)
                    return await handler(request)
                except Unrepresentable as exc:
                    return render(request, exc.as_validation_error())
                except RequestValidationError as exc:
                    return render(request, located(exc, request))
                except ThreadlineError as exc:
                    return render(request, exc)
                except HTTPException as exc:
                    return render(request, from_http_exception(exc))
                except Exception:
                    log.exception("unhandled error", path=request.url.path)
                    return render(request, InternalError("Internal server error"))

            return handle

    return DialectRoute


_BY_STATUS: dict[int, type[ThreadlineError]] = {
    400: errors.InvalidRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    405: MethodNotAllowed,
    413: errors.PayloadTooLarge,
    422: errors.Unprocessable,
}


# What a stream that has started ends with when the server fails while producing it (an
# event that cannot be encoded, a store that fails mid-reply): the dialect's error event,
# never a dropped connection. The run itself goes on; its record keeps what it stored.
STREAM_FAILED = Failed(
    code="INTERNAL_ERROR",
    message="Internal server error while streaming the reply; the stream ended here",
    status=500,
)


def stream_failed(where: str) -> Failed:
    """Log the exception being handled (not its text to the client) and return the event
    the dialect encodes as its error frame."""
    log.exception("stream failed", stream=where)
    return STREAM_FAILED


def located(exc: RequestValidationError, request: Request) -> RequestValidationError:
    """A body that is not JSON: pydantic names the character offset as the field ("26").
    Here the field is the body and `ctx.position` says "line 2, column 7" (what an editor
    shows), for the renderers' messages."""
    errors = exc.errors()
    if not any(error.get("type") == "json_invalid" for error in errors):
        return exc
    body = getattr(request, "_body", b"")
    fixed = []
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            offset = loc[-1] if loc and isinstance(loc[-1], int) else 0
            ctx = {**(error.get("ctx") or {}), "position": json_position(body, offset)}
            error = {**error, "loc": ("body",), "ctx": ctx}
        fixed.append(error)
    return RequestValidationError(fixed, body=exc.body)


def json_position(body: bytes, offset: int) -> str:
    """The 1-based line and column of character `offset` of `body` (UTF-8)."""
    before = body.decode("utf-8", "replace")[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return f"line {line}, column {column}"


def from_http_exception(exc: HTTPException) -> ThreadlineError:
    error = _BY_STATUS.get(exc.status_code, InternalError)
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "The body could not be read; send JSON with Content-Type: application/json"
    return error(detail)
