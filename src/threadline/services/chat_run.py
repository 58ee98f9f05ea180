"""A reply's run from its first token to its stored record: the part of the chat engine that
runs after `ChatService.reply()` has returned.

Why it exists: `ChatService` decides what to ask the model; `RunDriver` owns what happens
while and after it answers, with the collaborators only that needs (the record store, the
credits, the accounts, the run registry, checkpoints, the metrics observer). It reserves the
most a reply can cost before the run starts, writes the PENDING record beside the model's
first tokens, streams the events into the run's log, and stores the reply, its usage and its
charge (settling the reservation) in one transaction at the end, whether or not anyone is
still listening. A failed PENDING write stops the model, releases the reservation and ends
the run with STORAGE_ERROR.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from uuid import UUID

import structlog

from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, Conversation, Message, Principal, RecordStatus
from threadline.domain.errors import ThreadlineError
from threadline.domain.events import Citation, Done, Failed, TextDelta, Usage
from threadline.domain.ports import ChatModel, ModelRequest, RecordStore, RunFeed, RunTerms
from threadline.services.accounts import AccountService
from threadline.services.catalog import CatalogModel
from threadline.services.chat_grounding import FollowUp
from threadline.services.chat_prompt import estimate_usage
from threadline.services.checkpoints import CheckpointPolicy, Checkpoints
from threadline.services.credits import CreditService, most_for_reply
from threadline.services.fallbacks import Candidate, FallbackChain
from threadline.services.runs import CANCELLED_MESSAGE, YIELD_EVERY, Run, RunRegistry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RunStart:
    """What a run is started with: the model to stream, the request, the PENDING record and
    the user's message (in a conversation), the citations known before the model answers
    (the grounding's), and what to do once the reply is stored."""

    entry: CatalogModel
    model: Callable[[], ChatModel]  # looked up inside the run: a failure there is the run's
    request: ModelRequest
    record: AiRecord
    user_message: Message | None
    reply_id: UUID | None
    earlier: tuple[Message, ...] = ()  # the request's messages before the prompt
    conversation: Conversation | None = None  # made for this reply, stored with its record
    citations: tuple[Citation, ...] = ()
    follow_up: FollowUp | None = None
    new_user_message: bool = True  # False: a stored user message answered again
    fallbacks: tuple[Candidate, ...] = ()  # the entry's `fallbacks`, tried in order

    def chain(self, on_answer: Callable[[CatalogModel], None]) -> FallbackChain:
        candidates = (Candidate(self.entry, self.model), *self.fallbacks)
        continues = self.entry.config.continue_on_failure
        return FallbackChain(candidates, self.request, continues, on_answer)


class RunDriver:
    def __init__(
        self,
        *,
        records: RecordStore,
        accounts: AccountService,
        credits: CreditService,
        runs: RunRegistry,
        checkpoints: CheckpointPolicy = CheckpointPolicy(),
        observer: Callable[[AiRecord], None] | None = None,
        feed: RunFeed | None = None,
    ) -> None:
        self._records = records
        self._feed = feed
        self._accounts = accounts
        self._credits = credits
        self._runs = runs
        self._checkpoint_policy = checkpoints
        self._observer = observer
        self._writes: set[asyncio.Task[None]] = set()

    def check_credits(self, caller: Principal) -> None:
        """Refuse (403) a caller already out of credits, before anything is read or written."""
        self._credits.check(caller)

    async def reserve(
        self,
        caller: Principal,
        entry: CatalogModel,
        request: ModelRequest,
        record: AiRecord,
        fallbacks: tuple[CatalogModel, ...] = (),
    ) -> AiRecord:
        """Hold the most the reply can cost (services/credits.py), or refuse it (403) before
        anything is written or any model runs. The one statement a run's start waits on.
        With fallbacks, the most of the dearest of them."""
        most = max(most_for_reply(one, request) for one in (entry, *fallbacks))
        await self._credits.reserve(caller, record.id, most, "this reply")
        return replace(record, reserved_credits=most)

    async def start(self, start: RunStart) -> Run:
        """Start the run; returns at once (the model's tokens flow as it goes on)."""
        user_message = start.user_message
        run = Run(start.record, user_message.id if user_message else None, start.reply_id)
        if self._feed is not None and self._feed.shared:
            run.tap = self._feed.tap(run.id, _terms(start))
        # The model starts at once and the PENDING record is written meanwhile: the upstream
        # request waits on no write but the reservation, and the first frame only on that
        # write when the model is quicker (`_show`). The run stores its outcome
        # only after that write, and a failed write ends the run with STORAGE_ERROR. The
        # write's task is made second so that it runs second: the upstream request goes out
        # first.
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._drive(run, start, stored), name=f"run-{run.id}")
        self._runs.add(run, task)
        write = asyncio.create_task(
            self._records.start(start.record, user_message, **_start_options(start))
        )
        write.add_done_callback(partial(_settle, stored))
        self._writes.add(write)  # a task needs a strong reference until it is done
        write.add_done_callback(self._writes.discard)
        # One turn of the loop: the run sends its upstream request now, before the caller
        # sets up its response (that work would otherwise come first, on the reply's clock).
        await asyncio.sleep(0)
        return run

    async def _drive(self, run: Run, start: RunStart, stored: asyncio.Future[None]) -> None:
        parts: list[str] = []
        citations: list[Citation] = list(start.citations)
        checkpoints = self._checkpoints(run, parts, stored)
        chain = start.chain(partial(_answered_by, run))
        read = await _read(run, start, chain, stored, parts, citations, checkpoints)
        if not read.shown:
            for citation in start.citations:
                run.emit(citation)
        text = "".join(parts)
        usage = chain.usage() or read.usage or estimate_usage(start.request, text)
        run.emit(usage)
        if checkpoints is not None:
            await checkpoints.close()
        ended = _Ended(usage, text, tuple(citations), read.failure)
        if chain.usage() is not None:
            ended = replace(ended, charge=chain.charge)
        elif read.failure is not None and not text:  # no model wrote a word: nothing to pay
            ended = replace(ended, charge=0)
        if chain.routed:
            run.record = replace(run.record, route=chain.route())
        await self._finish(run, start, ended, stored)
        if start.follow_up is not None and isinstance(run.outcome, Done):
            await _follow(start.follow_up, run.id)

    async def _finish(
        self, run: Run, start: RunStart, ended: _Ended, stored: asyncio.Future[None]
    ) -> None:
        # The real cost, never more than the run reserved (services/credits.py).
        price = start.entry.price(ended.usage) if ended.charge is None else ended.charge
        charge = min(price, run.record.reserved_credits)
        failure, user = ended.failure, None
        try:
            await asyncio.shield(stored)  # the PENDING record
        except Exception:
            log.exception("could not store the reply", run=str(run.id))
            failure, charge = _STORAGE_FAILED, 0
            await asyncio.shield(self._credits.release(run.record))
        record = _outcome(run, replace(ended, failure=failure), charge)
        if failure is not _STORAGE_FAILED:
            user_message = start.user_message
            assistant = _assistant_message(record, user_message, run.reply_message_id)
            try:
                user = await asyncio.shield(
                    self._records.finish(
                        record,
                        assistant,
                        _prompt_status_changes(start, record),
                        charge,
                    )
                )
                if user is not None:
                    self._accounts.charged(user)
            except Exception:
                log.exception("could not store the reply", run=str(run.id))
                failure = failure or _STORAGE_FAILED
                await asyncio.shield(self._credits.release(run.record))
        last: Done | Failed = (
            Done(
                ended.usage.finish_reason,
                record=record,
                stop_sequence=ended.usage.stop_sequence,
            )
            if failure is None
            else replace(failure, record=record)
        )
        run.finish(record, last, user)
        if self._observer is not None:
            self._observer(record)

    def _checkpoints(
        self, run: Run, parts: list[str], stored: asyncio.Future[None]
    ) -> Checkpoints | None:
        """The checkpoints of the run's text into its record (None when turned off)."""
        if not self._checkpoint_policy.enabled:
            return None
        save = partial(self._records.checkpoint, run.record)

        def ready() -> bool:
            return stored.done() and not _failed(stored)

        return Checkpoints(parts, save, self._checkpoint_policy, ready)


@dataclass(frozen=True, slots=True)
class _Ended:
    """How the model's stream ended."""

    usage: Usage
    text: str
    citations: tuple[Citation, ...]
    failure: Failed | None
    charge: int | None = None  # priced per model when fallbacks answered (else the entry's)


def _start_options(start: RunStart) -> dict[str, Any]:
    """What `RecordStore.start` is told beyond the record and its message, only when set (a
    Responses request's input items and new conversation, a reply regenerated)."""
    options: dict[str, Any] = {}
    if start.earlier:
        options["earlier"] = start.earlier
    if start.conversation is not None:
        options["conversation"] = start.conversation
    if not start.new_user_message:
        options["new_message"] = False
    return options


def _terms(start: RunStart) -> RunTerms:
    """What another process needs to charge the run's text if this process dies."""
    prices = start.entry.config.credits
    return RunTerms(
        input_tokens=estimate_usage(start.request, "").input_tokens,
        input_per_1k=prices.input_per_1k,
        output_per_1k=prices.output_per_1k,
        reserved_credits=start.record.reserved_credits,
    )


_STOPPED = Failed(code="CANCELLED", message="the server stopped before the reply ended")
_CANCELLED = Failed(code="CANCELLED", message=CANCELLED_MESSAGE, status=499)
_STORAGE_FAILED = Failed(code="STORAGE_ERROR", message="the reply could not be stored", status=500)


def _outcome(run: Run, ended: _Ended, charge: int) -> AiRecord:
    failure, usage = ended.failure, ended.usage
    return replace(
        run.record,
        status=RecordStatus.FAILED if failure else RecordStatus.SUCCESS,
        result_text=ended.text,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        credits=charge,
        error=failure.message if failure else None,
        citations=ended.citations,
        finish_reason=None if failure else usage.finish_reason,
        updated_at=utcnow(),
    )


def _answered_by(run: Run, entry: CatalogModel) -> None:
    """A fallback answers: the record (and every dialect reading it) names that model."""
    if run.record.model != entry.name:
        run.record = replace(run.record, model=entry.name)


def _failed(future: asyncio.Future[None]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


async def _follow(follow_up: FollowUp, record_id: UUID) -> None:
    """Run a stored reply's follow-up; its failure is logged, never the reply's."""
    try:
        await follow_up(record_id)
    except Exception:
        log.exception("the follow-up of a stored reply failed", run=str(record_id))


@dataclass(slots=True)
class _Read:
    """How reading the model's stream went."""

    usage: Usage | None = None  # the provider's own count, if it sent one
    failure: Failed | None = None
    shown: bool = False  # the first event reached the run (after the PENDING write)


async def _read(
    run: Run,
    start: RunStart,
    chain: FallbackChain,
    stored: asyncio.Future[None],
    parts: list[str],
    citations: list[Citation],
    checkpoints: Checkpoints | None,
) -> _Read:
    """The model's events into the run (text into `parts`, citations into `citations`) until
    the stream ends, fails, is stopped, or the reply cannot be stored."""
    read, received = _Read(), 0
    try:
        async for event in chain.events():
            received += 1
            if received % YIELD_EVERY == 0:  # a provider with a long backlog: take turns
                await asyncio.sleep(0)
            if _failed(stored):
                break  # the reply cannot be stored: stop the model (_finish says why)
            if run.stop_requested:
                break  # a user's stop: the reply ends here, as if the model had ended it
            if isinstance(event, TextDelta):
                parts.append(event.text)
                if checkpoints is not None:
                    checkpoints.grew(len(event.text))
            elif isinstance(event, Citation):
                citations.append(event)
            elif isinstance(event, Usage):
                read.usage = event
                continue
            else:  # a provider's own Done/Failed: the run closes the log itself
                continue
            if not read.shown:
                read.shown = True
                if not await _show(run, start, stored):
                    break  # the reply cannot be stored: stop the model (_finish says why)
            run.emit(event)
    except ThreadlineError as exc:
        read.failure = Failed(
            code=exc.code,
            message=exc.message,
            status=exc.status,
            retry_after=exc.retry_after,  # e.g. UpstreamsBusy: every upstream full
        )
    except asyncio.CancelledError:
        read.failure = _CANCELLED if run.cancelled else _STOPPED
    except Exception:
        name = start.entry.name
        log.exception("model stream crashed", model=name, run=str(run.id))
        read.failure = Failed(code="MODEL_ERROR", message=f"model {name!r} failed unexpectedly")
    return read


async def _show(run: Run, start: RunStart, stored: asyncio.Future[None]) -> bool:
    """Before the run's first event reaches a reader: wait for its PENDING record's write
    (usually done by then: it was sent with the upstream request), so that every frame's id
    names a stored record and a resume on any process finds it; then the grounding's
    citations. False when the record could not be stored."""
    if not stored.done():
        await asyncio.wait((stored,))
    if _failed(stored):
        return False
    for citation in start.citations:
        run.emit(citation)
    return True


def _settle(future: asyncio.Future[None], task: asyncio.Task[None]) -> None:
    """Give `future` the outcome of `task`."""
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(None)


def _prompt_status_changes(start: RunStart, record: AiRecord) -> UUID | None:
    """The user message whose status becomes the record's: a new one always; one answered
    again only when this answer succeeded (a failed retry leaves the earlier outcome)."""
    message = start.user_message
    if message is None or not (start.new_user_message or record.status is RecordStatus.SUCCESS):
        return None
    return message.id


def _assistant_message(
    record: AiRecord, user_message: Message | None, reply_id: UUID | None
) -> Message | None:
    """The reply as a message of the conversation (None outside one), under the id the run
    allocated at its start."""
    if user_message is None or reply_id is None:
        return None
    return Message(
        id=reply_id,
        org_id=record.org_id,
        conversation_id=user_message.conversation_id,
        session_id=user_message.session_id,
        record_id=record.id,
        role="assistant",
        content=record.result_text,
        model=record.model,
        status=record.status,
        created_at=record.updated_at,
        parent_id=user_message.id,
    )
