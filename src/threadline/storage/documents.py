"""Assets, documents and their links to conversations in SQL (implements
`domain.documents.DocumentStore`).

Deleting an asset deletes its document, the document's chunks (and their full-text
entries) and its conversation links by foreign-key cascade, in one statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping

from threadline.domain.documents import (
    Asset,
    ChunkHit,
    ConversationDocument,
    Document,
    DocumentState,
    PageLayout,
)
from threadline.domain.errors import NotFound
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.tables import (
    assets,
    conversation_documents,
    conversations,
    documents,
    messages,
)


def _asset(row: RowMapping) -> Asset:
    return Asset(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        key=row["key"],
        name=row["name"],
        mime_type=row["mime_type"],
        size=row["size"],
        sha256=row["sha256"],
        blob_path=row["blob_path"],
        created_at=as_utc(row["created_at"]),
    )


def _page(value: dict[str, Any]) -> PageLayout:
    return PageLayout(
        number=int(value["number"]),
        width=int(value["width"]),
        height=int(value["height"]),
        rotation=int(value.get("rotation", 0)),
        is_image_page=bool(value.get("is_image_page", False)),
    )


def _page_json(page: PageLayout) -> dict[str, Any]:
    return {
        "number": page.number,
        "width": page.width,
        "height": page.height,
        "rotation": page.rotation,
        "is_image_page": page.is_image_page,
    }


@functools.cache
def _linked_documents_query(*, by_user: bool, many: bool = False) -> Select[Any]:
    """The conversation (no row when it is not the org's, or with `by_user` not the user's),
    left-joined to its documents, oldest link first: one query, built once per variant (a
    chat in a conversation runs it before the model starts). `many`: the same for the
    conversations of `conversation_ids` (an expanding parameter), each row labelled with its
    conversation (`linked_to`), by conversation."""
    link = conversation_documents
    where = [conversations.c.org_id == bindparam("org_id")]
    if many:
        where.append(conversations.c.id.in_(bindparam("conversation_ids", expanding=True)))
    else:
        where.append(conversations.c.id == bindparam("conversation_id"))
    if by_user:
        where.append(conversations.c.user_id == bindparam("user_id"))
    order = (link.c.created_at, link.c.document_id)
    return (
        select(
            documents,
            *([conversations.c.id.label("linked_to")] if many else []),
            link.c.created_at.label("linked_at"),
            link.c.created_by.label("linked_by"),
        )
        .select_from(conversations)
        .outerjoin(
            link,
            (link.c.conversation_id == conversations.c.id)
            & (link.c.org_id == conversations.c.org_id),
        )
        .outerjoin(
            documents,
            (documents.c.id == link.c.document_id) & (documents.c.org_id == conversations.c.org_id),
        )
        .where(*where)
        .order_by(*((conversations.c.id, *order) if many else order))
    )


def document_from_row(row: RowMapping) -> Document:
    return Document(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        asset_id=row["asset_id"],
        name=row["name"],
        mime_type=row["mime_type"],
        state=DocumentState(row["state"]),
        reason=row["reason"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        page_count=row["page_count"],
        char_count=row["char_count"],
        token_count=row["token_count"],
        pages=tuple(_page(p) for p in row["pages"] or ()),
    )


def chunk_hit(row: Any, document_name: str, score: float) -> ChunkHit:
    """A search hit from a row of chunk columns."""
    return ChunkHit(
        chunk_id=int(row.id),
        document_id=int(row.document_id),
        document_name=document_name,
        ordinal=int(row.ordinal),
        page_start=int(row.page_start),
        page_end=int(row.page_end),
        text=row.text,
        score=score,
        context=row.context or "",
    )


def _as_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


class SqlDocumentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- assets ----

    async def add_asset(self, asset: Asset) -> Asset:
        a = asset
        async with self._db.write() as conn:
            await conn.execute(
                insert(assets).values(
                    id=a.id,
                    org_id=a.org_id,
                    user_id=a.user_id,
                    key=a.key,
                    name=a.name,
                    mime_type=a.mime_type,
                    size=a.size,
                    sha256=a.sha256,
                    blob_path=a.blob_path,
                    created_at=a.created_at,
                )
            )
        return asset

    async def get_asset(self, org_id: UUID, asset_id: UUID) -> Asset | None:
        query = select(assets).where(assets.c.org_id == org_id, assets.c.id == asset_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _asset(row) if row else None

    async def find_asset(self, org_id: UUID, id_or_key: str) -> Asset | None:
        as_id = _as_uuid(id_or_key)
        match = assets.c.key == id_or_key
        if as_id is not None:
            match = match | (assets.c.id == as_id)
        # An id match wins over a key that happens to look like another asset's id.
        query = (
            select(assets)
            .where(assets.c.org_id == org_id, match)
            .order_by((assets.c.key == id_or_key).asc())
            .limit(1)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _asset(row) if row else None

    async def delete_asset(self, org_id: UUID, asset_id: UUID) -> bool:
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(assets).where(assets.c.org_id == org_id, assets.c.id == asset_id)
            )
        return bool(result.rowcount)

    async def list_assets(
        self, org_id: UUID, user_id: UUID, *, limit: int, offset: int
    ) -> tuple[list[tuple[Asset, Document]], int]:
        mine = (assets.c.org_id == org_id, assets.c.user_id == user_id)
        joined = assets.join(documents, documents.c.asset_id == assets.c.id)
        columns = [*assets.c, *(c.label(f"d_{c.name}") for c in documents.c)]
        query = (
            select(*columns)
            .select_from(joined)
            .where(*mine)
            .order_by(assets.c.created_at.desc(), assets.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(joined).where(*mine)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = (await conn.execute(count)).scalar_one()
        found = []
        for row in rows:
            document = {c.name: row[f"d_{c.name}"] for c in documents.c}
            found.append((_asset(row), document_from_row(document)))  # type: ignore[arg-type]
        return found, int(total)

    async def delete_conversation(
        self, org_id: UUID, conversation_id: UUID, asset_ids: Sequence[UUID]
    ) -> bool:
        """Delete the assets (their documents, chunks and links by cascade), then the
        conversation and its messages, in one transaction."""
        async with self._db.write() as conn:
            if asset_ids:
                await conn.execute(
                    delete(assets).where(assets.c.org_id == org_id, assets.c.id.in_(asset_ids))
                )
            await conn.execute(
                delete(messages).where(
                    messages.c.org_id == org_id, messages.c.conversation_id == conversation_id
                )
            )
            result = await conn.execute(
                delete(conversations).where(
                    conversations.c.org_id == org_id, conversations.c.id == conversation_id
                )
            )
        return bool(result.rowcount)

    # ---- documents ----

    async def create_document(self, asset: Asset) -> Document:
        now = utcnow()
        values: dict[str, Any] = {
            "org_id": asset.org_id,
            "user_id": asset.user_id,
            "asset_id": asset.id,
            "name": asset.name,
            "mime_type": asset.mime_type,
            "state": DocumentState.RUNNING.value,
            "reason": None,
            "page_count": 0,
            "char_count": 0,
            "token_count": 0,
            "pages": [],
            "chunk_count": 0,
            "chunks_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            result = await conn.execute(insert(documents).values(**values))
            (document_id,) = result.inserted_primary_key or (None,)
        return document_from_row({**values, "id": document_id})  # type: ignore[arg-type]

    async def get_document(self, org_id: UUID, document_id: int) -> Document | None:
        return await self._one(documents.c.org_id == org_id, documents.c.id == document_id)

    async def document_for_asset(self, org_id: UUID, asset_id: UUID) -> Document | None:
        return await self._one(documents.c.org_id == org_id, documents.c.asset_id == asset_id)

    async def _one(self, *where: Any) -> Document | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(documents).where(*where))).mappings().first()
        return document_from_row(row) if row else None

    async def finish_document(
        self,
        org_id: UUID,
        document_id: int,
        *,
        state: DocumentState,
        reason: str | None,
        pages: Sequence[PageLayout] = (),
        char_count: int = 0,
        token_count: int = 0,
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(documents)
                .where(documents.c.org_id == org_id, documents.c.id == document_id)
                .values(
                    state=DocumentState(state).value,
                    reason=reason,
                    pages=[_page_json(p) for p in pages],
                    page_count=len(pages),
                    char_count=char_count,
                    token_count=token_count,
                    updated_at=utcnow(),
                )
            )

    async def running_documents(self) -> list[Document]:
        query = (
            select(documents)
            .where(documents.c.state == DocumentState.RUNNING.value)
            .order_by(documents.c.id)
        )
        async with self._db.read() as conn:
            return [document_from_row(r) for r in (await conn.execute(query)).mappings()]

    # ---- conversation links ----

    async def link(
        self, org_id: UUID, conversation_id: UUID, document_ids: Sequence[int], created_by: str
    ) -> None:
        """Attach documents (already attached ones stay as they were). Raises `NotFound`
        when the conversation or any of the documents is not the org's; nothing is linked."""
        wanted = list(dict.fromkeys(document_ids))
        async with self._db.write() as conn:
            found = await conn.execute(
                select(conversations.c.id).where(
                    conversations.c.org_id == org_id, conversations.c.id == conversation_id
                )
            )
            if found.first() is None:
                raise NotFound(f"conversation {conversation_id} not found")
            if not wanted:
                return
            ours = set(
                (
                    await conn.execute(
                        select(documents.c.id).where(
                            documents.c.org_id == org_id, documents.c.id.in_(wanted)
                        )
                    )
                ).scalars()
            )
            missing = [d for d in wanted if d not in ours]
            if missing:
                raise NotFound(f"document {missing[0]} not found")
            linked = set(
                (
                    await conn.execute(
                        select(conversation_documents.c.document_id).where(
                            conversation_documents.c.conversation_id == conversation_id,
                            conversation_documents.c.document_id.in_(wanted),
                        )
                    )
                ).scalars()
            )
            now = utcnow()
            rows = [
                {
                    "conversation_id": conversation_id,
                    "document_id": d,
                    "org_id": org_id,
                    "created_at": now,
                    "created_by": created_by,
                }
                for d in wanted
                if d not in linked
            ]
            if rows:
                await conn.execute(insert(conversation_documents), rows)

    async def unlink(self, org_id: UUID, conversation_id: UUID, document_ids: Sequence[int]) -> int:
        if not document_ids:
            return 0
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(conversation_documents).where(
                    conversation_documents.c.org_id == org_id,
                    conversation_documents.c.conversation_id == conversation_id,
                    conversation_documents.c.document_id.in_(list(document_ids)),
                )
            )
        return int(result.rowcount)

    async def conversation_documents(
        self, org_id: UUID, conversation_id: UUID, *, user_id: UUID | None = None
    ) -> list[ConversationDocument] | None:
        params = {"org_id": org_id, "conversation_id": conversation_id, "user_id": user_id}
        async with self._db.read() as conn:
            query = _linked_documents_query(by_user=user_id is not None)
            rows = (await conn.execute(query, params)).mappings().all()
        if not rows:
            return None
        return [_linked(conversation_id, r) for r in rows if r["id"] is not None]

    async def documents_of_conversations(
        self, org_id: UUID, conversation_ids: Sequence[UUID], *, user_id: UUID | None = None
    ) -> dict[UUID, list[ConversationDocument]]:
        if not conversation_ids:
            return {}
        params = {
            "org_id": org_id,
            "conversation_ids": list(dict.fromkeys(conversation_ids)),
            "user_id": user_id,
        }
        async with self._db.read() as conn:
            query = _linked_documents_query(by_user=user_id is not None, many=True)
            rows = (await conn.execute(query, params)).mappings().all()
        found: dict[UUID, list[ConversationDocument]] = {}
        for row in rows:
            linked = found.setdefault(row["linked_to"], [])
            if row["id"] is not None:
                linked.append(_linked(row["linked_to"], row))
        return found


def _linked(conversation_id: UUID, row: RowMapping) -> ConversationDocument:
    return ConversationDocument(
        conversation_id=conversation_id,
        document=document_from_row(row),
        created_at=as_utc(row["linked_at"]),
        created_by=row["linked_by"],
    )
