"""The Conversation Service dialect (003_*): conversations, chat sessions per model,
`stream_chat` over SSE and paginated messages, under `/api/conversation`."""

from threadline.api.dialects.sessions.routes import router

__all__ = ["router"]
