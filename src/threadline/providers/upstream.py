"""The server behind an OpenAI-compatible provider (chat, embeddings, images), as the three
share it: its base URL, checked once; its `host[:port]`, the only part of it that error
messages name; what of its error bodies may be passed on (one trimmed line, the API key
masked should the server echo it, never the body itself); and the one mapping of its
failures to domain errors (`UpstreamErrors`), so the three say the same thing of a 401 or a
timeout:

    ModelError       the upstream refused (any non-200 status), failed or broke off
     └── ModelTimeout  it did not connect, or answer, within the configured time
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from threadline.domain.errors import ModelError, ModelTimeout
from threadline.domain.routing import RETRY_STATUSES

if TYPE_CHECKING:
    from threadline.settings import ModelConfig

# What an httpx request raises besides a status: refused, timed out, dropped, malformed.
TRANSPORT_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)

SERVICE_CONNECT_SECONDS = 5.0  # a document service's connect time-out, capped by its own
MESSAGE_CAP = 300  # characters of an upstream's error message passed on


@dataclass(frozen=True, slots=True)
class Upstream:
    url: httpx.URL
    host: str
    api_key: str | None = None

    @classmethod
    def at(cls, base_url: str | None, api_key: str | None, owner: str) -> Upstream:
        """`owner` names the configuration in the error, e.g. "model 'gpt-4o-mini'"."""
        url = httpx.URL(base_url or "")
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{owner}: base_url must be an http:// or https:// URL")
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        return cls(url, host, api_key)

    def endpoint(self, path: str) -> httpx.URL:
        """`path` (e.g. "chat/completions") under the base URL, whether or not it ends in /."""
        return self.url.copy_with(raw_path=self.url.raw_path.rstrip(b"/") + b"/" + path.encode())

    def clean(self, text: str | None) -> str:
        """One trimmed line, with the API key masked should the upstream echo it."""
        text = " ".join((text or "").split())
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 1] + "…"


async def exchange(
    client: httpx.AsyncClient, request: httpx.Request, errors: UpstreamErrors, cap: int
) -> bytes:
    """Send `request` and read the whole answer: a 200's body, else the ModelError that
    `errors` makes of the failure (no connection or answer, a status, a body over `cap`
    bytes, which is not read further)."""
    answered = False
    try:
        response = await client.send(request, stream=True)
        try:
            answered = True
            raw = await _read_capped(response, cap)
        finally:
            await response.aclose()
    except TRANSPORT_ERRORS as exc:
        raise errors.transport(exc, answered=answered) from None
    if raw is None:
        raise ModelError(f"{errors.subject}: upstream answered more than {cap // 2**20} MB")
    if response.status_code != 200:
        raise errors.status(
            response.status_code, raw, response.reason_phrase, response.headers.get("retry-after")
        )
    return raw


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    data = bytearray()
    async for part in response.aiter_bytes():
        data += part
        if len(data) > cap:
            return None
    return bytes(data)


def error_message(payload: bytes | dict[str, Any] | None) -> str | None:
    """The message of an error body in OpenAI's shape (or a close cousin); never the body."""
    if isinstance(payload, bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for candidate in (error, payload.get("message"), payload.get("detail")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class UpstreamErrors:
    """One provider's failures, told the same way by every HTTP provider.

    `subject` opens every message ("model 'gpt-4o-mini'", "embeddings 'openai-compatible:x'");
    `section` is where the provider's settings live, for hints ('[models."gpt-4o-mini"]');
    `model_key` is the setting that names the upstream's model ("upstream_model")."""

    upstream: Upstream
    subject: str
    section: str
    model_key: str
    api_key_env: str | None
    connect_seconds: float
    timeout_seconds: float

    @classmethod
    def for_model(cls, upstream: Upstream, name: str, config: ModelConfig) -> UpstreamErrors:
        """A configured model's (`[models."name"]`, chat or images)."""
        return cls(
            upstream,
            subject=f"model {name!r}",
            section=f"[models.{json.dumps(name)}]",
            model_key="upstream_model",
            api_key_env=config.api_key_env,
            connect_seconds=config.connect_timeout_seconds,
            timeout_seconds=config.timeout_seconds,
        )

    @classmethod
    def for_service(
        cls,
        upstream: Upstream,
        *,
        subject: str,
        section: str,
        api_key_env: str | None,
        timeout_seconds: float,
    ) -> UpstreamErrors:
        """A document service's (`[embeddings]`, `[rerank]`): its model named by `model`, at
        most `SERVICE_CONNECT_SECONDS` to connect."""
        return cls(
            upstream,
            subject=subject,
            section=section,
            model_key="model",
            api_key_env=api_key_env,
            connect_seconds=min(SERVICE_CONNECT_SECONDS, timeout_seconds),
            timeout_seconds=timeout_seconds,
        )

    def client(self, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        """An httpx client for the upstream: its bearer key (if any) and these time-outs."""
        key = self.upstream.api_key
        return httpx.AsyncClient(
            base_url=self.upstream.url,
            headers={"Authorization": f"Bearer {key}"} if key else None,
            timeout=httpx.Timeout(self.timeout_seconds, connect=self.connect_seconds),
            transport=transport,
        )

    def status(
        self, status: int, body: bytes, reason: str | None = None, retry_after: str | None = None
    ) -> ModelError:
        """A non-200 answer: its status, and its error message (cleaned) or reason phrase.
        Whether it is worth another attempt (domain/routing.py), and the `Retry-After` it
        gave, travel with it for the router."""
        prefix = f"{self.subject}: upstream returned {status}"
        detail = self.upstream.clean(error_message(body))
        if status in (401, 403):
            extra = f": {detail}" if detail and status == 403 else ""
            message = f"{prefix}: it rejected the configured API key ({self._key_hint()}){extra}"
        elif 300 <= status < 400:
            message = f"{prefix}: a redirect, which is not followed (check base_url)"
        else:
            if not detail:
                detail = reason or "no error message"
                if status == 404:
                    detail += f" (check base_url and {self.model_key})"
            message = f"{prefix}: {detail}"
        return ModelError(
            message,
            retryable=status in RETRY_STATUSES,
            upstream_retry_after=_seconds(retry_after),
        )

    def transport(self, exc: Exception, *, answered: bool = False) -> ModelError:
        """A request that got no complete answer; `answered`: the status line had come."""
        subject, host = self.subject, self.upstream.host
        if isinstance(exc, httpx.ConnectTimeout):
            seconds = self.connect_seconds
            return ModelTimeout(f"{subject}: could not connect to {host} within {seconds:g}s")
        if isinstance(exc, httpx.PoolTimeout):
            return ModelTimeout(
                f"{subject}: no free connection to {host} within "
                f"{self.timeout_seconds:g}s (too many concurrent requests)"
            )
        if isinstance(exc, httpx.TimeoutException):
            waited = "sent nothing more for" if answered else "did not answer within"
            return ModelTimeout(f"{subject}: upstream {host} {waited} {self.timeout_seconds:g}s")
        if isinstance(exc, httpx.ConnectError):
            reason = self.upstream.clean(str(exc)) or "connection failed"
            return ModelError(f"{subject}: cannot connect to upstream {host}: {reason}")
        if answered:
            return ModelError(f"{subject}: upstream closed the stream early")
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return ModelError(f"{subject}: upstream {host} closed the connection unanswered")
        return ModelError(f"{subject}: request to {host} failed ({type(exc).__name__})")

    def _key_hint(self) -> str:
        if self.upstream.api_key is None:
            return f"no API key is configured: set api_key_env in {self.section}"
        if self.api_key_env:
            return f"check the key in ${self.api_key_env}"
        return "check the configured API key"


def _seconds(retry_after: str | None) -> float | None:
    """A `Retry-After` in seconds (the HTTP-date form is not honoured: None)."""
    try:
        seconds = float(retry_after) if retry_after else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None
