"""Stored replies that a later request chains onto (OpenAI's Responses), on the one store.

Why it exists: a response is an ordinary chat reply (one aiRecord, answered by the chat
engine, charged and limited as every reply) that lives in a Threadline conversation, so that
the next request can continue it by naming it, by naming the conversation, or through any
other dialect. This service decides which conversation a new response goes into and which
history it reads:

- a conversation named by the request: appended there, reading its latest history;
- a previous response: in that response's conversation, the new input follows that
  response's reply (its message is `reply_message_id(response id)`): the history is the path
  to it, and an older response than the latest starts a new branch there (nothing later is
  read, nothing is deleted; the conversation's head moves to the new reply);
- neither: a new conversation of its own, so a later request can chain onto it;
- not stored (`store` false): no conversation, and nothing later can chain onto it (its
  record stays for accounting, but it is not found).

It also reads a response back (live from its run while this process holds it), deletes and
cancels one, and lists the input a response stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from uuid import UUID

from threadline.domain.entities import AiRecord, Message, Principal, RecordStatus, reply_message_id
from threadline.domain.errors import Conflict, InvalidRequest, NotFound, ThreadlineError
from threadline.domain.events import TextDelta
from threadline.domain.ports import ConversationItemStore, RecordStore, RunFeed
from threadline.services.chat import ChatService
from threadline.services.chat_command import ChatCommand, HistorySettings
from threadline.services.conversations import ConversationService
from threadline.services.documents import DocumentService
from threadline.services.runs import Run, RunRegistry

STORE_KEY = "store"  # in the record's metadata: false for a response nobody may read back
TITLE_CHARS = 80
CANCEL_WAIT_SECONDS = 10.0  # for another process to store a cancelled response


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    """A new response: the chat command (a prompt, the request's earlier input messages,
    the settings) and where it goes."""

    command: ChatCommand
    conversation_id: UUID | None = None  # named by the request
    previous_id: UUID | None = None  # the response it continues
    store: bool = True
    conversation_type: str = "RESPONSES"  # of a conversation made for it


@dataclass(frozen=True, slots=True)
class ResponseView:
    """A response as it is now: its record (the live run's text so far while it runs), the
    run when this process holds it, and the asset id of each cited document."""

    record: AiRecord
    run: Run | None
    file_ids: dict[str, str]

    @property
    def running(self) -> bool:
        return self.record.status is RecordStatus.PENDING


class ResponseService:
    def __init__(
        self,
        *,
        chat: ChatService,
        conversations: ConversationService,
        items: ConversationItemStore,
        records: RecordStore,
        runs: RunRegistry,
        documents: DocumentService,
        history_limit: int,
        feed: RunFeed | None = None,
    ) -> None:
        """`feed`: how a cancel reaches a response another process produces (ports.RunFeed;
        with Redis it does, else that process cannot be reached)."""
        self._feed = feed
        self._chat = chat
        self._conversations = conversations
        self._items = items
        self._records = records
        self._runs = runs
        self._documents = documents
        self._history_limit = history_limit

    async def create(self, request: ResponseRequest) -> Run:
        """Start the response (returns at once with its run, as `ChatService.reply`)."""
        command = replace(
            request.command,
            history=HistorySettings(is_mixed=True, limit=self._history_limit),
            metadata={**(request.command.metadata or {}), STORE_KEY: request.store},
        )
        caller = command.principal
        if not request.store:
            if request.conversation_id or request.previous_id:
                raise InvalidRequest(
                    "store: false cannot be combined with a conversation or a previous "
                    "response on this server: a response that is not stored is not added to "
                    "one either"
                )
            return await self._chat.reply(command)
        if request.conversation_id is not None:
            await self._conversations.get(caller, request.conversation_id)
            return await self._chat.reply(replace(command, conversation_id=request.conversation_id))
        if request.previous_id is not None:
            previous = await self._previous(caller, request.previous_id, command.record_type)
            chained = replace(
                command,
                conversation_id=previous.conversation_id,
                parent=reply_message_id(previous.id),
            )
            return await self._chat.reply(chained)
        return await self._in_new_conversation(command, request.conversation_type)

    async def _previous(self, caller: Principal, response_id: UUID, kind: str) -> AiRecord:
        view = await self.get(caller, response_id, kind)
        if view.running:
            raise InvalidRequest(
                f"the previous response {response_id} is still in progress: chain onto it "
                "once it has finished"
            )
        if view.record.conversation_id is None:
            raise NotFound(f"response {response_id} not found")
        return view.record

    async def _in_new_conversation(self, command: ChatCommand, kind: str) -> Run:
        """In a conversation made for it, stored by the reply's first write (nothing is
        written for a request refused, and the model starts without waiting on it)."""
        text = command.prompt.strip() or "New conversation"
        title = text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"
        conversation = self._conversations.new(
            command.principal, title=title, type=kind, model=command.model
        )
        if not command.grounding.files:
            made = replace(command, conversation_id=conversation.id, new_conversation=conversation)
            return await self._chat.reply(made)
        # files are attached to the conversation before the model runs: it must exist
        await self._conversations.store(conversation)
        try:
            return await self._chat.reply(replace(command, conversation_id=conversation.id))
        except ThreadlineError:  # refused before anything of the reply was written
            await self._conversations.delete(command.principal, conversation.id)
            raise

    async def get(self, caller: Principal, response_id: UUID, kind: str) -> ResponseView:
        """The caller's stored response of this kind, as it is now; else "not found"."""
        run = self._runs.get(caller.org_id, response_id)
        if run is not None:
            record = await run.result() if run.finished else _so_far(run)
        else:
            found = await self._records.get(caller.org_id, response_id)
            if found is None:
                raise NotFound(f"response {response_id} not found")
            record = found
        visible = caller.is_admin or record.user_id == caller.user.id
        stored = (record.metadata or {}).get(STORE_KEY, True)
        if not visible or record.type != kind or not stored:
            raise NotFound(f"response {response_id} not found")
        return ResponseView(record, run, await self.file_ids(caller, record))

    async def file_ids(self, caller: Principal, record: AiRecord) -> dict[str, str]:
        """The asset id of each document the record cites (a response names files by them)."""
        ids: dict[str, str] = {}
        for citation in record.citations:
            if citation.source_id in ids or not citation.source_id.isdigit():
                continue
            try:
                document = await self._documents.get_document(caller, int(citation.source_id))
            except NotFound:
                continue
            ids[citation.source_id] = str(document.asset_id)
        return ids

    async def delete(self, caller: Principal, response_id: UUID, kind: str) -> None:
        """Delete a finished response's record; its conversation keeps its messages."""
        view = await self.get(caller, response_id, kind)
        if view.running:
            raise InvalidRequest(
                f"response {response_id} is still in progress: cancel it before deleting it"
            )
        await self._records.delete(caller.org_id, response_id)
        if view.run is not None:
            self._runs.forget(view.run)

    async def cancel(self, caller: Principal, response_id: UUID, kind: str) -> ResponseView:
        """Stop a response in progress (it ends cancelled, keeping its text so far); a
        finished one is answered as it is."""
        view = await self.get(caller, response_id, kind)
        if not view.running:
            return view
        if view.run is None:
            return await self._cancel_elsewhere(caller, response_id, kind)
        self._runs.cancel(view.run.id)
        record = await view.run.result()
        return ResponseView(record, view.run, view.file_ids)

    async def _cancel_elsewhere(
        self, caller: Principal, response_id: UUID, kind: str
    ) -> ResponseView:
        """Cancel a response another live process produces, through the shared feed, and
        answer it once that process has stored its end (409 when it cannot be reached)."""
        if self._feed is None or not await self._feed.owned(response_id):
            raise Conflict(
                f"response {response_id} is being produced by another server process, "
                "which this one cannot reach to cancel it (that takes `redis_url`)"
            )
        self._feed.cancel(response_id)
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
        while (view := await self.get(caller, response_id, kind)).running:
            if asyncio.get_running_loop().time() > deadline:
                break  # answered as it is now (in progress); it ends cancelled soon after
            await asyncio.sleep(0.1)
        return view

    async def input_items(
        self, caller: Principal, response_id: UUID, kind: str
    ) -> tuple[AiRecord, Sequence[Message]]:
        """The messages the response's input stored in its conversation, in order."""
        view = await self.get(caller, response_id, kind)
        reply = reply_message_id(response_id)
        stored = await self._items.of_record(caller.org_id, response_id)
        return view.record, [m for m in stored if m.id != reply]


def _so_far(run: Run) -> AiRecord:
    """A live run's record with the text it has produced so far."""
    text = "".join(e.text for e in run.log() if isinstance(e, TextDelta))
    return replace(run.record, result_text=text)
