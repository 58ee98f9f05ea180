"""The document pipeline's settings: `[embeddings]` (how chunk and query vectors are made),
`[rerank]` (retrieval's second stage) and `[documents]` (upload limits, parsing, chunking,
retrieval, the job worker), apart from settings.py so that module stays one screenful per
section. `Settings` holds them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from threadline.settings_routing import CircuitConfig, RetryConfig, UpstreamConfig


class EmbeddingConfig(BaseModel):
    """`[embeddings]`: how chunk and query vectors are made."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["local", "openai-compatible", "none"] = "local"
    model: str | None = None  # local: which bundled model; openai-compatible: upstream name
    base_url: str | None = None
    api_key_env: str | None = None
    dim: int | None = Field(None, ge=1)  # openai-compatible: asked of the upstream if unset
    batch_size: int = Field(32, ge=1)
    timeout_seconds: float = Field(60.0, gt=0)
    # several servers of the one embedding model (providers/routed_calls.py); an upstream's
    # upstream_model, if given, is the model name that server knows it by
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    queue_seconds: float = Field(10.0, ge=0)  # wait for a free upstream (max_concurrency)

    @model_validator(mode="after")
    def _check_provider_fields(self) -> EmbeddingConfig:
        if self.upstreams and self.provider != "openai-compatible":
            raise ValueError('[embeddings] upstreams need provider = "openai-compatible"')
        if self.upstreams and self.base_url:
            raise ValueError(
                "[embeddings] give base_url (one upstream) or upstreams (several), not both"
            )
        if self.provider == "openai-compatible" and not (
            (self.base_url or self.upstreams) and self.model
        ):
            raise ValueError("openai-compatible embeddings need base_url (or upstreams) and model")
        return self


class RerankConfig(BaseModel):
    """`[rerank]`: the second stage of retrieval, a cross-encoder that reorders the fused
    candidates (services/reranking.py). `documents.rerank` says when it runs."""

    model_config = ConfigDict(extra="forbid")

    # "none": no reranker; "cohere-compatible": any server speaking the rerank API of
    # Cohere and Jina (POST {base_url}/rerank: llama.cpp's llama-server --reranking,
    # text-embeddings-inference, Infinity, vLLM, the hosted APIs)
    provider: Literal["none", "cohere-compatible"] = "none"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_seconds: float = Field(5.0, gt=0)
    # the query and each passage are cut to this many characters before they are sent (a
    # cross-encoder reads a few hundred tokens; the rest costs time and says little more)
    max_passage_chars: int = Field(2000, ge=100)

    @model_validator(mode="after")
    def _check_provider_fields(self) -> RerankConfig:
        if self.provider == "cohere-compatible" and not (self.base_url and self.model):
            raise ValueError("[rerank] a cohere-compatible reranker needs base_url and model")
        return self


class DocumentSettings(BaseModel):
    """`[documents]`: upload limits (AI Hub's, by default), parsing, chunking, retrieval."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_pages: int = Field(800, ge=1)
    max_request_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_documents_per_conversation: int = Field(100, ge=1)
    parse_timeout_seconds: float = Field(120.0, gt=0)
    parse_memory_mb: int = Field(2048, ge=64)  # address space; OCR (rapidocr) needs 2048
    ocr: bool = True  # read image-only PDF pages and uploaded images with OCR
    # "rapidocr" (pip-installed, its models in its wheel) or "tesseract" (Debian's
    # tesseract-ocr package, installed separately)
    ocr_engine: Literal["rapidocr", "tesseract"] = "rapidocr"
    chunk_chars: int = Field(1200, ge=100)
    chunk_overlap_chars: int = Field(150, ge=0)
    top_k: int = Field(6, ge=1, le=50)
    advanced_top_k: int = Field(12, ge=1, le=100)
    # the second stage ([rerank]): "off"; "on" (every search, a failing reranker fails
    # the search); "auto" (when a reranker is configured; if it fails or is slow, the
    # fused order stands)
    rerank: Literal["off", "on", "auto"] = "auto"
    rerank_candidates: int = Field(30, ge=2, le=100)  # fused candidates the reranker reorders
    ready_wait_seconds: float = Field(60.0, ge=0)  # a chat waits this long for ingestion
    embedded_worker: bool = True  # run ingestion jobs inside the API process
    # Start the parser's children with the API process, so the first upload finds one ready;
    # false: started on the first upload (a faster start, e.g. for short-lived test apps).
    parser_warm_start: bool = True
    worker_concurrency: int = Field(1, ge=1)
    job_lease_seconds: float = Field(60.0, gt=0)
    job_max_attempts: int = Field(3, ge=1, le=100)
    # An attempt of a job that makes no progress for this long (domain/progress.py) is
    # cancelled (the parser child is killed) and counts as failed. Above
    # parse_timeout_seconds (a parse is one step), so that a slow
    # parse fails its document with the parser's reason rather than being retried.
    job_timeout_seconds: float = Field(900.0, gt=0)
    # A failed attempt (an error, a timeout, a process that died) is retried after
    # base * 2^(attempt - 1) seconds, at most max.
    job_retry_base_seconds: float = Field(5.0, ge=0)
    job_retry_max_seconds: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _check_job_limits(self) -> DocumentSettings:
        if self.job_timeout_seconds <= self.parse_timeout_seconds:
            raise ValueError(
                f"documents.job_timeout_seconds ({self.job_timeout_seconds:g}) must be more "
                f"than documents.parse_timeout_seconds ({self.parse_timeout_seconds:g}): "
                "an attempt includes parsing"
            )
        if self.job_retry_max_seconds < self.job_retry_base_seconds:
            raise ValueError(
                "documents.job_retry_max_seconds must be at least job_retry_base_seconds"
            )
        return self
