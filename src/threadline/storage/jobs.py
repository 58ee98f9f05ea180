"""A durable job queue with leases in SQL (implements `domain.documents.JobQueue`).

    enqueue ─▶ QUEUED ──claim──▶ RUNNING ──complete──▶ DONE
                 ▲                  │  │
                 └──fail (retry_in)─┘  └──fail, attempts used up──▶ DEAD
                 ▲                  │
                 └── reap: lease lapsed, after retry_in (or DEAD when attempts are used up)

An attempt is counted when it is claimed, not when it ends: an attempt that kills or freezes
its process never reports back, yet it was one. So a job that crashes every process that
runs it is reaped after each crash and is DEAD once its attempts are used up.

A claim is one `UPDATE ... WHERE id = (oldest due QUEUED job) RETURNING`: on PostgreSQL the
inner select takes the row `FOR UPDATE SKIP LOCKED`, so concurrent workers each get a
different job without waiting on each other; on SQLite the statement runs under the
database's write lock (this process's, and SQLite's own between processes), so it is atomic.
Every later step of a job names its worker: a worker whose lease lapsed and was reaped can
no longer extend, complete or fail the job that someone else now holds.

Jobs are not org-scoped data: the queue is the workers', and `org_id` only says whose
work a job is (an org's deletion deletes its jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.engine import RowMapping

from threadline.domain.documents import Job, JobState
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.tables import jobs

MAX_ERROR_CHARS = 4000
LEASE_LAPSED = (
    "the attempt crashed or stalled: the process running it stopped renewing its lease "
    "(it was killed, crashed or froze), so the lease lapsed"
)


def _job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        org_id=row["org_id"],
        payload=row["payload"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        last_error=row["last_error"],
        created_at=as_utc(row["created_at"]),
    )


class SqlJobQueue:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(
        self, kind: str, payload: dict[str, Any], *, org_id: UUID | None, max_attempts: int = 3
    ) -> int:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        now = utcnow()
        async with self._db.write() as conn:
            result = await conn.execute(
                insert(jobs).values(
                    kind=kind,
                    org_id=org_id,
                    payload=payload,
                    state=JobState.QUEUED.value,
                    attempts=0,
                    max_attempts=max_attempts,
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def claim(self, worker: str, lease_seconds: float) -> Job | None:
        now = utcnow()
        oldest_due = (
            select(jobs.c.id)
            .where(jobs.c.state == JobState.QUEUED.value, jobs.c.run_after <= now)
            .order_by(jobs.c.run_after, jobs.c.id)
            .limit(1)
        )
        if not self._db.is_sqlite:
            oldest_due = oldest_due.with_for_update(skip_locked=True)
        statement = (
            update(jobs)
            .where(jobs.c.id == oldest_due.scalar_subquery())
            .values(
                state=JobState.RUNNING.value,
                attempts=jobs.c.attempts + 1,
                lease_owner=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(statement)).mappings().first()
        return _job(row) if row else None

    async def extend(self, job_id: int, worker: str, lease_seconds: float) -> bool:
        now = utcnow()
        async with self._db.write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(*self._held(job_id, worker))
                .values(lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
            )
        return bool(result.rowcount)

    async def complete(self, job_id: int, worker: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(jobs)
                .where(*self._held(job_id, worker))
                .values(
                    state=JobState.DONE.value,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=utcnow(),
                )
            )

    async def fail(self, job_id: int, worker: str, error: str, retry_in: float) -> JobState:
        """The job's state afterwards. A worker that no longer holds the job changes
        nothing and gets the job's current state (RUNNING when another worker has it)."""
        now = utcnow()
        out_of_attempts = jobs.c.attempts >= jobs.c.max_attempts
        async with self._db.write() as conn:
            state = (
                await conn.execute(
                    update(jobs)
                    .where(*self._held(job_id, worker))
                    .values(
                        state=case(
                            (out_of_attempts, JobState.DEAD.value), else_=JobState.QUEUED.value
                        ),
                        run_after=now + timedelta(seconds=max(retry_in, 0.0)),
                        lease_owner=None,
                        lease_until=None,
                        last_error=error[:MAX_ERROR_CHARS],
                        updated_at=now,
                    )
                    .returning(jobs.c.state)
                )
            ).scalar_one_or_none()
            if state is None:
                state = (
                    await conn.execute(select(jobs.c.state).where(jobs.c.id == job_id))
                ).scalar_one_or_none()
        if state is None:
            raise LookupError(f"no job {job_id}")
        return JobState(state)

    async def reap(self, retry_in: Callable[[int], float] = lambda attempts: 0.0) -> list[Job]:
        """Requeue the RUNNING jobs whose lease lapsed, due `retry_in(attempts)` seconds from
        now; those that have used up their attempts become DEAD instead, and only those are
        returned. Every statement repeats the lapsed condition, so two reapers at once
        handle each job once."""
        now = utcnow()
        lapsed = (jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until < now)
        released = {
            "lease_owner": None,
            "lease_until": None,
            "last_error": LEASE_LAPSED,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            dead = (
                (
                    await conn.execute(
                        update(jobs)
                        .where(*lapsed, jobs.c.attempts >= jobs.c.max_attempts)
                        .values(state=JobState.DEAD.value, **released)
                        .returning(*jobs.c)
                    )
                )
                .mappings()
                .all()
            )
            retried = (
                select(jobs.c.attempts)
                .where(*lapsed, jobs.c.attempts < jobs.c.max_attempts)
                .distinct()
            )
            for (attempts,) in (await conn.execute(retried)).all():
                # one statement per attempt count (at most job_max_attempts of them)
                await conn.execute(
                    update(jobs)
                    .where(*lapsed, jobs.c.attempts == attempts)
                    .values(
                        state=JobState.QUEUED.value,
                        run_after=now + timedelta(seconds=max(retry_in(attempts), 0.0)),
                        **released,
                    )
                )
        return sorted((_job(r) for r in dead), key=lambda j: j.id)

    async def active(self, kind: str) -> list[Job]:
        query = select(jobs).where(
            jobs.c.kind == kind,
            jobs.c.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)),
        )
        async with self._db.read() as conn:
            return [_job(r) for r in (await conn.execute(query)).mappings()]

    async def dead(self, kind: str) -> list[Job]:
        query = select(jobs).where(jobs.c.kind == kind, jobs.c.state == JobState.DEAD.value)
        async with self._db.read() as conn:
            return [_job(r) for r in (await conn.execute(query)).mappings()]

    async def counts(self) -> dict[str, int]:
        query = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        counted = {state.value: 0 for state in JobState}
        async with self._db.read() as conn:
            for state, n in await conn.execute(query):
                counted[state] = int(n)
        return counted

    @staticmethod
    def _held(job_id: int, worker: str) -> tuple[Any, ...]:
        return (
            jobs.c.id == job_id,
            jobs.c.state == JobState.RUNNING.value,
            jobs.c.lease_owner == worker,
        )
