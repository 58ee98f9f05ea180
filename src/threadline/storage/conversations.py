"""Conversations and their messages in SQL (implements `ports.ConversationStore`).

Messages form a tree (`parent_id`); a conversation's `head_id` ends its current branch. A
list and a history window read the path from the root to the head (or to a given parent):
a recursive query that walks up by `id`, one message a step."""

from __future__ import annotations

import builtins
import functools
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Integer,
    Uuid,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import RowMapping

from threadline.domain.entities import Conversation, Message, Page, RecordStatus
from threadline.domain.ports import HEAD, ChatMessage, HistoryWindow, Parent
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.prepared import PreparedQuery
from threadline.storage.tables import conversation_documents, conversations, messages

_CHANGES = {"title", "description", "is_archived", "status", "model", "metadata"}
_SORT_KEYS = {"created_at": conversations.c.created_at, "updated_at": conversations.c.updated_at}


def _conversation(row: RowMapping) -> Conversation:
    return Conversation(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        title=row["title"],
        description=row["description"],
        type=row["type"],
        model=row["model"],
        status=row["status"],
        is_archived=row["is_archived"],
        metadata=row["metadata"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        head_id=row["head_id"],
    )


def message_from_row(row: RowMapping) -> Message:
    return Message(
        id=row["id"],
        org_id=row["org_id"],
        conversation_id=row["conversation_id"],
        session_id=row["session_id"],
        record_id=row["record_id"],
        role=row["role"],
        content=row["content"],
        model=row["model"],
        status=RecordStatus(row["status"]),
        created_at=as_utc(row["created_at"]),
        parent_id=row["parent_id"],
    )


def message_values(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "org_id": message.org_id,
        "conversation_id": message.conversation_id,
        "session_id": message.session_id,
        "record_id": message.record_id,
        "role": message.role,
        "content": message.content,
        "model": message.model,
        "status": message.status.value,
        "created_at": message.created_at,
        "parent_id": message.parent_id,
    }


def conversation_values(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "org_id": c.org_id,
        "user_id": c.user_id,
        "title": c.title,
        "description": c.description,
        "type": c.type,
        "model": c.model,
        "status": c.status,
        "is_archived": c.is_archived,
        "metadata": c.metadata,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


class SqlConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, conversation: Conversation) -> Conversation:
        async with self._db.write() as conn:
            await conn.execute(insert(conversations).values(**conversation_values(conversation)))
        return conversation

    async def get(self, org_id: UUID, conversation_id: UUID) -> Conversation | None:
        query = select(conversations).where(
            conversations.c.org_id == org_id, conversations.c.id == conversation_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _conversation(row) if row else None

    async def list(
        self,
        org_id: UUID,
        *,
        user_id: UUID | None,
        limit: int,
        offset: int,
        search: str | None = None,
        sort_key: str = "created_at",
        ascending: bool = False,
    ) -> Page:
        where = [conversations.c.org_id == org_id]
        if user_id is not None:
            where.append(conversations.c.user_id == user_id)
        if search:
            pattern = f"%{search.lower()}%"
            where.append(
                func.lower(conversations.c.title).like(pattern)
                | func.lower(conversations.c.description).like(pattern)
            )
        column = _SORT_KEYS[sort_key]
        order = (
            (column.asc(), conversations.c.id.asc())
            if ascending
            else (
                column.desc(),
                conversations.c.id.desc(),
            )
        )
        query = select(conversations).where(*where).order_by(*order).limit(limit).offset(offset)
        count = select(func.count()).select_from(conversations).where(*where)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return Page([_conversation(r) for r in rows], total, limit, offset)

    async def update(self, org_id: UUID, conversation_id: UUID, **changes: Any) -> bool:
        unknown = set(changes) - _CHANGES
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        async with self._db.write() as conn:
            result = await conn.execute(
                update(conversations)
                .where(conversations.c.org_id == org_id, conversations.c.id == conversation_id)
                .values(**changes, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def delete(self, org_id: UUID, conversation_id: UUID) -> bool:
        async with self._db.write() as conn:
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

    async def messages(
        self, org_id: UUID, conversation_id: UUID, *, limit: int, offset: int
    ) -> Page:
        """The current branch (the path from the root to the head), oldest first."""
        params = {"org_id": org_id, "conversation_id": conversation_id}
        on_path = messages.c.id.in_(select(_BRANCH.c.id))
        query = select(messages).where(on_path).order_by(messages.c.seq)
        query = query.limit(limit).offset(offset)
        count = select(func.count()).select_from(_BRANCH)
        async with self._db.read() as conn:
            rows = (await conn.execute(query, params)).all()
            total = int((await conn.execute(count, params)).scalar_one())
        return Page([message_from_row(r._mapping) for r in rows], total, limit, offset)

    async def tree(self, org_id: UUID, conversation_id: UUID) -> builtins.list[Message]:
        query = (
            select(messages)
            .where(messages.c.org_id == org_id, messages.c.conversation_id == conversation_id)
            .order_by(messages.c.seq)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [message_from_row(r) for r in rows]

    async def message(
        self, org_id: UUID, conversation_id: UUID, message_id: UUID
    ) -> Message | None:
        query = select(messages).where(
            messages.c.id == message_id,
            messages.c.org_id == org_id,
            messages.c.conversation_id == conversation_id,
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return message_from_row(row) if row else None

    async def set_head(self, org_id: UUID, conversation_id: UUID, message_id: UUID) -> bool:
        owned = exists().where(
            messages.c.id == message_id,
            messages.c.org_id == org_id,
            messages.c.conversation_id == conversation_id,
        )
        async with self._db.write() as conn:
            result = await conn.execute(
                update(conversations)
                .where(
                    conversations.c.org_id == org_id,
                    conversations.c.id == conversation_id,
                    owned,
                )
                .values(head_id=message_id, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def history(
        self,
        org_id: UUID,
        conversation_id: UUID,
        *,
        model: str | None,
        limit: int,
        user_id: UUID | None = None,
        parent: Parent = HEAD,
    ) -> HistoryWindow | None:
        from_head = parent is HEAD
        query = _history_query(
            by_model=model is not None, by_user=user_id is not None, from_head=from_head
        )
        params = {
            "org_id": org_id,
            "conversation_id": conversation_id,
            "model": model,
            "user_id": user_id,
            "limit": max(limit, 1),
            "parent": None if from_head else parent,
        }
        rows = await self._db.run_read(functools.partial(query.all, values=params))
        if not rows:
            return None
        first = rows[0]
        has_documents = bool(first.has_documents)
        end = first.head_id if from_head else parent
        assert end is not HEAD
        if limit <= 0 or first.role is None:
            return HistoryWindow([], has_documents, end)
        window = [ChatMessage(r.role, r.content) for r in reversed(rows)]
        return HistoryWindow(window, has_documents, end)


def _path(start: Any, name: str) -> Any:
    """The recursive CTE of the messages from `start` (a message id) up to the root."""
    anchor = select(messages.c.id, messages.c.parent_id).where(
        messages.c.id == start,
        messages.c.org_id == bindparam("org_id"),
        messages.c.conversation_id == bindparam("conversation_id"),
    )
    path = anchor.cte(name, recursive=True)
    step = select(messages.c.id, messages.c.parent_id).where(messages.c.id == path.c.parent_id)
    return path.union_all(step)


_HEAD_OF = (
    select(conversations.c.head_id)
    .where(
        conversations.c.org_id == bindparam("org_id"),
        conversations.c.id == bindparam("conversation_id"),
    )
    .scalar_subquery()
)
_BRANCH = _path(_HEAD_OF, "branch")  # the current branch


@functools.cache
def _history_query(*, by_model: bool, by_user: bool, from_head: bool) -> PreparedQuery:
    """The conversation (no row when it is not there, or not the user's), its head, whether
    it has documents, left-joined to the role and text of the last messages of finished
    exchanges on the path to the head (or to `:parent`): all a model is given. One query,
    built once per variant (and compiled once: it is read on every reply)."""
    path = _path(_HEAD_OF if from_head else bindparam("parent", type_=Uuid), "path")
    joined = [
        messages.c.conversation_id == conversations.c.id,
        messages.c.org_id == conversations.c.org_id,
        messages.c.status == RecordStatus.SUCCESS.value,
        messages.c.id.in_(select(path.c.id)),
    ]
    if by_model:
        joined.append(messages.c.model == bindparam("model"))
    where = [
        conversations.c.org_id == bindparam("org_id"),
        conversations.c.id == bindparam("conversation_id"),
    ]
    if by_user:
        where.append(conversations.c.user_id == bindparam("user_id"))
    return PreparedQuery(
        select(
            literal_column("1").label("conversation_found"),  # a row: it is there
            conversations.c.head_id,
            exists()
            .where(conversation_documents.c.conversation_id == conversations.c.id)
            .label("has_documents"),
            messages.c.role,
            messages.c.content,
        )
        .select_from(conversations.outerjoin(messages, and_(*joined)))
        .where(*where)
        .order_by(messages.c.seq.desc())
        .limit(bindparam("limit", type_=Integer))
    )
