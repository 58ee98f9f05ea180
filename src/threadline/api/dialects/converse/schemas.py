"""Wire schemas of AI Hub Converse (004_* in the spec).

Uploads are `multipart/form-data` forms, prompts and deletions JSON. Unknown fields are
rejected (`extra="forbid"`): a misspelt `file` instead of `files` would otherwise create a
conversation with no documents and say nothing.
"""

from __future__ import annotations

from typing import Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from threadline.api.bounds import NonNegative

NAME_MAX = 255  # the conversation title column
SortKey = Literal["created_at", "updated_at"]
Mode = Literal["default", "advanced"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateConversationForm(Strict):
    """`POST /v2/conversations`. `org` and `workspace` are checked against the caller
    (see `routes.caller_context`)."""

    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = ""
    files: list[UploadFile] = []
    org: str | None = None
    workspace: str | None = None
    enable_object_detection: bool = False


class AddDocumentsForm(Strict):
    """`POST /v2/conversations/{id}/documents`."""

    files: list[UploadFile] = Field(json_schema_extra={"minItems": 1})
    process_files: bool = True


class PromptRequest(Strict):
    """`POST /v2/conversations/{id}/prompts`: one question about one document."""

    question: str = Field(min_length=1)
    document_ids: list[NonNegative] = Field(json_schema_extra={"minItems": 1, "maxItems": 1})
    mode: Mode = "default"

    @field_validator("document_ids")
    @classmethod
    def _one_document(cls, value: list[NonNegative]) -> list[NonNegative]:
        if len(value) != 1:
            raise PydanticCustomError(
                "one_document",
                "must list exactly one document id (Converse answers about one document at "
                "a time; the conversation information request lists the ids), got {count}",
                {"count": len(value)},
            )
        return value


class DeleteDocumentsRequest(Strict):
    """`DELETE /v2/conversations/{id}/documents` with a JSON body (the curl example); the
    SDK sends `?ids=1,2` instead, and both are accepted."""

    ids: list[NonNegative] = Field(json_schema_extra={"minItems": 1})

    @field_validator("ids")
    @classmethod
    def _some(cls, value: list[NonNegative]) -> list[NonNegative]:
        if not value:
            raise PydanticCustomError("no_ids", "must list at least one document id")
        return value
