"""The 1min.ai dialect: Conversation API, Chat with AI API, the legacy AI Feature API, the
Asset API, brand voices and memories."""

from threadline.api.dialects.oneminai import assets, branches, brand_voices, memories, routes
from threadline.api.routing import merged

router = merged(routes.router, assets.router, brand_voices.router, memories.router, branches.router)

__all__ = ["router"]
