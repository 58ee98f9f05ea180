"""Wire schemas of the 1min.ai APIs (000_*, 001_*, 002_* in the spec).

Unknown fields are rejected (`extra="forbid"`): a misspelt setting is an error a person can
fix, not a setting silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from threadline.api.bounds import JSON_INT_MAX

TITLE_MAX = 91

CONVERSATION_TYPES = (
    "UNIFY_CHAT_WITH_AI",
    "CHAT_WITH_AI",
    "CHAT_WITH_IMAGE",
    "CHAT_WITH_PDF",
    "CHAT_WITH_YOUTUBE_VIDEO",
)
LEGACY_CHAT_TYPES = ("CHAT_WITH_AI", "CHAT_WITH_IMAGE", "CHAT_WITH_PDF", "CHAT_WITH_YOUTUBE_VIDEO")
IMAGE_FEATURE_TYPES = ("IMAGE_GENERATOR", "IMAGE_VARIATOR")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateConversation(Strict):
    # fileList is required for CHAT_WITH_PDF (checked by the route; said here too)
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"type": {"const": "CHAT_WITH_PDF"}}},
            "then": {
                "required": ["fileList"],
                "properties": {"fileList": {"type": "array", "minItems": 1}},
            },
        },
    )

    type: Literal[CONVERSATION_TYPES]  # type: ignore[valid-type]
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    model: str
    fileList: list[str] | None = None


class WebSearchSettings(Strict):
    webSearch: bool = False
    numOfSite: int = Field(3, ge=1, le=10, strict=True)
    maxWord: int = Field(1000, ge=1, le=20000, strict=True)


class HistorySettings(Strict):
    isMixed: bool = False
    historyMessageLimit: int = Field(10, ge=0, le=JSON_INT_MAX, strict=True)


class ChatSettings(Strict):
    webSearchSettings: WebSearchSettings | None = None
    historySettings: HistorySettings | None = None
    withMemories: bool = False


class Attachments(Strict):
    images: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)


class PromptObject(Strict):
    prompt: str = Field(min_length=1)
    conversationId: UUID | None = None
    settings: ChatSettings | None = None
    attachments: Attachments | None = None


class ChatWithAiRequest(Strict):
    type: Literal["UNIFY_CHAT_WITH_AI"] = "UNIFY_CHAT_WITH_AI"
    model: str
    promptObject: PromptObject
    brandVoiceId: str | None = None
    metadata: dict[str, Any] | None = None


class LegacyChatPrompt(Strict):
    """The flat promptObject of the AI Feature API's chat types."""

    prompt: str = Field(min_length=1)
    isMixed: bool = False
    imageList: list[str] = Field(default_factory=list)
    webSearch: bool = False
    numOfSite: int = Field(3, ge=1, le=10, strict=True)
    maxWord: int = Field(500, ge=1, le=20000, strict=True)
    conversationId: UUID | None = None


class ImageGeneratorPrompt(Strict):
    """IMAGE_GENERATOR's promptObject (002_*). `num_outputs` is capped by the model's
    `max_images`, `aspect_ratio` must be one of its `image_sizes`."""

    prompt: str = Field(min_length=1, max_length=32000)
    num_outputs: int = Field(1, ge=1, le=10, strict=True)
    aspect_ratio: str = Field("1:1", pattern=r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$")
    output_format: Literal["png", "jpeg", "webp"] = "png"


class ImageVariatorPrompt(Strict):
    """IMAGE_VARIATOR's promptObject (002_*). Values this server cannot honour are refused
    (see `_unsupported`), never ignored."""

    imageUrl: str = Field(min_length=1, max_length=2048)
    mode: str = "fast"
    n: int = Field(1, ge=1, le=10, strict=True)
    isNiji6: bool = False
    aspect_width: int = Field(1, ge=1, le=10000, strict=True)
    aspect_height: int = Field(1, ge=1, le=10000, strict=True)
    maintainModeration: bool = True
    output_format: Literal["png", "jpeg", "webp"] = "png"

    @field_validator("mode")
    @classmethod
    def _fast_only(cls, value: str) -> str:
        if value != "fast":
            raise _unsupported(
                f"{value[:20]!r} is not supported: only 'fast', every request runs at once "
                "('relax' and 'turbo' are Midjourney queues this server does not have)"
            )
        return value

    @field_validator("isNiji6")
    @classmethod
    def _no_niji(cls, value: bool) -> bool:
        if value:
            raise _unsupported(
                "true is not supported: Niji 6 is a Midjourney model, not served here"
            )
        return value

    @field_validator("maintainModeration")
    @classmethod
    def _moderated(cls, value: bool) -> bool:
        if not value:
            raise _unsupported(
                "false is not supported: the image model's own moderation always applies"
            )
        return value


def _unsupported(message: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported", message)


def _feature_rules(schema: dict[str, Any]) -> None:
    """What the route checks per feature type, said in the schema."""
    images = {"properties": {"type": {"enum": list(IMAGE_FEATURE_TYPES)}}, "required": ["type"]}
    pdf = {"properties": {"type": {"const": "CHAT_WITH_PDF"}}, "required": ["type"]}
    image_chat = {"properties": {"type": {"const": "CHAT_WITH_IMAGE"}}, "required": ["type"]}
    with_id: dict[str, Any] = {"type": "string", "format": "uuid"}
    schema["allOf"] = [
        {"if": images, "then": {"properties": {"conversationId": {"type": "null"}}}},
        {
            "if": pdf,
            "then": {
                "anyOf": [
                    {"required": ["conversationId"], "properties": {"conversationId": with_id}},
                    {
                        "properties": {
                            "promptObject": {
                                "required": ["conversationId"],
                                "properties": {"conversationId": with_id},
                            }
                        }
                    },
                ]
            },
        },
        {
            "if": image_chat,
            "then": {
                "properties": {
                    "promptObject": {
                        "required": ["imageList"],
                        "properties": {"imageList": {"type": "array", "minItems": 1}},
                    }
                }
            },
        },
    ]


class FeatureRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_feature_rules)

    # Any string parses; an unknown type is a 400 naming the known ones (the route's check).
    type: str = Field(json_schema_extra={"enum": [*LEGACY_CHAT_TYPES, *IMAGE_FEATURE_TYPES]})
    model: str
    promptObject: dict[str, Any]
    conversationId: UUID | None = None
    metadata: dict[str, Any] | None = None
