"""`EventStream` (api/event_stream.py), on a real uvicorn: frames arrive as sent and the
response ends; frames ready together go out in one send, and none waits for a later one; a
client that hangs up stops the sending at once, even while the frames wait for the next
event, and the server goes on serving; an error in the frames ends the response."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tests.live_server import LiveServer
from threadline.api.event_stream import EventStream


class Frames:
    """Frame sources whose end (closed by the response) the test can wait for."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.sent = 0

    async def finite(self) -> AsyncIterator[bytes]:
        try:
            for n in range(3):
                yield f"id: {n}\ndata: {n}\n\n".encode()
        finally:
            self.closed.set()

    async def in_bursts(self) -> AsyncIterator[bytes]:
        """Three frames ready at once, a wait, two more at once."""
        try:
            for burst in (("a", "b", "c"), ("d", "e")):
                for name in burst:
                    yield f"data: {name}\n\n".encode()
                await asyncio.sleep(0.05)
        finally:
            self.closed.set()

    async def failing(self) -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        await asyncio.sleep(0.01)
        raise RuntimeError("the frames broke")

    async def failing_at_once(self) -> AsyncIterator[bytes]:
        """Two frames ready together, then an error without a wait between."""
        yield b"data: one\n\n"
        yield b"data: two\n\n"
        raise RuntimeError("the frames broke")

    async def then_wait(self) -> AsyncIterator[bytes]:
        """One frame, then a wait for an event that never comes."""
        try:
            yield b"data: first\n\n"
            self.sent += 1
            await asyncio.Event().wait()
            yield b"data: never\n\n"
        finally:
            self.closed.set()


SENDS: dict[str, list[bytes]] = {}  # request id -> the bodies the app sent, one per send


def counting_sends(app: Any) -> Any:
    """ASGI middleware recording each body `send` of the app, by the request's `id`."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        bodies = SENDS.setdefault(scope["query_string"].decode().removeprefix("id="), [])

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))
            await send(message)

        await app(scope, receive, recording)

    return wrapped


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, Frames]]]:
    sources: dict[str, Frames] = {}

    async def stream(request: Request) -> EventStream:
        frames = sources[request.query_params["id"]] = Frames()
        body = getattr(frames, request.path_params["kind"])()
        return EventStream(body, {"Cache-Control": "no-cache"})

    server = LiveServer(counting_sends(Starlette(routes=[Route("/{kind}", stream)])))
    base = server.start()
    yield base, sources
    server.stop()


def test_frames_arrive_and_the_response_ends(served):
    base, sources = served
    response = httpx.get(f"{base}/finite?id=a", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == "id: 0\ndata: 0\n\nid: 1\ndata: 1\n\nid: 2\ndata: 2\n\n"
    assert sources["a"].closed.wait(5)
    assert SENDS["a"] == [response.content, b""]  # ready together: one send, then the end


def test_frames_ready_together_go_in_one_send_and_none_waits_for_a_later_one(served):
    base, _ = served
    with httpx.stream("GET", f"{base}/in_bursts?id=bursts", timeout=10) as response:
        first = response.iter_raw()
        assert next(first) == b"data: a\n\ndata: b\n\ndata: c\n\n"  # before the wait ends
        rest = b"".join(first)
    assert rest == b"data: d\n\ndata: e\n\n"
    assert SENDS["bursts"] == [b"data: a\n\ndata: b\n\ndata: c\n\n", rest, b""]


@pytest.mark.parametrize(
    ("kind", "sent"),
    [("failing", b"data: one\n\n"), ("failing_at_once", b"data: one\n\ndata: two\n\n")],
)
def test_an_error_in_the_frames_ends_the_response_after_what_they_gave(served, kind, sent):
    base, _ = served
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the chunked body never completes
        httpx.stream("GET", f"{base}/{kind}?id={kind}", timeout=10) as response,
    ):
        for part in response.iter_raw():
            received += part
    assert received == sent


def test_a_client_that_hangs_up_while_frames_wait_stops_the_sending(served):
    base, sources = served
    with httpx.stream("GET", f"{base}/then_wait?id=b", timeout=10) as response:
        first = next(response.iter_lines())
        assert first == "data: first"
    started = time.monotonic()
    assert sources["b"].closed.wait(5), "the frames were never closed after the hang-up"
    assert time.monotonic() - started < 2
    assert sources["b"].sent == 1
    # the server is unharmed and serves the next stream in full
    assert httpx.get(f"{base}/finite?id=c", timeout=10).text.count("data:") == 3
