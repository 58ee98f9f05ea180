"""Ingestion as durable jobs: a server killed mid-ingestion resumes after restart, a job that
keeps failing fails its document with a reason, and no document stays RUNNING forever."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from tests.helpers import first_admin, make_settings, wait_state
from threadline.container import Container
from threadline.domain.documents import DocumentState, JobState
from threadline.services.documents import Upload

TEXT = b"The lighthouse keeper feeds the seagulls at dawn.\n\nThe lamp is lit at dusk."


async def started(tmp_path: Path, db_url: str, *, worker: bool, **overrides) -> Container:
    container = Container(make_settings(tmp_path, db_url, **overrides))
    await container.start(worker=worker)
    return container


async def test_a_job_whose_worker_died_is_resumed_after_restart(tmp_path, db_url):
    first = await started(tmp_path, db_url, worker=False)
    caller = await first_admin(first)
    [outcome] = await first.documents.add(
        caller, [Upload("notes.txt", "text/plain", io.BytesIO(TEXT))]
    )
    assert outcome.document is not None
    # A worker claims the job and dies mid-ingestion: its lease lapses, nothing finishes.
    job = await first.job_queue.claim("doomed-worker", lease_seconds=0.2)
    assert job is not None and job.payload["document_id"] == outcome.document.id
    await first.stop()
    await asyncio.sleep(0.3)

    second = await started(tmp_path, db_url, worker=True)
    try:
        document = await wait_state(second, caller, outcome.document.id)
        assert document.state is DocumentState.COMPLETE
        for _ in range(100):  # the job is marked DONE just after its document completes
            if (await second.job_queue.counts()).get("DONE") == 1:
                break
            await asyncio.sleep(0.05)
        assert (await second.job_queue.counts()).get("DONE") == 1
        hits = await second.retriever.search(
            caller.org_id, [document.id], "when are the seagulls fed", limit=3
        )
        assert hits and "seagulls" in hits[0].text
    finally:
        await second.stop()


class Crashing:
    """A parser whose machinery breaks (not the file): the job is retried, then given up."""

    def __init__(self) -> None:
        self.calls = 0

    async def parse(self, path, mime_type, name):
        self.calls += 1
        raise RuntimeError("the parser pool is gone")

    async def aclose(self) -> None:
        pass


async def test_a_job_that_keeps_failing_fails_its_document_with_the_reason(tmp_path, db_url):
    retry = {"job_retry_base_seconds": 0.01}
    container = await started(
        tmp_path, db_url, worker=False, documents={"job_max_attempts": 2, **retry}
    )
    try:
        crashing = Crashing()
        container.ingestion._parser = crashing
        caller = await first_admin(container)
        [outcome] = await container.documents.add(
            caller, [Upload("notes.txt", None, io.BytesIO(TEXT))]
        )
        assert outcome.document is not None
        for _ in range(50):
            await container.worker.run_until_idle()
            document = await container.documents.get_document(caller, outcome.document.id)
            if document.state is not DocumentState.RUNNING:
                break
            await asyncio.sleep(0.02)
        assert crashing.calls == 2
        assert document.state is DocumentState.FAILED
        assert "ingestion failed after 2 attempts" in (document.reason or "")
        assert "the parser pool is gone" in (document.reason or "")
        assert (await container.job_queue.counts()).get(JobState.DEAD.value) == 1
    finally:
        await container.stop()


async def test_a_lapsed_job_out_of_attempts_fails_its_document_when_reaped(tmp_path, db_url):
    container = await started(tmp_path, db_url, worker=False, documents={"job_max_attempts": 1})
    try:
        caller = await first_admin(container)
        [outcome] = await container.documents.add(
            caller, [Upload("notes.txt", None, io.BytesIO(TEXT))]
        )
        assert await container.job_queue.claim("doomed", lease_seconds=0.05)
        await asyncio.sleep(0.1)
        await container.worker.reap()
        document = await container.documents.get_document(caller, outcome.document.id)
        assert document.state is DocumentState.FAILED
        assert "lease lapsed" in (document.reason or "")
    finally:
        await container.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_ingest_shows_progress_and_outcomes(tmp_path, db_url):
    import subprocess
    import sys

    threadline = str(Path(sys.executable).parent / "threadline")

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_bytes(TEXT)
    (folder / "b.md").write_text("# Title\n\nMarkdown body about compasses.")
    (folder / "c.bin").write_bytes(b"\x00\x01\x02 not a document")
    result = subprocess.run(
        [threadline, "ingest", str(folder), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "THREADLINE_EMBEDDINGS__PROVIDER": "none",
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode == 1, result.stderr  # one file was refused
    assert "refused" in result.stdout and "c.bin" in result.stdout
    assert result.stdout.count("COMPLETE") == 2


async def test_a_document_left_without_a_job_is_queued_again_at_start(tmp_path, db_url):
    from datetime import timedelta

    from threadline.domain.clock import utcnow
    from threadline.domain.documents import DocumentState as State

    first = await started(tmp_path, db_url, worker=False)
    caller = await first_admin(first)
    [outcome] = await first.documents.add(caller, [Upload("notes.txt", None, io.BytesIO(TEXT))])
    assert outcome.document is not None
    # The process died after storing the document but before its job: drop the job, and
    # age the document past the grace period.
    job = await first.job_queue.claim("x", lease_seconds=60)
    await first.job_queue.complete(job.id, "x")
    async with first.db.write() as conn:
        from sqlalchemy import update

        from threadline.storage.tables import documents

        await conn.execute(update(documents).values(updated_at=utcnow() - timedelta(minutes=5)))
    assert (await first.documents.get_document(caller, outcome.document.id)).state is State.RUNNING
    await first.stop()

    second = await started(tmp_path, db_url, worker=True)
    try:
        document = await wait_state(second, caller, outcome.document.id)
        assert document.state is State.COMPLETE
    finally:
        await second.stop()
