"""Model providers: each turns a `ModelConfig` into a `ChatModel` (or an `ImageModel`).

Which providers exist, what they are called and what they serve is the table in
`registry.py`: adding a provider is one module here plus one entry there.

- `local`: llama.cpp in-process (xllamacpp) with the bundled SmolLM2 GGUF.
- `openai-compatible`: any `/v1/chat/completions` (and `/v1/images/*`) server over httpx.
- `fake`: scripted, for tests and demos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadline.domain.image_generation import ImageModel
from threadline.domain.ports import ChatModel
from threadline.providers.registry import REGISTRY

if TYPE_CHECKING:
    from threadline.settings import ModelConfig


def build_model(name: str, config: ModelConfig) -> ChatModel:
    """The chat model of a catalog entry (imports its provider only when used)."""
    return REGISTRY.chat_model(name, config)


def build_image_model(name: str, config: ModelConfig) -> ImageModel:
    """The image model of a catalog entry."""
    return REGISTRY.image_model(name, config)
