"""The dialect-free chat command: what a dialect asks of the chat engine.

A dialect turns its wire request into a `ChatCommand` (who, which conversation, the prompt or
the whole exchange, history and grounding settings, what the record keeps) and hands it to
`ChatService.reply()`. Nothing here knows a wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from threadline.domain.entities import Conversation, Message, Principal
from threadline.domain.ports import HEAD, ChatMessage, Parent


@dataclass(frozen=True, slots=True)
class HistorySettings:
    is_mixed: bool = False
    limit: int = 10


@dataclass(frozen=True, slots=True)
class WebSearch:
    num_of_site: int = 3
    max_word: int = 1000


@dataclass(frozen=True, slots=True)
class Grounding:
    """What the reply should be grounded in besides the conversation."""

    web_search: WebSearch | None = None
    with_memories: bool = False
    images: tuple[str, ...] = ()  # asset ids or keys, or http(s) URLs (attachments.images)
    files: tuple[str, ...] = ()  # asset ids or keys (attachments.files)
    document_ids: tuple[int, ...] = ()  # narrow the conversation's documents to these
    advanced: bool = False  # retrieve more and rerank (AI Hub's advanced mode)
    brand_voice_id: str | None = None  # as the client sent it; resolved in the caller's org
    read_links: bool = False  # read the pages and YouTube videos linked in the prompt


@dataclass(frozen=True, slots=True)
class ChatCommand:
    """A dialect-free chat request.

    Either `prompt` (with an optional conversation whose history is replayed) or `messages`
    (the client sends the whole exchange, as OpenAI's API does).

    In a conversation, the new user message follows `parent` (the head by default; a message
    id branches off an older message, None starts a new first message) and the history is
    the path from the root to it. `answer_again`: no new user message, this stored one is
    answered again (its new reply a sibling of its earlier ones); `parent` is then its
    parent and `prompt` its text.

    With a prompt in a conversation, `inputs` are messages of the request that come before
    the prompt (OpenAI's Responses input items): stored in the conversation before it, on
    the same branch, and given to the model after the history.
    """

    principal: Principal
    model: str
    record_type: str
    prompt: str = ""
    messages: Sequence[ChatMessage] = ()
    inputs: Sequence[ChatMessage] = ()
    conversation_id: UUID | None = None
    # A conversation made for this reply: stored in the reply's first write (no write, no
    # history read before the model starts); `conversation_id` is its id.
    new_conversation: Conversation | None = None
    session_id: UUID | None = None
    history: HistorySettings = HistorySettings()
    grounding: Grounding = Grounding()
    prompt_object: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # only for models that sample with it (`samples_top_k`)
    stop: Sequence[str] = ()
    parent: Parent = HEAD
    answer_again: Message | None = None
