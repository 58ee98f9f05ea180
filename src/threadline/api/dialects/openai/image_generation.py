"""`POST /v1/images/generations` (OpenAI's images API) onto the same image generation service as
1min.ai's IMAGE_GENERATOR: the images are stored as assets of the caller (downloadable with
`GET /api/assets/{key}/content`) and answered as `b64_json`.

Arguments OpenAI knows but this server cannot honour are accepted only with their neutral
value (`quality`, `background`, `moderation`: "auto"); `response_format: "url"` is refused,
since a URL to this server would need the caller's key. Unknown arguments are a 400.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.openai.schemas import OpenAIRequestError
from threadline.api.idempotency import IDEMPOTENT
from threadline.domain.errors import NotFound
from threadline.domain.image_generation import IMAGE_GENERATOR
from threadline.services.image_generation import ImageGenerationCommand


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=32000)
    model: str
    n: int | None = Field(None, ge=1, le=10, strict=True)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    quality: Literal["auto"] | None = None
    background: Literal["auto"] | None = None
    moderation: Literal["auto"] | None = None
    user: str | None = Field(None, max_length=256)


class ImageModelNotFound(NotFound):
    param = "model"
    error_code = "model_not_found"


def add_routes(router: APIRouter) -> None:
    router.add_api_route(
        "/images/generations", generate_images, methods=["POST"], dependencies=[IDEMPOTENT]
    )


async def generate_images(
    body: ImageGenerationRequest, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    if body.model not in {m.name for m in container.catalog.list()}:
        raise ImageModelNotFound(
            f"The model '{body.model[:100]}' does not exist; image models: "
            + (", ".join(container.catalog.image_names()) or "(none)")
        )
    if body.response_format == "url":
        raise OpenAIRequestError(
            "response_format 'url' is not supported: images are answered as b64_json and "
            "stored as assets (GET /api/assets/{key}/content)",
            param="response_format",
        )
    output_format = body.output_format or "png"
    outcome = await container.image_generation.make(
        ImageGenerationCommand(
            principal=principal,
            feature=IMAGE_GENERATOR,
            model=body.model,
            n=body.n or 1,
            aspect_ratio="1:1",
            size=body.size if body.size not in (None, "auto") else None,
            output_format=output_format,
            prompt=body.prompt,
            prompt_object=body.model_dump(mode="json", exclude_none=True),
            metadata={"user": body.user} if body.user else None,
        )
    )
    return {
        "created": int(outcome.record.created_at.timestamp()),
        "data": [{"b64_json": base64.b64encode(image.data).decode()} for image in outcome.images],
        "output_format": output_format,
    }
