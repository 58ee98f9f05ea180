"""Model providers: each turns a `ModelConfig` into a `ChatModel`.

- `local`: llama.cpp in-process (xllamacpp) with the bundled SmolLM2 GGUF.
- `openai-compatible`: any `/v1/chat/completions` server over httpx.
- `fake`: scripted, for tests and demos.

Image models (`kind = "images"`) are built by `build_image_model`: `openai-compatible` (an
OpenAI images endpoint) or `fake`.
"""

from __future__ import annotations

import os

from threadline.domain.errors import ModelError
from threadline.domain.image_generation import ImageModel
from threadline.domain.ports import ChatModel
from threadline.settings import ModelConfig


def build_model(name: str, config: ModelConfig) -> ChatModel:
    """The default model factory of the catalog (imports each provider only when used)."""
    if config.provider == "local":
        from threadline.providers.local import LocalModel

        return LocalModel(name, config)
    if config.provider == "openai-compatible":
        from threadline.providers.openai_compat import OpenAICompatibleModel

        return OpenAICompatibleModel(name, config, api_key=_api_key(name, config))
    from threadline.providers.fake import FakeModel

    return FakeModel(name, config)


def build_image_model(name: str, config: ModelConfig) -> ImageModel:
    """The default image model factory of the catalog."""
    if config.provider == "openai-compatible":
        from threadline.providers.openai_images import OpenAICompatibleImageModel

        return OpenAICompatibleImageModel(name, config, api_key=_api_key(name, config))
    if config.provider == "fake":
        from threadline.providers.fake_images import FakeImageModel

        return FakeImageModel(name, config)
    raise ModelError(f"model {name!r}: the {config.provider} provider makes no images")


def _api_key(name: str, config: ModelConfig) -> str | None:
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ModelError(
            f"model {name!r} needs an API key in the environment variable "
            f"{config.api_key_env}, which is not set"
        )
    return key
