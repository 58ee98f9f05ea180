"""Poison jobs: an attempt that crashes, hangs or times out is retried with back-off at most
`job_max_attempts` times, then its document is FAILED with a reason the user sees; a restart
never brings back a job that stalls the server without counting it.

The queue and the worker on SQLite and PostgreSQL, then a real `threadline serve` process
whose ingestion freezes its event loop (or kills it) on cue, killed with SIGKILL and
restarted until the attempts are used up (`tests/poison_server.py`).
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from tests.helpers import FAULT_CHILD, first_admin, gone, make_settings, wait_state
from tests.server_process import ServerProcess
from threadline.container import Container
from threadline.domain.documents import DocumentState, Job, JobState
from threadline.domain.progress import progressed
from threadline.ingestion.sandbox import SandboxedParser
from threadline.jobs.worker import Backoff, Worker
from threadline.services.documents import INGEST_JOB, Upload
from threadline.settings import DocumentSettings
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.jobs import LEASE_LAPSED, SqlJobQueue
from threadline.storage.tables import documents as documents_table
from threadline.storage.tables import jobs

LAUNCHER = Path(__file__).with_name("poison_server.py")


async def run_after(db: Database, job_id: int) -> float:
    """Seconds from now until the job is due."""
    async with db.read() as conn:
        due = (await conn.execute(select(jobs.c.run_after).where(jobs.c.id == job_id))).scalar()
    return (as_utc(due) - utcnow()).total_seconds()


async def make_due(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(jobs.update().values(run_after=utcnow() - timedelta(seconds=1)))


# ---- the queue --------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_seconds=5, max_seconds=300)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 7, 8, 100)] == [5, 10, 20, 40, 300, 300, 300]


def test_a_time_limit_shorter_than_parsing_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"must be more than documents\.parse_timeout"):
        DocumentSettings(parse_timeout_seconds=120, job_timeout_seconds=60)
    with pytest.raises(ValidationError, match="job_retry_max_seconds"):
        DocumentSettings(job_retry_base_seconds=10, job_retry_max_seconds=5)
    assert DocumentSettings().job_timeout_seconds == 900


async def test_every_claim_is_an_attempt_and_lapsed_ones_are_retried_with_backoff(db):
    """A worker that dies mid-attempt never reports back: the claim counted the attempt, the
    reaper requeues the job after the back-off, and after the last attempt it is DEAD."""
    queue = SqlJobQueue(db)
    backoff = Backoff(base_seconds=10, max_seconds=15)
    job_id = await queue.enqueue(INGEST_JOB, {"document_id": 7}, org_id=None, max_attempts=3)
    for attempt, delay in ((1, 10), (2, 15)):
        claimed = await queue.claim(f"doomed-{attempt}", lease_seconds=0.05)
        assert claimed is not None and claimed.attempts == attempt
        await asyncio.sleep(0.1)  # the process died: nobody renews the lease
        assert await queue.reap(backoff.delay) == []
        assert delay - 2 < await run_after(db, job_id) <= delay
        assert await queue.claim("eager", 60) is None  # not before the back-off
        await make_due(db)
    last = await queue.claim("doomed-3", lease_seconds=0.05)
    assert last is not None and last.attempts == 3
    await asyncio.sleep(0.1)
    [dead] = await queue.reap(backoff.delay)
    assert (dead.id, dead.state, dead.attempts, dead.last_error) == (
        job_id,
        JobState.DEAD,
        3,
        LEASE_LAPSED,
    )
    await make_due(db)
    assert await queue.claim("eager", 60) is None
    assert [j.id for j in await queue.dead(INGEST_JOB)] == [job_id]
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 0, "DONE": 0, "DEAD": 1}


# ---- the worker -------------------------------------------------------------------------


class Hanging:
    """A handler that never finishes on its own (an upstream that never answers)."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.began = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, job: Job) -> None:
        self.started.append(time.monotonic())
        self.began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_hanging_attempt_times_out_is_retried_with_backoff_then_dies(db):
    queue = SqlJobQueue(db)
    hanging, dead = Hanging(), asyncio.Queue[Job]()
    worker = Worker(
        queue,
        {"hang": hanging},
        lease_seconds=30,
        timeout_seconds=0.3,
        backoff=Backoff(base_seconds=0.4, max_seconds=0.6),
        on_dead=dead.put,
    )
    job_id = await queue.enqueue("hang", {}, org_id=None, max_attempts=3)
    worker.start()
    try:
        given_up = await asyncio.wait_for(dead.get(), 20)
    finally:
        await worker.stop()
    assert (given_up.id, given_up.state, given_up.attempts) == (job_id, JobState.DEAD, 3)
    assert given_up.last_error is not None and "timed out" in given_up.last_error
    assert "0.3 s" in given_up.last_error
    assert len(hanging.started) == 3 and hanging.cancelled == 3
    gaps = [b - a for a, b in zip(hanging.started, hanging.started[1:], strict=False)]
    # each gap: the 0.3 s limit, then the back-off (0.4 s, then 0.6 s)
    assert gaps[0] >= 0.65 and gaps[1] >= 0.85, gaps
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 0, "DONE": 0, "DEAD": 1}


async def test_the_time_limit_counts_from_the_last_progress(db):
    """A job longer than the limit in all, which reports progress more often than the limit,
    finishes (a big document is slow, not hung); once it stops reporting, the limit applies."""
    queue = SqlJobQueue(db)
    steps: list[float] = []

    async def slow_but_moving(job: Job) -> None:
        for _ in range(8):  # 8 x 0.1 s: over twice the 0.3 s limit in all
            await asyncio.sleep(0.1)
            steps.append(time.monotonic())
            progressed()
        if job.payload.get("then_hang"):
            await asyncio.sleep(30)

    dead = asyncio.Queue[Job]()
    worker = Worker(queue, {"long": slow_but_moving}, timeout_seconds=0.3, on_dead=dead.put)
    done = await queue.enqueue("long", {}, org_id=None, max_attempts=1)
    assert await worker.run_one() is True
    assert len(steps) == 8 and steps[-1] - steps[0] > 0.6
    assert await queue.counts() == {"QUEUED": 0, "RUNNING": 0, "DONE": 1, "DEAD": 0}
    hung = await queue.enqueue("long", {"then_hang": True}, org_id=None, max_attempts=1)
    assert await worker.run_one() is True
    given_up = await asyncio.wait_for(dead.get(), 5)
    assert (given_up.id, given_up.state) == (hung, JobState.DEAD) and done != hung
    assert given_up.last_error is not None and "made no progress for 0.3 s" in given_up.last_error


async def test_an_attempt_stuck_in_a_thread_fails_on_time_though_the_thread_runs_on(db):
    """A thread cannot be killed: the attempt is given up at its limit all the same, and the
    thread finishes on its own later (the documented limit of what can be interrupted)."""
    queue = SqlJobQueue(db)
    release, finished = threading.Event(), threading.Event()

    def stuck() -> None:
        release.wait(30)
        finished.set()

    async def handler(job: Job) -> None:
        await asyncio.to_thread(stuck)

    dead = asyncio.Queue[Job]()
    worker = Worker(queue, {"stuck": handler}, timeout_seconds=0.3, on_dead=dead.put)
    await queue.enqueue("stuck", {}, org_id=None, max_attempts=1)
    started = time.monotonic()
    assert await worker.run_one() is True
    given_up = await asyncio.wait_for(dead.get(), 1)
    assert time.monotonic() - started < 3
    assert given_up.last_error is not None and "timed out" in given_up.last_error
    assert not finished.is_set()  # the thread is still at it
    release.set()
    await asyncio.to_thread(finished.wait, 5)
    assert finished.is_set()


async def test_an_attempt_whose_lease_was_taken_over_is_cancelled(db):
    """This process froze long enough for another worker to take the job over: when it
    wakes up, its attempt stops, and it neither completes nor fails the other's job."""
    queue = SqlJobQueue(db)
    hanging = Hanging()
    worker = Worker(queue, {"hang": hanging}, lease_seconds=0.3, timeout_seconds=60)
    job_id = await queue.enqueue("hang", {}, org_id=None)
    runner = asyncio.create_task(worker.run_one())
    await asyncio.wait_for(hanging.began.wait(), 5)
    async with db.write() as conn:  # reaped and claimed by another worker meanwhile
        await conn.execute(update(jobs).values(lease_owner="the-other-worker", attempts=2))
    assert await asyncio.wait_for(runner, 5) is True
    assert hanging.cancelled == 1
    async with db.read() as conn:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()
    assert (row["state"], row["lease_owner"], row["attempts"]) == (
        "RUNNING",
        "the-other-worker",
        2,
    )


# ---- ingestion: a hung parser child, a job given up while its process died -------------


async def test_a_hung_parse_is_stopped_at_the_time_limit_its_child_killed_and_retried(
    tmp_path, db_url
):
    documents = {
        "parse_timeout_seconds": 1,
        "job_timeout_seconds": 1.5,
        "job_max_attempts": 2,
        "job_retry_base_seconds": 0.2,
    }
    container = Container(make_settings(tmp_path, db_url, documents=documents))
    await container.start(worker=False)
    # The child's own limit is far away: only the job's time limit can stop this parse.
    slow = SandboxedParser(60, 256, 800, ocr=False, pool_size=1, command=FAULT_CHILD)
    container.ingestion._parser = slow
    pid_file = tmp_path / "sleeper.pid"
    sleepers: set[int] = set()
    try:
        caller = await first_admin(container)
        upload = Upload("stuck.txt", "text/plain", io.BytesIO(f"grandchild {pid_file}".encode()))
        [outcome] = await container.documents.add(caller, [upload])
        assert outcome.document is not None
        container.worker.start()
        waiting = asyncio.create_task(wait_state(container, caller, outcome.document.id))
        while not waiting.done():
            if pid_file.exists() and pid_file.read_text().strip():
                sleepers.add(int(pid_file.read_text()))
            await asyncio.sleep(0.05)
        document = waiting.result()
    finally:
        await container.stop()
        await slow.aclose()
    assert document.state is DocumentState.FAILED
    assert document.reason == (
        "ingestion failed after 2 attempts; last error: the attempt timed out: it made no "
        "progress for 1.5 s (documents.job_timeout_seconds) and was stopped"
    )
    assert len(sleepers) == 2  # a fresh child each attempt, each one killed with its group
    for _ in range(50):
        if all(gone(pid) for pid in sleepers):
            break
        await asyncio.sleep(0.1)
    assert all(gone(pid) for pid in sleepers)


async def test_a_document_whose_job_died_is_failed_at_start_not_queued_again(tmp_path, db_url):
    """The process died between giving the job up and failing the document: the next start
    fails the document; it does not hand it out again with fresh attempts."""
    first = Container(make_settings(tmp_path, db_url, documents={"job_max_attempts": 1}))
    await first.start(worker=False)
    caller = await first_admin(first)
    [outcome] = await first.documents.add(
        caller, [Upload("notes.txt", "text/plain", io.BytesIO(b"poison"))]
    )
    assert outcome.document is not None
    assert await first.job_queue.claim("doomed", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    assert len(await first.job_queue.reap()) == 1  # DEAD, and then the process died
    async with first.db.write() as conn:  # long enough ago to count as left without a job
        await conn.execute(
            update(documents_table).values(updated_at=utcnow() - timedelta(minutes=5))
        )
    await first.stop()

    second = Container(make_settings(tmp_path, db_url, documents={"job_max_attempts": 1}))
    await second.start(worker=True)
    try:
        document = await second.documents.get_document(caller, outcome.document.id)
        assert document.state is DocumentState.FAILED
        assert document.reason is not None and "ingestion failed after 1 attempt;" in (
            document.reason
        )
        assert "lease lapsed" in document.reason
        assert await second.job_queue.active(INGEST_JOB) == []
    finally:
        await second.stop()


# ---- a real server process, frozen or crashing, killed and restarted ---------------------


RETRY_SECONDS = 2.0  # the first back-off; the second is 4 s (the restart answers well within 2 s)


class PoisonServer:
    """`threadline serve` through tests/poison_server.py (a `ServerProcess` with that command)
    on one data dir, restartable, and the attempts its poisoned ingestion marked."""

    def __init__(self, tmp_path: Path, database_url: str, mode: str) -> None:
        self.marks = tmp_path / "attempts.log"
        self.pid: int | None = None
        self.server = ServerProcess(
            tmp_path / "data",
            models={"echo": {"provider": "fake", "replies": ["echo"]}},
            database_url=database_url,
            settings={
                "log_level": "INFO",
                "documents": {
                    "job_lease_seconds": 2,
                    "job_max_attempts": 3,
                    "job_retry_base_seconds": RETRY_SECONDS,
                    "job_retry_max_seconds": 2 * RETRY_SECONDS,
                },
            },
            env={"POISON_MARKS": str(self.marks), "POISON_MODE": mode},
            command=(sys.executable, str(LAUNCHER)),
        )

    @property
    def url(self) -> str:
        return self.server.base_url

    @property
    def headers(self) -> dict[str, str]:
        assert self.server.key is not None
        return {"Authorization": f"Bearer {self.server.key}"}

    def start(self) -> float:
        """Start and wait until /healthz answers; returns when that was (monotonic)."""
        self.server.start(timeout=60)
        self.pid = self.server.pid  # this run's, also once it has killed itself
        return time.monotonic()

    def attempts(self) -> list[tuple[int, int]]:
        """(pid, attempt) of every ingestion attempt so far."""
        if not self.marks.exists():
            return []
        lines = [line.split() for line in self.marks.read_text().splitlines()]
        return [(int(pid), int(attempt)) for pid, _, attempt in lines]

    def wait_attempt(self, n: int, seconds: float = 60) -> float:
        deadline = time.monotonic() + seconds
        while len(self.attempts()) < n:
            assert time.monotonic() < deadline, f"attempt {n} never started"
            time.sleep(0.05)
        return time.monotonic()

    def answers_promptly(self, times: int = 3) -> None:
        for _ in range(times):
            started = time.monotonic()
            assert httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 1.0
            time.sleep(0.2)


def upload_poison(server: PoisonServer, headers: dict[str, str]) -> str:
    files = [("files", ("huge.txt", b"an upload that stalls its server " * 100, "text/plain"))]
    r = httpx.post(
        f"{server.url}/api/v2/conversations",
        headers=headers,
        data={"name": "poison"},
        files=files,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def document_views(server: PoisonServer, headers: dict[str, str], conversation: str) -> Any:
    """The document's state and reason as each dialect shows them."""
    base = f"{server.url}/api/v2/conversations/{conversation}"
    info = httpx.get(base, headers=headers, timeout=10).json()
    [document] = info["documents"]
    meta = httpx.get(f"{base}/documents/{document['id']}", headers=headers, timeout=10).json()
    c = httpx.get(f"{server.url}/api/conversations/{conversation}", headers=headers, timeout=10)
    [file] = c.json()["conversation"]["conversationFile"]
    asset = httpx.get(f"{server.url}/api/assets/{file['fileId']}", headers=headers, timeout=10)
    asset_view = asset.json()["asset"]
    return {
        "converse conversation": (info["state"], document["state"], document["reason"]),
        "converse metadata": ("", meta["state"], meta["reason"]),
        "1min.ai conversationFile": ("", file["status"], file["reason"]),
        "1min.ai asset": ("", asset_view["status"], asset_view["reason"]),
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("db_url", "mode"),
    [("sqlite", "freeze"), ("postgres", "crash")],
    indirect=["db_url"],
)
def test_a_job_that_stalls_or_kills_its_server_fails_after_its_attempts(
    tmp_path: Path, db_url: str, mode: str
) -> None:
    server = PoisonServer(tmp_path, db_url, mode)
    try:
        server.start()
        headers = server.headers
        conversation = upload_poison(server, headers)
        for attempt in (1, 2, 3):
            if attempt > 1:
                ready = server.start()
                # The job it died on is not run at once: the server answers meanwhile.
                server.answers_promptly()
                began = server.wait_attempt(attempt)
                assert began - ready > RETRY_SECONDS / 3
            else:
                server.wait_attempt(attempt)
            assert server.attempts()[-1] == (server.pid, attempt)
            if mode == "freeze":
                with pytest.raises(httpx.TimeoutException):  # the reported bug, on cue
                    httpx.get(f"{server.url}/healthz", timeout=1.5)
                server.server.kill()
            else:
                assert server.server.wait(30) == -signal.SIGKILL
        # The fourth start: the attempts are used up. The job is given up, never run again.
        server.start()
        deadline = time.monotonic() + 60
        while (views := document_views(server, headers, conversation))["1min.ai asset"][
            1
        ] == "RUNNING":
            assert time.monotonic() < deadline, views
            time.sleep(0.2)
        server.answers_promptly(times=10)
        reason = (
            "ingestion failed after 3 attempts; last error: the attempt crashed or stalled: "
            "the process running it stopped renewing its lease (it was killed, crashed or "
            "froze), so the lease lapsed"
        )
        assert views == {
            "converse conversation": ("FAILED", "FAILED", reason),
            "converse metadata": ("", "FAILED", reason),
            "1min.ai conversationFile": ("", "FAILED", reason),
            "1min.ai asset": ("", "FAILED", reason),
        }
        assert len(server.attempts()) == 3
        assert server.server.pid is not None  # still running
    finally:
        server.server.kill()
