"""Builds the ASGI app around a container: middleware, system and admin routes, dialects."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from threadline import __version__
from threadline.api import admin, console, docs_pages, fallback, system, usage
from threadline.api.dialects import anthropic, converse, oneminai, openai, sessions
from threadline.api.dialects.openai.encode import error_body as openai_error
from threadline.api.middleware import BodyLimit, RequestContext, native_error
from threadline.api.routing import merged

if TYPE_CHECKING:
    from threadline.container import Container

DESCRIPTION = """Threadline speaks several vendors' conversation APIs from one store:
1min.ai (`/api/conversations`, `/api/chat-with-ai`, `/api/features`, `/api/assets`,
`/api/brand-voices`, `/api/memories`), the Conversation Service
(`/api/conversation/*`: conversations, chat sessions per model, `stream_chat`; `org_id` query
parameter), AI Hub Converse (`/api/v2/conversations`: conversations over uploaded documents,
for the `aihub` SDK with `api_root=<server>/api`), the OpenAI API (`/v1/models`,
`/v1/chat/completions`, for the official SDK), Anthropic's Messages API (`/v1/messages`, for
the official `anthropic` SDK), plus Threadline's own admin API. Authenticate with
`API-KEY: <key>`, `Authorization: Bearer <key>` or `x-api-key: <key>`."""

ASSET_UPLOAD_PATH = "/api/assets"  # 1min.ai's Asset API
MULTIPART_OVERHEAD = 1024 * 1024
OPENAI_PREFIX = "/v1"  # the OpenAI dialect's routes
SESSIONS_PREFIX = "/api/conversation"  # the Conversation Service's (not 1min.ai's /conversations)
CONVERSE_PREFIXES = ("/api/v2/conversations", "/v2/conversations")  # AI Hub Converse's


def body_cap(container: Container, path: str) -> int:
    """File uploads (1min.ai's assets, Converse's create and add-documents) may carry
    `documents.max_request_bytes` plus the multipart framing; every other body
    `max_body_bytes`."""
    settings = container.settings
    if path.startswith(ASSET_UPLOAD_PATH) or converse.is_upload_path(path):
        return settings.documents.max_request_bytes + MULTIPART_OVERHEAD
    return settings.max_body_bytes


def _too_large_body(path: str, message: str) -> dict[str, Any]:
    """A 413 in the shape of the dialect that owns the path (as its routes render one)."""
    if converse.owns(path):
        return {"message": message}
    if anthropic.owns(path):  # before OpenAI's: both live under /v1
        return anthropic.error_body(message, 413)
    if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
        return openai_error(message, "invalid_request_error")
    if path == SESSIONS_PREFIX or path.startswith(SESSIONS_PREFIX + "/"):
        return {"detail": message, "code": "PAYLOAD_TOO_LARGE"}
    return native_error(path, message)


def _dialect_prefixes(app: FastAPI) -> list[tuple[str, Any]]:
    """The path prefixes whose unknown routes answer in a dialect's shape other than
    Threadline's own, each with the renderer of that dialect's routes."""
    found = []
    for prefix in (anthropic.PREFIX, OPENAI_PREFIX, SESSIONS_PREFIX, *CONVERSE_PREFIXES):
        for route in app.routes:
            path = getattr(route, "path", "")
            if path.startswith(prefix + "/") and hasattr(route, "renderer"):
                found.append((prefix, route.renderer))
                break
    return found


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the 422 `HTTPValidationError` it adds to every route with
    parameters: no route answers that body (each dialect renders validation errors in its
    own shape, with the statuses its `responses` declare); and without the JSON 200 it adds
    beside a route's declared stream."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "HTTPValidationError" in str(responses.get("422", "")):
                    del responses["422"]
                content = responses.get("200", {}).get("content", {})
                if len(content) > 1 and content.get("application/json") == {"schema": {}}:
                    del content["application/json"]  # a stream only (FastAPI's default entry)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


_frozen = False
GC_YOUNG = 10_000  # allocations between two collections of the youngest generation


def _freeze_startup_objects() -> None:
    """What startup built (modules, schemas, routes, the container) lives as long as the
    process: out of the cyclic collector's sight, a full collection, which one big request's
    allocations can trigger, scans only what requests made (a shorter pause of the event
    loop). Once per process (a test session starts many apps).

    And the youngest generation is collected every GC_YOUNG allocations, not Python's 700: a
    streamed reply allocates thousands of short-lived containers (events, frames, dicts), most
    of which are freed by their reference count before a larger collection comes, instead of
    being traversed and promoted to the older generations by a collection every few tokens."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG, older, oldest)


def _serve_openapi_off_the_loop(app: FastAPI) -> None:
    """`/openapi.json` builds the schema (a few hundred ms of Python over every route) in a
    thread on its first request, instead of FastAPI's route that builds it on the event loop."""
    url = app.openapi_url
    if url is None:
        return
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != url]

    async def openapi_json(_: Request) -> JSONResponse:
        schema = app.openapi_schema or await asyncio.to_thread(app.openapi)
        return JSONResponse(schema)

    app.add_route(url, openapi_json, include_in_schema=False)


def _exact_paths_first(app: FastAPI) -> None:
    """Starlette tries the routes in order, matching each one's pattern: every request to
    `/v1/chat/completions` was first tried against 93 other routes. The API routes whose path
    has no parameter go first (in their order). No request changes hands by it: no route
    before an exact path in the dialects' order matches that path and method
    (tests/test_route_order.py)."""
    routes = app.router.routes
    exact = [r for r in routes if isinstance(r, APIRoute) and "{" not in r.path]
    taken = {id(r) for r in exact}
    routes[:] = [*exact, *(r for r in routes if id(r) not in taken)]


def build_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        _freeze_startup_objects()
        try:
            yield
        finally:
            await container.stop()

    app = FastAPI(
        title="Threadline",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs_pages: the same pages, their assets from a wheel, not a CDN
        redoc_url=None,
    )
    app.state.container = container
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _serve_openapi_off_the_loop(app)
    docs_pages.install(app)
    console.install(app)
    for router in (
        system.router,
        admin.router,
        usage.router,
        oneminai.router,
        sessions.router,
        converse.router,
        openai.router,
        anthropic.router,
    ):
        app.router.routes.extend(merged(router).routes)  # built once, not once per app
    _exact_paths_first(app)
    fallback.install(app, _dialect_prefixes(app))
    app.add_middleware(
        BodyLimit, max_bytes=lambda path: body_cap(container, path), error=_too_large_body
    )
    app.add_middleware(RequestContext, metrics=container.metrics)
    return app
