"""A real uvicorn server on 127.0.0.1 for tests: real TCP, real HTTP, real disconnects.

Why it exists: clients no one here wrote (the official `openai` SDK, plain httpx streams that
hang up mid-reply) must be tested against the server as deployed, not through an in-process
transport. The server runs the app (lifespan included) on its own event loop in a thread, so
sync clients can call it from the test and async clients from the test's own loop.

    server = LiveServer(create_app(settings, model_factory=fakes.factory))
    base_url = server.start()                        # "http://127.0.0.1:PORT"
    issued = server.call(container.bootstrap())      # run a coroutine on the server's loop
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from tests.loop_watch import LIMIT_SECONDS, LoopWatch

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn's server, whose wait between ticks `stop()` cuts short: uvicorn looks at its
    exit flag every 0.1 s, ~50 ms of each of a run's few hundred stops."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.wake = asyncio.Event()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)


class LiveServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", lifespan="on", access_log=False
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._watch = LoopWatch(f"live-server:{self.port}")  # the loop-lag guard

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a background thread; returns the base URL once the server listens."""
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._failure or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the live server did not start: {self._failure!r}")
            time.sleep(0.01)
        if LIMIT_SECONDS > 0 and self._loop is not None:
            self._watch.start_threadsafe(self._loop)  # after startup: serving is watched
        return self.base_url

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's event loop (its database engine lives there)."""
        assert self._loop is not None, "start() the server first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._watch.stop()
        self._server.should_exit = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._server.wake.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
