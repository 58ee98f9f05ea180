"""Chat sessions in SQL (implements `ports.SessionStore`).

A session binds a conversation to one model; the unique constraint on (conversation, model)
makes "one session per model" hold under concurrent requests too: the loser of a race gets the
winner's session back.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from threadline.domain.entities import ChatSession, Message
from threadline.storage.conversations import message_from_row
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.tables import chat_sessions, messages


def _session(row: RowMapping) -> ChatSession:
    return ChatSession(
        id=row["id"],
        org_id=row["org_id"],
        conversation_id=row["conversation_id"],
        model_name=row["model_name"],
        status=row["status"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
    )


class SqlSessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, session: ChatSession) -> tuple[ChatSession, bool]:
        existing = await self._find(session.org_id, session.conversation_id, session.model_name)
        if existing is not None:
            return existing, False
        s = session
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(chat_sessions).values(
                        id=s.id,
                        org_id=s.org_id,
                        conversation_id=s.conversation_id,
                        model_name=s.model_name,
                        status=s.status,
                        created_at=s.created_at,
                        updated_at=s.updated_at,
                    )
                )
        except IntegrityError:
            # A concurrent request made the session for this model first.
            existing = await self._find(s.org_id, s.conversation_id, s.model_name)
            if existing is None:
                raise
            return existing, False
        return session, True

    async def _find(
        self, org_id: UUID, conversation_id: UUID, model_name: str
    ) -> ChatSession | None:
        query = select(chat_sessions).where(
            chat_sessions.c.org_id == org_id,
            chat_sessions.c.conversation_id == conversation_id,
            chat_sessions.c.model_name == model_name,
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _session(row) if row else None

    async def get(self, org_id: UUID, session_id: UUID) -> ChatSession | None:
        query = select(chat_sessions).where(
            chat_sessions.c.org_id == org_id, chat_sessions.c.id == session_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _session(row) if row else None

    async def for_conversation(self, org_id: UUID, conversation_id: UUID) -> list[ChatSession]:
        query = (
            select(chat_sessions)
            .where(
                chat_sessions.c.org_id == org_id,
                chat_sessions.c.conversation_id == conversation_id,
            )
            .order_by(chat_sessions.c.created_at, chat_sessions.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_session(r) for r in rows]

    async def touch(self, org_id: UUID, session_id: UUID) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(chat_sessions)
                .where(chat_sessions.c.org_id == org_id, chat_sessions.c.id == session_id)
                .values(updated_at=utcnow())
            )

    async def messages_of_record(
        self, org_id: UUID, conversation_id: UUID, record_id: UUID
    ) -> list[Message]:
        query = (
            select(messages)
            .where(
                messages.c.org_id == org_id,
                messages.c.conversation_id == conversation_id,
                messages.c.record_id == record_id,
            )
            .order_by(messages.c.seq)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [message_from_row(r) for r in rows]
