"""A route class per dialect: every error raised while handling one of its requests
(validation, auth, rate limit, domain errors, crashes) is rendered in that dialect's own
error shape by the `render` function the dialect supplies."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from threadline.domain import errors
from threadline.domain.errors import ThreadlineError

log = structlog.get_logger(__name__)

ErrorRenderer = Callable[[Request, ThreadlineError | RequestValidationError], Response]


class InternalError(ThreadlineError):
    status = 500
    code = "INTERNAL_ERROR"


def route_class(render: ErrorRenderer) -> type[APIRoute]:
    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except (ThreadlineError, RequestValidationError) as exc:
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
    413: errors.PayloadTooLarge,
    422: errors.Unprocessable,
}


def from_http_exception(exc: HTTPException) -> ThreadlineError:
    error = _BY_STATUS.get(exc.status_code, InternalError)
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "The body could not be read; send JSON with Content-Type: application/json"
    return error(detail)
