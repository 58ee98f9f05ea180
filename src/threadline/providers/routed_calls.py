"""Image models and embedders with several upstreams: each request is one call (an image,
a batch of vectors), sent through the same `UpstreamPool` as a routed chat model's streams
(providers/router.py): by weight and load, queued at `max_concurrency`, retried on another
upstream (or later) on the statuses and failures worth it, skipping an open circuit.

Why it exists apart from the chat router: nothing streams here, so there is no first token,
no continuation and no fallback model; what is left is the choice of upstream and the
retries, which these wrappers apply to the providers' own one-upstream classes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from threadline.domain.documents import EmbedKind
from threadline.domain.image_generation import GeneratedImage, GenerationRequest, VariationRequest
from threadline.domain.routing import Circuit
from threadline.providers.router import UpstreamPool, UpstreamSlot
from threadline.settings import CircuitConfig, UpstreamConfig


def slot(
    label: str, model: Any, weight: float, limit: int | None, circuit: CircuitConfig
) -> UpstreamSlot:
    """One upstream of a pool: its model, weight, limit and a circuit of its own."""
    breaker = Circuit(circuit.failures, circuit.open_seconds, time.monotonic)
    return UpstreamSlot(label, model, weight, limit, breaker)


def labels(upstreams: Sequence[UpstreamConfig]) -> list[str]:
    """Each upstream's name (default: its host:port), unique: a host served twice is told
    apart by a suffix ("#2")."""
    found: list[str] = []
    for one in upstreams:
        label = one.name or host(one.base_url)
        if label in found:
            label = next(f"{label}#{n}" for n in range(2, 10_000) if f"{label}#{n}" not in found)
        found.append(label)
    return found


def host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


class RoutedImageModel:
    """An ImageModel over several upstreams (`upstreams = [...]` on an image model)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def snapshot(self) -> list[dict[str, Any]]:
        return self.pool.snapshot()

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        images: list[GeneratedImage] = await self.pool.call(lambda m: m.generate(request))
        return images

    async def vary(self, request: VariationRequest) -> list[GeneratedImage]:
        images: list[GeneratedImage] = await self.pool.call(lambda m: m.vary(request))
        return images

    async def aclose(self) -> None:
        await self.pool.aclose()


class RoutedEmbedder:
    """An Embedder over several upstreams serving one embedding model (`[embeddings]`
    `upstreams = [...]`): every upstream must give vectors of one length."""

    def __init__(self, name: str, pool: UpstreamPool) -> None:
        self.name = name
        self.pool = pool

    @property
    def members(self) -> Sequence[Any]:
        return [s.model for s in self.pool.slots]

    @property
    def dim(self) -> int:
        return max((member.dim for member in self.members), default=0)

    @dim.setter
    def dim(self, value: int) -> None:
        for member in self.members:
            member.dim = value

    def snapshot(self) -> list[dict[str, Any]]:
        return self.pool.snapshot()

    async def probe_dim(self) -> int:
        if not self.dim:
            await self.embed(["dimension probe"], "query")
        return self.dim

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> list[list[float]]:
        known = self.dim
        for member in self.members:  # one space: a member learns the length the others saw
            if known and not member.dim:
                member.dim = known
        vectors: list[list[float]] = await self.pool.call(lambda m: m.embed(texts, kind))
        return vectors

    async def aclose(self) -> None:
        await self.pool.aclose()
