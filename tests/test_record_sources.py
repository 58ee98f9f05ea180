"""A record's sources and citations are domain objects in storage's own columns, and 1min.ai
names them: what a client sees is the same for a record stored before (its promptObject kept
the lists under 1min.ai's names) and after. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from uuid import uuid4

from sqlalchemy import select

from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, RecordStatus
from threadline.domain.events import Citation
from threadline.domain.sources import ImageSource, PageSource, RecalledMemory, ReplySources
from threadline.storage.tables import ai_records

LINK = PageSource(
    "https://example.org/a", "ok", title="A", word_count=3, truncated=False, excerpt="one two"
)
GONE = PageSource("https://example.org/b", "error", kind="youtube", video_id="x", reason="gone")
FOUND = PageSource("https://example.org/s", "ok", title="S", snippet="snip", excerpt="three")
IMAGE = ImageSource("key", "a.png", "PNG", "image/png", 10, 20, 300, "text", text="hello")
SOURCES = ReplySources(
    links=(LINK, GONE),
    search=(FOUND,),
    images=(IMAGE,),
    memories=(RecalledMemory(uuid4(), "likes tea"),),
)
CITED = (Citation("W1", "A", "one two", url=LINK.url), Citation("1", "doc.pdf", "x", page=2))


async def _record(container, admin, **changes) -> AiRecord:
    principal = await container.accounts.authenticate(admin["API-KEY"])
    now = utcnow()
    record = AiRecord(
        id=uuid4(),
        org_id=principal.org_id,
        user_id=principal.user.id,
        conversation_id=None,
        model="gpt-4o-mini",
        type="UNIFY_CHAT_WITH_AI",
        status=RecordStatus.PENDING,
        prompt_object={"prompt": "hi", "linkContentList": [], "searchContentList": []},
        result_text="",
        created_at=now,
        updated_at=now,
    )
    record = replace(record, **changes)
    await container.record_store.start(record, None)
    done = replace(record, status=RecordStatus.SUCCESS, result_text="ok")
    await container.record_store.finish(done, None, None, 0)
    return done


async def test_sources_and_citations_round_trip_the_store(client, admin, container):
    record = await _record(container, admin, sources=SOURCES, citations=CITED)
    stored = await container.record_store.get(record.org_id, record.id)
    assert stored is not None
    assert stored.sources == SOURCES and stored.citations == CITED
    async with container.db.read() as conn:
        row = (await conn.execute(select(ai_records).where(ai_records.c.id == record.id))).one()
    assert "linkContentList" not in str(row.sources)  # storage's own names, no vendor's
    assert row.prompt_object == record.prompt_object  # the request as it came, nothing added

    r = await client.get(f"/api/chat-with-ai/{record.id}", headers=admin)
    assert r.status_code == 200, r.text
    detail = r.json()["aiRecord"]["aiRecordDetail"]
    shown = detail["promptObject"]
    assert shown["prompt"] == "hi"
    assert shown["linkContentList"] == [
        {
            "type": "page",
            "url": LINK.url,
            "status": "ok",
            "title": "A",
            "wordCount": 3,
            "truncated": False,
            "content": "one two",
        },
        {
            "type": "youtube",
            "url": GONE.url,
            "status": "error",
            "videoId": "x",
            "reason": "gone",
        },
    ]
    assert shown["searchContentList"] == [
        {
            "title": "S",
            "url": FOUND.url,
            "snippet": "snip",
            "status": "ok",
            "wordCount": 0,
            "truncated": False,
            "content": "three",
        }
    ]
    [image] = shown["imageContentList"]
    assert image["mimeType"] == "image/png" and image["text"] == "hello" and "note" not in image
    assert shown["memoryList"] == [{"uuid": str(SOURCES.memories[0].id), "content": "likes tea"}]
    assert detail["citations"] == [
        {"sourceId": "W1", "title": "A", "excerpt": "one two", "page": None, "url": LINK.url},
        {"sourceId": "1", "title": "doc.pdf", "excerpt": "x", "page": 2, "url": None},
    ]


async def test_a_record_stored_before_sources_had_a_column_shows_the_same(client, admin, container):
    """A row written by an earlier version: the lists inside promptObject, no sources."""
    legacy = {
        "prompt": "hi",
        "linkContentList": [{"type": "page", "url": "https://example.org", "status": "ok"}],
        "searchContentList": [],
        "memoryList": [],
    }
    record = await _record(container, admin, prompt_object=legacy)
    stored = await container.record_store.get(record.org_id, record.id)
    assert stored is not None and stored.sources == ReplySources()
    r = await client.get(f"/api/chat-with-ai/{record.id}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["aiRecord"]["aiRecordDetail"]["promptObject"] == legacy
