"""`EventStream` (api/event_stream.py), on a real uvicorn: frames arrive as sent and the
response ends; a client that hangs up stops the sending at once, even while the frames
wait for the next event, and the server goes on serving."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from threadline.api.event_stream import EventStream
from tests.live_server import LiveServer


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

    async def then_wait(self) -> AsyncIterator[bytes]:
        """One frame, then a wait for an event that never comes."""
        try:
            yield b"data: first\n\n"
            self.sent += 1
            await asyncio.Event().wait()
            yield b"data: never\n\n"
        finally:
            self.closed.set()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, Frames]]]:
    sources: dict[str, Frames] = {}

    async def stream(request: Request) -> EventStream:
        kind = request.path_params["kind"]
        frames = sources[request.query_params["id"]] = Frames()
        body = frames.finite() if kind == "finite" else frames.then_wait()
        return EventStream(body, {"Cache-Control": "no-cache"})

    server = LiveServer(Starlette(routes=[Route("/{kind}", stream)]))
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


def test_a_client_that_hangs_up_while_frames_wait_stops_the_sending(served):
    base, sources = served
    with httpx.stream("GET", f"{base}/wait?id=b", timeout=10) as response:
        first = next(response.iter_lines())
        assert first == "data: first"
    started = time.monotonic()
    assert sources["b"].closed.wait(5), "the frames were never closed after the hang-up"
    assert time.monotonic() - started < 2
    assert sources["b"].sent == 1
    # the server is unharmed and serves the next stream in full
    assert httpx.get(f"{base}/finite?id=c", timeout=10).text.count("data:") == 3
