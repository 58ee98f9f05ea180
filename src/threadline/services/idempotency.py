"""Idempotent retries: a request sent again with the same `Idempotency-Key` gets the first
one's answer instead of running twice (Stripe's semantics).

A key belongs to the caller's API key (another key's same string is another key) and lives
`ttl` (24 h) from its first use. The first request with a key *holds* it while it runs; then:

- same key, same request (fingerprint: method, path, query, body), answer stored → that
  answer again, byte for byte (status, content type, body), on any process;
- same key, a request that started a chat's run (its aiRecord is known) → the request runs
  again in *follow* mode: `ChatService.reply` hands back that run (live here, or mirrored from
  the store: services/replays.py) instead of starting one, so a stream is the same aiRecord's
  and nothing is charged twice;
- same key, still running with no record yet → wait (polling the store) for one of the above;
- same key, another request → `KeyReused` (422), naming the request the key was used for.

What is not stored (Stripe keeps a 500 too; here the rule is "did it do anything"):
an error *raised* before the handler answered (validation, auth, credits, a rate limit, the
store unavailable, a crash) means the request changed nothing that a retry would repeat, so
the key is released and a retry with it runs afresh. An answer the handler *returned* is
stored whatever its status (a reply that failed upstream answered 502 with its FAILED
aiRecord: a retry gets that 502 again; send a new key to try again). A request that raised
after its run started keeps the key, pointing at the run.

A holder that dies (its process killed) leaves the key locked until `locked_until`; a retry
after that takes it over and runs afresh. Waiting for a holder ends after `wait_seconds` with
`Conflict` (409): retry later.

The HTTP side (which routes, the header, the fingerprint) is api/idempotency.py; the request
being handled reaches `ChatService.reply` through a context variable (`for_reply()`), so no
dialect handler passes it along.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID, uuid4

import structlog

from threadline.domain.clock import utcnow
from threadline.domain.errors import Conflict, InvalidRequest, KeyReused
from threadline.domain.ports import IdempotencyStore, KeyedRequest

log = structlog.get_logger(__name__)

KEY_MAX_CHARS = 255
# printable ASCII, no blank at either end (the pattern /openapi.json declares too)
KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
_KEY = re.compile(KEY_PATTERN)
TTL = timedelta(hours=24)
PURGE_EVERY_SECONDS = 3600.0  # a long-running server deletes expired keys this often


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status_code: int
    content_type: str | None
    body: bytes


@dataclass
class Ticket:
    """What one request with a key does: hold it (`held`), replay a stored `answer`, or
    follow the run of aiRecord `replay_of`."""

    scope: UUID
    key: str
    token: UUID
    held: bool = False
    answer: StoredAnswer | None = None
    replay_of: UUID | None = None
    record_id: UUID | None = None  # the run this request started (held) or follows
    _store: IdempotencyStore | None = field(default=None, repr=False)
    _used: bool = field(default=False, repr=False)

    async def run_started(self, record_id: UUID) -> None:
        """The held request started the run of `record_id`: retries follow it from now."""
        self.record_id = record_id
        if self.held and self._store is not None:
            await self._store.started(self.scope, self.key, self.token, record_id)


_current: ContextVar[Ticket | None] = ContextVar("idempotency_ticket", default=None)


def for_reply() -> Ticket | None:
    """The ticket of the request being handled, for its first chat reply only (a task the
    reply spawns inherits the context; it must not replay or record anything)."""
    ticket = _current.get()
    if ticket is None or ticket._used:
        return None
    ticket._used = True
    return ticket


@contextlib.contextmanager
def acting(ticket: Ticket) -> Iterator[None]:
    """Handle a request under `ticket` (seen by `for_reply()` inside)."""
    token = _current.set(ticket)
    try:
        yield
    finally:
        _current.reset(token)


def check_key(raw: str) -> str:
    if len(raw) > KEY_MAX_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key is {len(raw)} characters long; send at most {KEY_MAX_CHARS} "
            "(a UUID is a good key)"
        )
    if not _KEY.fullmatch(raw):
        raise InvalidRequest(
            "Idempotency-Key must be printable ASCII (letters, digits, punctuation; a UUID is "
            "a good key), without leading or trailing spaces"
        )
    return raw


class IdempotencyService:
    def __init__(
        self,
        store: IdempotencyStore,
        *,
        ttl: timedelta = TTL,
        lock_seconds: float = 600.0,
        wait_seconds: float = 300.0,
        poll_seconds: float = 0.05,
    ) -> None:
        self._store = store
        self.ttl = ttl
        self.lock_seconds = lock_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._purged_at = time.monotonic()

    async def begin(self, scope: UUID, key: str, fingerprint: str, request: str) -> Ticket:
        """Claim `key` for this request, or learn what to answer instead (see the module)."""
        if time.monotonic() - self._purged_at >= PURGE_EVERY_SECONDS:
            await self.purge()
        deadline = time.monotonic() + self.wait_seconds
        delay = self.poll_seconds
        entry = self._entry(scope, key, fingerprint, request)
        found = await self._store.claim(entry, entry.created_at - self.ttl)
        while True:
            if found is None:
                return Ticket(scope, key, entry.token, held=True, _store=self._store)
            if found.fingerprint != fingerprint:
                raise KeyReused(
                    f"Idempotency-Key {key[:64]!r} was already used for a different request "
                    f"({found.request}, another body or query) in the last "
                    f"{self.ttl.total_seconds() / 3600:g} hours: send a new key for a new "
                    "request"
                )
            ticket = self._answered(found)
            if ticket is not None:
                return ticket
            now = utcnow()
            if found.locked_until <= now:  # its holder died: take the key over
                entry = self._entry(scope, key, fingerprint, request)
                if await self._store.take_over(
                    scope, key, found.token, entry.token, entry.locked_until
                ):
                    log.warning("idempotency key taken over from a stale holder")
                    return Ticket(scope, key, entry.token, held=True, _store=self._store)
            if time.monotonic() >= deadline:
                raise Conflict(
                    "A request with this Idempotency-Key is still in progress; retry later"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
            found = await self._store.get(scope, key)
            if found is None:  # released by its holder: this request may run
                entry = self._entry(scope, key, fingerprint, request)
                found = await self._store.claim(entry, entry.created_at - self.ttl)

    def _entry(self, scope: UUID, key: str, fingerprint: str, request: str) -> KeyedRequest:
        now = utcnow()
        return KeyedRequest(
            scope=scope,
            key=key,
            fingerprint=fingerprint,
            request=request[:300],
            token=uuid4(),
            created_at=now,
            locked_until=now + timedelta(seconds=self.lock_seconds),
        )

    @staticmethod
    def _answered(found: KeyedRequest) -> Ticket | None:
        """A ticket that answers from `found`, or None while it has nothing to answer."""
        if found.status_code is not None and not found.stream:
            answer = StoredAnswer(found.status_code, found.content_type, found.body or b"")
            return Ticket(found.scope, found.key, found.token, answer=answer)
        if found.record_id is not None:
            return Ticket(
                found.scope,
                found.key,
                found.token,
                replay_of=found.record_id,
                record_id=found.record_id,
            )
        return None

    async def answered(
        self, ticket: Ticket, status_code: int, content_type: str | None, body: bytes | None
    ) -> None:
        """The held request answered: `body` to replay, or None for a stream (replayed from
        its run's record; a stream that started no run is released, nothing to replay)."""
        if not ticket.held:
            return
        if body is None and ticket.record_id is None:
            await self._store.release(ticket.scope, ticket.key, ticket.token)
            return
        await self._store.answered(
            ticket.scope,
            ticket.key,
            ticket.token,
            status_code=status_code,
            content_type=content_type,
            body=body,
            stream=body is None,
        )

    async def abandoned(self, ticket: Ticket) -> None:
        """The held request raised: the key is released, unless its run had started (then
        retries follow the run)."""
        if not ticket.held:
            return
        if ticket.record_id is None:
            await self._store.release(ticket.scope, ticket.key, ticket.token)
        else:
            await self.answered(ticket, 200, None, None)

    async def purge(self) -> int:
        """Delete the expired keys (at a server's start, then hourly; a key is also replaced
        when it is used again)."""
        self._purged_at = time.monotonic()
        return await self._store.purge(utcnow() - self.ttl)
