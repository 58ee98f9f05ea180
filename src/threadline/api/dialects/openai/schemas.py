"""Wire schema of `POST /v1/chat/completions`, and its translation to core messages.

Unknown arguments are refused as OpenAI refuses them ("Unrecognized request argument
supplied"). Arguments OpenAI knows but this server cannot honour (`n` > 1, tools, logprobs,
penalties, JSON modes, ...) are accepted only with their neutral value; anything else is a 400
that names the argument. Nothing is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from threadline.api.bounds import Positive, StoreInt
from threadline.domain.errors import InvalidRequest
from threadline.domain.ports import ChatMessage

STOP_MAX = 4
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class OpenAIRequestError(InvalidRequest):
    """A 400 that names the offending argument, as OpenAI's `param` does."""

    def __init__(self, message: str, *, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.error_code = code


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


TEXT_PART: dict[str, Any] = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {
        "role": {"enum": list(ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]},
        "name": {"type": "null"},
    },
    "description": "text content; `image_url` parts are read in the last message when it is "
    "the user's (see the README)",
}
_NOTHING = [{"type": "null"}]
# The schema of each argument honoured only with its neutral value (see NEUTRAL).
NEUTRAL_SCHEMA: dict[str, dict[str, Any]] = {
    "n": {"enum": [1, None]},
    "presence_penalty": {"enum": [0, None]},
    "frequency_penalty": {"enum": [0, None]},
    "logit_bias": {"anyOf": [{"type": "object", "maxProperties": 0}, *_NOTHING]},
    "logprobs": {"enum": [False, None]},
    "top_logprobs": {"enum": [0, None]},
    "seed": {"type": "null"},
    "response_format": {"anyOf": [{"const": {"type": "text"}}, *_NOTHING]},
    "tools": {"anyOf": [{"type": "array", "maxItems": 0}, *_NOTHING]},
    "tool_choice": {"enum": ["none", None]},
    "functions": {"anyOf": [{"type": "array", "maxItems": 0}, *_NOTHING]},
    "function_call": {"enum": ["none", None]},
    "store": {"enum": [False, None]},
    "service_tier": {"enum": ["auto", "default", None]},
    "modalities": {"anyOf": [{"const": ["text"]}, *_NOTHING]},
}
_STOP = {"type": "string", "minLength": 1}
RULES = [
    {  # max_tokens or max_completion_tokens, not both
        "not": {
            "required": ["max_tokens", "max_completion_tokens"],
            "properties": {
                "max_tokens": {"type": "integer"},
                "max_completion_tokens": {"type": "integer"},
            },
        }
    },
    {  # stream_options only with stream: true
        "if": {
            "required": ["stream_options"],
            "properties": {"stream_options": {"type": "object"}},
        },
        "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
    },
]


def _document_rules(schema: dict[str, Any]) -> None:
    """What `check_supported` and `stop_sequences` enforce, said in the schema."""
    properties = schema["properties"]
    for name, allowed in NEUTRAL_SCHEMA.items():
        properties[name] = {**allowed, "description": "accepted only with its neutral value"}
    properties["stop"] = {
        "anyOf": [_STOP, {"type": "array", "items": _STOP, "maxItems": STOP_MAX}, *_NOTHING]
    }
    schema["allOf"] = RULES


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_rules)

    model: str
    messages: list[dict[str, Any]] = Field(
        min_length=1, json_schema_extra={"items": MESSAGE_SCHEMA}
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Positive | None = None
    max_completion_tokens: Positive | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = Field(None, max_length=256)
    # Known to OpenAI; honoured only with their neutral value (see NEUTRAL).
    n: StoreInt | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: StoreInt | None = None
    seed: StoreInt | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None


NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v == 1,
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "logit_bias": lambda v: not v,
    "logprobs": lambda v: v is False,
    "top_logprobs": lambda v: v == 0,
    "seed": lambda v: False,
    "response_format": lambda v: v == {"type": "text"},
    "tools": lambda v: not v,
    "tool_choice": lambda v: v == "none",
    "parallel_tool_calls": lambda v: True,  # meaningless without tools, which are refused
    "functions": lambda v: not v,
    "function_call": lambda v: v == "none",
    "store": lambda v: v is False,
    "service_tier": lambda v: v in ("auto", "default"),
    "modalities": lambda v: v == ["text"],
}


def refuse_unsupported(request: Any, neutral: dict[str, Callable[[Any], bool]]) -> None:
    """A parameter OpenAI knows but this server honours only with its neutral value is
    refused by name when set to anything else; `stream_options` needs `stream` (OpenAI's
    rule). Shared by chat completions and the Responses API."""
    for name, is_neutral in neutral.items():
        value = getattr(request, name)
        if value is not None and not is_neutral(value):
            shown = repr(value) if len(repr(value)) <= 60 else "this value"
            raise OpenAIRequestError(
                f"{name}={shown} is not supported by this server",
                param=name,
                code="unsupported_parameter",
            )
    if request.stream_options is not None and not request.stream:
        raise OpenAIRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def check_supported(request: ChatCompletionRequest) -> None:
    refuse_unsupported(request, NEUTRAL)
    if request.max_tokens is not None and request.max_completion_tokens is not None:
        raise OpenAIRequestError(
            "Set max_completion_tokens or max_tokens, not both", param="max_tokens"
        )


def stop_sequences(request: ChatCompletionRequest) -> tuple[str, ...]:
    stop = request.stop
    if stop is None:
        return ()
    sequences = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(sequences) > STOP_MAX:
        raise OpenAIRequestError(f"stop takes at most {STOP_MAX} sequences", param="stop")
    if any(not s for s in sequences):
        raise OpenAIRequestError("stop sequences must not be empty", param="stop")
    return sequences


def chat_messages(request: ChatCompletionRequest) -> tuple[ChatMessage, ...]:
    return tuple(_message(i, raw) for i, raw in enumerate(request.messages))


def image_urls(request: ChatCompletionRequest) -> tuple[str, ...]:
    """The `image_url` parts' URLs (http(s) or base64 data URLs) of the last message, which
    must be the user's; images in earlier messages are refused (history is text)."""
    last = len(request.messages) - 1
    urls: list[str] = []
    for index, raw in enumerate(request.messages):
        content = raw.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not (isinstance(part, dict) and part.get("type") == "image_url"):
                continue
            where = f"messages[{index}].content[{j}]"
            if index != last or raw.get("role") != "user":
                raise OpenAIRequestError(
                    f"{where}: images are read in the last message only, when it is the "
                    "user's (earlier turns are replayed as text)",
                    param=where,
                )
            urls.append(_image_url(where, part))
    return tuple(urls)


def _image_url(where: str, part: dict[str, Any]) -> str:
    """The part's URL. `detail` is honoured only as "auto" (the default): the image goes to
    the model as sent, so "low" or "high" would be a promise not kept, and is refused."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise OpenAIRequestError(f"{where}.image_url.url must be a URL", param=where)
    if isinstance(image, dict):
        unknown = sorted(set(image) - {"url", "detail"})
        if unknown:
            raise OpenAIRequestError(
                f"{where}.image_url: unknown field(s) {', '.join(unknown)}", param=where
            )
        detail = image.get("detail", "auto")
        if detail != "auto":
            raise OpenAIRequestError(
                f"{where}.image_url.detail {detail!r} is not supported: images go to the "
                'model as sent (detail "auto"); leave detail out or send "auto"',
                param=where,
            )
    return url


def _message(index: int, raw: dict[str, Any]) -> ChatMessage:
    where = f"messages[{index}]"
    role = raw.get("role")
    if role not in ROLES:
        raise OpenAIRequestError(
            f"{where}.role {role!r} is not supported; use one of: {', '.join(ROLES)}"
            + (" (tool calling is not supported)" if role in ("tool", "function") else ""),
            param=f"{where}.role",
        )
    for key in raw:
        if key not in ("role", "content", "name"):
            raise OpenAIRequestError(
                f"{where}.{key} is not supported by this server", param=f"{where}.{key}"
            )
    if raw.get("name") is not None:
        raise OpenAIRequestError(
            f"{where}.name is not supported by this server", param=f"{where}.name"
        )
    if "content" not in raw:
        raise OpenAIRequestError(
            f"Missing required parameter: '{where}.content'.",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    return ChatMessage(ROLES[role], _text(where, raw["content"]))


def _text(where: str, content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OpenAIRequestError(
            f"{where}.content must be a string or an array of text parts", param=f"{where}.content"
        )
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            continue  # see image_urls
        if kind != "text" or not isinstance(part.get("text"), str):
            raise OpenAIRequestError(
                f"{where}.content[{j}]: only text and image_url parts are supported (got {kind!r})",
                param=f"{where}.content[{j}]",
            )
        unknown = sorted(set(part) - {"type", "text"})
        if unknown:
            raise OpenAIRequestError(
                f"{where}.content[{j}]: unknown field(s) {', '.join(unknown)[:200]}",
                param=f"{where}.content[{j}]",
            )
        texts.append(part["text"])
    return "".join(texts)
