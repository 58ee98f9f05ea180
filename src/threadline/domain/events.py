"""What a reply is made of, whatever the provider or dialect.

A provider's `stream()` yields these; a run records them in order (its event log); a dialect
encodes them into its own wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "content_filter"]
"""Why a reply ended, in OpenAI's words: "stop" (it ended by itself or at a stop sequence),
"length" (cut at max_tokens or the context window), "content_filter" (the provider withheld
the rest)."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A chunk of the assistant's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Citation:
    """A source the answer relies on (a document page, a web page)."""

    source_id: str
    title: str
    excerpt: str = ""
    page: int | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of the whole reply, and why it ended. `estimated` is true when the
    provider gave no counts; `stop_sequence` is the request's stop sequence that ended it,
    when the provider says which (OpenAI's API does not; vLLM's `stop_reason` does)."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False
    finish_reason: FinishReason = "stop"
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The reply ended normally. `record` is filled in by the run once it is persisted."""

    finish_reason: FinishReason = "stop"
    record: object | None = field(default=None, compare=False)
    stop_sequence: str | None = None  # as in `Usage`


@dataclass(frozen=True, slots=True)
class Failed:
    """The reply ended with an error; the text streamed so far is kept as partial text."""

    code: str
    message: str
    status: int = 502
    record: object | None = field(default=None, compare=False)
    retry_after: int | None = None  # seconds, when the caller should come back later

    @property
    def headers(self) -> dict[str, str] | None:
        """The HTTP headers of a non-streamed error response (`Retry-After`)."""
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True, slots=True)
class Served:
    """The text from here on comes from `model` on `upstream` (a routed model says so at
    each attempt's first token). The run keeps it for the record; dialects never see it."""

    model: str
    upstream: str | None = None


ReplyEvent = TextDelta | Citation | Usage | Done | Failed | Served


def finish_reason(reported: object) -> FinishReason:
    """A provider's finish reason as one of ours: "length" and "content_filter" as they are,
    anything else (a natural end, a stop sequence, none given) "stop"."""
    if reported == "length":
        return "length"
    if reported == "content_filter":
        return "content_filter"
    return "stop"
