"""The model providers Threadline knows, in one table: `name -> factory, label, capabilities`.

Why it exists: a provider's name used to live in three places (the settings' `Literal`, an
if-chain here that fell through to the fake model, and the catalog's labels). Settings
validation, the catalog and the container all read this table instead, so adding a provider
is one module plus one entry below. An unknown name is a configuration error that names the
known ones.

    PROVIDERS["openai-compatible"].label       "OPENAI_COMPATIBLE" (1min.ai's modelDetail)
    PROVIDERS["local"].serves("images")         False
    REGISTRY.chat_model("gpt", config)          a ChatModel (its module imported only now)

Nothing here imports a provider's module, nor the settings, at import time: `settings.py`
reads this table while it is being defined, and a provider's module may be heavy (llama.cpp).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from threadline.domain.errors import ModelError
from threadline.domain.image_generation import ImageModel
from threadline.domain.ports import ChatModel

if TYPE_CHECKING:
    from threadline.settings import ModelConfig

ChatFactory = Callable[[str, "ModelConfig"], ChatModel]
ImageFactory = Callable[[str, "ModelConfig"], ImageModel]


class UnknownProvider(ValueError):
    """A configuration names a provider that is not in the table."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider: how to build its models, and what it can serve.

    `label` is how 1min.ai's `modelDetail.provider` names it (upper case, `_` between words).
    `chat`/`images` build a model of that kind (None: the provider does not serve it).
    `vision`: its chat models may take images. `requires`: config keys it cannot do without."""

    name: str
    label: str
    chat: ChatFactory | None = None
    images: ImageFactory | None = None
    vision: bool = False
    requires: tuple[str, ...] = ()

    def serves(self, kind: str) -> bool:
        return (self.chat if kind == "chat" else self.images) is not None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in ("chat", "images") if self.serves(kind))


# -- the factories: each imports its provider's module on first use


def _local_chat(name: str, config: ModelConfig) -> ChatModel:
    from threadline.providers.local import LocalModel

    return LocalModel(name, config)


def _openai_chat(name: str, config: ModelConfig) -> ChatModel:
    from threadline.providers.openai_compat import OpenAICompatibleModel

    if not config.is_routed:
        return OpenAICompatibleModel(name, config, api_key=api_key(name, config))
    from threadline.providers.router import RoutedChatModel

    slots = _slots(config, lambda one: OpenAICompatibleModel(name, one, api_key=api_key(name, one)))
    return RoutedChatModel(name, config, slots)


def _openai_images(name: str, config: ModelConfig) -> ImageModel:
    from threadline.providers.openai_images import OpenAICompatibleImageModel

    if not config.is_routed:
        return OpenAICompatibleImageModel(name, config, api_key=api_key(name, config))
    from threadline.providers.routed_calls import RoutedImageModel
    from threadline.providers.router import UpstreamPool

    slots = _slots(
        config, lambda one: OpenAICompatibleImageModel(name, one, api_key=api_key(name, one))
    )
    return RoutedImageModel(UpstreamPool(name, slots, config.retry, config.timeout.queue_seconds))


def upstream_configs(config: ModelConfig) -> list[tuple[str, float, int | None, ModelConfig]]:
    """Each upstream as (its name, weight, max_concurrency, a config like a model with a
    single `base_url`)."""
    from threadline.providers.routed_calls import host, labels

    if not config.upstreams:
        return [(host(config.base_url or ""), 1.0, None, config)]
    found: list[tuple[str, float, int | None, ModelConfig]] = []
    for label, one in zip(labels(config.upstreams), config.upstreams, strict=True):
        single = config.model_copy(
            update={
                "base_url": one.base_url,
                "api_key_env": one.api_key_env,
                "upstream_model": one.upstream_model or config.upstream_model,
                "upstreams": [],
            }
        )
        found.append((label, one.weight, one.max_concurrency, single))
    return found


def _slots(config: ModelConfig, build: Callable[[ModelConfig], object]) -> list[Any]:
    from threadline.providers.routed_calls import slot

    return [
        slot(label, build(one), weight, limit, config.circuit)
        for label, weight, limit, one in upstream_configs(config)
    ]


def _fake_chat(name: str, config: ModelConfig) -> ChatModel:
    from threadline.providers.fake import FakeModel

    return FakeModel(name, config)


def _fake_images(name: str, config: ModelConfig) -> ImageModel:
    from threadline.providers.fake_images import FakeImageModel

    return FakeImageModel(name, config)


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        # llama.cpp in-process (xllamacpp) with the bundled SmolLM2 GGUF; text only
        Provider("local", "LOCAL", chat=_local_chat),
        # any /v1/chat/completions (and /images/*) server over httpx
        Provider(
            "openai-compatible",
            "OPENAI_COMPATIBLE",
            chat=_openai_chat,
            images=_openai_images,
            vision=True,
            requires=("base_url",),
        ),
        # scripted, for tests and demos
        Provider("fake", "FAKE", chat=_fake_chat, images=_fake_images, vision=True),
    )
}


def provider(name: str) -> Provider:
    """The entry for `name`; an unknown name is an error naming the known ones."""
    found = PROVIDERS.get(name)
    if found is None:
        raise UnknownProvider(f"unknown provider {name!r}; known providers: {', '.join(PROVIDERS)}")
    return found


class ProviderRegistry:
    """The table as the catalog reads it (`services.catalog.ModelProviders`)."""

    def label(self, name: str) -> str:
        return provider(name).label

    def chat_model(self, name: str, config: ModelConfig) -> ChatModel:
        factory = provider(config.provider).chat
        if factory is None:
            raise ModelError(f"model {name!r}: the {config.provider} provider does not chat")
        return factory(name, config)

    def image_model(self, name: str, config: ModelConfig) -> ImageModel:
        factory = provider(config.provider).images
        if factory is None:
            raise ModelError(f"model {name!r}: the {config.provider} provider makes no images")
        return factory(name, config)


REGISTRY = ProviderRegistry()


def api_key(name: str, config: ModelConfig) -> str | None:
    """The key in `config.api_key_env`, read when the model is built; a variable that is
    named but not set is an error now rather than a 401 later."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ModelError(
            f"model {name!r} needs an API key in the environment variable "
            f"{config.api_key_env}, which is not set"
        )
    return key
