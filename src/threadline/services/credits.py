"""Credit limits that hold under concurrency: reserve before a run, settle after.

The rule (README, "Accounts, credits and limits"):

- Before its model runs, a request reserves **the most it can cost**: a reply, its input tokens
  (the prompt as sent to the model, estimated at 4 characters a token plus 4 per message)
  and its `max_tokens` (the request's, else the model's `max_output_tokens`) at the model's
  prices; an image request, `per_image` x the images asked for.
- The reservation is one conditional update: it succeeds only while
  `usedCredit + reserved + this request's most <= creditLimit` (at least 1 credit must be left,
  even for a free model). Otherwise the request is refused with 403 before anything runs,
  saying how many credits are left.
- When the run ends, in the transaction that stores its outcome, its reservation is released
  and its real cost charged, never more than it reserved (a provider counting more input
  tokens than the estimate does not push `usedCredit` past the limit). A failed, cancelled or
  unstorable run releases its reservation and is charged what it cost (nothing when it failed
  before any output).
- A reservation left by a process that died is released when a server starts
  (`release_stale`, with the same rule by which unfinished records are failed then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime
from functools import partial
from uuid import UUID

import structlog

from threadline.domain.entities import AiRecord, Principal
from threadline.domain.errors import QuotaExceeded
from threadline.domain.events import Usage
from threadline.domain.ports import AccountStore, CreditStore, ModelRequest
from threadline.services.catalog import CatalogModel
from threadline.services.chat_prompt import estimate_usage

log = structlog.get_logger(__name__)


def most_for_reply(entry: CatalogModel, request: ModelRequest) -> int:
    """The most a reply to `request` can cost: its estimated input and all of `max_tokens`."""
    estimated = estimate_usage(request, "")
    most_out = request.max_tokens or entry.config.max_output_tokens
    return entry.price(Usage(input_tokens=estimated.input_tokens, output_tokens=most_out))


class CreditService:
    def __init__(self, store: CreditStore, accounts: AccountStore) -> None:
        self._store = store
        self._accounts = accounts
        self._releasing: set[asyncio.Future[None]] = set()

    @staticmethod
    def check(principal: Principal) -> None:
        """A cheap early refusal from the caller's cached figures: nothing left at all."""
        user = principal.user
        if user.used_credit >= user.credit_limit:
            raise QuotaExceeded(
                limit=user.credit_limit, used=user.used_credit, reserved=0, cost=0, what=""
            )

    async def reserve(self, principal: Principal, run_id: UUID, credits: int, what: str) -> None:
        """Hold `credits` for run `run_id`, or raise QuotaExceeded (403) saying what is left.

        A caller cancelled meanwhile (a client gone) does not leave the credits held: the
        reservation, once taken, is given back."""
        user = principal.user
        taking = asyncio.ensure_future(
            self._store.reserve(principal.org_id, user.id, run_id, credits)
        )
        try:
            taken = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(partial(self._give_back, principal, run_id))
            raise
        if taken:
            return
        fresh = await self._accounts.get_user(principal.org_id, user.id) or user
        raise QuotaExceeded(
            limit=fresh.credit_limit,
            used=fresh.used_credit,
            reserved=fresh.reserved_credit,
            cost=credits,
            what=what,
        )

    def _give_back(self, principal: Principal, run_id: UUID, taking: asyncio.Future[bool]) -> None:
        if taking.cancelled() or taking.exception() is not None or not taking.result():
            return
        task = asyncio.ensure_future(self._release(principal.org_id, principal.user.id, run_id))
        self._releasing.add(task)  # a task needs a strong reference until it is done
        task.add_done_callback(self._releasing.discard)

    async def release(self, record: AiRecord) -> None:
        """Give back what the run of `record` holds, charging nothing. Best effort: a
        failure is logged (the reservation is then released when a server next starts)."""
        if record.reserved_credits:
            await self._release(record.org_id, record.user_id, record.id)

    async def _release(self, org_id: UUID, user_id: UUID, run_id: UUID) -> None:
        try:
            await self._store.release(org_id, user_id, run_id)
        except Exception:
            log.exception("could not release a run's credit reservation", run=str(run_id))

    async def release_stale(self, before: datetime, keep: Collection[UUID] = ()) -> int:
        return await self._store.release_stale(before, keep)
