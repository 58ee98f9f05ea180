"""The model catalog: the configured models, their stable ids, prices and capabilities, and
the one live `ChatModel` per entry (built on first use by the factory the container gives)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from threadline.domain.errors import Unprocessable
from threadline.domain.events import Usage
from threadline.domain.ports import ChatModel
from threadline.settings import ModelConfig

# Model ids are uuid5(namespace, name): stable across restarts and machines.
MODEL_ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b8a-4c1e-9a57-2d0f4e8b7c61")

PROVIDER_LABELS = {"local": "LOCAL", "openai-compatible": "OPENAI_COMPATIBLE", "fake": "FAKE"}

ModelFactory = Callable[[str, ModelConfig], ChatModel]


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    id: uuid.UUID
    config: ModelConfig
    capabilities: tuple[str, ...] = field(default=())

    @property
    def provider(self) -> str:
        return self.config.provider

    @property
    def provider_label(self) -> str:
        return PROVIDER_LABELS[self.config.provider]

    def price(self, usage: Usage) -> int:
        """Credits for a reply: per-1k-token prices applied to the real counts, rounded up."""
        credits = self.config.credits
        raw = (
            usage.input_tokens * credits.input_per_1k + usage.output_tokens * credits.output_per_1k
        )
        return math.ceil(raw / 1000 - 1e-9) if raw > 0 else 0


class ModelCatalog:
    def __init__(self, models: dict[str, ModelConfig], default: str, factory: ModelFactory) -> None:
        self.default = default
        self._entries = {
            name: CatalogModel(
                name=name,
                id=uuid.uuid5(MODEL_ID_NAMESPACE, name),
                config=cfg,
                capabilities=_capabilities(cfg),
            )
            for name, cfg in models.items()
        }
        self._by_id = {entry.id: entry for entry in self._entries.values()}
        self._factory = factory
        self._live: dict[str, ChatModel] = {}

    def list(self) -> list[CatalogModel]:
        return list(self._entries.values())

    def get(self, name: str) -> CatalogModel:
        entry = self._entries.get(name)
        if entry is None:
            raise Unprocessable(
                f"unsupported model {name!r}; available models: {', '.join(self._entries)}"
            )
        return entry

    def by_id(self, model_id: uuid.UUID) -> CatalogModel | None:
        return self._by_id.get(model_id)

    def model(self, name: str) -> ChatModel:
        live = self._live.get(name)
        if live is None:
            entry = self.get(name)
            live = self._live[name] = self._factory(name, entry.config)
        return live

    async def aclose(self) -> None:
        live, self._live = list(self._live.values()), {}
        await asyncio.gather(*(model.aclose() for model in live), return_exceptions=True)


def _capabilities(cfg: ModelConfig) -> tuple[str, ...]:
    caps = ["chat", "streaming"]
    if cfg.vision:
        caps.append("vision")
    return tuple(caps)
