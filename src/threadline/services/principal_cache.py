"""Recently authenticated principals, by key hash, so a request does not cost a SQL lookup.

Why it exists: looking the key up (a three-table join) was the largest fixed cost of a chat
request. An entry lives `ttl` seconds at most and is dropped at once when this process
revokes the key or changes the user (role, status, credit limit); a charge made here updates
the user's credit figures in place. So within one process revocation is immediate and the
credit check sees every charge made so far. Another process sharing the database (a second
API process, the `threadline` CLI) is seen within `ttl` seconds: its revocations, user changes
and charges take up to that long to reach this process's cache, unless they come through
the shared invalidations (`redis_url`: services/accounts.py), which drop them at once.

A lookup that raced an invalidation (it read the database before a revocation committed and
finishes after) is not cached: every invalidation bumps a generation number, and `put` is
refused when it changed since the lookup began.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from uuid import UUID

from threadline.domain.entities import Principal, User

MAX_ENTRIES = 10_000


class PrincipalCache:
    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}  # key hash -> (principal, expiry)
        self._by_user: dict[UUID, set[str]] = {}  # user id -> key hashes
        self.generation = 0

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._remove(key_hash)
            return None
        return entry[0]

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Remember a principal looked up when `self.generation` was `generation`."""
        if self.ttl <= 0 or generation != self.generation:
            return
        if key_hash not in self._entries and len(self._entries) >= self._max_entries:
            self._evict()
        self._entries[key_hash] = (principal, self._clock() + self.ttl)
        self._by_user.setdefault(principal.user.id, set()).add(key_hash)

    def drop_key(self, key_id: UUID) -> None:
        self.generation += 1
        for key_hash in [h for h, (p, _) in self._entries.items() if p.key_id == key_id]:
            self._remove(key_hash)

    def drop_user(self, user_id: UUID) -> None:
        self.generation += 1
        for key_hash in list(self._by_user.get(user_id, ())):
            self._remove(key_hash)

    def update_user(self, user: User) -> None:
        """Fresh figures of a user after a charge, for the cached principals of that user.
        Charges only add to `used_credit`, so a figure lower than the cached one is older."""
        for key_hash in self._by_user.get(user.id, ()):
            principal, expiry = self._entries[key_hash]
            if user.used_credit >= principal.user.used_credit:
                self._entries[key_hash] = (replace(principal, user=user), expiry)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_user.clear()

    def _remove(self, key_hash: str) -> None:
        principal, _ = self._entries.pop(key_hash)
        hashes = self._by_user.get(principal.user.id)
        if hashes is not None:
            hashes.discard(key_hash)
            if not hashes:
                del self._by_user[principal.user.id]

    def _evict(self) -> None:
        now = self._clock()
        for key_hash in [h for h, (_, expiry) in self._entries.items() if expiry <= now]:
            self._remove(key_hash)
        while len(self._entries) >= self._max_entries:  # still full: oldest entries first
            self._remove(next(iter(self._entries)))
