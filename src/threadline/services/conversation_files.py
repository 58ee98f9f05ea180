"""Conversations together with their documents: the use cases that touch both.

Why it exists: 1min.ai's conversations carry their files (`fileList`, `conversationFile`) and
AI Hub Converse's conversations are folders of documents. Creating, reading or deleting one
of them takes the conversation service and the document service together; that orchestration
lives here, so a dialect makes one call and encodes its answer. A conversation deleted with
its documents goes in one transaction (services/documents.py `delete_conversation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from threadline.domain.documents import ConversationDocument, Document
from threadline.domain.entities import Conversation, Page, Principal
from threadline.domain.errors import InvalidRequest, NotFound, Unprocessable
from threadline.services.catalog import ModelCatalog
from threadline.services.chat import ChatCommand, ChatService, Grounding
from threadline.services.conversations import ConversationService
from threadline.services.documents import DocumentService, Upload, UploadOutcome
from threadline.services.runs import Run


@dataclass(frozen=True, slots=True)
class FiledConversation:
    """A conversation and the documents attached to it, oldest link first."""

    conversation: Conversation
    files: Sequence[ConversationDocument]

    @property
    def documents(self) -> list[Document]:
        return [link.document for link in self.files]


@dataclass(frozen=True, slots=True)
class DocumentQuestion:
    """A question about one document of a conversation, answered from its excerpts."""

    document_id: int
    question: str
    advanced: bool
    record_type: str
    prompt_object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """A page of conversations, each with its documents."""

    items: list[FiledConversation]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    """A conversation, its documents, and a page of its messages (oldest first)."""

    filed: FiledConversation
    messages: Page


class ConversationFiles:
    def __init__(
        self,
        conversations: ConversationService,
        documents: DocumentService,
        catalog: ModelCatalog,
        chat: ChatService,
    ) -> None:
        self._conversations = conversations
        self._documents = documents
        self._catalog = catalog
        self._chat = chat

    # ---- with files already uploaded (1min.ai) --------------------------------------

    async def create(
        self,
        caller: Principal,
        *,
        title: str,
        type: str,
        model: str,
        file_ids: Sequence[str] = (),
    ) -> FiledConversation:
        """A conversation with the uploaded files (asset ids or keys) attached; every check
        (the model, the file count, each file) comes before anything is written."""
        self._catalog.get(model)
        limit = self._documents.limits.max_documents_per_conversation
        if file_ids and len(set(file_ids)) > limit:
            raise Unprocessable(f"fileList has {len(set(file_ids))} files; the limit is {limit}")
        files = await self._documents.documents_for_files(caller, file_ids)
        conversation = await self._conversations.create(caller, title=title, type=type, model=model)
        if files:
            await self._documents.attach(caller, conversation.id, files)
        return await self.get(caller, conversation.id, conversation)

    async def get(
        self, caller: Principal, conversation_id: UUID, known: Conversation | None = None
    ) -> FiledConversation:
        """The conversation (`known`: as just read) and its documents."""
        conversation = known or await self._conversations.get(caller, conversation_id)
        links = await self._documents.conversation_documents(caller, conversation_id)
        return FiledConversation(conversation, links)

    async def page(
        self, caller: Principal, *, limit: int, offset: int, search: str | None = None
    ) -> ConversationPage:
        """A page of the caller's conversations (an admin's: the org's), newest first, each
        with its files (read in one query whatever the page's length); `search`: only those
        whose title contains it (any case)."""
        page = await self._conversations.list(caller, limit=limit, offset=offset, search=search)
        ids = [c.id for c in page.items]
        files = await self._documents.documents_of_conversations(caller, ids)
        items = [FiledConversation(c, files.get(c.id, [])) for c in page.items]
        return ConversationPage(items, page.total, page.limit, page.offset)

    async def detail(
        self, caller: Principal, conversation_id: UUID, *, limit: int, offset: int
    ) -> ConversationDetail:
        conversation = await self._conversations.get(caller, conversation_id)
        page = await self._conversations.messages(
            caller, conversation_id, limit=limit, offset=offset
        )
        return ConversationDetail(await self.get(caller, conversation_id, conversation), page)

    # ---- folders of documents (AI Hub Converse) -------------------------------------

    async def create_with_uploads(
        self,
        caller: Principal,
        *,
        title: str,
        type: str,
        description: str,
        uploads: Sequence[Upload],
    ) -> tuple[Conversation, list[UploadOutcome]]:
        """A conversation with no model of its own, and its first files stored: each file
        that fails is reported with its reason (the conversation is created anyway)."""
        conversation = await self._conversations.create(
            caller, title=title, type=type, model=None, description=description
        )
        outcomes = await self._documents.add(caller, uploads, conversation_id=conversation.id)
        return conversation, outcomes

    async def add_uploads(
        self,
        caller: Principal,
        conversation_id: UUID,
        uploads: Sequence[Upload],
        *,
        process: bool = True,
    ) -> list[UploadOutcome]:
        """Store files into the conversation (each one's outcome); `process` False, storing
        them unprocessed, is a setting this server cannot honour (422)."""
        await self._conversations.get(caller, conversation_id)
        if not process:
            raise Unprocessable(
                "process_files=false is not supported: this server processes every document "
                "it stores (and has no endpoint to process one later); leave it out or send true"
            )
        return await self._documents.add(caller, uploads, conversation_id=conversation_id)

    async def document(
        self, caller: Principal, conversation_id: UUID, document_id: int
    ) -> Document:
        """One document of the conversation; one of another conversation is not found."""
        for link in await self._documents.conversation_documents(caller, conversation_id):
            if link.document.id == document_id:
                return link.document
        raise NotFound(f"document {document_id} not found in conversation {conversation_id}")

    async def ask(self, caller: Principal, conversation_id: UUID, ask: DocumentQuestion) -> Run:
        """Start the reply to a question about one of the conversation's documents, with
        the conversation's model (the server's default when it has none)."""
        conversation = await self._conversations.get(caller, conversation_id)
        document = await self.document(caller, conversation_id, ask.document_id)
        command = ChatCommand(
            principal=caller,
            model=conversation.model or self._catalog.default,
            record_type=ask.record_type,
            prompt=ask.question,
            conversation_id=conversation_id,
            grounding=Grounding(document_ids=(document.id,), advanced=ask.advanced),
            prompt_object=ask.prompt_object,
        )
        return await self._chat.reply(command)

    async def edit(
        self,
        caller: Principal,
        conversation_id: UUID,
        *,
        title: str | None = None,
        description: str | None = None,
        max_title: int = 255,
    ) -> Conversation:
        """Rename and/or describe a conversation the caller can see (unknown: 404 first)."""
        await self._conversations.get(caller, conversation_id)
        changes: dict[str, str] = {}
        if title is not None:
            if not title.strip() or len(title) > max_title:
                raise InvalidRequest(f"name must be 1 to {max_title} characters")
            changes["title"] = title
        if description is not None:
            changes["description"] = description
        if not changes:
            raise InvalidRequest("nothing to update: pass name and/or description in the query")
        return await self._conversations.update(caller, conversation_id, **changes)

    async def delete_documents(
        self,
        caller: Principal,
        conversation_id: UUID,
        document_ids: Callable[[], Sequence[int]],
    ) -> None:
        """Delete some of the conversation's documents outright; an id not in it is 404 and
        nothing is deleted. `document_ids` (the dialect's parser of them) is read once the
        conversation is known to be the caller's: an unknown one is 404 whatever the ids."""
        await self._conversations.get(caller, conversation_id)
        await self._documents.delete_documents(caller, conversation_id, document_ids())

    async def delete(self, caller: Principal, conversation_id: UUID) -> None:
        """The conversation, its messages and its documents (files, text, index), the rows
        in one transaction."""
        await self._conversations.get(caller, conversation_id)
        await self._documents.delete_conversation(caller, conversation_id)
