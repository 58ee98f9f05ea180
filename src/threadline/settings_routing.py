"""A routed model's settings (`upstreams`, `retry`, `timeout`, `circuit`): the parts of
`[models.NAME]` that model routing reads (providers/router.py, domain/routing.py), apart
from settings.py so that module stays one screenful per section. `ModelConfig` holds them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UpstreamConfig(BaseModel):
    """One server of a model with several (`upstreams = [{ base_url = ... }, ...]`)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    api_key_env: str | None = None
    upstream_model: str | None = None  # default: the model's own upstream_model, or its name
    weight: float = Field(1.0, gt=0, le=1_000_000)
    max_concurrency: int | None = Field(None, ge=1)  # requests at once; the rest queue
    name: str | None = None  # how /metrics and /api/admin/upstreams name it (default host:port)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        return url


class RetryConfig(BaseModel):
    """`retry`: attempts per upstream before the first token, and the wait between them."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(2, ge=1, le=10)
    backoff_ms: int = Field(200, ge=0, le=60_000)
    max_retry_after_seconds: float = Field(10.0, ge=0)  # a longer Retry-After: not retried


class TimeoutConfig(BaseModel):
    """`timeout`: how long an upstream may take to its first token, between two tokens, and
    how long a request waits for a free slot (`max_concurrency`) before it is refused."""

    model_config = ConfigDict(extra="forbid")

    first_token_seconds: float | None = Field(None, gt=0)
    idle_seconds: float | None = Field(None, gt=0)
    queue_seconds: float = Field(10.0, ge=0)


class CircuitConfig(BaseModel):
    """`circuit`: after `failures` failures in a row an upstream is skipped `open_seconds`."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(5, ge=1)
    open_seconds: float = Field(30.0, gt=0)
