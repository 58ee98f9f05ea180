"""Rerankers: the cross-encoders that reorder retrieval's fused candidates, chosen by `[rerank]`.

    provider = "none"               no second stage (the default)
    provider = "cohere-compatible"  CohereCompatibleReranker: POST {base_url}/rerank

Why an HTTP reranker: a cross-encoder reads the question and a passage together, which is
what tells a page that answers apart from one that shares its words, and the servers that
run them (llama.cpp's `llama-server --reranking`, text-embeddings-inference, Infinity,
vLLM) and the hosted APIs (Cohere, Jina, Voyage) take one request shape: a query, the
documents, and an answer of `{index, relevance_score}` pairs. No reranker small and fast
enough ships in a wheel (issue 18's notes list the candidates measured), so none runs
in-process.

Every failure (HTTP status, refused connection, timeout, a garbled or incomplete answer)
becomes a ModelError that names the reranker and never carries the API key or the
upstream's raw body, as the embedders' do.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import httpx

from threadline.domain.documents import Reranker
from threadline.domain.errors import ModelError
from threadline.providers.upstream import Upstream, UpstreamErrors, exchange
from threadline.settings import RerankConfig

MAX_RESPONSE_BYTES = 1 << 20  # 100 scores take ~6 kB; more is not a rerank answer


def build_reranker(config: RerankConfig) -> Reranker | None:
    """The reranker `[rerank]` asks for (None for provider "none"). Opens no connection; a
    named API key variable that is unset is an error now."""
    if config.provider == "none":
        return None
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise ModelError(
                f"[rerank] needs an API key in the environment variable "
                f"{config.api_key_env}, which is not set"
            )
    return CohereCompatibleReranker(config, api_key=api_key)


class CohereCompatibleReranker:
    """A Reranker served by any server speaking Cohere's and Jina's rerank API."""

    def __init__(
        self,
        config: RerankConfig,
        *,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not config.model:
            raise ValueError("[rerank] model is required for a cohere-compatible reranker")
        upstream = Upstream.at(config.base_url, api_key, "[rerank]")
        self.model = config.model
        self.name = f"cohere-compatible:{config.model}"
        self.max_chars = config.max_passage_chars
        self._errors = UpstreamErrors.for_service(
            upstream,
            subject=f"reranker {self.name!r}",
            section="[rerank]",
            api_key_env=config.api_key_env,
            timeout_seconds=config.timeout_seconds,
        )
        self._client = self._errors.client(transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, in the passages' order. The query and each
        passage are cut to `max_passage_chars`."""
        if not passages:
            return []
        body = {
            "model": self.model,
            "query": query[: self.max_chars],
            "documents": [p[: self.max_chars] for p in passages],
            "top_n": len(passages),
            "return_documents": False,
        }
        request = self._client.build_request("POST", "rerank", json=body)
        raw = await exchange(self._client, request, self._errors, MAX_RESPONSE_BYTES)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise self._error("upstream answered with a body that is not JSON") from None
        return self._scores(payload, len(passages))

    def _scores(self, payload: Any, count: int) -> list[float]:
        """The answer's scores by index: each passage exactly once, each a finite number."""
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise self._error("upstream answered with JSON that holds no results list")
        scores: list[float | None] = [None] * count
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            value = item.get("relevance_score") if isinstance(item, dict) else None
            if not (type(index) is int and 0 <= index < count and scores[index] is None):
                raise self._error("upstream returned results with missing or repeated indexes")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise self._error("upstream returned a relevance_score that is not a number")
            if not math.isfinite(value):
                raise self._error("upstream returned a relevance_score that is not finite")
            scores[index] = float(value)
        found = [s for s in scores if s is not None]
        if len(found) != count:
            raise self._error(f"upstream scored {len(found)} of {count} passages")
        return found

    def _error(self, problem: str) -> ModelError:
        return ModelError(f"reranker {self.name!r}: {problem}")
