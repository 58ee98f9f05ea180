"""The `fake` provider: a scripted, in-process ChatModel.

Why it exists: service and API tests need a model whose every reply, usage figure and failure
is decided by the test, with no HTTP and no weights; and a server configured with a `fake`
model (canned `replies`, or an echo) starts in a blink for demos and smoke tests.

    model = FakeModel()
    model.enqueue(["Hello", " world", Usage(3, 2)])       # the next call streams this
    model.enqueue(["partial", ModelTimeout("too slow")])  # the call after: a delta, then a raise
    model.enqueue(["Once upon", Usage(3, 2, finish_reason="length")])  # a reply cut at max_tokens
    model.requests                                         # the ModelRequests received
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TypeAlias

from threadline.domain.events import ReplyEvent, TextDelta, Usage
from threadline.domain.ports import ModelRequest
from threadline.settings import ModelConfig

ScriptItem: TypeAlias = ReplyEvent | str | BaseException | asyncio.Event
"""A str becomes a TextDelta; an exception is raised at that point; an Event is waited for."""

_WORD = re.compile(r"\s*\S+|\s+")


class FakeModel:
    """Replies from its script; with none queued, from `config.replies` in turn, else an echo."""

    def __init__(self, name: str = "fake", config: ModelConfig | None = None) -> None:
        self.name = name
        self.config = config
        self.delay = 0.0  # seconds slept before each TextDelta
        self.requests: list[ModelRequest] = []
        self.closed = False
        self._scripts: deque[list[ScriptItem]] = deque()
        self._next_canned = 0

    def enqueue(self, items: Iterable[ScriptItem] | str) -> None:
        """Script one future call (calls take scripts in the order they were queued)."""
        self._scripts.append([items] if isinstance(items, str) else list(items))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyEvent]:
        self.requests.append(request)
        script = self._scripts.popleft() if self._scripts else self._canned(request)
        output_words = 0
        usage_sent = False
        for item in script:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, asyncio.Event):
                await item.wait()
                continue
            event = TextDelta(item) if isinstance(item, str) else item
            if isinstance(event, TextDelta):
                if self.delay:
                    await asyncio.sleep(self.delay)
                output_words += len(event.text.split())
            usage_sent = usage_sent or isinstance(event, Usage)
            yield event
        if not usage_sent:
            input_words = sum(len(m.content.split()) for m in request.messages)
            yield Usage(input_words, output_words, estimated=True)

    async def aclose(self) -> None:
        self.closed = True

    def _canned(self, request: ModelRequest) -> list[ScriptItem]:
        """The next of `config.replies` ("echo" repeats the prompt), else an echo."""
        replies = self.config.replies if self.config is not None else []
        text = "echo"
        if replies:
            text = replies[self._next_canned % len(replies)]
            self._next_canned += 1
        if text == "echo":
            text = _last_user_text(request)
        return list(_WORD.findall(text))


def _last_user_text(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""
