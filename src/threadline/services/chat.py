"""The chat engine: one request in, one run out.

`ChatService.reply()` validates and authorises everything *before* writing anything (so a
bad request leaves the database unchanged), reserves the most the reply can cost (one
conditional update, services/credits.py: a request that does not fit is refused here), then
starts the run as its own task and, beside it, persists the user's message and a PENDING
record; the model's tokens flow to the client without waiting for that write. The run then
stores the reply, its usage and its charge (settling the reservation) in one transaction,
whether or not anyone is still listening. If the PENDING write fails, the model is stopped,
the reservation released, and the run ends with STORAGE_ERROR. While it streams, checkpoints
save the text so far in the background (services/checkpoints.py), so a killed process keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import structlog

from threadline.domain.brand_voices import BrandVoice
from threadline.domain.documents import Document
from threadline.domain.entities import (
    AiRecord,
    Message,
    RecordStatus,
    reply_message_id,
)
from threadline.domain.errors import InvalidRequest, ThreadlineError, Unprocessable
from threadline.domain.events import Citation, Done, Failed, TextDelta, Usage
from threadline.domain.memories import Memory
from threadline.domain.ports import ChatMessage, HistoryWindow, ModelRequest, RecordStore
from threadline.services.accounts import AccountService
from threadline.services.brand_voices import BrandVoiceService, guidance
from threadline.services.catalog import CatalogModel, ModelCatalog
from threadline.services.chat_command import ChatCommand, Grounding, HistorySettings, WebSearch
from threadline.services.chat_prompt import (
    CHARS_PER_TOKEN,
    MAX_CONTEXT_CHARS,
    estimate_tokens,
    estimate_usage,
    fit,
    join,
    voiced_system,
)
from threadline.services.checkpoints import CheckpointPolicy, Checkpoints
from threadline.services.clock import utcnow
from threadline.services.conversations import ConversationService
from threadline.services.credits import CreditService, most_for_reply
from threadline.services.grounding import DocumentGrounder, DocumentRequest
from threadline.services.images import ImageReader, ImageReading
from threadline.services.links import LinkReader, LinkReading, links_in, videos_in
from threadline.services.memories import MemoryService
from threadline.services.memories import records as memory_records
from threadline.services.memories import system_block as memory_block
from threadline.services.runs import YIELD_EVERY, Run, RunRegistry
from threadline.services.web_search import SearchReading, WebSearchReader

__all__ = ["ChatCommand", "ChatService", "Grounding", "HistorySettings", "WebSearch"]

log = structlog.get_logger(__name__)

SEARCH_NOT_CONFIGURED = (
    "Web search (webSearch) is not configured on this server. An admin turns it on in the "
    "config file (threadline.toml), e.g.\n"
    "[search]\n"
    'provider = "searxng"   # or "brave", "tavily", "ddgs"\n'
    'base_url = "http://127.0.0.1:8888"   # searxng: your instance\n'
    'api_key_env = "BRAVE_API_KEY"   # brave / tavily: the variable holding the key\n'
    "timeout_seconds = 10"
)

FIT_IN_THREAD = 500  # messages

FollowUp = Callable[[UUID], Awaitable[None]]
"""Work to do once a reply is stored, given its record's id (queue remembering what the user
said): it runs after the reply is finished and stored, and its failure is not the reply's."""


class ChatService:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        records: RecordStore,
        conversations: ConversationService,
        accounts: AccountService,
        credits: CreditService,
        runs: RunRegistry,
        history_limit_max: int,
        observer: Callable[[AiRecord], None] | None = None,
        documents: DocumentGrounder | None = None,
        brand_voices: BrandVoiceService | None = None,
        links: LinkReader | None = None,
        web_search: WebSearchReader | None = None,
        memories: MemoryService | None = None,
        images: ImageReader | None = None,
        checkpoints: CheckpointPolicy = CheckpointPolicy(),
    ) -> None:
        self._catalog = catalog
        self._records = records
        self._conversations = conversations
        self._accounts = accounts
        self._credits = credits
        self._runs = runs
        self._history_limit_max = history_limit_max
        self._observer = observer
        self._documents = documents
        self._brand_voices = brand_voices
        self._links = links
        self._web_search = web_search
        self._memories = memories
        self._images = images
        self._checkpoint_policy = checkpoints
        self._writes: set[asyncio.Task[None]] = set()

    async def reply(self, command: ChatCommand) -> Run:
        """Start a reply; returns at once with the run (does not wait for the model)."""
        entry = self._catalog.get(command.model)
        if entry.name != command.model:  # an alias: the model that answers is recorded
            command = replace(command, model=entry.name)
        _check_supported(
            command,
            documents=self._documents is not None,
            brand_voices=self._brand_voices is not None,
            links=self._links is not None,
            videos=self._links is not None and self._links.reads_videos,
            web_search=self._web_search is not None,
            memories=self._memories is not None,
            images=self._images is not None,
        )
        voice = await self._brand_voice(command)
        self._credits.check(command.principal)
        images = await self._read_images(command, entry)
        links, search = await self._read_web(command)
        memories = await self._recall(command, entry, voice)
        request, citations = await self._model_request(
            command, entry, voice, links, search, memories, images
        )
        command = _with_web_records(command, links, search, images)
        if command.grounding.with_memories:
            recorded = {**command.prompt_object, "memoryList": memory_records(memories)}
            command = replace(command, prompt_object=recorded)
        record, user_message, reply_id = self._new_record(command)
        record = await self._reserve(command, entry, request, record)
        run = Run(record, user_message.id if user_message else None, reply_id)
        # The model starts at once and its tokens flow while the PENDING record is written:
        # the first token waits on no write but the reservation. The run stores its outcome
        # only after that write, and a failed write ends the run with STORAGE_ERROR. The
        # write's task is made second so that it runs second: the upstream request goes out
        # first.
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._drive(
                run, entry, request, user_message, stored, citations, self._follow_up(command)
            ),
            name=f"run-{run.id}",
        )
        self._runs.add(run, task)
        write = asyncio.create_task(self._records.start(record, user_message))
        write.add_done_callback(partial(_settle, stored))
        self._writes.add(write)  # a task needs a strong reference until it is done
        write.add_done_callback(self._writes.discard)
        # One turn of the loop: the run sends its upstream request now, before the caller
        # sets up its response (that work would otherwise come first, on the reply's clock).
        await asyncio.sleep(0)
        return run

    async def _reserve(
        self, command: ChatCommand, entry: CatalogModel, request: ModelRequest, record: AiRecord
    ) -> AiRecord:
        """Hold the most the reply can cost (services/credits.py), or refuse it (403) before
        anything is written or any model runs. The one statement a run's start waits on."""
        most = most_for_reply(entry, request)
        await self._credits.reserve(command.principal, record.id, most, "this reply")
        return replace(record, reserved_credits=most)

    async def _brand_voice(self, command: ChatCommand) -> BrandVoice | None:
        raw = command.grounding.brand_voice_id
        if raw is None or self._brand_voices is None:
            return None
        return await self._brand_voices.for_chat(command.principal, raw)

    async def _read_images(self, command: ChatCommand, entry: CatalogModel) -> ImageReading | None:
        """The request's images, checked (a bad one refuses the request) and read: as
        themselves for a vision model, else as their facts and OCR text."""
        if self._images is None or not command.grounding.images:
            return None
        return await self._images.read(
            command.principal, command.grounding.images, vision=entry.config.vision
        )

    async def _read_web(
        self, command: ChatCommand
    ) -> tuple[LinkReading | None, SearchReading | None]:
        """The prompt's links and the web search, read side by side; a failed search (the
        request's error) stops the links' reading too."""
        if command.grounding.web_search is None:  # no search: no task to read beside it
            return await self._read_links(command), None
        links = asyncio.ensure_future(self._read_links(command))
        try:
            search = await self._search(command)
        except BaseException:
            links.cancel()
            raise
        return await links, search

    async def _read_links(self, command: ChatCommand) -> LinkReading | None:
        """The pages the prompt links to (1min.ai reads them), fetched and parsed."""
        if self._links is None or not command.grounding.read_links:
            return None
        return await self._links.read(command.prompt)

    async def _search(self, command: ChatCommand) -> SearchReading | None:
        """The web search the request asked for, its result pages read (see web_search)."""
        web = command.grounding.web_search
        if web is None or self._web_search is None:
            return None
        return await self._web_search.read(command.prompt, web.num_of_site, web.max_word)

    async def _recall(
        self, command: ChatCommand, entry: CatalogModel, voice: BrandVoice | None
    ) -> list[Memory]:
        """The user's memories related to the prompt (`withMemories`), as many as fit a
        quarter of the room the context window leaves beside the reply, the system text and
        the prompt (the rest is for history, linked pages and documents)."""
        if self._memories is None or not command.grounding.with_memories:
            return []
        own = join(command.system, guidance(voice) if voice else None) or ""
        reply = command.max_tokens or entry.config.max_output_tokens
        left = entry.config.context_window - reply - estimate_tokens(own + command.prompt) - 64
        room = max(0, left) * CHARS_PER_TOKEN // 4
        return await self._memories.recall(command.principal, command.prompt, room)

    def _follow_up(self, command: ChatCommand) -> FollowUp | None:
        """Once the reply is stored: queue remembering what the user said (`withMemories`)."""
        if self._memories is None or not command.grounding.with_memories:
            return None
        memories, caller, prompt = self._memories, command.principal, command.prompt
        return lambda record_id: memories.remember_later(caller, record_id, prompt)

    async def _model_request(
        self,
        command: ChatCommand,
        entry: CatalogModel,
        voice: BrandVoice | None = None,
        links: LinkReading | None = None,
        search: SearchReading | None = None,
        memories: Sequence[Memory] = (),
        images: ImageReading | None = None,
    ) -> tuple[ModelRequest, tuple[Citation, ...]]:
        max_tokens = command.max_tokens or entry.config.max_output_tokens
        if max_tokens >= entry.config.context_window:
            raise InvalidRequest(
                f"max_tokens ({max_tokens}) must be below the context window of "
                f"{entry.name!r} ({entry.config.context_window} tokens)"
            )
        budget = entry.config.context_window - max_tokens
        base = join(voiced_system(command, entry, voice, budget), memory_block(memories))
        described = images if images is not None and images.described else None
        grounded = partial(self._grounded_system, command, budget, base, links, search, described)
        history: Sequence[ChatMessage] = ()
        if command.messages or command.conversation_id is None:
            system, citations = await grounded()
        elif command.grounding.files:  # documents either way: both reads at once
            (system, citations), window = await asyncio.gather(grounded(), self._history(command))
            history = window.messages
        else:  # one round trip says whether the conversation has documents to read too
            window = await self._history(command)
            history = window.messages
            system, citations = await grounded(conversation_documents=window.has_documents)
        messages: list[ChatMessage] = []
        if system:
            messages.append(ChatMessage("system", system))
        parts = images.parts if images is not None else ()
        if command.messages:
            messages.extend(command.messages)
            if parts:  # the dialect takes images in the last message, the user's, only
                messages[-1] = replace(messages[-1], images=parts)
        else:
            messages.extend(history)
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
        )
        return request, citations

    async def _grounded_system(
        self,
        command: ChatCommand,
        budget_tokens: int,
        base: str | None,
        links: LinkReading | None,
        search: SearchReading | None = None,
        images: ImageReading | None = None,
        conversation_documents: bool = True,
    ) -> tuple[str | None, tuple[Citation, ...]]:
        """The system prompt (`base`: the command's own system text and brand voice), then
        the linked pages' text, the web search's results, the images read as text and the
        excerpts of the reply's documents when it has any, together trimmed to the room the
        context window leaves (each of them an equal share); and the sources given, as
        citations. `conversation_documents` False: the conversation is known to have none,
        so they are not looked up."""
        g = command.grounding
        documents: list[Document] = []
        conversation = command.conversation_id if conversation_documents else None
        if self._documents is not None and (conversation is not None or g.files or g.document_ids):
            request = DocumentRequest(g.files, g.document_ids, g.advanced)
            documents = await self._documents.documents_for(
                command.principal, conversation, request
            )
        blocks = [block for block in (links, search, images) if block is not None]
        if not documents and not blocks:
            return base, ()
        question = command.prompt or (command.messages[-1].content if command.messages else "")
        used = estimate_tokens(question) + estimate_tokens(base or "") + 64
        room = min(max(0, budget_tokens - used) * CHARS_PER_TOKEN * 9 // 10, MAX_CONTEXT_CHARS)
        parts = [base] if base else []
        share = room // (len(blocks) + (1 if documents else 0))
        for block in blocks:
            parts.append(block.system(share))
            room = max(0, room - len(parts[-1]))
        # The sources in the order the model sees them: linked pages [W1]..., web results
        # [S1]..., document excerpts [1]...
        citations = [*(links.citations() if links else ()), *(search.citations() if search else ())]
        if documents and self._documents is not None:
            context = await self._documents.context(
                command.principal, documents, question, room, advanced=g.advanced
            )
            parts.append(context.system)
            citations.extend(context.citations)
        return "\n\n".join(parts), tuple(citations)

    async def _history(self, command: ChatCommand) -> HistoryWindow:
        if command.conversation_id is None:
            return HistoryWindow(())
        return await self._conversations.history(
            command.principal,
            command.conversation_id,
            model=None if command.history.is_mixed else command.model,
            limit=min(command.history.limit, self._history_limit_max),
        )

    @staticmethod
    def _new_record(command: ChatCommand) -> tuple[AiRecord, Message | None, UUID | None]:
        """The PENDING record, and in a conversation the user's message and the id its
        reply will be stored under (known from the start, so a stream can name it)."""
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
        )
        return record, user_message, reply_message_id(record.id)

    async def _drive(
        self,
        run: Run,
        entry: CatalogModel,
        request: ModelRequest,
        user_message: Message | None,
        stored: asyncio.Future[None],
        sources: tuple[Citation, ...] = (),
        follow_up: FollowUp | None = None,
    ) -> None:
        parts: list[str] = []
        checkpoints = self._checkpoints(run, parts, stored)
        citations: list[Citation] = list(sources)
        for citation in sources:
            run.emit(citation)
        usage: Usage | None = None
        failure: Failed | None = None
        received = 0
        try:
            async for event in self._catalog.model(entry.name).stream(request):
                received += 1
                if received % YIELD_EVERY == 0:  # a provider with a long backlog: take turns
                    await asyncio.sleep(0)
                if _failed(stored):
                    break  # the reply cannot be stored: stop the model (_finish says why)
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    if checkpoints is not None:
                        checkpoints.grew(len(event.text))
                elif isinstance(event, Citation):
                    citations.append(event)
                elif isinstance(event, Usage):
                    usage = event
                    continue
                else:  # a provider's own Done/Failed: the run closes the log itself
                    continue
                run.emit(event)
        except ThreadlineError as exc:
            failure = Failed(code=exc.code, message=exc.message, status=exc.status)
        except asyncio.CancelledError:
            failure = Failed(code="CANCELLED", message="the server stopped before the reply ended")
        except Exception:
            log.exception("model stream crashed", model=entry.name, run=str(run.id))
            failure = Failed(
                code="MODEL_ERROR", message=f"model {entry.name!r} failed unexpectedly"
            )
        text = "".join(parts)
        usage = usage or estimate_usage(request, text)
        run.emit(usage)
        if checkpoints is not None:
            await checkpoints.close()
        await self._finish(run, entry, usage, text, citations, failure, user_message, stored)
        if follow_up is not None and isinstance(run.outcome, Done):
            await _follow(follow_up, run.id)

    async def _finish(
        self,
        run: Run,
        entry: CatalogModel,
        usage: Usage,
        text: str,
        citations: list[Citation],
        failure: Failed | None,
        user_message: Message | None,
        stored: asyncio.Future[None],
    ) -> None:
        # The real cost, never more than the run reserved (services/credits.py).
        charge = min(entry.price(usage), run.record.reserved_credits)
        user = None
        try:
            await asyncio.shield(stored)  # the PENDING record
        except Exception:
            log.exception("could not store the reply", run=str(run.id))
            failure, charge = _STORAGE_FAILED, 0
            await asyncio.shield(self._credits.release(run.record))
        record = self._outcome(run, usage, text, citations, failure, charge)
        if failure is not _STORAGE_FAILED:
            assistant = _assistant_message(record, user_message, run.reply_message_id, text)
            try:
                user = await asyncio.shield(
                    self._records.finish(
                        record, assistant, user_message.id if user_message else None, charge
                    )
                )
                if user is not None:
                    self._accounts.charged(user)
            except Exception:
                log.exception("could not store the reply", run=str(run.id))
                failure = failure or _STORAGE_FAILED
                await asyncio.shield(self._credits.release(run.record))
        last: Done | Failed = (
            Done(usage.finish_reason, record=record)
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

    @staticmethod
    def _outcome(
        run: Run,
        usage: Usage,
        text: str,
        citations: list[Citation],
        failure: Failed | None,
        charge: int,
    ) -> AiRecord:
        return replace(
            run.record,
            status=RecordStatus.FAILED if failure else RecordStatus.SUCCESS,
            result_text=text,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            credits=charge,
            error=failure.message if failure else None,
            citations=[_citation_dict(c) for c in citations],
            finish_reason=None if failure else usage.finish_reason,
            updated_at=utcnow(),
        )


_STORAGE_FAILED = Failed(code="STORAGE_ERROR", message="the reply could not be stored", status=500)


def _failed(future: asyncio.Future[None]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


async def _follow(follow_up: FollowUp, record_id: UUID) -> None:
    """Run a stored reply's follow-up; its failure is logged, never the reply's."""
    try:
        await follow_up(record_id)
    except Exception:
        log.exception("the follow-up of a stored reply failed", run=str(record_id))


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


def _check_supported(
    command: ChatCommand,
    *,
    documents: bool,
    brand_voices: bool,
    links: bool = True,
    videos: bool = True,
    web_search: bool = True,
    memories: bool = True,
    images: bool = True,
) -> None:
    """Settings this server cannot honour (yet, or as configured) are refused by name, never
    ignored."""
    g = command.grounding
    refused = []
    if g.with_memories and not memories:
        refused.append("memories (withMemories)")
    if g.images and not images:
        refused.append("image attachments")
    if g.files and not documents:
        refused.append("file attachments")
    if g.brand_voice_id is not None and not brand_voices:
        refused.append("brand voice (brandVoiceId)")
    if g.read_links and not videos and videos_in(command.prompt):
        refused.append("YouTube links in the prompt (YouTube transcripts are turned off)")
    if g.read_links and not links and links_in(command.prompt):
        refused.append("links in the prompt")
    if refused:
        raise Unprocessable(f"Not supported by this server yet: {', '.join(refused)}")
    if g.web_search is not None and not web_search:
        raise Unprocessable(SEARCH_NOT_CONFIGURED)


def _with_web_records(
    command: ChatCommand,
    links: LinkReading | None,
    search: SearchReading | None,
    images: ImageReading | None = None,
) -> ChatCommand:
    """The command whose recorded promptObject lists the links and search results read
    (1min.ai's `linkContentList` and `searchContentList`) and the images (`imageContentList`,
    how each was given to the model)."""
    recorded = dict(command.prompt_object)
    if links is not None:
        recorded["linkContentList"] = links.records()
    if search is not None:
        recorded["searchContentList"] = search.records()
    if images is not None:
        recorded["imageContentList"] = images.records()
    return replace(command, prompt_object=recorded)


def _assistant_message(
    record: AiRecord, user_message: Message | None, reply_id: UUID | None, text: str
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
        content=text,
        model=record.model,
        status=record.status,
        created_at=record.updated_at,
    )


def _citation_dict(citation: Citation) -> dict[str, Any]:
    return {
        "sourceId": citation.source_id,
        "title": citation.title,
        "excerpt": citation.excerpt,
        "page": citation.page,
        "url": citation.url,
    }
