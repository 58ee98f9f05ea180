"""Embedders: what turns chunk and query text into vectors, chosen by `[embeddings]`.

    provider = "local"              LocalEmbedder: the bundled all-MiniLM-L6-v2 (int8 ONNX),
                                    in-process, nothing downloaded (local_embeddings.py)
    provider = "openai-compatible"  OpenAICompatibleEmbedder: POST {base_url}/embeddings
                                    (openai_embeddings.py)
    provider = "none"               no vectors: retrieval is full-text only

`HashingEmbedder` is for tests only: a deterministic bag-of-words hash with no model, never
built from settings.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence

from threadline.domain.documents import Embedder, EmbedKind
from threadline.domain.errors import ModelError
from threadline.providers.local_embeddings import BUNDLED, DEFAULT_MODEL, LocalEmbedder
from threadline.providers.openai_embeddings import OpenAICompatibleEmbedder
from threadline.settings import EmbeddingConfig

__all__ = ["HashingEmbedder", "LocalEmbedder", "OpenAICompatibleEmbedder", "build_embedder"]


def build_embedder(config: EmbeddingConfig) -> Embedder | None:
    """The embedder `[embeddings]` asks for (None for provider "none"). Loads no model and
    opens no connection; a missing API key or an unknown bundled model is an error now."""
    if config.provider == "none":
        return None
    if config.provider == "local":
        if config.model is not None and config.model not in BUNDLED:
            raise ValueError(
                f"[embeddings] model {config.model!r} is not a bundled model "
                f"(bundled: {', '.join(sorted(BUNDLED))})"
            )
        bundled = BUNDLED[config.model or DEFAULT_MODEL]
        if config.dim is not None and config.dim != bundled.dim:
            raise ValueError(
                f"[embeddings] dim {config.dim} does not match the bundled {bundled.name} "
                f"({bundled.dim}); leave it unset"
            )
        return LocalEmbedder(config.model, batch_size=config.batch_size)
    if config.upstreams:
        return _routed(config)
    return OpenAICompatibleEmbedder(config, api_key=_api_key(config))


def _routed(config: EmbeddingConfig) -> Embedder:
    """One embedder per upstream behind a pool (providers/routed_calls.py)."""
    from threadline.providers.routed_calls import RoutedEmbedder, labels, slot
    from threadline.providers.router import UpstreamPool

    slots = []
    for label, one in zip(labels(config.upstreams), config.upstreams, strict=True):
        single = config.model_copy(
            update={
                "base_url": one.base_url,
                "api_key_env": one.api_key_env,
                "model": one.upstream_model or config.model,
                "upstreams": [],
            }
        )
        member = OpenAICompatibleEmbedder(single, api_key=_api_key(single))
        member.name = f"openai-compatible:{config.model}"  # one space, whatever the server
        slots.append(slot(label, member, one.weight, one.max_concurrency, config.circuit))
    name = f"openai-compatible:{config.model}"
    pool = UpstreamPool(f"embeddings {name}", slots, config.retry, config.queue_seconds)
    return RoutedEmbedder(name, pool)


def _api_key(config: EmbeddingConfig) -> str | None:
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ModelError(
            f"[embeddings] needs an API key in the environment variable "
            f"{config.api_key_env}, which is not set"
        )
    return key


_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """FOR TESTS ONLY: words hashed into `dim` signed buckets, then unit length. Texts that
    share words score high; it knows no meaning. Instant and dependency-free, so service tests
    can index and search without a model."""

    def __init__(self, dim: int = 64) -> None:
        self.name = f"hashing-test:{dim}"
        self.dim = dim

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    async def aclose(self) -> None:
        pass

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            vector[0], norm = 1.0, 1.0  # no words: one fixed unit vector
        return [x / norm for x in vector]
