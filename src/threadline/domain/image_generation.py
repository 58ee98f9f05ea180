"""Images out: what an image model is asked for and what it answers (1min.ai's
IMAGE_GENERATOR and IMAGE_VARIATOR features). Images *in* a chat request are `images.py`'s.

An image model is two methods, whatever serves it (an OpenAI-compatible images endpoint, or
the scripted fake). It answers images already encoded in the requested `output_format`, with
their pixel size, or raises `ModelError`/`ModelTimeout`; nothing above a provider sees httpx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ImageFormat = Literal["png", "jpeg", "webp"]

IMAGE_GENERATOR = "IMAGE_GENERATOR"
IMAGE_VARIATOR = "IMAGE_VARIATOR"
IMAGE_RECORD_TYPES = (IMAGE_GENERATOR, IMAGE_VARIATOR)

MIME_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
SOURCE_TYPES = frozenset(MIME_TYPES.values())
"""What the variator reads as its source image (the types its upstream takes)."""
SOURCE_KINDS = "a PNG, JPEG or WebP image"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str
    n: int
    size: str  # the upstream's size, e.g. "1024x1024"
    output_format: ImageFormat


@dataclass(frozen=True, slots=True)
class VariationRequest:
    image: bytes
    mime_type: str  # image/png, image/jpeg or image/webp
    n: int
    size: str
    output_format: ImageFormat


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes
    mime_type: str  # always MIME_TYPES[request.output_format]
    width: int
    height: int


class ImageModel(Protocol):
    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]: ...

    async def vary(self, request: VariationRequest) -> list[GeneratedImage]: ...

    async def aclose(self) -> None: ...
