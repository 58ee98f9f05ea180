"""The `fake` image model: solid-colour pictures made in-process with Pillow.

Why it exists: a server configured with `provider = "fake", kind = "images"` answers image
features at once, with no upstream, for demos and smoke tests; and service tests can script
a failure (`model.fail_next(ModelError("boom"))`). Pictures are small (`SIDE` pixels square,
whatever size was asked), one colour per image of a request, in the requested format.
"""

from __future__ import annotations

import io
from collections import deque

from PIL import Image

from threadline.domain.image_generation import (
    MIME_TYPES,
    GeneratedImage,
    GenerationRequest,
    ImageFormat,
    VariationRequest,
)
from threadline.settings import ModelConfig

SIDE = 64
COLOURS = ((220, 60, 60), (60, 160, 80), (60, 90, 210), (230, 180, 40), (150, 70, 190))


class FakeImageModel:
    def __init__(self, name: str = "fake-images", config: ModelConfig | None = None) -> None:
        self.name = name
        self.config = config
        self.requests: list[GenerationRequest | VariationRequest] = []
        self.closed = False
        self._failures: deque[BaseException] = deque()

    def fail_next(self, error: BaseException) -> None:
        self._failures.append(error)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        return self._answer(request)

    async def vary(self, request: VariationRequest) -> list[GeneratedImage]:
        return self._answer(request)

    async def aclose(self) -> None:
        self.closed = True

    def _answer(self, request: GenerationRequest | VariationRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        if self._failures:
            raise self._failures.popleft()
        return [picture(COLOURS[i % len(COLOURS)], request.output_format) for i in range(request.n)]


def picture(colour: tuple[int, int, int], output_format: ImageFormat) -> GeneratedImage:
    out = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), colour).save(out, format=output_format.upper())
    return GeneratedImage(out.getvalue(), MIME_TYPES[output_format], SIDE, SIDE)
