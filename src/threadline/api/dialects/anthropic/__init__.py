"""Anthropic's Messages API: `POST /v1/messages` (JSON or its SSE events) and
`POST /v1/messages/count_tokens`, so the official `anthropic` SDK (and any Anthropic client)
runs against Threadline's models, credits and limits with the caller's Threadline key as its
API key."""

from threadline.api.dialects.anthropic.encode import error_body
from threadline.api.dialects.anthropic.routes import PREFIX, router

__all__ = ["PREFIX", "error_body", "owns", "router"]


def owns(path: str) -> bool:
    """Whether `path` is under this dialect's routes (it shares `/v1` with OpenAI's)."""
    return path == PREFIX or path.startswith(PREFIX + "/")
