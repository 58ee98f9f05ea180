"""The decisions of model routing, without any I/O: which upstream takes the next request,
whether a broken one is skipped, whether a failure is worth another attempt, and how a
reply that died mid-stream is continued elsewhere without repeating itself.

Why it exists apart from providers/router.py: these rules are the part worth testing a
thousand times in a millisecond (a balancer over 1,000 picks, a circuit with a fake clock,
an overlap cut at every offset); the router only applies them to real streams.

    balancer = Balancer([3, 1]);  balancer.pick([0, 1], loads=[0, 0])   -> 0, 0, 0, 1, ...
    circuit = Circuit(failures=5, open_seconds=30, clock=time.monotonic)
    retryable(error)                     -> False for an upstream's 400/401/403/404/422
    trim = OverlapTrimmer("one two three");  trim.feed(" two three four") -> ""  (undecided)
                                             trim.close()               -> " four"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from threadline.domain.errors import ModelError, ThreadlineError
from threadline.domain.ports import ChatMessage, ModelRequest

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Upstream statuses worth another attempt (elsewhere, or after a wait). Any other status is
the caller's or the configuration's (400, 401, 403, 404, 422) and is reported as it is."""

CONTINUE_INSTRUCTION = (
    "Your previous message was cut off. Continue it exactly from where it stops, "
    "without repeating any of it and without any preamble."
)


class UpstreamsBusy(ThreadlineError):
    """Every healthy upstream of a model is at its `max_concurrency` for longer than the
    queue may wait: the caller should come back later."""

    status = 503
    code = "MODEL_OVERLOADED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retryable(error: BaseException) -> bool:
    """Whether another upstream (or the same one later) may answer where this one failed:
    transport errors, timeouts and the RETRY_STATUSES are; a refusal of the request is not."""
    return isinstance(error, ModelError) and error.retryable


class Balancer:
    """Weighted, least-busy choice among upstreams.

    The least loaded candidates (requests in flight per unit of weight) are preferred; among
    them, a smooth weighted round robin shares the picks by weight, so sequential requests
    over weights 3:1 go 75 % / 25 % exactly, and concurrent ones balance by load."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self._current = [0.0] * len(weights)

    def pick(self, candidates: Sequence[int], loads: Sequence[int]) -> int:
        """One of `candidates` (indexes), given every upstream's requests in flight."""
        if not candidates:
            raise ValueError("no candidate upstream")
        share = {i: loads[i] / self.weights[i] for i in candidates}
        least = min(share.values())
        tied = [i for i in candidates if share[i] <= least + 1e-12]
        if len(tied) == 1:
            return tied[0]
        total = 0.0
        for i in tied:
            self._current[i] += self.weights[i]
            total += self.weights[i]
        chosen = max(tied, key=lambda i: self._current[i])
        self._current[chosen] -= total
        return chosen


class CircuitState(StrEnum):
    CLOSED = "closed"  # requests flow
    OPEN = "open"  # skipped until `open_seconds` have passed
    HALF_OPEN = "half_open"  # one probe request decides


class Circuit:
    """One upstream's breaker: `failures` in a row open it for `open_seconds`; then one
    probe is let through; its success closes the circuit, its failure opens it again."""

    def __init__(self, failures: int, open_seconds: float, clock: Callable[[], float]) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._streak = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> CircuitState:
        reopens = self._opened_at + self.open_seconds
        if self._state is CircuitState.OPEN and self._clock() >= reopens:
            return CircuitState.HALF_OPEN
        return self._state

    @property
    def streak(self) -> int:
        """Failures in a row so far."""
        return self._streak

    def available(self) -> bool:
        """Whether a request may go to this upstream now (without taking the probe)."""
        state = self.state
        if state is CircuitState.HALF_OPEN:
            return not self._probing
        return state is CircuitState.CLOSED

    def admit(self) -> None:
        """A request goes out now: in HALF_OPEN, it is the one probe."""
        if self.state is CircuitState.HALF_OPEN:
            self._state = CircuitState.HALF_OPEN
            self._probing = True

    def succeeded(self) -> None:
        self._state, self._streak, self._probing = CircuitState.CLOSED, 0, False

    def failed(self) -> None:
        self._streak += 1
        if self._probing or self._streak >= self.threshold:
            self._state, self._opened_at = CircuitState.OPEN, self._clock()
        self._probing = False

    def released(self) -> None:
        """A request ended neither way (the caller went away): a probe may go again."""
        self._probing = False

    def seconds_to_probe(self) -> float:
        """How long until an open circuit lets its probe through (0 when it would now)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())


def backoff_seconds(backoff_ms: int, attempt: int) -> float:
    """The wait before the `attempt`-th retry of one upstream (1, 2, ...): doubling."""
    return backoff_ms / 1000 * 2 ** max(0, attempt - 1)


def continuation(request: ModelRequest, text: str) -> ModelRequest:
    """The request that continues a reply cut after `text`: the same messages, the text so
    far as the assistant's turn, and an instruction to go on exactly from there (the shape
    every chat upstream takes; one that continues a final assistant message does so too)."""
    messages = [
        *request.messages,
        ChatMessage("assistant", text),
        ChatMessage("user", CONTINUE_INSTRUCTION),
    ]
    max_tokens = request.max_tokens
    if max_tokens is not None:  # about 4 characters per token already spent
        max_tokens = max(1, max_tokens - len(text) // 4)
    return ModelRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        extra=request.extra,
    )


OVERLAP_WINDOW = 400  # characters of the text so far a continuation may repeat


class OverlapTrimmer:
    """Drops what a continuation repeats of the text so far.

    The continuation's first characters are held while they could still be a repeat of the
    text's end; once they cannot, the longest repeated part (whole words, at least one) is
    cut and the rest flows through unchanged."""

    def __init__(self, previous: str) -> None:
        self._tail = previous[-OVERLAP_WINDOW:]
        self._held = ""
        self._decided = not previous.strip()

    def feed(self, text: str) -> str:
        if self._decided:
            return text
        self._held += text
        if len(self._held) < len(self._tail) and self._could_grow():
            return ""
        return self._decide(final=False)

    def close(self) -> str:
        """What is still held when the continuation ends."""
        return "" if self._decided else self._decide(final=True)

    def _could_grow(self) -> bool:
        """Whether the held text is a prefix of some word-aligned suffix of the tail."""
        held = self._held.lstrip()
        if not held:
            return True
        tail = self._tail
        start = tail.find(held)
        while start >= 0:
            if _word_start(tail, start):
                return True
            start = tail.find(held, start + 1)
        return False

    def _decide(self, *, final: bool) -> str:
        self._decided = True
        held, tail = self._held, self._tail
        body = held.lstrip()
        lead = len(held) - len(body)
        best = 0
        for start in range(len(tail)):
            suffix = tail[start:].lstrip()
            if not suffix or not _word_start(tail, len(tail) - len(suffix)):
                continue
            if body.startswith(suffix) and _word_end(body, len(suffix), final):
                best = len(suffix)
                break  # the longest first
        return held if best == 0 else held[lead + best :]


def _word_start(text: str, index: int) -> bool:
    return index == 0 or text[index - 1].isspace()


def _word_end(text: str, index: int, final: bool) -> bool:
    if index >= len(text):
        return final or index == len(text)
    return not text[index].isalnum()
