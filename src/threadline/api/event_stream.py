"""The response every dialect streams its SSE frames with.

Why it exists, twice over:
- Starlette's `StreamingResponse` (on an ASGI server of spec 2.3, as uvicorn is) sends the
  body from an anyio task group, a second task watching for the client to go away, and
  cancels the group through anyio's cancel scopes. `EventStream` sends the body from the
  request's own task and keeps one plain asyncio task that waits for the disconnect and then
  cancels the sending (the same outcome: a reader that leaves stops being sent to at once;
  the reply itself goes on, services/runs.py).
- A busy server reads several of a reply's tokens at once (they queue while the event loop
  is busy), and its reader then finds several frames ready. Each frame used to be its own
  `send`: a pass through every middleware's wrapper and a socket write. Frames that are
  ready together now go out in one `send`; as soon as the next frame is not ready, what is
  held goes out first, so no frame ever waits for a later one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    """`text/event-stream` of `frames`, each sent as soon as it comes."""

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
            await self._send_frames(send)
        except asyncio.CancelledError:
            if not state.client_gone:
                raise
            sending.uncancel()  # our own cancel: the client left, the response is over
        finally:
            state.streaming = False
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _send_frames(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        frames = aiter(self.body_iterator)
        held: list[bytes] = []
        while True:
            step: Any = anext(frames)
            try:
                waiting_on = step.send(None)  # run the iterator until it has to wait
            except StopIteration as ready:  # the next frame was ready: held
                held.append(ready.value)
                continue
            except StopAsyncIteration:
                break
            except Exception:  # the frames broke: what they gave before goes out first
                if held:
                    await send(_body(held))
                raise
            if held:  # it has to wait: what is held goes out first
                try:
                    await send(_body(held))
                except BaseException:
                    step.close()  # the iterator's own clean-up runs (it waits no more)
                    raise
                held.clear()
            try:
                held.append(await _Resumed(step, waiting_on))
            except StopAsyncIteration:
                break
        if held:
            await send(_body(held))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _body(frames: list[bytes]) -> dict[str, Any]:
    return {"type": "http.response.body", "body": b"".join(frames), "more_body": True}


class _Resumed:
    """Awaits the rest of `step` (an awaitable already run up to its first wait, on
    `waiting_on`): the task waits on `waiting_on`, and whatever resumes the task (a result
    or an exception, a cancel among them) goes on to `step`, as `await step` would have."""

    __slots__ = ("_step", "_waiting_on")

    def __init__(self, step: Any, waiting_on: Any) -> None:
        self._step = step
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, bytes]:
        step, pending = self._step, self._waiting_on
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                step.close()
                raise
            except BaseException as error:  # a cancel or other error: the step's to handle
                try:
                    pending = step.throw(error)
                except StopIteration as done:
                    return done.value
                continue
            try:
                pending = step.send(value)
            except StopIteration as done:
                return done.value


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
