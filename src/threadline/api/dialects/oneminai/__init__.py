"""The 1min.ai dialect: Conversation API, Chat with AI API and the legacy AI Feature API."""

from threadline.api.dialects.oneminai.routes import router

__all__ = ["router"]
