"""Jobs across machines (issue 13): two `threadline worker` processes, each with a data dir of
its own (the uploads are in the database: `blob_store = "database"`), share the queue of
one PostgreSQL; one is killed with SIGKILL in the middle of a job: its lease lapses, the
other takes the job over and finishes it, and every document ends COMPLETE with its chunks
once. Real processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.server_process import ServerProcess, WorkerProcess, upstream_model
from threadline.storage.database import Database
from threadline.storage.tables import chunks, documents, jobs

DOCUMENTS = 4
LEASE = 2.0


@pytest.fixture
def server(tmp_path: Path, postgres: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "api",
        models={"gpt-4o-mini": upstream_model("http://127.0.0.1:9/v1")},
        database_url=postgres.create_database(f"j_{os.urandom(6).hex()}"),
        settings={
            "blob_store": "database",
            "documents": {
                "embedded_worker": False,
                "job_lease_seconds": LEASE,
                "job_retry_base_seconds": 0,
                "parser_warm_start": False,
            },
        },
    )
    process.start()
    yield process
    process.kill()


def _query(url: str, statement: Any) -> list[Any]:
    async def run() -> list[Any]:
        database = Database(url)
        try:
            async with database.read() as conn:
                return list((await conn.execute(statement)).all())
        finally:
            await database.dispose()

    return asyncio.run(run())


def _text(number: int) -> bytes:
    """About 1.5 MB: seconds of parsing, chunking and indexing."""
    return " ".join(f"doc{number} word{i}" for i in range(100_000)).encode()


def test_a_worker_killed_mid_job_loses_it_to_another_that_finishes_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    url = server.values["database_url"]
    for number in range(DOCUMENTS):
        files = {"asset": (f"doc{number}.txt", _text(number), "text/plain")}
        r = httpx.post(
            f"{server.base_url}/api/assets", headers=server.headers(), files=files, timeout=60
        )
        assert r.status_code == 200, r.text
    doomed = WorkerProcess(tmp_path / "w1", server.values)
    survivor = WorkerProcess(tmp_path / "w2", server.values)
    try:
        doomed.start()
        survivor.start()
        owner = f":{doomed.pid}:"
        running = select(jobs.c.id).where(
            jobs.c.state == "RUNNING", jobs.c.lease_owner.contains(owner)
        )
        deadline = time.monotonic() + 60
        while not (held := _query(url, running)):
            assert time.monotonic() < deadline, "the first worker never claimed a job"
            time.sleep(0.02)
        [(job_id,)] = held
        doomed.kill()  # mid-job

        done = select(func.count()).select_from(jobs).where(jobs.c.state == "DONE")
        deadline = time.monotonic() + 120
        while _query(url, done)[0][0] < DOCUMENTS:
            assert time.monotonic() < deadline, _query(url, select(jobs))
            time.sleep(0.1)
    finally:
        doomed.kill()
        survivor.kill()
    [(state, attempts)] = _query(
        url, select(jobs.c.state, jobs.c.attempts).where(jobs.c.id == job_id)
    )
    assert state == "DONE" and attempts == 2, (state, attempts)
    per_document = _query(
        url,
        select(
            documents.c.state,
            documents.c.chunk_count,
            func.count(chunks.c.id),
            func.count(func.distinct(chunks.c.ordinal)),
        )
        .join(chunks, chunks.c.document_id == documents.c.id)
        .group_by(documents.c.id),
    )
    assert len(per_document) == DOCUMENTS
    for state, chunk_count, rows, ordinals in per_document:
        assert state == "COMPLETE"
        assert chunk_count == rows == ordinals > 0  # each chunk once
