"""Wire schemas of the 1min.ai APIs (000_*, 001_*, 002_* in the spec).

Unknown fields are rejected (`extra="forbid"`): a misspelt setting is an error a person can
fix, not a setting silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

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
    type: Literal[CONVERSATION_TYPES]  # type: ignore[valid-type]
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    model: str
    fileList: list[str] | None = None


class WebSearchSettings(Strict):
    webSearch: bool = False
    numOfSite: int = Field(3, ge=1, le=10)
    maxWord: int = Field(1000, ge=1, le=20000)


class HistorySettings(Strict):
    isMixed: bool = False
    historyMessageLimit: int = Field(10, ge=0)


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
    numOfSite: int = Field(3, ge=1, le=10)
    maxWord: int = Field(500, ge=1, le=20000)
    conversationId: UUID | None = None


class FeatureRequest(Strict):
    type: str
    model: str
    promptObject: dict[str, Any]
    conversationId: UUID | None = None
    metadata: dict[str, Any] | None = None
