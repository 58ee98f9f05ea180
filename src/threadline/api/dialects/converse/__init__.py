"""The AI Hub Converse dialect (004_*): conversations over uploaded documents, prompts
answered from one document's excerpts, document metadata; for the official `aihub` SDK,
under `/api/v2/conversations` and `/v2/conversations`."""

from threadline.api.dialects.converse.paths import is_upload_path, owns
from threadline.api.dialects.converse.routes import router

__all__ = ["is_upload_path", "owns", "router"]
