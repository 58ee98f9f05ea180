"""The fault doubles every fake upstream plays (tests/fake_upstream.py for chat completions,
tests/fake_embeddings.py, tests/fake_images.py, tests/fake_reranker.py): a test enqueues
one, and the next request gets it instead of a normal answer (`SiteHandler.play_fault` in
tests/local_site.py plays the plain ones).

    up.enqueue(Status(500, {"error": {"message": "boom"}}))   # an HTTP error
    up.enqueue(Hang(5))                                        # read the request, answer nothing
    up.enqueue(Raw(b"not json", "text/html"))                  # these exact body bytes
    up.enqueue(Disconnect())                                   # close without an answer
    up.enqueue(ErrorEvent(after_chunks=5))                     # 5 deltas, then an error event

Each server says in its docstring what it makes of `body=None` (its API's error shape), of
`Raw`'s default content type, and of the streaming fields (`after_chunks`, `reply`), which
only the chat upstream streams."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Status:
    """An HTTP error. `body`: a dict is sent as JSON, str/bytes as is, None as the API's own
    error shape."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then send nothing for `seconds` (or until the server stops), then
    close; when streaming, after `after_chunks` deltas of `reply` (the server's default
    when None)."""

    seconds: float = 3600.0
    after_chunks: int = 0
    reply: Any = None


@dataclass(frozen=True)
class Disconnect:
    """Close the connection after `after_chunks` streamed deltas of `reply` (0: before any
    answer)."""

    after_chunks: int = 0
    reply: Any = None


@dataclass(frozen=True)
class ErrorEvent:
    """When streaming: after `after_chunks` deltas of `reply`, an error event in the API's
    own shape (`data: {"error": {...}}`), then the stream ends."""

    after_chunks: int = 0
    message: str = "the model crashed"
    reply: Any = None


@dataclass(frozen=True)
class Raw:
    """Send these exact body bytes (a malformed stream, a non-JSON answer). `content_type`
    None: the server's usual one."""

    body: bytes
    content_type: str | None = None
    status: int = 200


class Script(Generic[T]):
    """What a threaded fake answers next: the enqueued items in order, then `default()`
    (a request's handler thread takes them, the test's thread adds them)."""

    def __init__(self, default: Callable[[], T]) -> None:
        self._default = default
        self._items: deque[T] = deque()
        self._lock = threading.Lock()

    def enqueue(self, *items: T) -> None:
        with self._lock:
            self._items.extend(items)

    def next(self) -> T:
        with self._lock:
            return self._items.popleft() if self._items else self._default()
