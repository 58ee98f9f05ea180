"""The OpenAI-compatible dialect: `GET /v1/models`, `POST /v1/chat/completions` and
`POST /v1/images/generations`, so the
official `openai` SDK (and any OpenAI client) runs against Threadline's models, credits and
limits with the caller's Threadline key as its API key."""

from threadline.api.dialects.openai.routes import router

__all__ = ["router"]
