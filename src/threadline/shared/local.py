"""The shared-state ports for one process: nothing to share, so nothing leaves memory.

Invalidations reach this process's own handlers at once; a run's feed is not published
(a reader in this process follows the run itself, services/runs.py)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from threadline.domain.events import ReplyEvent
from threadline.domain.ports import FeedRead, RunTerms


class LocalInvalidations:
    def __init__(self) -> None:
        self._handlers: list[Callable[[str, UUID], None]] = []

    def publish(self, kind: str, ident: UUID) -> None:
        for handler in self._handlers:
            handler(kind, ident)

    def subscribe(self, handler: Callable[[str, UUID], None]) -> None:
        self._handlers.append(handler)


class LocalRunFeed:
    shared = False

    def __init__(self) -> None:
        self._cancel_handlers: list[Callable[[UUID], object]] = []
        self._stop_handlers: list[Callable[[UUID], object]] = []

    def tap(self, run_id: UUID, terms: RunTerms) -> Callable[[ReplyEvent], None] | None:
        return None

    async def read(self, run_id: UUID, cursor: str, wait: float) -> FeedRead | None:
        return None

    async def owned(self, run_id: UUID) -> bool | None:
        return None

    def cancel(self, run_id: UUID) -> None:
        for handler in self._cancel_handlers:
            handler(run_id)

    def on_cancel(self, handler: Callable[[UUID], object]) -> None:
        self._cancel_handlers.append(handler)

    def request_stop(self, run_id: UUID) -> None:
        for handler in self._stop_handlers:
            handler(run_id)

    def on_stop(self, handler: Callable[[UUID], object]) -> None:
        self._stop_handlers.append(handler)
