"""The `RateLimiter` port on the `limits` library: one moving window per API key.

Where the windows live is a `limits` storage URI: `async+memory://` (this process, the
default) or, for several processes behind one load balancer, a shared store such as
`async+redis://host:6379` with `implementation="redispy"` (the `redis` client must be
installed). The service that admits a
request (`AccountService.admit`) calls the port and never sees which storage is behind it."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from threadline.domain.errors import RateLimited

IN_MEMORY = "async+memory://"


class WindowRateLimiter:
    """`per_minute` requests per key in any 60 s; 0 turns the limit off."""

    def __init__(
        self, per_minute: int, storage_uri: str = IN_MEMORY, **storage_options: str | float | bool
    ) -> None:
        """`storage_options` go to the `limits` storage (e.g. `implementation="redispy"`)."""
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        storage = storage_from_string(storage_uri, **storage_options)
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str) -> None:
        """Count one request for this key; raise RateLimited when over the limit."""
        if self._item is None:
            return
        if await self._limiter.hit(self._item, key):
            return
        stats = await self._limiter.get_window_stats(self._item, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Too many requests: the limit is {self.per_minute} per minute for this API key; "
            f"retry in {retry_after} s",
            retry_after=retry_after,
        )
