"""What a reply reads before the model runs: brand voice, images, linked pages, web search,
memories and documents, each read by its own service (any of them may be turned off).

Why it exists: `ChatService` takes one collaborator for all of them (`ReplyGrounder`) instead of
six optional constructor arguments. The grounder refuses by name a setting the server cannot
honour, reads what the command asks for (the links and the search side by side), builds the
grounded system prompt with its citations, and says what the record keeps of it
(domain/sources.py): facts, in no dialect's shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from threadline.domain.brand_voices import BrandVoice
from threadline.domain.documents import Document
from threadline.domain.errors import Unprocessable
from threadline.domain.events import Citation
from threadline.domain.memories import Memory
from threadline.domain.sources import ReplySources
from threadline.services.brand_voices import BrandVoiceService, guidance
from threadline.services.catalog import CatalogModel
from threadline.services.chat_command import ChatCommand
from threadline.services.chat_prompt import (
    CHARS_PER_TOKEN,
    MAX_CONTEXT_CHARS,
    estimate_tokens,
    join,
)
from threadline.services.grounding import DocumentGrounder, DocumentRequest
from threadline.services.images import ImageReader, ImageReading
from threadline.services.links import LinkReader, LinkReading, links_in, videos_in
from threadline.services.memories import MemoryService, recalled
from threadline.services.web_search import SearchReading, WebSearchReader

SEARCH_NOT_CONFIGURED = (
    "Web search (webSearch) is not configured on this server. An admin turns it on in the "
    "config file (threadline.toml), e.g.\n"
    "[search]\n"
    'provider = "searxng"   # or "brave", "tavily", "ddgs"\n'
    'base_url = "http://127.0.0.1:8888"   # searxng: your instance\n'
    'api_key_env = "BRAVE_API_KEY"   # brave / tavily: the variable holding the key\n'
    "timeout_seconds = 10"
)

FollowUp = Callable[[UUID], Awaitable[None]]
"""Work to do once a reply is stored, given its record's id (queue remembering what the user
said): it runs after the reply is finished and stored, and its failure is not the reply's."""


@dataclass(frozen=True, slots=True)
class Readings:
    """What was read for one reply before its model request is built."""

    voice: BrandVoice | None = None
    images: ImageReading | None = None
    links: LinkReading | None = None
    search: SearchReading | None = None
    memories: Sequence[Memory] = ()

    def sources(self, with_memories: bool) -> ReplySources:
        """What the record keeps of them (memories only when the request asked for them)."""
        return ReplySources(
            links=self.links.sources() if self.links is not None else None,
            search=self.search.sources() if self.search is not None else None,
            images=self.images.sources() if self.images is not None else None,
            memories=recalled(self.memories) if with_memories else None,
        )


@dataclass(frozen=True, slots=True)
class ReplyGrounder:
    """The readers a reply may be grounded with; None: turned off on this server."""

    documents: DocumentGrounder | None = None
    brand_voices: BrandVoiceService | None = None
    links: LinkReader | None = None
    web_search: WebSearchReader | None = None
    memories: MemoryService | None = None
    images: ImageReader | None = None

    def check_supported(self, command: ChatCommand) -> None:
        """Settings this server cannot honour (yet, or as configured) are refused by name,
        never ignored."""
        g = command.grounding
        refused = []
        if g.with_memories and self.memories is None:
            refused.append("memories (withMemories)")
        if g.images and self.images is None:
            refused.append("image attachments")
        if g.files and self.documents is None:
            refused.append("file attachments")
        if g.brand_voice_id is not None and self.brand_voices is None:
            refused.append("brand voice (brandVoiceId)")
        videos = self.links is not None and self.links.reads_videos
        if g.read_links and not videos and videos_in(command.prompt):
            refused.append("YouTube links in the prompt (YouTube transcripts are turned off)")
        if g.read_links and self.links is None and links_in(command.prompt):
            refused.append("links in the prompt")
        if refused:
            raise Unprocessable(f"Not supported by this server yet: {', '.join(refused)}")
        if g.web_search is not None and self.web_search is None:
            raise Unprocessable(SEARCH_NOT_CONFIGURED)

    async def brand_voice(self, command: ChatCommand) -> BrandVoice | None:
        raw = command.grounding.brand_voice_id
        if raw is None or self.brand_voices is None:
            return None
        return await self.brand_voices.for_chat(command.principal, raw)

    async def read(
        self, command: ChatCommand, entry: CatalogModel, voice: BrandVoice | None
    ) -> Readings:
        """The images (checked first: a bad one refuses the request), the links and the web
        search (side by side), then the memories that fit."""
        images = await self._read_images(command, entry)
        links, search = await self._read_web(command)
        memories = await self._recall(command, entry, voice)
        return Readings(voice, images, links, search, memories)

    async def _read_images(self, command: ChatCommand, entry: CatalogModel) -> ImageReading | None:
        """The request's images, read as themselves for a vision model, else as their facts
        and OCR text."""
        if self.images is None or not command.grounding.images:
            return None
        return await self.images.read(
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
        if self.links is None or not command.grounding.read_links:
            return None
        return await self.links.read(command.prompt)

    async def _search(self, command: ChatCommand) -> SearchReading | None:
        """The web search the request asked for, its result pages read (see web_search)."""
        web = command.grounding.web_search
        if web is None or self.web_search is None:
            return None
        return await self.web_search.read(command.prompt, web.num_of_site, web.max_word)

    async def _recall(
        self, command: ChatCommand, entry: CatalogModel, voice: BrandVoice | None
    ) -> list[Memory]:
        """The user's memories related to the prompt (`withMemories`), as many as fit a
        quarter of the room the context window leaves beside the reply, the system text and
        the prompt (the rest is for history, linked pages and documents)."""
        if self.memories is None or not command.grounding.with_memories:
            return []
        own = join(command.system, guidance(voice) if voice else None) or ""
        reply = command.max_tokens or entry.config.max_output_tokens
        left = entry.config.context_window - reply - estimate_tokens(own + command.prompt) - 64
        room = max(0, left) * CHARS_PER_TOKEN // 4
        return await self.memories.recall(command.principal, command.prompt, room)

    def follow_up(self, command: ChatCommand) -> FollowUp | None:
        """Once the reply is stored: queue remembering what the user said (`withMemories`)."""
        if self.memories is None or not command.grounding.with_memories:
            return None
        memories, caller, prompt = self.memories, command.principal, command.prompt
        return lambda record_id: memories.remember_later(caller, record_id, prompt)

    async def system(
        self,
        command: ChatCommand,
        budget_tokens: int,
        base: str | None,
        readings: Readings,
        conversation_documents: bool = True,
    ) -> tuple[str | None, tuple[Citation, ...]]:
        """The system prompt (`base`: the command's own system text, brand voice and
        memories), then the linked pages' text, the web search's results, the images read as
        text and the excerpts of the reply's documents when it has any, together trimmed to
        the room the context window leaves (each of them an equal share); and the sources
        given, as citations. `conversation_documents` False: the conversation is known to
        have none, so they are not looked up."""
        g = command.grounding
        documents: list[Document] = []
        conversation = command.conversation_id if conversation_documents else None
        if self.documents is not None and (conversation is not None or g.files or g.document_ids):
            request = DocumentRequest(g.files, g.document_ids, g.advanced)
            documents = await self.documents.documents_for(command.principal, conversation, request)
        links, search, images = readings.links, readings.search, readings.images
        described = images if images is not None and images.described else None
        blocks = [block for block in (links, search, described) if block is not None]
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
        if documents and self.documents is not None:
            context = await self.documents.context(
                command.principal, documents, question, room, advanced=g.advanced
            )
            parts.append(context.system)
            citations.extend(context.citations)
        return "\n\n".join(parts), tuple(citations)
