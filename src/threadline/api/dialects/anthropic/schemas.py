"""Wire schema of `POST /v1/messages` (and `/v1/messages/count_tokens`), and its translation
to core messages.

Anthropic's content blocks become Threadline's text messages; `image` blocks (base64 or URL
sources) become the reply's images, read in the last message when it is the user's, as the
OpenAI dialect reads `image_url` parts. What Anthropic knows but this server cannot honour
(tools, extended thinking, documents, an assistant prefill, ...) is refused by name with a
400, never ignored. `cache_control` on a block is a caching hint only: accepted, with no
effect (the usage reports no cache tokens). The SDK's newest releases no longer take
`temperature`, `top_p` and `top_k` as arguments; the API still does (`extra_body`).

`conversation` is Threadline's extension (not Anthropic's): the id of a stored conversation
(`conv_<hex>` as OpenAI's APIs name it, or the UUID of `/api/conversations`) that the request
continues; `messages` then holds only the new user turn (see `conversation_turn`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from threadline.api.bounds import Positive
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.ports import ChatMessage

ROLES = ("user", "assistant")
# Known to Anthropic's Messages API, not served here: refused by name (see `check_supported`).
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "thinking",
    "container",
    "mcp_servers",
    "context_management",
    "output_format",
    "output_config",
    "speed",
    "inference_geo",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
)
_BLOCK_KEYS = {"text": {"type", "text", "cache_control", "citations"}, "image": {"type", "source"}}
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class AnthropicRequestError(InvalidRequest):
    """A 400 `invalid_request_error` whose message names the field, as Anthropic's do."""


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=256)


class CountTokensRequest(BaseModel):
    """`POST /v1/messages/count_tokens`: the messages and system of a Messages request."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    # Threadline's extension: continue this stored conversation (SDK: `extra_body`)
    conversation: str | None = Field(None, max_length=100)


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`. Unknown fields are refused (`extra`); the names of
    `UNSUPPORTED` with a message that says the server does not serve them."""

    model_config = ConfigDict(extra="allow")

    max_tokens: Positive
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: Positive | None = None
    metadata: Metadata | None = None
    stream: bool | None = False
    service_tier: str | None = None
    cache_control: dict[str, Any] | None = None  # a caching hint: no effect here


def check_supported(request: CountTokensRequest) -> None:
    """Refuse by name what this server does not serve, and any field Anthropic does not know."""
    extra = request.model_extra or {}
    for name, value in extra.items():
        if name in UNSUPPORTED:
            if value in (None, [], {}) or (name == "tool_choice" and value == {"type": "none"}):
                continue
            raise AnthropicRequestError(f"{name}: not supported by this server")
        raise AnthropicRequestError(f"{name}: Extra inputs are not permitted")
    if isinstance(request, MessagesRequest):
        if request.service_tier not in (None, "auto", "standard_only"):
            raise AnthropicRequestError(
                f"service_tier: {request.service_tier!r} is not supported by this server "
                "(use auto or standard_only)"
            )
        if any(not s for s in request.stop_sequences or ()):
            raise AnthropicRequestError("stop_sequences: each must be a non-empty string")


def conversation_turn(request: CountTokensRequest) -> UUID | None:
    """The conversation the request continues, if it names one; its `messages` must then be
    exactly the new turn (one user message): the history is the stored conversation's."""
    if request.conversation is None:
        return None
    messages = request.messages
    if len(messages) != 1 or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise AnthropicRequestError(
            "messages: with conversation, messages must hold exactly the new turn, one user "
            f"message (got {len(messages)} messages); the conversation's history is read from "
            "the store"
        )
    value = request.conversation
    try:
        return UUID(hex=value.removeprefix("conv_")) if value.startswith("conv_") else UUID(value)
    except ValueError:
        raise NotFound(f"conversation: {value[:100]!r} not found") from None


def system_text(request: CountTokensRequest) -> str | None:
    system = request.system
    if system is None or isinstance(system, str):
        return system or None
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise AnthropicRequestError(f"system.{j}: only text blocks are supported")
        texts.append(_block_text(f"system.{j}", block))
    return "\n\n".join(texts) or None


def chat_messages(request: CountTokensRequest) -> tuple[ChatMessage, ...]:
    """The core messages (text), after checking each message's shape."""
    last = len(request.messages) - 1
    messages = []
    for index, raw in enumerate(request.messages):
        where = f"messages.{index}"
        if not isinstance(raw, dict):
            raise AnthropicRequestError(f"{where}: a message must be an object")
        unknown = sorted(set(raw) - {"role", "content"})
        if unknown:
            raise AnthropicRequestError(f"{where}.{unknown[0]}: Extra inputs are not permitted")
        role = raw.get("role")
        if role not in ROLES:
            raise AnthropicRequestError(
                f"{where}.role: Input should be 'user' or 'assistant' (got {role!r})"
            )
        if "content" not in raw:
            raise AnthropicRequestError(f"{where}.content: Field required")
        if index == last and role == "assistant":
            raise AnthropicRequestError(
                f"{where}: a final assistant message (prefill) is not supported by this "
                "server; end with the user's message"
            )
        messages.append(ChatMessage(role, _content_text(where, raw["content"], index == last)))
    return tuple(messages)


def image_sources(request: CountTokensRequest) -> tuple[str, ...]:
    """The last message's images as Threadline takes them: a `data:` URL for a base64
    source, the URL for a url source. Images in earlier messages are refused (history is
    replayed as text)."""
    if not request.messages:
        return ()
    raw = request.messages[-1]
    content = raw.get("content") if isinstance(raw, dict) else None
    urls = []
    for j, block in enumerate(content if isinstance(content, list) else []):
        if isinstance(block, dict) and block.get("type") == "image":
            urls.append(_image_url(f"messages.{len(request.messages) - 1}.content.{j}", block))
    return tuple(urls)


def _content_text(where: str, content: Any, is_last: bool) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise AnthropicRequestError(f"{where}.content: must be a string or a list of blocks")
    texts = []
    for j, block in enumerate(content):
        place = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "image":
            if not is_last:
                raise AnthropicRequestError(
                    f"{place}: images are read in the last message only, when it is the "
                    "user's (earlier turns are replayed as text)"
                )
            continue  # see image_sources
        if kind != "text":
            raise AnthropicRequestError(
                f"{place}: {kind!r} blocks are not supported by this server "
                "(text and image blocks are)"
            )
        texts.append(_block_text(place, block))
    return "".join(texts)


def _block_text(where: str, block: dict[str, Any]) -> str:
    unknown = sorted(set(block) - _BLOCK_KEYS["text"])
    if unknown:
        raise AnthropicRequestError(f"{where}.{unknown[0]}: Extra inputs are not permitted")
    if block.get("citations"):
        raise AnthropicRequestError(f"{where}.citations: not supported by this server")
    text = block.get("text")
    if not isinstance(text, str):
        raise AnthropicRequestError(f"{where}.text: Input should be a valid string")
    return text


def _image_url(where: str, block: dict[str, Any]) -> str:
    unknown = sorted(set(block) - _BLOCK_KEYS["image"] - {"cache_control"})
    if unknown:
        raise AnthropicRequestError(f"{where}.{unknown[0]}: Extra inputs are not permitted")
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in _IMAGE_TYPES:
            raise AnthropicRequestError(
                f"{where}.source.media_type: Input should be one of {', '.join(_IMAGE_TYPES)}"
            )
        if not isinstance(data, str) or not data:
            raise AnthropicRequestError(f"{where}.source.data: Field required")
        return f"data:{media_type};base64,{data}"
    if kind == "url" and isinstance(source, dict):
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise AnthropicRequestError(f"{where}.source.url: Field required")
        return url
    raise AnthropicRequestError(
        f"{where}.source: base64 and url image sources are supported (got {kind!r})"
    )
