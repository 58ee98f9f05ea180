"""The model catalog: the configured models, their stable ids, prices and capabilities, and
the one live `ChatModel` (or `ImageModel`) per entry, built on first use by the provider
registry the container gives (`providers/registry.py`), which also names each provider.

A model is of one kind: `get()` finds chat models (everything that chats asks it),
`image_entry()` image models; each refuses the other kind with a 422 naming the right ones.
Both accept an alias (`[aliases]`) and answer with the model it names: what is recorded,
charged and reported is the model that really answers, never the alias."""

from __future__ import annotations

import asyncio
import builtins
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from threadline.domain.errors import ThreadlineError, Unprocessable
from threadline.domain.events import Usage
from threadline.domain.image_generation import ImageModel
from threadline.domain.ports import ChatModel
from threadline.settings import ModelConfig

# Model ids are uuid5(namespace, name): stable across restarts and machines.
MODEL_ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b8a-4c1e-9a57-2d0f4e8b7c61")

ModelFactory = Callable[[str, ModelConfig], ChatModel]
ImageModelFactory = Callable[[str, ModelConfig], ImageModel]


class ModelProviders(Protocol):
    """The provider registry, as the catalog reads it: a provider's label, and its models."""

    def label(self, name: str) -> str: ...
    def chat_model(self, name: str, config: ModelConfig) -> ChatModel: ...
    def image_model(self, name: str, config: ModelConfig) -> ImageModel: ...


TOP_K_PROVIDERS = frozenset({"local"})


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    id: uuid.UUID
    config: ModelConfig
    provider_label: str  # how 1min.ai names the provider (`modelDetail.provider`)
    capabilities: tuple[str, ...] = field(default=())

    @property
    def provider(self) -> str:
        return self.config.provider

    @property
    def samples_top_k(self) -> bool:
        """Whether the model honours `top_k` (OpenAI-compatible upstreams take no such
        setting; llama.cpp does)."""
        return self.config.provider in TOP_K_PROVIDERS

    def price(self, usage: Usage) -> int:
        """Credits for a reply: per-1k-token prices applied to the real counts, rounded up."""
        credits = self.config.credits
        raw = (
            usage.input_tokens * credits.input_per_1k + usage.output_tokens * credits.output_per_1k
        )
        return math.ceil(raw / 1000 - 1e-9) if raw > 0 else 0

    def image_price(self, images: int) -> int:
        """Credits for `images` images made: `per_image` each, the total rounded up."""
        raw = images * self.config.credits.per_image
        return math.ceil(raw - 1e-9) if raw > 0 else 0

    @property
    def is_images(self) -> bool:
        return self.config.kind == "images"


class ModelCatalog:
    def __init__(
        self,
        models: dict[str, ModelConfig],
        default: str,
        providers: ModelProviders,
        *,
        factory: ModelFactory | None = None,
        image_factory: ImageModelFactory | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        """`factory` / `image_factory` replace the providers' own (tests script models)."""
        self.default = default
        self.aliases = dict(aliases or {})
        self._entries = {
            name: CatalogModel(
                name=name,
                id=uuid.uuid5(MODEL_ID_NAMESPACE, name),
                config=cfg,
                provider_label=providers.label(cfg.provider),
                capabilities=_capabilities(cfg),
            )
            for name, cfg in models.items()
        }
        self._by_id = {entry.id: entry for entry in self._entries.values()}
        self._factory = factory or providers.chat_model
        self._image_factory = image_factory or providers.image_model
        self._live: dict[str, ChatModel] = {}
        self._live_images: dict[str, ImageModel] = {}

    def list(self) -> list[CatalogModel]:
        return list(self._entries.values())

    def aliases_of(self, name: str) -> builtins.list[str]:
        return sorted(alias for alias, target in self.aliases.items() if target == name)

    def _find(self, name: str) -> CatalogModel | None:
        return self._entries.get(self.aliases.get(name, name))

    def entry(self, name: str) -> CatalogModel:
        """A configured model of either kind, by its name or an alias."""
        entry = self._find(name)
        if entry is None:
            known = ", ".join(self._entries)
            if self.aliases:
                known += f" (aliases: {', '.join(sorted(self.aliases))})"
            raise Unprocessable(f"unsupported model {name!r}; available models: {known}")
        return entry

    def get(self, name: str) -> CatalogModel:
        """A chat model; an image model is refused with the chat models named."""
        entry = self.entry(name)
        if entry.is_images:
            chat = ", ".join(m.name for m in self._entries.values() if not m.is_images)
            raise Unprocessable(
                f"model {name!r} makes images (IMAGE_GENERATOR, IMAGE_VARIATOR), it does not "
                f"chat; chat models configured: {chat or '(none)'}"
            )
        return entry

    def image_names(self) -> builtins.list[str]:
        return [m.name for m in self._entries.values() if m.is_images]

    def image_entry(self, name: str, feature: str) -> CatalogModel:
        """An image model for `feature`; anything else is refused with the image models named."""
        entry = self._find(name)
        if entry is None or not entry.is_images:
            what = "is not configured" if entry is None else "is a chat model"
            raise Unprocessable(
                f"{feature} needs an image model; {name!r} {what}; image-capable models "
                f"configured: {', '.join(self.image_names()) or '(none)'}"
            )
        return entry

    def image_model(self, name: str, feature: str) -> ImageModel:
        live = self._live_images.get(name)
        if live is None:
            entry = self.image_entry(name, feature)
            live = self._live_images[name] = self._image_factory(name, entry.config)
        return live

    def by_id(self, model_id: uuid.UUID) -> CatalogModel | None:
        return self._by_id.get(model_id)

    def model(self, name: str) -> ChatModel:
        live = self._live.get(name)
        if live is None:
            entry = self.get(name)
            live = self._live[name] = self._factory(name, entry.config)
        return live

    def upstreams(self, *, build: bool = False) -> builtins.list[dict[str, Any]]:
        """Each routed model's upstreams as its router sees them (state, figures);
        `build`: build the routed models not used yet (else only the live ones)."""
        found: builtins.list[dict[str, Any]] = []
        for entry in self._entries.values():
            if not entry.config.is_routed:
                continue
            live_models = self._live_images if entry.is_images else self._live
            if build and entry.name not in live_models:
                try:
                    if entry.is_images:
                        self.image_model(entry.name, "routing")
                    else:
                        self.model(entry.name)
                except ThreadlineError as exc:
                    found.append({"model": entry.name, "error": exc.message, "upstreams": []})
                    continue
            snapshot = getattr(live_models.get(entry.name), "snapshot", None)
            if snapshot is None:
                continue
            config = entry.config
            found.append(
                {
                    "model": entry.name,
                    "kind": config.kind,
                    "fallbacks": list(config.fallbacks),
                    "continueOnFailure": config.continue_on_failure,
                    "upstreams": snapshot(),
                }
            )
        return found

    async def aclose(self) -> None:
        live, self._live = list(self._live.values()), {}
        images, self._live_images = list(self._live_images.values()), {}
        closing = [model.aclose() for model in live] + [model.aclose() for model in images]
        await asyncio.gather(*closing, return_exceptions=True)


def _capabilities(cfg: ModelConfig) -> tuple[str, ...]:
    if cfg.kind == "images":
        return ("images", "image-variations")
    caps = ["chat", "streaming"]
    if cfg.vision:
        caps.append("vision")
    return tuple(caps)
