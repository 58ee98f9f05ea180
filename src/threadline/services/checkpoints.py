"""Checkpoints: a reply's text saved to the store while it streams.

Why: a process killed mid-reply (kill -9, the OOM killer, a lost machine) never runs the end
of its runs. The record it leaves PENDING is failed at the next start-up, keeping the text it
holds (`RecordStore.fail_unfinished`), so the run saves its text as it grows and a crash
loses at most the last interval of it. A client that resumes such a reply gets the saved
text it lacks, then the failure (services/replays.py).

The rate is bounded: a save when `seconds` have passed since the last one began, or sooner
once `chars` characters are unsaved; never two in flight for one run, and none before the
record's PENDING write is done. A save is a background task: the stream never waits for it,
and the per-token cost is an addition and a comparison (no write, no task, no timer before
the first token). The store only updates a record still PENDING, so the run's final write
wins over a late checkpoint whichever lands first.

    checkpoints = Checkpoints(parts, save, CheckpointPolicy(seconds=1.0, chars=4096), ready)
    parts.append(delta); checkpoints.grew(len(delta))     # per delta, after the append
    await checkpoints.close()                             # at the end, before the final write
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

Save = Callable[[str], Awaitable[None]]
"""Store the text so far."""


@dataclass(frozen=True)
class CheckpointPolicy:
    seconds: float = 1.0  # 0: no checkpoints
    chars: int = 4096

    @property
    def enabled(self) -> bool:
        return self.seconds > 0


class Checkpoints:
    """The checkpoints of one run's text (`parts`, the deltas so far, appended by the run)."""

    def __init__(
        self, parts: list[str], save: Save, policy: CheckpointPolicy, ready: Callable[[], bool]
    ) -> None:
        self._parts = parts
        self._save = save
        self._seconds = policy.seconds
        self._chars = policy.chars
        self._ready = ready  # the record's PENDING write is done
        self._length = 0  # characters of text so far
        self._stored = 0  # characters of it in the store
        self._began = asyncio.get_running_loop().time()  # when the last save began
        self._timer: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task[None] | None = None
        self._backoff = False  # a save failed: the next waits for the timer
        self._closed = False
        self.saved = False  # a save succeeded: the store holds some of the text

    def grew(self, chars: int) -> None:
        """The text grew by `chars` characters (called per delta, after it is appended)."""
        self._length += chars
        if self._saving is not None or self._backoff:
            return  # the save's end, or the timer, looks again
        if self._length - self._stored >= self._chars:
            self._start()
        elif self._timer is None:
            self._arm()

    async def close(self) -> bool:
        """No more saves; waits for one in flight. True when the store holds some text."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saving is not None:
            with contextlib.suppress(Exception):  # logged by the save itself
                await asyncio.shield(self._saving)
        return self.saved

    def _arm(self, wait: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        if wait is None:
            wait = self._began + self._seconds - loop.time()
        self._timer = loop.call_later(max(0.0, wait), self._due)

    def _due(self) -> None:
        self._timer = None
        self._backoff = False
        if not self._closed and self._saving is None and self._length > self._stored:
            self._start()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        if not self._ready():  # the PENDING record is not written yet: try again later
            self._backoff = True
            self._arm(self._seconds)
            return
        self._began = asyncio.get_running_loop().time()
        self._saving = asyncio.create_task(self._write("".join(self._parts)))

    async def _write(self, text: str) -> None:
        failed = False
        try:
            await self._save(text)
            self._stored, self.saved = len(text), True
        except Exception as exc:  # the reply goes on; its final write says if storage is down
            failed = True
            log.warning("could not checkpoint a streaming reply", error=type(exc).__name__)
        finally:
            self._saving = None
        if self._closed or self._length <= self._stored:
            return
        if failed:
            self._backoff = True  # no tight retry loop against a failing store
            self._arm(self._seconds)
        elif self._length - self._stored >= self._chars:
            self._start()
        else:
            self._arm()
