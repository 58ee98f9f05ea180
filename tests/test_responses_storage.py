"""The storage under OpenAI's Responses and Conversations (0014_responses), on SQLite and
PostgreSQL: the migration matches the tables and goes down and up again; a conversation's
items page by cursor either way; a history bounded by a message reads nothing after it; a
response a killed process left with several user items gets one failed reply."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, Message, RecordStatus, reply_message_id
from threadline.storage.conversation_items import SqlConversationItemStore
from threadline.storage.conversations import SqlConversationStore
from threadline.storage.database import MIGRATIONS_DIR
from threadline.storage.records import SqlRecordStore
from threadline.storage.tables import metadata


async def test_the_migration_matches_the_tables_and_downgrades(container):
    def check(connection) -> tuple[set[str], set[str]]:
        ours = {"include_name": lambda name, kind, _: kind != "table" or name in TABLES}
        context = MigrationContext.configure(connection, opts=ours)
        found = [d for d in compare_metadata(context, metadata) if _ours(repr(d))]
        assert found == []
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0013_idem")
        down = {c["name"] for c in inspect(connection).get_columns("conversations")}
        command.upgrade(config, "head")
        return down, {c["name"] for c in inspect(connection).get_columns("conversations")}

    async with container.db.engine.begin() as conn:
        down, up = await conn.run_sync(check)
    assert "metadata" not in down and "metadata" in up


TABLES = {"conversations", "messages"}


def _ours(difference: str) -> bool:
    """A difference in what 0010 made (tables left out of the comparison show as added)."""
    if difference.startswith("('add_table'"):
        return False
    return "ix_messages_record" in difference or "'metadata'" in difference


async def test_items_page_by_cursor_and_history_stops_at_a_message(db, a):
    conversation_id = await a.conversation()
    store = SqlConversationItemStore(db)
    conversations = SqlConversationStore(db)
    now = utcnow()
    texts = ["one", "two", "three", "four", "five"]
    made = [
        Message(
            id=uuid4(),
            org_id=a.org,
            conversation_id=conversation_id,
            role="user" if i % 2 == 0 else "assistant",
            content=text,
            model="m",
            status=RecordStatus.SUCCESS,
            record_id=None,
            created_at=now,
        )
        for i, text in enumerate(texts)
    ]
    await store.add(a.org, conversation_id, made)
    first = await store.page(a.org, conversation_id, after=None, limit=2, descending=False)
    assert first is not None
    assert [m.content for m in first[0]] == ["one", "two"] and first[1]
    rest = await store.page(a.org, conversation_id, after=made[1].id, limit=5, descending=False)
    assert rest is not None and [m.content for m in rest[0]] == ["three", "four", "five"]
    assert not rest[1]
    back = await store.page(a.org, conversation_id, after=made[2].id, limit=5, descending=True)
    assert back is not None and [m.content for m in back[0]] == ["two", "one"]
    assert await store.page(a.org, conversation_id, after=uuid4(), limit=5, descending=True) is None
    window = await conversations.history(
        a.org, conversation_id, model=None, limit=10, parent=made[2].id
    )
    assert [m.content for m in window.messages] == ["one", "two", "three"]
    everything = await conversations.history(a.org, conversation_id, model=None, limit=10)
    assert [m.content for m in everything.messages] == texts


async def test_a_killed_response_with_earlier_user_items_gets_one_failed_reply(db, a):
    conversation_id = await a.conversation()
    now = utcnow()
    record = AiRecord(
        id=uuid4(),
        org_id=a.org,
        user_id=a.user,
        conversation_id=conversation_id,
        model="m",
        type="OPENAI_RESPONSE",
        status=RecordStatus.PENDING,
        prompt_object={},
        result_text="half a repl",
        created_at=now,
        updated_at=now,
    )

    def message(text: str, status: RecordStatus) -> Message:
        return Message(
            id=uuid4(),
            org_id=a.org,
            conversation_id=conversation_id,
            role="user",
            content=text,
            model="m",
            status=status,
            record_id=record.id,
            created_at=now,
        )

    records = SqlRecordStore(db)
    earlier = [message("an earlier user item", RecordStatus.SUCCESS)]
    await records.start(record, message("the prompt", RecordStatus.PENDING), earlier=earlier)
    assert await records.fail_unfinished("the server stopped", utcnow() + timedelta(seconds=1)) == 1
    items = await SqlConversationItemStore(db).of_record(a.org, record.id)
    assert [(m.role, m.content, m.status) for m in items] == [
        ("user", "an earlier user item", RecordStatus.FAILED),
        ("user", "the prompt", RecordStatus.FAILED),
        ("assistant", "half a repl", RecordStatus.FAILED),
    ]
    assert items[-1].id == reply_message_id(record.id)
