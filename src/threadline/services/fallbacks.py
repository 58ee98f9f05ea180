"""A reply's models in order: the one asked for, then its `fallbacks` from the catalog.

Why it exists: when every upstream of a model has failed, the next model of its `fallbacks`
answers, and with `continue_on_failure` a reply cut mid-stream goes on on the next one from
the text so far (domain/routing.py: the continuation request, the overlap trimmed). The
run (services/chat_run.py) reads one stream of events whatever happened; this module keeps
what it must know at the end: which model really answered (the record and every dialect
name it), what each attempt used, priced at its own model's prices (a failed attempt with
no text costs nothing), and which model and upstream wrote which part of the text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from threadline.domain.entities import RouteSegment as Segment
from threadline.domain.errors import ThreadlineError
from threadline.domain.events import ReplyEvent, Served, TextDelta, Usage
from threadline.domain.ports import ChatModel, ModelRequest
from threadline.domain.routing import (
    OverlapTrimmer,
    UpstreamsBusy,
    continuation,
    retryable,
)
from threadline.services.catalog import CatalogModel
from threadline.services.chat_prompt import estimate_usage

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model the reply may come from, and how to get its live `ChatModel`."""

    entry: CatalogModel
    model: Callable[[], ChatModel]


@dataclass
class FallbackChain:
    """Streams the first candidate's reply, falling back (and continuing) on failure.

    `on_answer` is called with the model's entry when a candidate's first text arrives
    (before the text is passed on), so that the run names the model that answers."""

    candidates: Sequence[Candidate]
    request: ModelRequest
    continue_on_failure: bool
    on_answer: Callable[[CatalogModel], None] = lambda entry: None
    segments: list[Segment] = field(default_factory=list)  # chars counted in `_chars`
    charge: int = 0
    _chars: list[int] = field(default_factory=list)  # per segment (no object per token)
    _input: int = 0
    _output: int = 0
    _estimated: bool = False
    _finish: Usage | None = None
    _attempts: int = 0

    @property
    def routed(self) -> bool:
        """Whether routing played a part: several parts, a named upstream, a fallback."""
        first = self.candidates[0].entry.name
        return len(self.segments) > 1 or any(s.upstream or s.model != first for s in self.segments)

    def route(self) -> tuple[Segment, ...]:
        """Which model and upstream wrote how many characters, in order."""
        return tuple(
            Segment(s.model, s.upstream, chars)
            for s, chars in zip(self.segments, self._chars, strict=True)
        )

    def usage(self) -> Usage | None:
        """The reply's usage summed over its attempts; None before any counted."""
        if not self._attempts:
            return None
        last = self._finish
        finish = last.finish_reason if last is not None else "stop"
        stop = last.stop_sequence if last is not None else None
        return Usage(self._input, self._output, self._estimated, finish, stop_sequence=stop)

    async def events(self) -> AsyncIterator[ReplyEvent]:
        text = ""
        for position, candidate in enumerate(self.candidates):
            asked = continuation(self.request, text) if text else self.request
            trimmer = OverlapTrimmer(text) if text else None
            written, usage, current = "", None, None
            try:
                async for event in candidate.model().stream(asked):
                    if isinstance(event, Served):
                        current = self._segment(candidate, event.upstream)
                    elif isinstance(event, TextDelta):
                        if not written:
                            self.on_answer(candidate.entry)
                            if current is None:
                                current = self._segment(candidate, None)
                        written += event.text
                        if trimmer is None:  # the usual case: passed on as it came
                            text += event.text
                            self._chars[-1] += len(event.text)
                            yield event
                        elif piece := trimmer.feed(event.text):
                            text += piece
                            self._chars[-1] += len(piece)
                            yield TextDelta(piece)
                    elif isinstance(event, Usage):
                        usage = event
                    else:
                        yield event
            except ThreadlineError as exc:
                if written:  # the text it wrote is kept: its tokens are paid for
                    self._count(candidate.entry, estimate_usage(asked, written))
                last = position == len(self.candidates) - 1
                if last or not self._may_go_on(exc, bool(text)):
                    raise
                log.warning(
                    "model failed, falling back",
                    model=candidate.entry.name,
                    next=self.candidates[position + 1].entry.name,
                    error=exc.message,
                )
                continue
            if trimmer is not None and (rest := trimmer.close()):
                self._chars[-1] += len(rest)
                yield TextDelta(rest)
            self._count(candidate.entry, usage or estimate_usage(asked, written))
            return

    def _may_go_on(self, error: ThreadlineError, has_text: bool) -> bool:
        if has_text:
            return self.continue_on_failure
        return isinstance(error, UpstreamsBusy) or retryable(error)

    def _segment(self, candidate: Candidate, upstream: str | None) -> Segment:
        segment = Segment(candidate.entry.name, upstream, 0)
        self.segments.append(segment)
        self._chars.append(0)
        return segment

    def _count(self, entry: CatalogModel, usage: Usage) -> None:
        self._attempts += 1
        self._input += usage.input_tokens
        self._output += usage.output_tokens
        self._estimated = self._estimated or usage.estimated
        self._finish = usage
        self.charge += entry.price(usage)
