"""Document grounding of a chat reply: which documents, which excerpts, which citations.

The documents of a reply are the conversation's own (CHAT_WITH_PDF, AI Hub Converse) plus
any attached to the request (`attachments.files`), optionally narrowed to some ids
(Converse's `document_ids`). Documents still being ingested are waited for, up to a
bound; a FAILED document is an error that says why, never silently skipped.

The excerpts go to the model as a numbered system block ("[1] report.pdf, page 3: ...")
trimmed to the room the model's context window leaves; the same excerpts become the
reply's citations (document, page, quoted excerpt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from threadline.domain.documents import ChunkHit, Document, DocumentState
from threadline.domain.entities import Principal
from threadline.domain.errors import Unprocessable
from threadline.domain.events import Citation
from threadline.services.documents import DocumentService
from threadline.services.retrieval import Retriever

EXCERPT_CHARS = 400
INSTRUCTIONS = (
    "Answer the user's question using only the numbered excerpts from their documents "
    "below. Cite the excerpts you use as [1], [2], ... If the excerpts do not contain the "
    "answer, say that the documents do not say."
)


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    files: tuple[str, ...] = ()  # asset ids or keys attached to this request
    document_ids: tuple[int, ...] = ()  # narrow to these (must be the conversation's)
    advanced: bool = False


@dataclass(frozen=True, slots=True)
class DocumentContext:
    system: str
    citations: tuple[Citation, ...]
    documents: tuple[Document, ...]


class DocumentGrounder:
    def __init__(
        self,
        documents: DocumentService,
        retriever: Retriever,
        *,
        top_k: int,
        advanced_top_k: int,
        wait_seconds: float,
    ) -> None:
        self._documents = documents
        self._retriever = retriever
        self._top_k = top_k
        self._advanced_top_k = advanced_top_k
        self._wait = wait_seconds

    async def documents_for(
        self, caller: Principal, conversation_id: UUID | None, request: DocumentRequest
    ) -> list[Document]:
        docs: dict[int, Document] = {}
        if conversation_id is not None:
            for link in await self._documents.conversation_documents(caller, conversation_id):
                docs[link.document.id] = link.document
        if request.document_ids:
            unknown = [str(i) for i in request.document_ids if i not in docs]
            if unknown:
                raise Unprocessable(
                    f"document_ids {', '.join(unknown)} are not documents of this conversation"
                )
            docs = {i: docs[i] for i in request.document_ids}
        if request.files:
            for document in await self._documents.documents_for_files(caller, request.files):
                docs[document.id] = document
        return list(docs.values())

    async def context(
        self,
        caller: Principal,
        documents: Sequence[Document],
        query: str,
        room_chars: int,
        *,
        advanced: bool = False,
    ) -> DocumentContext:
        ready = await self._documents.wait_ready(caller, documents, self._wait)
        _check_usable(ready)
        limit = self._advanced_top_k if advanced else self._top_k
        hits = await self._retriever.search(
            caller.org_id, [d.id for d in ready], query, limit=limit, advanced=advanced
        )
        return _context(hits, ready, room_chars)


def _check_usable(documents: Sequence[Document]) -> None:
    failed = [d for d in documents if d.state is DocumentState.FAILED]
    if failed:
        reasons = "; ".join(f"{d.name}: {d.reason or 'could not be processed'}" for d in failed)
        raise Unprocessable(f"Some documents could not be processed ({reasons})")
    running = [d.name for d in documents if d.state is DocumentState.RUNNING]
    if running:
        raise Unprocessable(f"Still processing {', '.join(running)}; try again in a few seconds")


def _context(
    hits: Sequence[ChunkHit], documents: Sequence[Document], room_chars: int
) -> DocumentContext:
    blocks: list[str] = []
    citations: list[Citation] = []
    used = len(INSTRUCTIONS)
    for hit in hits:
        block = f"[{len(blocks) + 1}] {hit.document_name}, {_pages(hit)}:\n{hit.text}"
        if used + len(block) + 2 > room_chars and blocks:
            break
        if used + len(block) + 2 > room_chars:
            block = block[: max(0, room_chars - used - 2)]
        blocks.append(block)
        used += len(block) + 2
        citations.append(_citation(hit))
    if not blocks:
        names = ", ".join(d.name for d in documents)
        text = f"{INSTRUCTIONS}\n\n(No excerpt of {names} matches the question.)"
    else:
        text = INSTRUCTIONS + "\n\n" + "\n\n".join(blocks)
    return DocumentContext(text, tuple(citations), tuple(documents))


def _pages(hit: ChunkHit) -> str:
    if hit.page_start == hit.page_end:
        return f"page {hit.page_start + 1}"
    return f"pages {hit.page_start + 1}-{hit.page_end + 1}"


def _citation(hit: ChunkHit) -> Citation:
    excerpt = hit.text if len(hit.text) <= EXCERPT_CHARS else hit.text[:EXCERPT_CHARS] + "…"
    return Citation(
        source_id=str(hit.document_id),
        title=hit.document_name,
        excerpt=excerpt,
        page=hit.page_start + 1,
        url=None,
    )
