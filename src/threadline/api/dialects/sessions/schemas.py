"""Wire schemas of the Conversation Service API (003_* in the spec).

Unknown fields are rejected (`extra="forbid"`): a misspelt field is an error a person can fix,
not a setting silently ignored.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

TITLE_MAX = 255  # the column's size


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateConversation(Strict):
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    is_archived: bool = False


class CreateSession(Strict):
    conversation_id: UUID
    model_id: UUID


class StreamChat(Strict):
    chat_session_id: UUID
    message: str = Field(min_length=1)
