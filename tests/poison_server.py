"""The `threadline` command with a poisoned ingestion handler, for the poison-job kill tests.

Run as `python tests/poison_server.py serve --config F` (any `threadline` arguments): the
poison-job tests start it as a `ServerProcess` (tests/server_process.py) whose `command` it
is, so it starts, waits and dies as every other server process of the suite does.

Every ingestion attempt waits half a second, appends "<pid> <job id> <attempt>" to the file
named by `POISON_MARKS`, then, as `POISON_MODE` says:

    freeze (default)   sleeps on the event loop, as the quadratic chunker did: the whole
                       server stops answering until it is killed
    crash              kills its own process with SIGKILL

Only the handler is replaced; the server, its worker, queue and database are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from threadline import cli
from threadline.domain.documents import Job
from threadline.services.ingestion import IngestionService


def mark(job: Job) -> None:
    with open(os.environ["POISON_MARKS"], "a") as marks:
        marks.write(f"{os.getpid()} {job.id} {job.attempts}\n")


async def poisoned(self: IngestionService, job: Job) -> None:
    await asyncio.sleep(0.5)  # let the upload's own response go out first
    mark(job)
    if os.environ.get("POISON_MODE") == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    # Blocks the event loop on purpose: no request, no lease renewal, no time limit runs.
    time.sleep(3600)  # noqa: ASYNC251


if __name__ == "__main__":
    IngestionService.run_job = poisoned  # type: ignore[method-assign]
    sys.exit(cli.app())
