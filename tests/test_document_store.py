"""Documents, chunks and jobs in SQL, on SQLite and on a real PostgreSQL with pgvector
(searching them: tests/test_document_search.py).

What a user would see go wrong: another org's file, document or text turning up (by id or by
key), a deleted file's chunks left behind, two workers ingesting the same upload.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from uuid import uuid4

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.helpers import count, texts_as_chunks
from threadline.domain.documents import (
    DocumentState,
    JobState,
    PageLayout,
)
from threadline.domain.errors import NotFound
from threadline.storage.chunks import SqlChunkIndex
from threadline.storage.conversations import SqlConversationStore
from threadline.storage.database import MIGRATIONS_DIR, Database, utcnow
from threadline.storage.jobs import SqlJobQueue
from threadline.storage.tables import chunks, conversation_documents, documents, jobs, orgs

EMBEDDER = "test-embedder"


# ---- assets and documents ----------------------------------------------------------


async def test_an_asset_is_found_by_id_or_key_only_in_its_own_org(a, b):
    asset = await a.asset(key="files/2026_report.pdf")
    assert await a.store.get_asset(a.org, asset.id) == asset
    assert await a.store.find_asset(a.org, str(asset.id)) == asset
    assert await a.store.find_asset(a.org, "files/2026_report.pdf") == asset
    assert await a.store.find_asset(a.org, "files/other.pdf") is None
    assert await a.store.find_asset(a.org, "not-a-uuid") is None

    assert await b.store.get_asset(b.org, asset.id) is None
    assert await b.store.find_asset(b.org, str(asset.id)) is None
    assert await b.store.find_asset(b.org, "files/2026_report.pdf") is None
    assert await b.store.delete_asset(b.org, asset.id) is False
    assert await a.store.get_asset(a.org, asset.id) == asset

    # keys are unique per org, not across orgs
    theirs = await b.asset(key="files/2026_report.pdf")
    assert await b.store.find_asset(b.org, "files/2026_report.pdf") == theirs
    with pytest.raises(IntegrityError):
        await a.asset(key="files/2026_report.pdf")


async def test_a_document_runs_then_completes_with_its_pages(a, b):
    asset = await a.asset(name="deck.pptx")
    document = await a.store.create_document(asset)
    assert document.state is DocumentState.RUNNING and document.name == "deck.pptx"
    assert document.asset_id == asset.id and document.reason is None
    assert [d.id for d in await a.store.running_documents()] == [document.id]
    assert await a.store.document_for_asset(a.org, asset.id) == document

    pages = [PageLayout(0, 612, 792), PageLayout(1, 792, 612, rotation=90, is_image_page=True)]
    await b.store.finish_document(  # another org's id: nothing happens
        b.org, document.id, state=DocumentState.FAILED, reason="x"
    )
    await a.store.finish_document(
        a.org,
        document.id,
        state=DocumentState.COMPLETE,
        reason=None,
        pages=pages,
        char_count=5000,
        token_count=1200,
    )
    done = await a.store.get_document(a.org, document.id)
    assert done is not None
    assert (done.state, done.page_count, done.char_count, done.token_count) == (
        DocumentState.COMPLETE,
        2,
        5000,
        1200,
    )
    assert done.pages == tuple(pages)
    assert done.updated_at >= document.updated_at
    assert await a.store.running_documents() == []

    assert await b.store.get_document(b.org, document.id) is None
    assert await b.store.document_for_asset(b.org, asset.id) is None


async def test_a_failed_document_keeps_its_reason(a):
    document_id = await a.document()
    await a.store.finish_document(
        a.org, document_id, state=DocumentState.FAILED, reason="The PDF is encrypted."
    )
    failed = await a.store.get_document(a.org, document_id)
    assert failed is not None
    assert (failed.state, failed.reason, failed.pages) == (
        DocumentState.FAILED,
        "The PDF is encrypted.",
        (),
    )


async def test_a_deleted_documents_id_is_never_handed_out_again(a):
    first = await a.asset()
    document = await a.store.create_document(first)
    assert await a.store.delete_asset(a.org, first.id)
    again = await a.store.create_document(await a.asset())
    assert again.id > document.id


async def test_documents_link_to_conversations_of_the_same_org_only(a, b):
    conversation = await a.conversation()
    first, second = await a.document("one.pdf"), await a.document("two.pdf")
    await a.store.link(a.org, conversation, [first], "alice")
    await a.store.link(a.org, conversation, [second, first], "bob")  # first stays as it was
    linked = await a.store.conversation_documents(a.org, conversation)
    assert [(d.document.id, d.document.name, d.created_by) for d in linked] == [
        (first, "one.pdf", "alice"),
        (second, "two.pdf", "bob"),
    ]
    assert all(d.conversation_id == conversation for d in linked)

    theirs = await b.document()
    with pytest.raises(NotFound):
        await a.store.link(a.org, conversation, [theirs], "alice")
    with pytest.raises(NotFound):
        await b.store.link(b.org, conversation, [theirs], "mallory")
    with pytest.raises(NotFound):
        await a.store.link(a.org, uuid4(), [first], "alice")
    assert await b.store.conversation_documents(b.org, conversation) is None  # not b's
    assert await a.store.conversation_documents(a.org, conversation, user_id=uuid4()) is None
    assert await a.store.conversation_documents(a.org, uuid4()) is None
    mine = await a.store.conversation_documents(a.org, conversation, user_id=a.user)
    assert mine is not None and len(mine) == 2
    empty = await a.conversation()
    assert await a.store.conversation_documents(a.org, empty) == []
    assert await b.store.unlink(b.org, conversation, [first, second]) == 0

    assert await a.store.unlink(a.org, conversation, [first, 999_999]) == 1
    remaining = await a.store.conversation_documents(a.org, conversation)
    assert [d.document.id for d in remaining] == [second]
    assert await a.store.get_document(a.org, first) is not None  # unlinking keeps it


async def test_many_conversations_documents_in_one_read_as_one_by_one(a, b):
    first, second, third = await a.conversation(), await a.conversation(), await a.conversation()
    one, two = await a.document("one.pdf"), await a.document("two.pdf")
    await a.store.link(a.org, first, [two], "alice")
    await a.store.link(a.org, first, [one], "bob")
    await a.store.link(a.org, second, [one], "alice")
    theirs = await b.conversation()
    await b.store.link(b.org, theirs, [await b.document("secret.pdf")], "mallory")
    asked = [third, first, theirs, second, uuid4(), first]

    many = await a.store.documents_of_conversations(a.org, asked)

    assert set(many) == {first, second, third}  # not b's, nor an unknown id
    for conversation, linked in many.items():
        assert linked == await a.store.conversation_documents(a.org, conversation)
    assert [d.document.name for d in many[first]] == ["two.pdf", "one.pdf"]  # oldest link first
    assert many[third] == []
    assert await a.store.documents_of_conversations(a.org, asked, user_id=uuid4()) == {}
    mine = await a.store.documents_of_conversations(a.org, asked, user_id=a.user)
    assert mine == many
    assert await a.store.documents_of_conversations(a.org, []) == {}
    [(only, [secret])] = (await b.store.documents_of_conversations(b.org, asked)).items()
    assert only == theirs and secret.document.name == "secret.pdf"


async def test_deleting_an_asset_deletes_its_document_chunks_and_links(db, a):
    conversation = await a.conversation()
    asset = await a.asset()
    document = await a.store.create_document(asset)
    kept = await a.document()
    index = SqlChunkIndex(db)
    vectors = [[1.0, 0.0], [0.0, 1.0]]
    await index.replace_chunks(
        a.org,
        document.id,
        texts_as_chunks(document.id, ["alpha lemma", "beta lemma"]),
        vectors,
        EMBEDDER,
    )
    await index.replace_chunks(
        a.org, kept, texts_as_chunks(kept, ["gamma lemma"]), [[1.0, 1.0]], EMBEDDER
    )
    await a.store.link(a.org, conversation, [document.id, kept], "alice")
    both = [document.id, kept]
    assert len(await index.search_text(a.org, both, "lemma", 10)) == 3
    assert len(await index.search_vector(a.org, both, [1.0, 0.0], EMBEDDER, 10)) == 3

    assert await a.store.delete_asset(a.org, asset.id) is True
    assert await a.store.delete_asset(a.org, asset.id) is False
    assert await a.store.get_document(a.org, document.id) is None
    assert await count(db, chunks, chunks.c.document_id == document.id) == 0
    assert [d.document.id for d in await a.store.conversation_documents(a.org, conversation)] == [
        kept
    ]
    assert [h.document_id for h in await index.search_text(a.org, both, "lemma", 10)] == [kept]
    hits = await index.search_vector(a.org, both, [1.0, 0.0], EMBEDDER, 10)
    assert [h.document_id for h in hits] == [kept]
    assert await index.chunk_count(a.org) == 1
    if db.is_sqlite:  # the FTS index has no entries left for the deleted chunks
        async with db.write() as conn:
            await conn.execute(
                text("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
            )
            fts_rows = await conn.execute(text("SELECT count(*) FROM chunks_fts"))
            assert fts_rows.scalar_one() == 1


async def test_deleting_a_conversation_unlinks_but_keeps_documents(db, a):
    conversation = await a.conversation()
    document_id = await a.document()
    await a.store.link(a.org, conversation, [document_id], "alice")
    assert await SqlConversationStore(db).delete(a.org, conversation)
    assert await count(db, conversation_documents) == 0
    assert await a.store.get_document(a.org, document_id) is not None


async def test_deleting_an_org_deletes_all_of_its_documents_and_jobs(db, a, b):
    index = SqlChunkIndex(db)
    queue = SqlJobQueue(db)
    for tenant in (a, b):
        document_id = await tenant.document()
        chunk_texts = texts_as_chunks(document_id, ["text"])
        await index.replace_chunks(tenant.org, document_id, chunk_texts, [[1.0]], EMBEDDER)
        await queue.enqueue("ingest", {"document_id": document_id}, org_id=tenant.org)
    async with db.write() as conn:
        await conn.execute(delete(orgs).where(orgs.c.id == a.org))
    assert await count(db, documents) == 1
    assert await index.chunk_count() == 1 and await index.chunk_count(b.org) == 1
    assert await count(db, jobs) == 1


# ---- chunks: replacing ---------------------------------------------------------------


async def test_replacing_chunks_is_idempotent_and_replaces_the_text(db, a, b):
    index = SqlChunkIndex(db)
    document_id = await a.document()
    old = texts_as_chunks(document_id, ["the old wording of clause one", "old clause two"])
    for _ in range(2):
        await index.replace_chunks(a.org, document_id, old, None, None)
    assert await index.chunk_count(a.org) == 2
    new = texts_as_chunks(document_id, ["a fresh wording"])
    await index.replace_chunks(a.org, document_id, new, [[0.6, 0.8]], EMBEDDER)
    assert await index.chunk_count(a.org) == 1
    assert await index.search_text(a.org, [document_id], "clause", 5) == []
    [hit] = await index.search_text(a.org, [document_id], "fresh", 5)
    assert (hit.text, hit.ordinal, hit.page_start, hit.page_end) == ("a fresh wording", 0, 0, 0)
    await index.replace_chunks(a.org, document_id, [], None, None)
    assert await index.chunk_count() == 0

    with pytest.raises(NotFound):  # another org's document
        await index.replace_chunks(b.org, document_id, new, None, None)
    with pytest.raises(ValueError):
        await index.replace_chunks(a.org, document_id, new, [[1.0], [2.0]], EMBEDDER)
    with pytest.raises(ValueError):
        await index.replace_chunks(a.org, document_id, new, [[1.0]], None)
    with pytest.raises(ValueError):
        await index.replace_chunks(a.org, document_id + 1, new, None, None)
    assert await index.chunk_count() == 0


async def test_a_documents_chunks_are_read_back_in_order_in_its_org_only(db, a, b):
    """(An uploaded image's OCR text, for a text-only model, is rebuilt from them.)"""
    index = SqlChunkIndex(db)
    document_id = await a.document()
    chunks = texts_as_chunks(document_id, ["first words", "second words", "third"])
    await index.replace_chunks(a.org, document_id, list(reversed(chunks)), None, None)
    assert await index.document_chunks(a.org, document_id) == chunks
    assert await index.document_chunks(b.org, document_id) == []
    assert await index.document_chunks(a.org, document_id + 1) == []


# ---- jobs ---------------------------------------------------------------------------


async def test_a_job_is_claimed_once_completed_and_counted(db, a):
    queue = SqlJobQueue(db)
    first = await queue.enqueue("ingest", {"document_id": 1}, org_id=a.org)
    second = await queue.enqueue("ingest", {"document_id": 2}, org_id=None, max_attempts=5)
    assert await queue.counts() == {"QUEUED": 2, "RUNNING": 0, "DONE": 0, "DEAD": 0}
    job = await queue.claim("w1", 30)
    assert job is not None
    assert (job.id, job.kind, job.org_id, job.payload) == (
        first,
        "ingest",
        a.org,
        {"document_id": 1},
    )
    assert (job.state, job.attempts, job.max_attempts) == (JobState.RUNNING, 1, 3)
    other = await queue.claim("w2", 30)
    assert other is not None and other.id == second and other.org_id is None
    assert await queue.claim("w3", 30) is None

    assert await queue.extend(first, "w1", 30) is True
    assert await queue.extend(first, "w2", 30) is False  # not w2's
    await queue.complete(first, "w2")  # not w2's: nothing happens
    assert (await queue.counts())["RUNNING"] == 2
    await queue.complete(first, "w1")
    assert await queue.extend(first, "w1", 30) is False  # done
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 1, "DONE": 1, "DEAD": 0}


async def test_a_failed_job_is_retried_after_its_delay_then_dies(db):
    queue = SqlJobQueue(db)
    job_id = await queue.enqueue("ingest", {}, org_id=None, max_attempts=2)
    assert (await queue.claim("w1", 30)).attempts == 1
    assert await queue.fail(job_id, "w1", "parser crashed", retry_in=3600) is JobState.QUEUED
    assert await queue.claim("w1", 30) is None  # not due for an hour
    async with db.write() as conn:  # an hour later
        await conn.execute(jobs.update().values(run_after=utcnow() - timedelta(seconds=1)))
    retried = await queue.claim("w2", 30)
    assert retried is not None and (retried.id, retried.attempts) == (job_id, 2)
    assert retried.last_error == "parser crashed"
    assert await queue.fail(job_id, "w1", "stale worker", retry_in=0) is JobState.RUNNING
    assert await queue.fail(job_id, "w2", "x" * 10_000, retry_in=0) is JobState.DEAD
    assert await queue.claim("w3", 30) is None
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 0, "DONE": 0, "DEAD": 1}
    with pytest.raises(LookupError):
        await queue.fail(job_id + 1000, "w1", "no such job", retry_in=0)


async def test_a_job_whose_worker_vanished_is_reaped_and_handed_out_again(db):
    queue = SqlJobQueue(db)
    job_id = await queue.enqueue("ingest", {"n": 1}, org_id=None, max_attempts=2)
    held = await queue.enqueue("ingest", {"n": 2}, org_id=None)
    assert (await queue.claim("lost", 0.05)).id == job_id
    assert (await queue.claim("alive", 60)).id == held
    await asyncio.sleep(0.1)
    assert await queue.reap() == []  # requeued, not dead: nothing to report
    assert (await queue.counts())["QUEUED"] == 1
    assert await queue.extend(job_id, "lost", 30) is False  # the lost worker's lease is gone
    again = await queue.claim("second", 0.05)
    assert again is not None and (again.id, again.attempts) == (job_id, 2)
    await queue.complete(job_id, "lost")  # too late: no effect
    await asyncio.sleep(0.1)
    [dead] = await queue.reap()
    assert (dead.id, dead.state, dead.attempts) == (job_id, JobState.DEAD, 2)
    assert dead.last_error and "lease" in dead.last_error
    assert await queue.reap() == []
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 1, "DONE": 0, "DEAD": 1}


async def test_concurrent_workers_never_claim_the_same_job(db, db_url):
    queue = SqlJobQueue(db)
    for i in range(40):
        await queue.enqueue("ingest", {"i": i}, org_id=None)
    # Two "processes" (engines; on SQLite, two write locks on one file), three workers each.
    second = Database(db_url)
    try:
        queues = [queue, SqlJobQueue(second)]
        claimed: list[tuple[str, int]] = []

        async def work(name: str, q: SqlJobQueue) -> None:
            while (job := await q.claim(name, 60)) is not None:
                claimed.append((name, job.id))
                await asyncio.sleep(random.random() / 1000)

        await asyncio.gather(*(work(f"w{i}", queues[i % 2]) for i in range(6)))
    finally:
        await second.dispose()
    ids = [job_id for _, job_id in claimed]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert len({name for name, _ in claimed}) > 1
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 40, "DONE": 0, "DEAD": 0}


# ---- migration ----------------------------------------------------------------------


async def test_the_documents_migration_downgrades_and_upgrades_again(db, a):
    index = SqlChunkIndex(db)
    document_id = await a.document()
    await index.replace_chunks(
        a.org, document_id, texts_as_chunks(document_id, ["original"]), [[1.0, 0.0]], EMBEDDER
    )
    new_tables = {"assets", "documents", "conversation_documents", "chunks", "jobs"}

    def migrate(revision: str, down: bool) -> set[str]:
        def run(connection) -> set[str]:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
            return set(inspect(connection).get_table_names())

        return run

    async with db.engine.begin() as conn:
        tables = await conn.run_sync(migrate("0002", down=True))
    assert not tables & new_tables and "chunks_fts" not in tables
    assert {"conversations", "chat_sessions"} <= tables
    async with db.engine.begin() as conn:
        tables = await conn.run_sync(migrate("head", down=False))
    assert new_tables <= tables

    fresh = SqlChunkIndex(db)  # knows no index made before
    document_id = await a.document()
    await fresh.replace_chunks(
        a.org, document_id, texts_as_chunks(document_id, ["renewed"]), [[0.0, 1.0]], EMBEDDER
    )
    assert [h.text for h in await fresh.search_text(a.org, [document_id], "renewed", 5)] == [
        "renewed"
    ]
    hits = await fresh.search_vector(a.org, [document_id], [0.0, 1.0], EMBEDDER, 5)
    assert [h.text for h in hits] == ["renewed"]
