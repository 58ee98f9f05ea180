"""The server behind an OpenAI-compatible provider (chat, embeddings, images), as the three
share it: its base URL, checked once; its `host[:port]`, the only part of it that error
messages name; and what of its error bodies may be passed on (one trimmed line, the API key
masked should the server echo it, never the body itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

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
