"""One process's link to Redis, and whether it works now (full mode) or not (degraded mode).

Why it exists: Redis holds what is fast and shared but may be lost (rate-limit windows,
invalidations, live runs). A request must never fail because Redis did, so every user of the
link checks `up` first, and reports an error with `lost()`: the link then says so once in the
log (a warning), `threadline_redis_up` in /metrics drops to 0, and the users fall back to
their local behaviour. A supervisor task keeps the pub/sub subscription: it reconnects every
`retry_seconds` while Redis is away, and on success says so in the log and calls the
`on_up` hooks (an invalidation cache forgets what it may have missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.asyncio import Redis

log = structlog.get_logger(__name__)

SOCKET_TIMEOUT = 1.0  # a Redis that hangs costs a request this long at most, once
RETRY_SECONDS = 0.5


class RedisLink:
    def __init__(self, url: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self.url = url
        self.client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )
        self.retry_seconds = retry_seconds
        self.up = False
        self._channels: dict[str, Callable[[str], None]] = {}
        self._on_up: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._degraded = False  # degraded mode was announced in the log

    def listen(self, channel: str, handler: Callable[[str], None]) -> None:
        """Call `handler(data)` for each message published on `channel` (before `start`)."""
        self._channels[channel] = handler

    def on_up(self, hook: Callable[[], None]) -> None:
        """Call `hook()` each time Redis comes back after an outage."""
        self._on_up.append(hook)

    def publish(self, channel: str, data: str) -> None:
        """Publish without waiting; a failure makes the link degraded."""
        if self.up:
            task = asyncio.get_running_loop().create_task(self._publish(channel, data))
            task.add_done_callback(_consume)

    async def _publish(self, channel: str, data: str) -> None:
        try:
            await self.client.publish(channel, data)
        except Exception as exc:
            self.lost(exc)

    def lost(self, error: BaseException) -> None:
        """Redis failed a call: degraded mode until the supervisor reconnects."""
        self.up = False
        if not self._degraded:
            self._degraded = True
            log.warning(
                "redis unreachable: degraded mode (per-process rate limits and caches, "
                "streams resumed from the store)",
                error=repr(error),
            )

    async def start(self) -> None:
        """Start the supervisor; wait briefly for the first connection (a Redis down at
        start-up does not stop the server: it starts degraded)."""
        self._task = asyncio.create_task(self._supervise(), name="redis-link")
        for _ in range(20):
            if self.up:
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def _supervise(self) -> None:
        while True:
            try:
                await self._subscribed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.lost(exc)
            await asyncio.sleep(self.retry_seconds)

    async def _subscribed(self) -> None:
        """Subscribe and dispatch messages until the connection fails or a user reports
        Redis lost."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await self.client.ping()
            if self._channels:
                await pubsub.subscribe(*self._channels)
            self._came_up()
            while self.up:
                message = await pubsub.get_message(timeout=SOCKET_TIMEOUT / 2)
                if message is not None and message.get("type") == "message":
                    handler = self._channels.get(message["channel"])
                    if handler is not None:
                        handler(message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _came_up(self) -> None:
        self.up = True
        if self._degraded:
            self._degraded = False
            log.warning("redis reachable again: full mode")
        for hook in self._on_up:
            hook()


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
