"""Builds the ASGI app around a container: middleware, system and admin routes, dialects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from threadline import __version__
from threadline.api import admin, system
from threadline.api.dialects import oneminai, openai, sessions
from threadline.api.middleware import BodyLimit, RequestContext

if TYPE_CHECKING:
    from threadline.container import Container

DESCRIPTION = """Threadline speaks several vendors' conversation APIs from one store:
1min.ai (`/api/conversations`, `/api/chat-with-ai`, `/api/features`), the Conversation Service
(`/api/conversation/*`: conversations, chat sessions per model, `stream_chat`; `org_id` query
parameter), the OpenAI API (`/v1/models`, `/v1/chat/completions`, for the official SDK), plus
Threadline's own admin API. Authenticate with `API-KEY: <key>` or `Authorization: Bearer <key>`."""


UPLOAD_PATHS = ("/api/assets", "/api/v2/conversations", "/v2/conversations")
MULTIPART_OVERHEAD = 1024 * 1024


def body_cap(container: Container, path: str) -> int:
    """File uploads may carry `documents.max_request_bytes` (plus the multipart framing);
    everything else `max_body_bytes`."""
    settings = container.settings
    if path.startswith(UPLOAD_PATHS):
        return settings.documents.max_request_bytes + MULTIPART_OVERHEAD
    return settings.max_body_bytes


def build_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.stop()

    app = FastAPI(
        title="Threadline",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.container = container
    for router in (
        system.router,
        admin.router,
        oneminai.router,
        sessions.router,
        openai.router,
    ):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=lambda path: body_cap(container, path))
    app.add_middleware(RequestContext, metrics=container.metrics)
    return app
