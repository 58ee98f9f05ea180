"""A conversation's messages one by one, with cursor pages (implements
`ports.ConversationItemStore`).

Why it exists beside `storage/conversations.py`: OpenAI's Conversations API lists, adds, reads
and deletes a conversation's messages individually, and pages them by a cursor (`after` an
item, in either order) rather than by offset; a response's input items are the messages one
aiRecord stored (`record_id`, indexed since 0010).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

from sqlalchemy import delete, insert, select, update

from threadline.domain.clock import utcnow
from threadline.domain.entities import Message
from threadline.storage.conversations import message_from_row, message_values
from threadline.storage.database import Database
from threadline.storage.tables import conversations, messages


class SqlConversationItemStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, org_id: UUID, conversation_id: UUID, items: Sequence[Message]) -> None:
        """Append the messages in order on the current branch (the first follows the head,
        each the one before it; the last becomes the head, so later replies read them as
        history), and touch the conversation's `updated_at`."""
        if not items:
            return
        this = (conversations.c.org_id == org_id, conversations.c.id == conversation_id)
        async with self._db.write() as conn:
            head = (await conn.execute(select(conversations.c.head_id).where(*this))).scalar()
            for item in items:  # one by one: their seq keeps their order
                chained = replace(item, parent_id=head)
                await conn.execute(insert(messages).values(**message_values(chained)))
                head = item.id
            await conn.execute(
                update(conversations).where(*this).values(updated_at=utcnow(), head_id=head)
            )

    async def page(
        self,
        org_id: UUID,
        conversation_id: UUID,
        *,
        after: UUID | None,
        limit: int,
        descending: bool,
    ) -> tuple[list[Message], bool] | None:
        """Up to `limit` messages after the message `after` (exclusive) in the order asked,
        and whether there are more. None when `after` is not a message of the conversation."""
        where = [messages.c.org_id == org_id, messages.c.conversation_id == conversation_id]
        async with self._db.read() as conn:
            if after is not None:
                mark = (
                    await conn.execute(select(messages.c.seq).where(*where, messages.c.id == after))
                ).scalar()
                if mark is None:
                    return None
                where.append(messages.c.seq < mark if descending else messages.c.seq > mark)
            order = messages.c.seq.desc() if descending else messages.c.seq.asc()
            query = select(messages).where(*where).order_by(order).limit(limit + 1)
            rows = (await conn.execute(query)).mappings().all()
        items = [message_from_row(r) for r in rows[:limit]]
        return items, len(rows) > limit

    async def get(self, org_id: UUID, conversation_id: UUID, item_id: UUID) -> Message | None:
        query = select(messages).where(
            messages.c.org_id == org_id,
            messages.c.conversation_id == conversation_id,
            messages.c.id == item_id,
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return message_from_row(row) if row else None

    async def delete(self, org_id: UUID, conversation_id: UUID, item_id: UUID) -> bool:
        """Delete one message; the messages that followed it follow its parent instead (and
        the head moves to its parent if it was the head), so the branch stays one path."""
        here = (messages.c.org_id == org_id, messages.c.conversation_id == conversation_id)
        this = (conversations.c.org_id == org_id, conversations.c.id == conversation_id)
        async with self._db.write() as conn:
            found = (
                await conn.execute(
                    select(messages.c.parent_id).where(*here, messages.c.id == item_id)
                )
            ).first()
            if found is None:
                return False
            parent = found.parent_id
            await conn.execute(
                update(messages)
                .where(*here, messages.c.parent_id == item_id)
                .values(parent_id=parent)
            )
            await conn.execute(
                update(conversations)
                .where(*this, conversations.c.head_id == item_id)
                .values(head_id=parent)
            )
            await conn.execute(delete(messages).where(*here, messages.c.id == item_id))
        return True

    async def of_record(self, org_id: UUID, record_id: UUID) -> list[Message]:
        """The messages one aiRecord stored, in their order (its input, then its reply)."""
        query = (
            select(messages)
            .where(messages.c.org_id == org_id, messages.c.record_id == record_id)
            .order_by(messages.c.seq)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [message_from_row(r) for r in rows]
