"""The 1min.ai dialect: Conversation API, Chat with AI API, the legacy AI Feature API and the
Asset API."""

from fastapi import APIRouter

from threadline.api.dialects.oneminai import assets, routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(assets.router)

__all__ = ["router"]
