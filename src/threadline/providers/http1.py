"""An HTTP/1.1 transport for httpx, on asyncio, its responses parsed by llhttp (httptools).

Why it exists: relaying a streamed reply is one small read per token, and that read was the
largest part of the server's work per reply. httpx's own stack pays for each one with
httpcore's connection and pool bookkeeping, several layers of async iterators and h11's
pure-Python parsing (together ~20% of the server's CPU at 50 concurrent streams). This
transport keeps httpx's interface (its requests, responses, timeouts and exceptions, so
callers and error handling are unchanged) and does HTTP/1.1 itself: a request is written in
one piece; the response is parsed by llhttp, chunked framing included, as bytes arrive, and
each body chunk goes straight to the reader.

Connections are kept alive per origin and reused, newest first; `max_connections` bounds
those open at once (a request waits for a free one up to the pool timeout) and
`max_keepalive` those kept idle, for at most `keepalive_expiry` seconds. A request sent on a
reused connection that the server closed meanwhile (it answered nothing) is retried once on
a new one. Scope: what an API client needs: no proxies, HTTP/2, upgrades or
`Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

from threadline.domain.deadlines import Deadline

__all__ = ["Http1Transport"]

_HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
_LOW_WATER = 64 * 1024  # ... and resumes

Origin = tuple[str, str, int]  # scheme, host, port


class _Connection(asyncio.Protocol):
    """One connection: the socket's protocol and the parser's callbacks. One exchange at a
    time; what arrives is buffered, and the one waiting reader is woken."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.lost = False  # the connection is gone (closed by either side)
        self.error: Exception | None = None  # why, when it was not a clean close
        self.idle_since = 0.0
        self.exchanges = 0
        self._read_deadline = Deadline()  # the read timeout (see `wait`)
        self._reset()

    def _reset(self) -> None:
        self.received = False  # any byte of this exchange's response
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False  # the status line and headers are in
        self.keep_alive = False  # the response lets the connection be reused
        self.complete = False  # ... and the whole body
        self.framed = False  # the body's end is known from its framing (not the close)
        self.chunks: deque[bytes] = deque()
        self.buffered = 0

    def start_exchange(self) -> None:
        self._reset()
        self.exchanges += 1

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = httpx.RemoteProtocolError(f"malformed response: {exc}")
            if self.transport is not None:
                self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        self.write_paused = False
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # -- llhttp's callbacks

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once complete
        self.head = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None and not self.read_paused:
            self.transport.pause_reading()
            self.read_paused = True

    def on_message_complete(self) -> None:
        self.complete = True

    # -- waiting

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter, self.write_waiter = self.write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float | None) -> None:
        """Until something arrives (or the connection is lost); TimeoutError after
        `seconds` of nothing. The read timer is made once and moved on only when it fires:
        a streamed body waits once per chunk, and a timer made and cancelled each time was
        a good part of reading it."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self._read_deadline.watch(waiter, seconds)
        try:
            await waiter
        finally:
            self.waiter = None

    def stop_timer(self) -> None:
        self._read_deadline.stop()

    async def send(self, data: bytes, seconds: float | None) -> None:
        assert self.transport is not None
        if self.lost or self.transport.is_closing():
            raise httpx.WriteError("the connection is closed")
        self.transport.write(data)
        if self.write_paused:
            loop = asyncio.get_running_loop()
            waiter = self.write_waiter = loop.create_future()
            timer = None if seconds is None else loop.call_later(seconds, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing the request") from None
            finally:
                if timer is not None:
                    timer.cancel()
            if self.lost:
                raise httpx.WriteError("the connection closed while the request was written")

    def take(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.read_paused and self.buffered <= _LOW_WATER and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
        )

    def close(self) -> None:
        self.stop_timer()
        if self.transport is not None:
            self.transport.close()
        self.lost = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; the connection goes back to the pool at its end, and
    is closed if the reader stops early."""

    def __init__(self, pool: Http1Transport, connection: _Connection, timeout: float | None):
        self._pool = pool
        self._connection = connection
        self._timeout = timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while not self._done:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                self._finish(reuse=True)
            elif connection.error is not None and not isinstance(
                connection.error, httpx.RemoteProtocolError
            ):
                self._finish(reuse=False)
                raise httpx.ReadError(str(connection.error) or type(connection.error).__name__)
            elif connection.lost:
                self._finish(reuse=False)
                if connection.error is not None:
                    raise cast(httpx.RemoteProtocolError, connection.error)
                if connection.framed:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
                return  # a body that ends with the connection: this is its end
            else:
                try:
                    await connection.wait(self._timeout)
                except TimeoutError:
                    self._finish(reuse=False)
                    raise httpx.ReadTimeout("timed out reading the response") from None

    async def aclose(self) -> None:
        if not self._done:
            self._finish(reuse=False)

    def _finish(self, *, reuse: bool) -> None:
        self._done = True
        self._pool.release(self._connection, reuse=reuse)


class Http1Transport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        max_keepalive: int = 512,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        head = _request_head(request)
        body = await request.aread()
        origin = _origin(request.url)
        for attempt in range(2):
            connection, reused = await self._connection(origin, timeouts)
            try:
                await connection.send(head + body if body else head, timeouts.get("write"))
                while not connection.head:
                    if connection.lost or connection.error is not None:
                        raise _closed_unanswered(connection)
                    try:
                        await connection.wait(timeouts.get("read"))
                    except TimeoutError:
                        raise httpx.ReadTimeout("timed out waiting for the response") from None
            except httpx.TransportError as exc:
                self.release(connection, reuse=False)
                stale = reused and not connection.received and attempt == 0
                if stale and isinstance(exc, httpx.RemoteProtocolError | httpx.WriteError):
                    continue  # the server had closed this idle connection: once more, anew
                raise
            except BaseException:
                self.release(connection, reuse=False)
                raise
            return httpx.Response(
                connection.status,
                headers=connection.headers,
                stream=_Body(self, connection, timeouts.get("read")),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(
        self, origin: Origin, timeouts: dict[str, float | None]
    ) -> tuple[_Connection, bool]:
        """A kept-alive connection to `origin` (newest first), else a new one."""
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable and loop.time() - connection.idle_since < self._keepalive_expiry:
                connection.start_exchange()
                return connection, True
            self._drop(connection)
        await self._slot(timeouts.get("pool"))
        try:
            connection = await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._free_slot()
            raise
        connection.start_exchange()
        return connection, False

    async def _slot(self, seconds: float | None) -> None:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._open >= self._max_connections and self._idle_count:
            self._drop_oldest_idle()
        if self._open < self._max_connections:
            self._open += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter  # the slot is handed over: _open already counts it
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed over as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
            raise

    def _free_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: still counted
                return
        self._open -= 1

    async def _connect(self, origin: Origin, seconds: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            tls = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(seconds):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return protocol

    def release(self, connection: _Connection, *, reuse: bool) -> None:
        """Back to the pool at the end of an exchange, or closed."""
        connection.stop_timer()
        keep = reuse and connection.reusable and not self._closed
        # With requests waiting for a slot (the pool is full) the slot goes to one of them.
        if keep and self._idle_count < self._max_keepalive and not self._slot_waiters:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_count += 1
            return
        self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._free_slot()

    def _drop_oldest_idle(self) -> None:
        oldest = min(
            (c for conns in self._idle.values() for c in conns), key=lambda c: c.idle_since
        )
        self._idle[oldest.origin].remove(oldest)
        self._idle_count -= 1
        self._drop(oldest)

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
                self._open -= 1
        self._idle.clear()
        self._idle_count = 0


def _origin(url: httpx.URL) -> Origin:
    if url.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _closed_unanswered(connection: _Connection) -> Exception:
    error = connection.error
    if isinstance(error, httpx.RemoteProtocolError):
        return error
    return httpx.RemoteProtocolError("server disconnected without sending a response")
