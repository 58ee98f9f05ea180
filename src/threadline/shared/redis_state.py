"""Rate-limit windows and cache invalidation on Redis, each with its local fallback.

- `SharedRateLimiter`: the `limits` moving windows in Redis (one count across every process:
  10/min lets exactly 10 through whichever process they reach); while Redis is unreachable,
  this process's own windows (a key may then get the limit once per process).
- `RedisInvalidations`: one pub/sub channel; a message reaches every process's handlers within
  a round trip. While Redis is unreachable a message reaches this process only (the others'
  caches expire after `auth_cache_seconds`), and when it returns every handler hears "all"
  (forget everything: messages may have been missed).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from threadline.domain.errors import RateLimited
from threadline.shared.redis_link import SOCKET_TIMEOUT, RedisLink
from threadline.storage.rate_limits import WindowRateLimiter

CHANNEL = "threadline:invalidate"


def limits_uri(redis_url: str) -> str:
    """The `limits` storage URI of a redis:// (or rediss://) URL."""
    return "async+" + redis_url


class SharedRateLimiter:
    def __init__(self, per_minute: int, link: RedisLink) -> None:
        self._link = link
        self._local = WindowRateLimiter(per_minute)
        self._shared = WindowRateLimiter(
            per_minute,
            limits_uri(link.url),
            implementation="redispy",
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )

    async def hit(self, key: str) -> None:
        if self._link.up:
            try:
                await self._shared.hit(key)
                return
            except RateLimited:
                raise
            except Exception as exc:
                self._link.lost(exc)
        await self._local.hit(key)


class RedisInvalidations:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._handlers: list[Callable[[str, UUID], None]] = []
        link.listen(CHANNEL, self._received)
        link.on_up(lambda: self._deliver("all", UUID(int=0)))

    def publish(self, kind: str, ident: UUID) -> None:
        self._deliver(kind, ident)  # this process at once, whatever Redis does
        self._link.publish(CHANNEL, f"{kind}:{ident}")

    def subscribe(self, handler: Callable[[str, UUID], None]) -> None:
        self._handlers.append(handler)

    def _received(self, data: str) -> None:
        kind, _, raw = data.partition(":")
        try:
            ident = UUID(raw)
        except ValueError:
            return
        self._deliver(kind, ident)

    def _deliver(self, kind: str, ident: UUID) -> None:
        for handler in self._handlers:
            handler(kind, ident)
