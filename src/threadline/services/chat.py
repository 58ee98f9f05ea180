"""The chat engine: one request in, one run out.

`ChatService.reply()` validates and authorises everything *before* writing anything (so a
bad request leaves the database unchanged), reads what the reply is grounded on
(services/chat_grounding.py), builds the model request, reserves the most the reply can cost
(one conditional update, services/credits.py: a request that does not fit is refused here),
then starts the run (services/chat_run.py), which persists the user's message and a PENDING
record beside the model's first tokens and stores the reply, its usage and its charge at the
end. While it streams, checkpoints save the text so far in the background
(services/checkpoints.py), so a killed process keeps it.

The record keeps what the reply read as facts (domain/sources.py) and its citations as
`Citation`s: the dialects name their fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from uuid import UUID, uuid4

from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, Message, RecordStatus, reply_message_id
from threadline.domain.errors import InvalidRequest
from threadline.domain.events import Citation
from threadline.domain.ports import ChatMessage, HistoryWindow, ModelRequest
from threadline.services.catalog import CatalogModel, ModelCatalog
from threadline.services.chat_command import ChatCommand, Grounding, HistorySettings, WebSearch
from threadline.services.chat_grounding import Readings, ReplyGrounder
from threadline.services.chat_prompt import estimate_tokens, fit, join, voiced_system
from threadline.services.chat_run import RunDriver, RunStart
from threadline.services.conversations import ConversationService
from threadline.services.fallbacks import Candidate
from threadline.services.idempotency import for_reply
from threadline.services.memories import system_block as memory_block
from threadline.services.replays import ReplayService
from threadline.services.runs import Run

__all__ = ["ChatCommand", "ChatService", "Grounding", "HistorySettings", "WebSearch"]

FIT_IN_THREAD = 500  # messages


class ChatService:
    """Built from four collaborators: the catalog (which model, at what price), the
    conversations (history), the grounder (what else the reply reads) and the run driver
    (credits, the record, the run's events)."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        conversations: ConversationService,
        grounder: ReplyGrounder,
        runs: RunDriver,
        history_limit_max: int,
        replays: ReplayService | None = None,
    ) -> None:
        self._catalog = catalog
        self._conversations = conversations
        self._grounder = grounder
        self._runs = runs
        self._history_limit_max = history_limit_max
        self._replays = replays

    async def reply(self, command: ChatCommand) -> Run:
        """Start a reply; returns at once with the run (does not wait for the model).

        A retry with an `Idempotency-Key` whose first request started a run gets that run
        back (services/idempotency.py): nothing is checked, reserved or started again."""
        ticket = for_reply()
        if ticket is not None and ticket.replay_of is not None and self._replays is not None:
            return await self._replays.follow(command.principal, ticket.replay_of)
        run = await self._start(command)
        if ticket is not None:
            await ticket.run_started(run.id)
        return run

    async def _start(self, command: ChatCommand) -> Run:
        entry = self._catalog.get(command.model)
        if entry.name != command.model:  # an alias: the model that answers is recorded
            command = replace(command, model=entry.name)
        self._grounder.check_supported(command)
        voice = await self._grounder.brand_voice(command)
        self._runs.check_credits(command.principal)
        readings = await self._grounder.read(command, entry, voice)
        request, citations, parent = await self._model_request(command, entry, readings)
        sources = readings.sources(command.grounding.with_memories)
        record, user_message, reply_id = self._new_record(command, parent)
        record = replace(record, sources=sources)
        earlier = self._earlier(command, record, parent)
        if earlier:  # the prompt follows the request's earlier input items
            user_message = replace(user_message, parent_id=earlier[-1].id) if user_message else None
        fallbacks = tuple(self._catalog.get(name) for name in entry.config.fallbacks)
        record = await self._runs.reserve(command.principal, entry, request, record, fallbacks)
        start = RunStart(
            entry=entry,
            model=partial(self._catalog.model, entry.name),
            request=request,
            record=record,
            user_message=user_message,
            reply_id=reply_id,
            earlier=earlier,
            conversation=command.new_conversation,
            citations=citations,
            follow_up=self._grounder.follow_up(command),
            fallbacks=tuple(
                Candidate(one, partial(self._catalog.model, one.name)) for one in fallbacks
            ),
            new_user_message=command.answer_again is None,
        )
        return await self._runs.start(start)

    def count_tokens(self, command: ChatCommand) -> int:
        """The input tokens of the command's system text and messages, estimated as a
        reply's reservation estimates them (about 4 characters a token, 4 a message); the
        model must be a configured chat model. Nothing is stored or charged."""
        self._catalog.get(command.model)
        texts = [command.system, command.prompt, *(m.content for m in command.messages)]
        return sum(estimate_tokens(text) + 4 for text in texts if text)

    async def _model_request(
        self,
        command: ChatCommand,
        entry: CatalogModel,
        readings: Readings,
    ) -> tuple[ModelRequest, tuple[Citation, ...], UUID | None]:
        """The model request, the grounding's citations, and the message the new user
        message follows (the end of the history window read)."""
        max_tokens = command.max_tokens or entry.config.max_output_tokens
        if max_tokens >= entry.config.context_window:
            raise InvalidRequest(
                f"max_tokens ({max_tokens}) must be below the context window of "
                f"{entry.name!r} ({entry.config.context_window} tokens)"
            )
        if command.top_k is not None and not entry.samples_top_k:
            raise InvalidRequest(
                f"top_k: model {entry.name!r} ({entry.provider}) does not sample with top_k; "
                "leave it out"
            )
        budget = entry.config.context_window - max_tokens
        voiced = voiced_system(command, entry, readings.voice, budget)
        base = join(voiced, memory_block(readings.memories))
        grounded = partial(self._grounder.system, command, budget, base, readings)
        history: Sequence[ChatMessage] = ()
        parent = None
        if command.messages or command.conversation_id is None:
            system, citations = await grounded()
        elif command.grounding.files:  # documents either way: both reads at once
            (system, citations), window = await asyncio.gather(grounded(), self._history(command))
            history, parent = window.messages, window.parent_id
        else:  # one round trip says whether the conversation has documents to read too
            window = await self._history(command)
            history, parent = window.messages, window.parent_id
            system, citations = await grounded(conversation_documents=window.has_documents)
        messages: list[ChatMessage] = []
        if system:
            messages.append(ChatMessage("system", system))
        parts = readings.images.parts if readings.images is not None else ()
        if command.messages:
            messages.extend(command.messages)
            if parts:  # the dialect takes images in the last message, the user's, only
                messages[-1] = replace(messages[-1], images=parts)
        else:
            messages.extend(history)
            messages.extend(command.inputs)
            if command.prompt or parts or not command.inputs:  # input may end with its own
                messages.append(ChatMessage("user", command.prompt, images=parts))
        if len(messages) > FIT_IN_THREAD:  # a long list (OpenAI's messages): off the loop
            fitted = await asyncio.to_thread(fit, messages, budget)
        else:
            fitted = fit(messages, budget)
        request = ModelRequest(
            messages=fitted,
            max_tokens=max_tokens,
            temperature=command.temperature,
            top_p=command.top_p,
            stop=tuple(command.stop),
            extra={"top_k": command.top_k} if command.top_k is not None else {},
        )
        return request, citations, parent

    async def _history(self, command: ChatCommand) -> HistoryWindow:
        if command.conversation_id is None or command.new_conversation is not None:
            return HistoryWindow(())
        return await self._conversations.history(
            command.principal,
            command.conversation_id,
            model=None if command.history.is_mixed else command.model,
            limit=min(command.history.limit, self._history_limit_max),
            parent=command.parent,
        )

    @staticmethod
    def _earlier(
        command: ChatCommand, record: AiRecord, parent: UUID | None
    ) -> tuple[Message, ...]:
        """The request's messages before its prompt, as stored in the conversation (they are
        given input, not part of the exchange's outcome: stored finished), one after the
        other on the branch from `parent`."""
        if command.conversation_id is None or not command.inputs:
            return ()
        ids = [uuid4() for _ in command.inputs]
        return tuple(
            Message(
                id=ids[n],
                org_id=record.org_id,
                conversation_id=command.conversation_id,
                session_id=command.session_id,
                record_id=record.id,
                role=message.role,
                content=message.content,
                model=command.model,
                status=RecordStatus.SUCCESS,
                created_at=record.created_at,
                parent_id=ids[n - 1] if n else parent,
            )
            for n, message in enumerate(command.inputs)
        )

    @staticmethod
    def _new_record(
        command: ChatCommand, parent: UUID | None
    ) -> tuple[AiRecord, Message | None, UUID | None]:
        """The PENDING record, and in a conversation the user's message (following
        `parent`; or the one answered again) and the id its reply will be stored under
        (known from the start, so a stream can name it)."""
        now = utcnow()
        record = AiRecord(
            id=uuid4(),
            org_id=command.principal.org_id,
            user_id=command.principal.user.id,
            conversation_id=command.conversation_id,
            model=command.model,
            type=command.record_type,
            status=RecordStatus.PENDING,
            prompt_object=command.prompt_object,
            result_text="",
            metadata=command.metadata,
            created_at=now,
            updated_at=now,
        )
        if command.conversation_id is None:
            return record, None, None
        if command.answer_again is not None:
            return record, command.answer_again, reply_message_id(record.id)
        user_message = Message(
            id=uuid4(),
            org_id=record.org_id,
            conversation_id=command.conversation_id,
            session_id=command.session_id,
            record_id=record.id,
            role="user",
            content=command.prompt,
            model=command.model,
            status=RecordStatus.PENDING,
            created_at=now,
            parent_id=parent,
        )
        return record, user_message, reply_message_id(record.id)
