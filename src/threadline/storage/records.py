"""AI records (one per chat request) in SQL (implements `ports.RecordStore`).

A record is written PENDING with the user's message when the run starts, and once more when
it ends, together with the assistant's message, the conversation's `updated_at` and the
credit charge (its reservation settled: see `storage/credits.py`), all in one transaction, so
a reply is stored and charged exactly once. In between, checkpoints save the text streamed so
far into the record (services/checkpoints.py); they touch only a record still PENDING, so the
final write wins over a late checkpoint. A record a killed process left PENDING is failed at
the next start, and its checkpointed text becomes the reply's message in a conversation
(`fail_unfinished`).

Settling (the outcome stored and the charge made) happens once per record: `finish` (the
run's own end) and `abandon` (another process that took the run's owner for dead) both claim
the record first, with a conditional UPDATE that sets `settled_at` only while it is NULL, in
the transaction that charges. An owner that was merely frozen (SIGSTOP, a long pause) past
its lease and wakes up after a reader abandoned its reply thus stores and charges nothing
(logged). `fail_unfinished` charges nothing and does not settle: a run it took for dead
while it still ran replaces its FAILED record when it ends, and is charged then, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Uuid, bindparam, case, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.domain.entities import (
    AiRecord,
    Conversation,
    Message,
    RecordStatus,
    RouteSegment,
    User,
    reply_message_id,
)
from threadline.storage.accounts import user_from_row
from threadline.storage.conversations import conversation_values, message_values
from threadline.storage.credits import settle, settle_rows
from threadline.storage.database import Database, EncodedJSON, as_utc, utcnow
from threadline.storage.prepared import Prepared, PreparedQuery
from threadline.storage.record_json import (
    citations_from,
    citations_json,
    sources_from,
    sources_json,
)
from threadline.storage.tables import ai_records, conversations, messages, nodes, users

log = structlog.get_logger(__name__)
_UNSETTLED = (RecordStatus.PENDING.value, RecordStatus.FAILED.value)


def _record(row: RowMapping) -> AiRecord:
    return AiRecord(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        conversation_id=row["conversation_id"],
        model=row["model"],
        type=row["type"],
        status=RecordStatus(row["status"]),
        prompt_object=row["prompt_object"],
        result_text=row["result_text"],
        metadata=row["metadata"],
        citations=citations_from(row["citations"]),
        sources=sources_from(row["sources"]),
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        credits=row["credits"],
        error=row["error"],
        finish_reason=row["finish_reason"],
        route=tuple(RouteSegment(**part) for part in row["route"] or ()),
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
    )


LARGE_PROMPT_ITEMS = 500  # messages of a prompt object encoded in a thread
LARGE_PROMPT_CHARS = 100_000


def _large(prompt_object: dict[str, Any]) -> bool:
    """A prompt object whose JSON takes milliseconds: many messages, or a long prompt."""
    messages = prompt_object.get("messages")
    prompt = prompt_object.get("prompt")
    return (isinstance(messages, list) and len(messages) > LARGE_PROMPT_ITEMS) or (
        isinstance(prompt, str) and len(prompt) > LARGE_PROMPT_CHARS
    )


def _values(record: AiRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "user_id": record.user_id,
        "conversation_id": record.conversation_id,
        "model": record.model,
        "type": record.type,
        "status": record.status.value,
        "prompt_object": record.prompt_object,
        "result_text": record.result_text,
        "metadata": record.metadata,
        "citations": citations_json(record.citations),
        "sources": sources_json(record.sources),
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "credits": record.credits,
        "error": record.error,
        "finish_reason": record.finish_reason,
        "route": [asdict(part) for part in record.route] if record.route else None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


# The statements of every chat request, built once: their values are bound at execution, and
# on SQLite their compiled form goes straight into the batch (storage/prepared.py).
_INSERT_RECORD = Prepared(insert(ai_records))
_INSERT_MESSAGE = insert(messages)
_INSERT_ONE_MESSAGE = Prepared(_INSERT_MESSAGE)
# The run's end claims its record: only one not settled yet (see the module doc). Returning
# its id is what says whether this end won; in SQLite's batch it is the guard of the rest of
# the transaction (nothing else is written when it finds no record to claim).
_SETTLE_RECORD = PreparedQuery(
    update(ai_records)
    .where(
        ai_records.c.org_id == bindparam("w_org_id"),
        ai_records.c.id == bindparam("w_id"),
        ai_records.c.settled_at.is_(None),
    )
    .returning(ai_records.c.id)
)
_UPDATE_MESSAGE_STATUS = Prepared(
    update(messages)
    .where(messages.c.org_id == bindparam("w_org_id"), messages.c.id == bindparam("w_id"))
    .values(status=bindparam("w_status"))
)
_THIS_CONVERSATION = (
    conversations.c.org_id == bindparam("w_org_id"),
    conversations.c.id == bindparam("w_id"),
)
# The reply becomes the head if its user message still is (a head moved meanwhile stays).
_TOUCH_CONVERSATION = Prepared(
    update(conversations)
    .where(*_THIS_CONVERSATION)
    .values(
        updated_at=bindparam("w_updated_at"),
        head_id=case(
            (
                conversations.c.head_id == bindparam("w_after", type_=Uuid),
                bindparam("w_reply", type_=Uuid),
            ),
            else_=conversations.c.head_id,
        ),
    )
)
_SET_HEAD = Prepared(
    update(conversations).where(*_THIS_CONVERSATION).values(head_id=bindparam("w_head", type_=Uuid))
)
_CHECKPOINT_RECORD = Prepared(
    update(ai_records)
    .where(
        ai_records.c.org_id == bindparam("w_org_id"),
        ai_records.c.id == bindparam("w_id"),
        ai_records.c.status == RecordStatus.PENDING.value,
    )
    .values(result_text=bindparam("w_text"), updated_at=bindparam("w_updated_at"))
)


def _upsert(insert_for: Any) -> Any:
    """INSERT INTO messages ... ON CONFLICT (id) DO UPDATE the reply's text, status, time."""
    statement = insert_for(messages)
    changes = {c: statement.excluded[c] for c in ("content", "status", "created_at")}
    return statement.on_conflict_do_update(index_elements=[messages.c.id], set_=changes)


# The reply's message is inserted at the end, or replaces the one a start-up's recovery stored
# for a run it took for dead while it was still going (the run's final write wins).
_UPSERT_REPLY = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(postgresql_insert)}
_UPSERT_ONE_REPLY = {dialect: Prepared(statement) for dialect, statement in _UPSERT_REPLY.items()}
_OWNER = (users.c.org_id == bindparam("w_org_id"), users.c.id == bindparam("w_id"))
_SELECT_USER = PreparedQuery(select(users).where(*_OWNER))


class SqlRecordStore:
    def __init__(self, db: Database, node_id: UUID | None = None) -> None:
        """`node_id`: the process that drives the runs this store starts (storage/nodes.py)."""
        self._db = db
        self._node_id = node_id

    async def start(
        self,
        record: AiRecord,
        user_message: Message | None,
        *,
        earlier: Sequence[Message] = (),
        conversation: Conversation | None = None,
        new_message: bool = True,
    ) -> None:
        # The reply's first byte waits on this write; no write reads a rowcount.
        values = _values(record)
        values["node_id"] = self._node_id
        if _large(record.prompt_object):  # encoded in a thread, not on the event loop
            values["prompt_object"] = await asyncio.to_thread(EncodedJSON, record.prompt_object)
        rows = partial(
            _start_rows, values, record, user_message, earlier, conversation, new_message
        )
        await self._db.run_write(rows, urgent=True, batched=True)

    async def finish(
        self,
        record: AiRecord,
        assistant_message: Message | None,
        user_message_id: UUID | None,
        charge: int,
    ) -> User | None:
        values = _values(record)
        for fixed in ("id", "org_id", "user_id", "created_at"):
            values.pop(fixed)
        if _large(record.prompt_object):
            values["prompt_object"] = await asyncio.to_thread(EncodedJSON, record.prompt_object)
        values["settled_at"] = record.updated_at
        is_sqlite = self._db.is_sqlite
        owner = {"w_org_id": record.org_id, "w_id": record.user_id}
        # The user is read after the commit, not with RETURNING inside the transaction: the
        # write lock that every reply's writes queue for is held the shorter. On SQLite the
        # claim, the writes, the commit and the read are one trip (storage/sqlite_driver.py).
        settled = await self._db.run_claim(
            partial(
                _finish_rows, values, record, assistant_message, user_message_id, charge, is_sqlite
            ),
            (_SELECT_USER, owner),
        )
        if settled is None:
            log.warning(
                "reply already ended by another process; its late end is not stored or charged",
                record=str(record.id),
                status=record.status.value,
                charge=charge,
            )
            return None
        return user_from_row(settled[0]._asdict()) if settled else None  # none: the user is gone

    async def checkpoint(self, record: AiRecord, text: str) -> None:
        values = {"w_org_id": record.org_id, "w_id": record.id, "w_text": text}
        values["w_updated_at"] = utcnow()
        await self._db.run_write(partial(_CHECKPOINT_RECORD.run_sync, values=values), batched=True)

    async def get(self, org_id: UUID, record_id: UUID) -> AiRecord | None:
        query = select(ai_records).where(
            ai_records.c.org_id == org_id, ai_records.c.id == record_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _record(row) if row else None

    async def delete(self, org_id: UUID, record_id: UUID) -> bool:
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(ai_records).where(
                    ai_records.c.org_id == org_id,
                    ai_records.c.id == record_id,
                    ai_records.c.status != RecordStatus.PENDING.value,
                )
            )
        return bool(result.rowcount)

    async def fail_unfinished(self, reason: str, before: datetime) -> int:
        """Mark runs left PENDING by processes that are gone (storage/nodes.py: a record
        of no process, or of one no longer in `nodes`), started before `before`, as FAILED,
        with their messages; a live sibling's runs are left alone. The text they hold (their
        last checkpoint) is kept, and in a conversation stored as the reply's message, as a
        failed run's end stores it, under the id the run's stream named (`reply_message_id`).
        One conditional UPDATE claims them: two processes reaping at once never both do."""
        orphaned = (
            ai_records.c.status == RecordStatus.PENDING.value,
            ai_records.c.created_at < before,
            or_(ai_records.c.node_id.is_(None), ai_records.c.node_id.not_in(select(nodes.c.id))),
        )
        claim = (
            update(ai_records)
            .where(*orphaned)
            .values(status=RecordStatus.FAILED.value, error=reason, updated_at=utcnow())
            .returning(ai_records.c.id, ai_records.c.result_text, ai_records.c.updated_at)
        )
        async with self._db.write() as conn:
            orphans = {row.id: row for row in await conn.execute(claim)}
            if not orphans:
                return 0
            ids = list(orphans)
            await conn.execute(
                update(messages)
                .where(messages.c.record_id.in_(ids))
                .values(status=RecordStatus.FAILED.value)
            )
            prompts = (
                select(messages)
                .where(messages.c.record_id.in_(ids), messages.c.role == "user")
                .order_by(messages.c.seq)
            )
            # a record's last user message is its prompt (a response's input may hold more)
            last = {p["record_id"]: p for p in (await conn.execute(prompts)).mappings()}
            replies = [_failed_reply(prompt, orphans[rid]) for rid, prompt in last.items()]
            if replies:
                await conn.execute(_INSERT_MESSAGE, replies)
                await _follow(conn, replies)
        return len(ids)

    async def abandon(self, record: AiRecord, charge: int) -> AiRecord | None:
        """Fail a record whose process died (another process knew its text from the shared
        feed): its text, tokens and error, its reply message, its charge and the release of
        its reservation in one transaction. The record is PENDING, or was failed by a
        heartbeat's recovery meanwhile (with its last checkpoint, uncharged, not settled:
        the feed's text is newer). The condition on `settled_at` makes it happen once,
        whichever process gets there first."""
        now = utcnow()
        changes = {
            "status": RecordStatus.FAILED.value,
            "result_text": record.result_text,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "credits": charge,
            "error": record.error,
            "updated_at": now,
            "settled_at": now,
        }
        org_id = record.org_id
        async with self._db.write() as conn:
            taken = await conn.execute(
                update(ai_records)
                .where(
                    ai_records.c.org_id == org_id,
                    ai_records.c.id == record.id,
                    # PENDING, or FAILED by recovery (`fail_unfinished`: not settled, nothing
                    # charged) while this process followed the run's text on the feed
                    ai_records.c.status.in_(_UNSETTLED),
                    ai_records.c.settled_at.is_(None),
                )
                .values(**changes)
            )
            if taken.rowcount != 1:
                return None
            await conn.execute(
                update(messages)
                .where(messages.c.org_id == org_id, messages.c.record_id == record.id)
                .values(status=RecordStatus.FAILED.value)
            )
            prompts = select(messages).where(
                messages.c.record_id == record.id, messages.c.role == "user"
            )
            stored = replace(record, status=RecordStatus.FAILED, credits=charge, updated_at=now)
            replies = [
                _failed_reply(prompt, stored) for prompt in (await conn.execute(prompts)).mappings()
            ]
            if replies:
                await conn.execute(_UPSERT_REPLY[conn.dialect.name], replies)
                await _follow(conn, replies)
            await settle(conn, self._db.is_sqlite, org_id, record.user_id, record.id, charge)
        return stored


def _start_rows(
    values: dict[str, Any],
    record: AiRecord,
    user_message: Message | None,
    earlier: Sequence[Message],
    conversation: Conversation | None,
    new_message: bool,
    conn: Connection,
) -> None:
    """`start`'s transaction (in `Database.run_write`)."""
    if conversation is not None:
        conn.execute(insert(conversations).values(**conversation_values(conversation)))
    _INSERT_RECORD.run_sync(conn, values)
    for message in earlier:  # one by one: their seq keeps their order
        _INSERT_ONE_MESSAGE.run_sync(conn, message_values(message))
    if user_message is not None:
        if new_message:
            _INSERT_ONE_MESSAGE.run_sync(conn, message_values(user_message))
        head = {
            "w_org_id": record.org_id,
            "w_id": user_message.conversation_id,
            "w_head": user_message.id,
        }
        _SET_HEAD.run_sync(conn, head)


def _finish_rows(
    values: dict[str, Any],
    record: AiRecord,
    assistant_message: Message | None,
    user_message_id: UUID | None,
    charge: int,
    is_sqlite: bool,
    conn: Connection,
) -> bool:
    """`finish`'s transaction (in `Database.run_claim`): False, and nothing written, when
    the record was settled already (another process ended it)."""
    org_id = record.org_id
    # First, so that on PostgreSQL it takes the record's lock before anything else is written
    # (an abandon at the same moment waits, then finds it settled).
    claim = {**values, "w_org_id": org_id, "w_id": record.id}
    if not _SETTLE_RECORD.guard(conn, claim):
        return False
    if assistant_message is not None:
        _UPSERT_ONE_REPLY[conn.dialect.name].run_sync(conn, message_values(assistant_message))
    if user_message_id is not None:
        _UPDATE_MESSAGE_STATUS.run_sync(
            conn, {"w_org_id": org_id, "w_id": user_message_id, "w_status": record.status.value}
        )
    if record.conversation_id is not None:
        reply = assistant_message
        _TOUCH_CONVERSATION.run_sync(
            conn,
            {
                "w_org_id": org_id,
                "w_id": record.conversation_id,
                "w_updated_at": record.updated_at,
                "w_after": reply.parent_id if reply else None,
                "w_reply": reply.id if reply else None,
            },
        )
    if charge or record.reserved_credits:  # the run's reservation settles here
        settle_rows(conn, is_sqlite, org_id, record.user_id, record.id, charge)
    return True


async def _follow(conn: AsyncConnection, replies: list[dict[str, Any]]) -> None:
    """Each stored reply becomes its conversation's head if the head is still its prompt, as
    a run's end does (a user who moved the head meanwhile keeps it)."""
    for reply in replies:
        await conn.execute(
            update(conversations)
            .where(
                conversations.c.id == reply["conversation_id"],
                conversations.c.head_id == reply["parent_id"],
            )
            .values(head_id=reply["id"])
        )


def _failed_reply(prompt: RowMapping, record: Any) -> dict[str, Any]:
    """The message of a reply its process did not live to store: its checkpointed text."""
    return {
        "id": reply_message_id(record.id),
        "org_id": prompt["org_id"],
        "conversation_id": prompt["conversation_id"],
        "session_id": prompt["session_id"],
        "record_id": record.id,
        "role": "assistant",
        "content": record.result_text,
        "model": prompt["model"],
        "status": RecordStatus.FAILED.value,
        "created_at": record.updated_at,
        "parent_id": prompt["id"],
    }
