"""The response every dialect streams its SSE frames with.

Why it exists: Starlette's `StreamingResponse` (on an ASGI server of spec 2.3, as uvicorn
is) sends the body from an anyio task group, a second task watching for the client to go
away, and cancels the group through anyio's cancel scopes: a cost paid on every streamed
reply, for each of its frames. `EventStream` sends the body from the request's own task
and keeps one plain asyncio task that waits for the disconnect and then cancels the
sending (the same outcome: a reader that leaves stops being sent to at once; the reply
itself goes on, services/runs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    """`text/event-stream` of `frames`, each sent as it comes."""

    def __init__(self, frames: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket denial: Starlette's own way
            await super().__call__(scope, receive, send)
            return
        sending = asyncio.current_task()
        assert sending is not None
        state = _State()
        watcher = asyncio.get_running_loop().create_task(_watch(receive, sending, state))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not state.client_gone:
                raise
            sending.uncancel()  # our own cancel: the client left, the response is over
        finally:
            state.streaming = False
            watcher.cancel()
        if self.background is not None:
            await self.background()


class _State:
    __slots__ = ("client_gone", "streaming")

    def __init__(self) -> None:
        self.streaming = True
        self.client_gone = False


async def _watch(receive: Receive, sending: asyncio.Task[object], state: _State) -> None:
    """Cancel `sending` when the client disconnects while the body is still being sent."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if state.streaming:
        state.client_gone = True
        sending.cancel()
