"""Requests-per-minute limits per API key, on the `limits` library (moving window).

In-memory by default; any `limits` storage URI (e.g. redis://) shares the window between
processes."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from threadline.domain.errors import RateLimited


class KeyRateLimiter:
    def __init__(self, per_minute: int, storage_uri: str = "async+memory://") -> None:
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    async def hit(self, key_id: str) -> None:
        """Count one request for this key; raise RateLimited when over the limit."""
        if self._item is None:
            return
        if await self._limiter.hit(self._item, key_id):
            return
        stats = await self._limiter.get_window_stats(self._item, key_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Too many requests: the limit is {self.per_minute} per minute for this API key; "
            f"retry in {retry_after} s",
            retry_after=retry_after,
        )
