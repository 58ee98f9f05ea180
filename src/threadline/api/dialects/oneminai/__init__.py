"""The 1min.ai dialect: Conversation API, Chat with AI API, the legacy AI Feature API, the
Asset API and brand voices."""

from fastapi import APIRouter

from threadline.api.dialects.oneminai import assets, brand_voices, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(assets.router)
router.include_router(brand_voices.router)

__all__ = ["router"]
