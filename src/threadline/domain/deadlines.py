"""A wait's timeout with one timer that is moved on, not made and cancelled per wait.

Why it exists: a streamed reply waits once per token, twice over (the upstream connection
for its next chunk, each reader for the run's next event), each wait with a timeout. A timer
made and cancelled per wait was a good part of a stream's CPU. `Deadline` keeps one timer:
a wait that ends in time leaves it armed, and when it fires for a wait that began later, it
is moved to that wait's deadline. In `domain` because providers (providers/http1.py) and
services (services/runs.py) both use it, and only the standard library's asyncio is needed.

    deadline = Deadline()
    waiter = loop.create_future()
    deadline.watch(waiter, 30.0)    # waiter gets TimeoutError 30 s from now, if still waiting
    await waiter
    ...
    deadline.stop()                 # no more waits
"""

from __future__ import annotations

import asyncio

EARLY = 0.001  # seconds a timer may fire before its time (the loop's clock resolution)


class Deadline:
    __slots__ = ("_deadline", "_timer", "_waiter")

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: float | None = None

    def watch(self, waiter: asyncio.Future[None], seconds: float | None) -> None:
        """`waiter` is what is waited on now: it gets TimeoutError once `seconds` have
        passed without it being done (None: no timeout for this wait)."""
        self._waiter = waiter
        if seconds is None:
            self._deadline = None
            return
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + seconds
        if self._timer is not None and self._timer.when() > deadline + EARLY:
            self._cancel()  # armed for a longer wait than this one
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._due)

    def _due(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # not waiting (with a timeout): the next wait arms it again
        loop = asyncio.get_running_loop()
        if deadline - loop.time() > EARLY:  # the wait began after the timer was armed
            self._timer = loop.call_at(deadline, self._due)
        else:
            waiter.set_exception(TimeoutError())

    def stop(self) -> None:
        """No more waits: the timer is cancelled."""
        self._cancel()
        self._waiter = None

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
