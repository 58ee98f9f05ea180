"""Wire schemas of OpenAI's Responses and Conversations APIs, and their input items as core
messages.

An input item is a message (`{"role", "content"}`, with or without `"type": "message"`):
content as a string or as parts. Parts: `input_text` and `output_text` (text), `input_image`
(an http(s) or data URL, or an asset id as `file_id`) and `input_file` (an asset id as
`file_id`, answered from the document index) in the last message, which must be the user's.
Every other item type (function calls, item references, reasoning, ...) and every other part
is refused by name. Arguments OpenAI knows but this server cannot honour are accepted only
with their neutral value; unknown arguments are a 400, as OpenAI answers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from threadline.api.bounds import Positive
from threadline.api.dialects.openai.schemas import OpenAIRequestError, refuse_unsupported
from threadline.domain.errors import NotFound
from threadline.domain.ports import ChatMessage

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
TEXT_PARTS = {"input_text", "output_text", "text"}
ITEM_KEYS = {"type", "role", "content", "id", "status"}
METADATA_KEYS = 16


_NOTHING = [{"type": "null"}]
TEXT_PART: dict[str, Any] = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": sorted(TEXT_PARTS)},
        "text": {"type": "string"},
        "annotations": {},
        "logprobs": {},
    },
}
ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": list(ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]},
        "id": {},
        "status": {},
    },
    "description": "a message; input_image and input_file parts are read in the last "
    "input item when it is the user's (see the README)",
}
METADATA_OBJECT: dict[str, Any] = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
}
METADATA_SCHEMA: dict[str, Any] = {"anyOf": [METADATA_OBJECT, *_NOTHING]}
NEUTRAL_SCHEMA: dict[str, dict[str, Any]] = {
    "tools": {"anyOf": [{"type": "array", "maxItems": 0}, *_NOTHING]},
    "tool_choice": {"enum": ["none", "auto", None]},
    "text": {"anyOf": [{"const": {}}, {"const": {"format": {"type": "text"}}}, *_NOTHING]},
    "truncation": {"enum": ["auto", None]},
    "reasoning": {"anyOf": [{"type": "object", "maxProperties": 0}, *_NOTHING]},
    "service_tier": {"enum": ["auto", "default", None]},
    "include": {"anyOf": [{"type": "array", "maxItems": 0}, *_NOTHING]},
}
_SET = {"not": {"type": "null"}}
RULES = [
    {  # stream_options only with stream: true
        "if": {"required": ["stream_options"], "properties": {"stream_options": _SET}},
        "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
    },
    {  # conversation or previous_response_id, not both
        "not": {
            "required": ["conversation", "previous_response_id"],
            "properties": {"conversation": _SET, "previous_response_id": _SET},
        }
    },
    {  # store: false neither in the background nor in a conversation or a chain
        "if": {"required": ["store"], "properties": {"store": {"const": False}}},
        "then": {
            "properties": {
                "background": {"enum": [False, None]},
                "conversation": {"type": "null"},
                "previous_response_id": {"type": "null"},
            }
        },
    },
]


def _document_rules(schema: dict[str, Any]) -> None:
    """What `check_supported` and `response_inputs` enforce, said in the schema."""
    properties = schema["properties"]
    for name, allowed in NEUTRAL_SCHEMA.items():
        properties[name] = {**allowed, "description": "accepted only with its neutral value"}
    properties["input"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": ITEM_SCHEMA, "minItems": 1}]
    }
    properties["metadata"] = METADATA_SCHEMA
    properties["conversation"] = {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {"id": {"type": "string"}},
            },
            *_NOTHING,
        ]
    }
    schema["allOf"] = RULES


def _document_items(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    if "items" in properties:
        properties["items"] = {**properties["items"], "items": ITEM_SCHEMA}
    if "metadata" in properties:
        required = "metadata" in schema.get("required", [])
        properties["metadata"] = METADATA_OBJECT if required else METADATA_SCHEMA


class ResponseCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_rules)

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool | None = True
    stream: bool | None = False
    background: bool | None = False
    max_output_tokens: Positive | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    user: str | None = Field(None, max_length=256)
    # Known to OpenAI; honoured only with their neutral value (see NEUTRAL).
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None


NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in ("none", "auto"),
    "parallel_tool_calls": lambda v: True,  # meaningless without tools, which are refused
    "text": lambda v: v in ({}, {"format": {"type": "text"}}),
    "truncation": lambda v: v == "auto",  # the oldest history is dropped to fit the window
    "reasoning": lambda v: not v,
    "service_tier": lambda v: v in ("auto", "default"),
    "include": lambda v: not v,
}


class ConversationCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_items)

    items: list[dict[str, Any]] | None = Field(None, max_length=20)
    metadata: dict[str, str] | None = None


class ConversationUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_items)

    metadata: dict[str, str]


class ItemsCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_items)

    items: list[dict[str, Any]] = Field(min_length=1, max_length=20)


@dataclass
class Inputs:
    """A request's input: the messages before the prompt, the prompt, its images and files."""

    earlier: list[ChatMessage] = field(default_factory=list)
    prompt: str = ""
    images: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def check_supported(request: ResponseCreateRequest) -> None:
    refuse_unsupported(request, NEUTRAL)
    if request.conversation is not None and request.previous_response_id is not None:
        raise OpenAIRequestError(
            "previous_response_id cannot be used together with conversation",
            param="previous_response_id",
        )
    if request.background and request.store is False:
        raise OpenAIRequestError(
            "background responses must be stored: drop store: false", param="background"
        )
    check_metadata(request.metadata)


def check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > METADATA_KEYS:
        raise OpenAIRequestError(f"metadata takes at most {METADATA_KEYS} keys", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise OpenAIRequestError(
                "metadata keys take at most 64 characters and values 512", param="metadata"
            )


def conversation_ref(value: str | dict[str, Any] | None) -> str | None:
    """The conversation id of `conversation` (an id, or `{"id": ...}`)."""
    if value is None or isinstance(value, str):
        return value
    if set(value) != {"id"} or not isinstance(value["id"], str):
        raise OpenAIRequestError(
            "conversation must be an id or an object with only an id", param="conversation"
        )
    return value["id"]


def object_id(prefix: str, value: str, what: str) -> UUID:
    """The uuid behind `<prefix>_<hex>`; anything else is "not found"."""
    hex_part = value.removeprefix(f"{prefix}_")
    try:
        if hex_part == value or len(hex_part) != 32:
            raise ValueError
        return UUID(hex=hex_part)
    except ValueError:
        raise NotFound(f"No {what} found with id '{value[:100]}'.") from None


def response_inputs(request: ResponseCreateRequest) -> Inputs:
    """The input as core messages: the last item, when it is the user's, is the prompt (with
    its images and files); input that ends otherwise has an empty prompt."""
    raw = request.input
    if isinstance(raw, str):
        return Inputs(prompt=raw)
    if not raw:
        raise OpenAIRequestError("input must not be empty", param="input")
    inputs = Inputs()
    last = len(raw) - 1
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        is_prompt = index == last and isinstance(item, dict) and item.get("role") == "user"
        message = _message(where, item, attachments=inputs if is_prompt else None)
        if is_prompt:
            inputs.prompt = message.content
        else:  # input ending with another role: all of it comes before an empty prompt
            inputs.earlier.append(message)
    return inputs


def conversation_items(items: list[dict[str, Any]]) -> list[ChatMessage]:
    """Items written into a conversation: text messages only."""
    return [_message(f"items[{i}]", item, attachments=None) for i, item in enumerate(items)]


def _message(where: str, item: Any, attachments: Inputs | None) -> ChatMessage:
    if not isinstance(item, dict):
        raise OpenAIRequestError(f"{where} must be an object", param=where)
    kind = item.get("type", "message")
    if kind != "message":
        raise OpenAIRequestError(
            f"{where}: items of type {str(kind)[:60]!r} are not supported by this server "
            "(only messages)",
            param=f"{where}.type",
            code="unsupported_parameter",
        )
    unknown = sorted(set(item) - ITEM_KEYS)
    if unknown:
        raise OpenAIRequestError(
            f"{where}: unknown field(s) {', '.join(unknown)[:200]}", param=where
        )
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise OpenAIRequestError(
            f"{where}.role {str(role)[:60]!r} is not supported; use one of: {', '.join(ROLES)}",
            param=f"{where}.role",
        )
    if "content" not in item:
        raise OpenAIRequestError(
            f"Missing required parameter: '{where}.content'.",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    return ChatMessage(ROLES[role], _text(where, item["content"], attachments))


def _text(where: str, content: Any, attachments: Inputs | None) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OpenAIRequestError(
            f"{where}.content must be a string or an array of parts", param=f"{where}.content"
        )
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            _only(at, part, {"type", "text", "annotations", "logprobs"})
            texts.append(part["text"])
        elif kind in ("input_image", "input_file") and attachments is not None:
            _attachment(at, part, attachments)
        elif kind in ("input_image", "input_file"):
            raise OpenAIRequestError(
                f"{at}: {kind} is read in the last input item only, when it is the user's "
                "(earlier items are replayed as text)",
                param=at,
            )
        else:
            raise OpenAIRequestError(
                f"{at}: parts of type {str(kind)[:60]!r} are not supported; use input_text, "
                "input_image or input_file",
                param=at,
                code="unsupported_parameter",
            )
    return "".join(texts)


def _attachment(at: str, part: dict[str, Any], attachments: Inputs) -> None:
    if part["type"] == "input_image":
        _only(at, part, {"type", "image_url", "file_id", "detail"})
        if part.get("detail", "auto") != "auto":
            raise OpenAIRequestError(
                f"{at}.detail {part['detail']!r} is not supported: images go to the model as "
                'sent (detail "auto")',
                param=f"{at}.detail",
            )
        source = part.get("image_url") or part.get("file_id")
        if not isinstance(source, str) or not source:
            raise OpenAIRequestError(
                f"{at}: input_image needs an image_url (http(s) or data URL) or a file_id "
                "(an asset id)",
                param=at,
            )
        attachments.images.append(source)
        return
    _only(at, part, {"type", "file_id"})
    file_id = part.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        raise OpenAIRequestError(
            f"{at}: input_file needs a file_id (an asset id uploaded with POST /api/assets)",
            param=at,
        )
    attachments.files.append(file_id)


def _only(at: str, part: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(part) - allowed)
    if unknown:
        raise OpenAIRequestError(
            f"{at}: {', '.join(unknown)[:200]} not supported on {part.get('type')} parts "
            "by this server",
            param=f"{at}.{unknown[0]}"[:200],
            code="unsupported_parameter",
        )


# ---- query parameters the Responses and Conversations routes share

Order = Literal["asc", "desc"]
Include = Annotated[
    list[str] | None,
    Query(alias="include[]", max_length=0, description="no extra fields are offered"),
]


def no_include(include: list[str] | None) -> None:
    """`include[]` names extra fields of OpenAI's; this server offers none."""
    if include:
        raise OpenAIRequestError(
            f"include={include[0][:60]!r} is not supported by this server", param="include"
        )
