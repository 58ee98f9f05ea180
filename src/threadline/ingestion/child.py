"""The sandbox child: `python -m threadline.ingestion.child --memory-mb N`.

A fresh interpreter (not a fork of the server, so no server threads, sockets or secrets come
along) that first limits itself, then parses files one request at a time (see `wire`):

- RLIMIT_AS: the address space, so a decompression bomb ends in MemoryError, not the OOM killer;
- RLIMIT_CPU: reset before every file to the CPU time used so far plus that file's time limit;
- RLIMIT_FSIZE: 1 MiB, and SIGXFSZ ignored: nothing here should write files;
- RLIMIT_NOFILE: a few dozen descriptors; RLIMIT_CORE: 0, no core dumps of hostile input.

Tesseract, started from here, inherits these limits. Stdout carries only the answers: the
file descriptor is duplicated for them and fd 1 is pointed at stderr, so a library that
prints cannot corrupt the channel. A child that ran out of memory, hit an unexpected error, or
grew large answers and then exits, so the parent starts a fresh one for the next file.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

from threadline.domain.documents import ParseFailed
from threadline.ingestion import wire
from threadline.ingestion.formats import extractor_for
from threadline.ingestion.formats.job import Job, memory_reason

MiB = 1024 * 1024
MAX_FILE_BYTES = 1 * MiB
MAX_OPEN_FILES = 64
RETIRE_AT_MEMORY_SHARE = 0.5
"""A child whose resident memory passed this share of its limit is not reused."""
MEMORY_WORDS = ("memory allocation failed", "out of memory", "cannot allocate memory")

_reserve: list[bytearray] = []


def main(argv: list[str] | None = None) -> int:
    options = _arguments(argv)
    apply_limits(options.memory_mb)
    answers = _answer_channel()
    _reserve.append(bytearray(MiB))  # freed on MemoryError, so the answer can still be built
    answers.write(wire.frame({"ready": True}))
    answers.flush()
    for line in sys.stdin.buffer:
        answer = handle(wire.Request.decode(line))
        try:
            frame = wire.frame(answer)
        except MemoryError:  # the text fitted, its JSON did not
            _reserve.clear()
            del answer
            answer = {"failed": memory_reason(options.memory_mb), "discard": True}
            frame = wire.frame(answer)
        answers.write(frame)
        answers.flush()
        if answer.get("discard"):
            return 0
    return 0


def apply_limits(memory_mb: int) -> None:
    memory = memory_mb * MiB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    _, hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = MAX_OPEN_FILES if hard_files < 0 else min(MAX_OPEN_FILES, hard_files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def handle(request: wire.Request) -> dict[str, Any]:
    """Parse one file; the answer to send back (never raises but for the truly fatal)."""
    job = Job(
        name=request.name,
        max_pages=request.max_pages,
        memory_mb=request.memory_mb,
        timeout_seconds=request.timeout_seconds,
        ocr=request.ocr,
        ocr_languages=request.ocr_languages,
        ocr_engine=request.ocr_engine,
    )
    _limit_cpu(job.timeout_seconds)
    if not os.path.isfile(request.path):
        return {"failed": "the uploaded file is missing from storage", "retryable": True}
    try:
        document = extractor_for(request.mime_type)(Path(request.path), job)
    except ParseFailed as failed:
        return {"failed": failed.reason, "discard": _too_big(job)}
    except MemoryError:
        _reserve.clear()
        return {"failed": job.memory_failure().reason, "discard": True, "error": "MemoryError"}
    except Exception as error:  # a library choked on the file: say so, start afresh
        return _unexpected(error, job)
    return {"document": wire.encode_document(document), "discard": _too_big(job)}


def _unexpected(error: Exception, job: Job) -> dict[str, Any]:
    message = str(error).lower()
    out_of_memory = isinstance(error, OSError) and error.errno == errno.ENOMEM
    if out_of_memory or any(words in message for words in MEMORY_WORDS):
        reason = job.memory_failure().reason
    elif isinstance(error, RecursionError):
        reason = "the file is nested too deeply to read (a hostile file?)"
    else:
        reason = "the file could not be read: it is damaged or not what its type says"
    return {"failed": reason, "discard": True, "error": type(error).__name__}


def _limit_cpu(seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _too_big(job: Job) -> bool:
    """Resident memory past half the limit: fragmentation would make the next file fail."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return False
    resident = resident_pages * os.sysconf("SC_PAGE_SIZE")
    return resident > RETIRE_AT_MEMORY_SHARE * job.memory_mb * MiB


def _answer_channel() -> BinaryIO:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return channel


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="threadline.ingestion.child")
    parser.add_argument("--memory-mb", type=int, required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
