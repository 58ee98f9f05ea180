"""Long work says it is still moving.

A job's time limit (`documents.job_timeout_seconds`) is meant to stop an attempt that hangs,
not one that is slow because it is big: a 50 MB text is tens of thousands of chunks to embed,
longer than any fixed limit that still catches a hang soon. So the job worker counts the limit
from the attempt's last sign of progress, and the work it runs calls `progressed()` at each
step (a parsed file, each batch embedded, the index written). Outside a job it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar[Callable[[], None] | None] = ContextVar("progress", default=None)


def progressed() -> None:
    """Tell whoever runs this work (a job worker) that it moved on."""
    listener = _listener.get()
    if listener is not None:
        listener()


@contextmanager
def reporting_to(listener: Callable[[], None]) -> Iterator[None]:
    """Work started (as a task) inside this block reports its progress to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
