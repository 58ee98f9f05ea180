"""The `openai-compatible` image model: any server speaking OpenAI's images API.

    POST {base_url}/images/generations   JSON: model, prompt, n, size, and
                                         response_format="b64_json"  (image_request =
                                         "response_format", DALL-E-style servers) or
                                         output_format=png|jpeg|webp (image_request =
                                         "output_format", GPT image models)
    POST {base_url}/images/variations    multipart: image (file), model, n, size,
                                         response_format="b64_json"

The answer's `data[].b64_json` are decoded, checked and encoded in the wanted format
(`image_format.encode_as`). An answer with `url`s instead is refused: Threadline does not
fetch what an upstream points at. Every failure (HTTP status, refused connection, timeout,
garbled body) becomes a domain error whose message says what to fix and never carries the
API key or the upstream's raw body:

    ModelError       the upstream refused, failed, or answered something unusable
     └── ModelTimeout  it did not connect or answer within the configured time
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import httpx

from threadline import __version__
from threadline.domain.errors import ModelError
from threadline.domain.image_generation import (
    EXTENSIONS,
    GeneratedImage,
    GenerationRequest,
    ImageFormat,
    VariationRequest,
)
from threadline.providers.http1 import Http1Transport
from threadline.providers.image_format import NotAnImage, encode_as
from threadline.providers.upstream import Upstream, UpstreamErrors, exchange
from threadline.settings import ModelConfig

MAX_RESPONSE_BYTES = 128 * 1024 * 1024  # ten large base64 images fit


class OpenAICompatibleImageModel:
    """An ImageModel served by an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        *,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        upstream = Upstream.at(config.base_url, api_key, f"model {name!r}")
        url = upstream.url
        self.name = name
        self.config = config
        self.upstream_model = config.upstream_model or name
        self._errors = UpstreamErrors.for_model(upstream, name, config)
        headers = {"User-Agent": f"threadline/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=url.copy_with(raw_path=url.raw_path.rstrip(b"/") + b"/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
            transport=transport
            or Http1Transport(
                ssl_context=httpx.create_ssl_context(), max_connections=64, max_keepalive=8
            ),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "prompt": request.prompt,
            "n": request.n,
            "size": request.size,
        }
        if self.config.image_request == "output_format":
            body["output_format"] = request.output_format
        else:
            body["response_format"] = "b64_json"
        built = self._client.build_request("POST", "images/generations", json=body)
        return await self._images(built, request.n, request.output_format)

    async def vary(self, request: VariationRequest) -> list[GeneratedImage]:
        extension = EXTENSIONS.get(request.mime_type, "png")
        fields = {
            "model": self.upstream_model,
            "n": str(request.n),
            "size": request.size,
            "response_format": "b64_json",
        }
        files = {"image": (f"image.{extension}", request.image, request.mime_type)}
        built = self._client.build_request("POST", "images/variations", data=fields, files=files)
        return await self._images(built, request.n, request.output_format)

    # -- the exchange

    async def _images(
        self, request: httpx.Request, n: int, output_format: ImageFormat
    ) -> list[GeneratedImage]:
        raw = await exchange(self._client, request, self._errors, MAX_RESPONSE_BYTES)
        encoded = self._b64_images(raw, n)
        try:
            return await asyncio.to_thread(
                lambda: [encode_as(data, output_format) for data in encoded]
            )
        except NotAnImage as exc:
            reason = f"upstream answered an image that cannot be used: {exc.reason}"
            raise self._error(reason) from None

    def _b64_images(self, raw: bytes, n: int) -> list[bytes]:
        try:
            payload = json.loads(raw)
        except ValueError:
            raise self._error("upstream answered with a body that is not JSON") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            raise self._error("upstream answered JSON without images (no data list)")
        if len(data) > n:
            raise self._error(f"upstream answered {len(data)} images for {n} asked")
        images = []
        for item in data:
            b64 = item.get("b64_json") if isinstance(item, dict) else None
            if not isinstance(b64, str):
                if isinstance(item, dict) and "url" in item:
                    raise self._error(
                        "upstream answered image URLs, not base64 data; Threadline does not "
                        "fetch what an upstream links to: make it answer b64_json (see "
                        "image_request in the model's config)"
                    )
                raise self._error("upstream answered an image entry without b64_json")
            try:
                images.append(base64.b64decode(b64, validate=True))
            except (binascii.Error, ValueError):
                raise self._error("upstream answered b64_json that is not base64") from None
        return images

    # -- errors

    def _error(self, what: str) -> ModelError:
        return ModelError(f"model {self.name!r}: {what}")
