"""A threaded HTTP server on 127.0.0.1 with a free port, for every fake web service the tests
talk to over real TCP (pages, images, embeddings, image generation, search, YouTube): started
and stopped as a context manager (or `start()`/`stop()`), addressed by `url(path)`.

    class Handler(SiteHandler):
        def do_GET(self) -> None:
            self.send(200, b"hello", "text/plain")

    with LocalSite(Handler) as site:
        site.url("/")          # "http://127.0.0.1:PORT/"
        site.host_port         # "127.0.0.1:PORT" (for `[fetch].allow_private_hosts`)

`stop()` sets `stopping` first, so a handler that hangs on purpose (`site.stopping.wait(s)`)
lets go at once instead of holding its thread until its time is up.

The chat-completions upstream (tests/fake_upstream.py) is the exception: it streams from
asyncio on its own loop, so that a benchmark's thousands of deltas cost no thread each.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.faults import Disconnect, Hang, Raw, Status


class SiteHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log, and a client hanging up is no error."""

    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle's algorithm the body would wait for
    # the client's delayed ACK of the headers (~40 ms a response on Linux)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def send(
        self,
        status: int,
        body: bytes | str | Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """One whole response: bytes or str as they are, anything else as JSON."""
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def play_fault(self, item: Status | Raw | Hang | Disconnect, error: Any) -> None:
        """A fault double of tests/faults.py as the answer; `error` is the body of a `Status`
        without one (the API's error shape), and a `Raw` is JSON unless it names a type."""
        if isinstance(item, Status):
            body = item.body if item.body is not None else error
            self.send(item.status, body, headers=dict(item.headers))
        elif isinstance(item, Raw):
            self.send(item.status, item.body, item.content_type or "application/json")
        elif isinstance(item, Hang):
            self.server.stopping.wait(item.seconds)  # type: ignore[attr-defined]
            self.close_connection = True
        else:
            self.close_connection = True

    def body(self) -> bytes:
        """The request's body (by its Content-Length)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up early (a fetcher refusing a body too large) is no error."""


class LocalSite:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.stopping = self.stopping  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host_port(self) -> str:
        """For `[fetch].allow_private_hosts`."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases handlers that hang on purpose
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OnSite:
    """For a fake service that keeps its own `url` (its API's root): it serves through
    `self.site`, a `LocalSite`, and starts and stops with it."""

    site: LocalSite

    def start(self) -> Self:
        self.site.start()
        return self

    def stop(self) -> None:
        self.site.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
