"""The `openai-compatible` embedder: any server speaking OpenAI's `POST /embeddings`.

Why it exists: at scale, vectors come from a hosted API or from vLLM, Ollama, llama-server or
text-embeddings-inference, all of which take OpenAI's embeddings request. This module sends
texts in batches of `batch_size`, checks that each answer holds exactly one finite vector per
text (in `index` order, of one length), scales every vector to unit length, and turns every
failure (HTTP status, refused connection, timeout, garbled body) into a domain error whose
message says what to fix and never carries the API key or the upstream's raw body.

    ModelError       the upstream refused, failed, or answered something unusable
     └── ModelTimeout  it did not connect or answer within the configured time
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import httpx

from threadline.domain.documents import EmbedKind
from threadline.domain.errors import ModelError
from threadline.providers.upstream import TRANSPORT_ERRORS, Upstream, UpstreamErrors
from threadline.settings import EmbeddingConfig


class OpenAICompatibleEmbedder:
    """An Embedder served by an OpenAI-compatible HTTP server.

    `dim` is the configured one, else 0 until the first answer shows it (`probe_dim()` asks
    for it up front). An answer whose vectors have another length is an error: vectors of one
    `name` must share one space."""

    def __init__(
        self,
        config: EmbeddingConfig,
        *,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        upstream = Upstream.at(config.base_url, api_key, "[embeddings]")
        if not config.model:
            raise ValueError("[embeddings] model is required for openai-compatible embeddings")
        self.config = config
        self.model = config.model
        self.name = f"openai-compatible:{config.model}"
        self.dim = config.dim or 0
        self._errors = UpstreamErrors.for_service(
            upstream,
            subject=f"embeddings {self.name!r}",
            section="[embeddings]",
            api_key_env=config.api_key_env,
            timeout_seconds=config.timeout_seconds,
        )
        self._client = self._errors.client(transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def probe_dim(self) -> int:
        """The vectors' length, asking the upstream (one short text) when not yet known."""
        if not self.dim:
            await self.embed(["dimension probe"], "query")
        return self.dim

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> list[list[float]]:
        """Unit vectors for `texts`, in order. `kind` does not change the request: an
        OpenAI-compatible server embeds queries and passages alike."""
        vectors: list[list[float]] = []
        size = self.config.batch_size
        for start in range(0, len(texts), size):
            vectors.extend(await self._embed_batch(list(texts[start : start + size])))
        return vectors

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        try:
            response = await self._client.post("embeddings", json=body)
        except TRANSPORT_ERRORS as exc:
            raise self._errors.transport(exc) from None
        if response.status_code != 200:
            raise self._errors.status(
                response.status_code,
                response.content,
                response.reason_phrase,
                response.headers.get("retry-after"),
            )
        try:
            payload = json.loads(response.content)
        except ValueError:
            raise self._error("upstream answered with a body that is not JSON") from None
        return self._vectors(payload, len(texts))

    # -- reading the answer

    def _vectors(self, payload: Any, count: int) -> list[list[float]]:
        """The answer's vectors in `index` order, unit length, or a ModelError saying why not."""
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise self._error("upstream answered with JSON that is not an embeddings list")
        if len(data) != count:
            raise self._error(f"upstream returned {len(data)} vectors for {count} texts")
        ordered: list[list[float] | None] = [None] * count
        for position, item in enumerate(data):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not (type(index) is int and 0 <= index < count and ordered[index] is None):
                raise self._error("upstream returned vectors with missing or repeated indexes")
            if not isinstance(vector, list):
                raise self._error(
                    "upstream returned an embedding that is not a list of numbers "
                    "(base64 answers are not supported)"
                )
            ordered[index] = self._unit(vector)
        return [vector for vector in ordered if vector is not None]

    def _unit(self, vector: list[Any]) -> list[float]:
        if not vector or not all(type(x) in (float, int) for x in vector):
            raise self._error("upstream returned an embedding that is not a list of numbers")
        if self.dim and len(vector) != self.dim:
            source = "[embeddings] dim is" if self.config.dim else "earlier vectors were"
            raise self._error(
                f"upstream returned {len(vector)}-dimensional vectors, but {source} {self.dim}"
            )
        norm = math.sqrt(math.fsum(x * x for x in vector))
        if not math.isfinite(norm) or norm == 0.0:
            raise self._error("upstream returned a zero or non-finite vector")
        self.dim = len(vector)
        return [x / norm for x in vector]

    # -- errors

    def _error(self, problem: str) -> ModelError:
        return ModelError(f"embeddings {self.name!r}: {problem}")
