"""The 1min.ai dialect: Conversation API, Chat with AI API, the legacy AI Feature API, the
Asset API, brand voices and memories."""

from fastapi import APIRouter

from threadline.api.dialects.oneminai import assets, brand_voices, memories, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(assets.router)
router.include_router(brand_voices.router)
router.include_router(memories.router)

__all__ = ["router"]
