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
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.providers.upstream import Upstream, error_message
from threadline.settings import EmbeddingConfig

CONNECT_TIMEOUT = 5.0  # seconds; capped by the configured timeout


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
        url = upstream.url
        if not config.model:
            raise ValueError("[embeddings] model is required for openai-compatible embeddings")
        self.config = config
        self.model = config.model
        self.name = f"openai-compatible:{config.model}"
        self.dim = config.dim or 0
        self._api_key = api_key
        self._upstream = upstream
        self._host = upstream.host
        self._client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(
                config.timeout_seconds, connect=min(CONNECT_TIMEOUT, config.timeout_seconds)
            ),
            transport=transport,
        )

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
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise self._transport_error(exc) from None
        if response.status_code != 200:
            raise self._status_error(response)
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

    def _status_error(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        detail = self._clean(error_message(response.content))
        prefix = f"upstream returned {status}"
        if status in (401, 403):
            if self._api_key is None:
                hint = "no API key is configured (set api_key_env in [embeddings])"
            elif self.config.api_key_env:
                hint = f"check the key in ${self.config.api_key_env}"
            else:
                hint = "check the configured API key"
            return self._error(f"{prefix}: it rejected the API key ({hint})")
        if 300 <= status < 400:
            return self._error(f"{prefix}: a redirect, which is not followed (check base_url)")
        if not detail:
            detail = response.reason_phrase or "no error message"
            if status == 404:
                detail += " (check base_url and model)"
        return self._error(f"{prefix}: {detail}")

    def _transport_error(self, exc: Exception) -> ModelError:
        name, host = repr(self.name), self._host
        if isinstance(exc, httpx.ConnectTimeout):
            seconds = min(CONNECT_TIMEOUT, self.config.timeout_seconds)
            return ModelTimeout(f"embeddings {name}: could not connect to {host} in {seconds:g}s")
        if isinstance(exc, httpx.TimeoutException):
            seconds = self.config.timeout_seconds
            return ModelTimeout(
                f"embeddings {name}: upstream {host} did not answer in {seconds:g}s"
            )
        if isinstance(exc, httpx.ConnectError):
            reason = self._clean(str(exc)) or "connection failed"
            return ModelError(f"embeddings {name}: cannot connect to upstream {host}: {reason}")
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return ModelError(
                f"embeddings {name}: upstream {host} closed the connection unanswered"
            )
        return ModelError(f"embeddings {name}: request to {host} failed ({type(exc).__name__})")

    def _clean(self, text: str | None) -> str:
        return self._upstream.clean(text)
