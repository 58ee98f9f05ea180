"""A model served by several upstreams: one `ChatModel` in front of one per server.

Why it exists: a model that is one upstream fails whenever that upstream does. The router
spreads requests over the servers of `upstreams = [...]` by weight and load, queues beyond
each one's `max_concurrency`, retries before the first token where another attempt may
succeed (elsewhere first), skips an upstream whose circuit is open, and, with
`continue_on_failure`, carries a reply that died mid-stream on to another upstream from the
text so far. The rules themselves are domain/routing.py's; this module applies them to
streams and keeps each upstream's figures for /metrics and GET /api/admin/upstreams.

Every dialect, the conversation store and the memory job see one model: the router sits
below them all, in the catalog's place of a provider's model.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from threadline.domain.errors import ModelError, ModelTimeout
from threadline.domain.events import ReplyEvent, Served, TextDelta, Usage
from threadline.domain.ports import ChatModel, ModelRequest
from threadline.domain.routing import (
    Balancer,
    Circuit,
    OverlapTrimmer,
    UpstreamsBusy,
    backoff_seconds,
    continuation,
    retryable,
)
from threadline.settings import ModelConfig, RetryConfig

T = TypeVar("T")


@dataclass(eq=False)
class UpstreamSlot:
    """One server of a routed model, and what it has done so far."""

    name: str
    model: ChatModel
    weight: float
    max_concurrency: int | None
    circuit: Circuit
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    first_token_seconds: list[float] = field(default_factory=list)  # the last 1,000

    @property
    def full(self) -> bool:
        return self.max_concurrency is not None and self.in_flight >= self.max_concurrency

    def latency(self, seconds: float) -> None:
        self.first_token_seconds.append(seconds)
        if len(self.first_token_seconds) > 1000:
            del self.first_token_seconds[:500]

    def snapshot(self) -> dict[str, Any]:
        times = sorted(self.first_token_seconds)
        p50 = times[len(times) // 2] if times else None
        return {
            "name": self.name,
            "weight": self.weight,
            "max_concurrency": self.max_concurrency,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "failure_streak": self.circuit.streak,
            "circuit": self.circuit.state.value,
            "open_for_seconds": round(self.circuit.seconds_to_probe(), 3),
            "first_token_p50_ms": None if p50 is None else round(p50 * 1000, 1),
        }


@dataclass
class Attempts:
    """One request's tries so far: per upstream, how many and the wait it asked for."""

    tries: list[int]
    waits: list[float]
    last_error: ModelError | None = None

    @classmethod
    def over(cls, count: int) -> Attempts:
        return cls([0] * count, [0.0] * count)


class UpstreamPool:
    """The upstreams of one model (chat, images or embeddings) and the rules that choose
    among them: weight and load (`Balancer`), `max_concurrency` with a bounded queue, the
    circuits, retries with back-off or `Retry-After`. `call()` runs a one-shot request
    (an image, a batch of vectors) through them; `RoutedChatModel` streams through them."""

    def __init__(
        self,
        name: str,
        slots: Sequence[UpstreamSlot],
        retry: RetryConfig,
        queue_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.slots = list(slots)
        self.retry = retry
        self.queue_seconds = queue_seconds
        self.clock = clock
        self._balancer = Balancer([slot.weight for slot in self.slots])
        self._freed = asyncio.Event()

    async def aclose(self) -> None:
        await asyncio.gather(*(s.model.aclose() for s in self.slots), return_exceptions=True)

    def snapshot(self) -> list[dict[str, Any]]:
        return [slot.snapshot() for slot in self.slots]

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`fn(model)` on the upstreams in turn until one succeeds (retries as for chat
        before the first token); the last failure when none does."""
        attempts = Attempts.over(len(self.slots))
        while (index := await self.acquire(attempts)) is not None:
            slot = self.slots[index]
            try:
                await self.wait_before(index, attempts)
                started = self.clock()
                slot.requests += 1
                result = await fn(slot.model)
            except ModelError as exc:
                self.failed(index, attempts, exc)
            else:
                slot.circuit.succeeded()
                slot.latency(self.clock() - started)
                return result
            finally:
                self.release(slot)
        raise self.exhausted(attempts)

    async def wait_before(self, index: int, attempts: Attempts) -> None:
        """The back-off (or the upstream's Retry-After) before a retry of the same one."""
        retry = attempts.tries[index] - 1
        if retry > 0:
            backoff = backoff_seconds(self.retry.backoff_ms, retry)
            await asyncio.sleep(max(backoff, attempts.waits[index]))

    def failed(self, index: int, attempts: Attempts, exc: ModelError) -> None:
        """Count a failure before the first token; raise it when no retry may help."""
        slot = self.slots[index]
        slot.failures += 1
        attempts.last_error = exc
        if not retryable(exc):  # the request's fault (400, 422...), not the upstream's
            slot.circuit.released()
            raise exc
        slot.circuit.failed()
        wait = exc.upstream_retry_after
        if wait is not None and wait > self.retry.max_retry_after_seconds:
            attempts.tries[index] = self.retry.attempts  # asked to wait too long
        attempts.waits[index] = wait or 0.0

    def exhausted(self, attempts: Attempts) -> ModelError:
        if attempts.last_error is not None:
            return attempts.last_error
        return ModelError(
            f"model {self.name!r}: no upstream is available (circuits open: "
            f"{', '.join(s.name for s in self.slots if not s.circuit.available())})"
        )

    async def acquire(self, attempts: Attempts) -> int | None:
        """The next upstream to try (taken: its in-flight count is raised), waiting up to
        `queue_seconds` for a free one; None when none is left to try."""
        deadline = self.clock() + self.queue_seconds
        while True:
            left = [
                i
                for i, slot in enumerate(self.slots)
                if attempts.tries[i] < self.retry.attempts and slot.circuit.available()
            ]
            if not left:
                return None
            fewest = min(attempts.tries[i] for i in left)
            left = [i for i in left if attempts.tries[i] == fewest]
            free = [i for i in left if not self.slots[i].full]
            if free:
                index = self._balancer.pick(free, [s.in_flight for s in self.slots])
                slot = self.slots[index]
                slot.in_flight += 1
                slot.circuit.admit()
                attempts.tries[index] += 1
                return index
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise UpstreamsBusy(
                    f"model {self.name!r}: every upstream is at its max_concurrency; "
                    "try again shortly",
                    retry_after=max(1, math.ceil(self.queue_seconds)),
                )
            freed = self._freed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), remaining)

    def release(self, slot: UpstreamSlot) -> None:
        slot.in_flight -= 1
        slot.circuit.released()
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()


@dataclass
class _Reply:
    """One reply's progress across attempts: its text and usage."""

    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    finish_reason: Any = "stop"
    stop_sequence: str | None = None  # the request's stop string that ended it, if named
    broke_mid_stream: bool = False  # the last attempt failed after writing text

    def add(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.estimated = self.estimated or usage.estimated
        self.finish_reason = usage.finish_reason
        self.stop_sequence = usage.stop_sequence

    def usage(self) -> Usage:
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.estimated,
            self.finish_reason,
            stop_sequence=self.stop_sequence,
        )


class RoutedChatModel:
    """A ChatModel over `slots`, one per upstream of the model `name`."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        slots: Sequence[UpstreamSlot],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self.pool = UpstreamPool(
            name, slots, config.retry, config.timeout.queue_seconds, clock=clock
        )
        self.slots = self.pool.slots
        self._clock = clock

    async def aclose(self) -> None:
        await self.pool.aclose()

    def snapshot(self) -> list[dict[str, Any]]:
        return self.pool.snapshot()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyEvent]:
        """The reply from the first upstream that gives one; see the module docstring."""
        pool, reply = self.pool, _Reply()
        attempts = Attempts.over(len(self.slots))
        while (index := await pool.acquire(attempts)) is not None:
            slot = self.slots[index]
            try:
                await pool.wait_before(index, attempts)
                async for event in self._attempt(slot, request, reply):
                    yield event
                return
            except ModelError as exc:
                if not reply.broke_mid_stream:
                    pool.failed(index, attempts, exc)
                    continue
                slot.failures += 1
                slot.circuit.failed()
                attempts.last_error = exc
                if not self.config.continue_on_failure:
                    raise
                attempts.tries[index] = self.config.retry.attempts  # continue elsewhere
            finally:
                pool.release(slot)
        raise pool.exhausted(attempts)

    async def _attempt(
        self, slot: UpstreamSlot, request: ModelRequest, reply: _Reply
    ) -> AsyncIterator[ReplyEvent]:
        """One upstream's answer; a failure is raised with `reply.broke_mid_stream` saying
        whether it had written text."""
        reply.broke_mid_stream = False
        continuing = bool(reply.text)
        trimmer = OverlapTrimmer(reply.text) if continuing else None
        asked = continuation(request, reply.text) if continuing else request
        started, written = self._clock(), ""
        slot.requests += 1
        try:
            async for event in self._timed(slot.model.stream(asked)):
                if isinstance(event, TextDelta):
                    if not written:
                        slot.circuit.succeeded()
                        slot.latency(self._clock() - started)
                        yield Served(self.name, slot.name)
                    written += event.text
                    piece = trimmer.feed(event.text) if trimmer is not None else event.text
                    if piece:
                        reply.text += piece
                        yield TextDelta(piece)
                elif isinstance(event, Usage):
                    reply.add(event)
                elif not isinstance(event, Served):
                    yield event
        except ModelError:
            if written:  # what the failed attempt wrote is used: its tokens count
                reply.add(_estimate(asked, written))
                reply.broke_mid_stream = True
            raise
        if trimmer is not None and (rest := trimmer.close()):
            reply.text += rest
            yield TextDelta(rest)
        if not written:
            slot.circuit.succeeded()
        yield reply.usage()

    # -- timeouts to the first token and between tokens

    async def _timed(self, events: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
        timeouts = self.config.timeout
        first, idle = timeouts.first_token_seconds, timeouts.idle_seconds
        if first is None and idle is None:
            async for event in events:
                yield event
            return
        iterator = aiter(events)
        limit, waited = first, "its first token"
        try:
            while True:
                try:
                    if limit is None:
                        event = await anext(iterator)
                    else:
                        async with asyncio.timeout(limit):
                            event = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ModelTimeout(
                        f"model {self.name!r}: an upstream sent nothing for {limit:g}s "
                        f"(waiting for {waited})"
                    ) from None
                if isinstance(event, TextDelta):
                    limit, waited = idle, "its next token"
                yield event
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()


def _estimate(request: ModelRequest, text: str) -> Usage:
    prompt = sum(len(m.content) for m in request.messages)
    return Usage(max(1, math.ceil(prompt / 4)), max(1, math.ceil(len(text) / 4)), estimated=True)
