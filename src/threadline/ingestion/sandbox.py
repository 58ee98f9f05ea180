"""Parsing untrusted files in a separate process, with time and memory limits.

A decompression bomb, an XML bomb, a PDF that sends PDFium into a loop or a crash must fail
that one document with a reason, never the server. So `SandboxedParser` hands every file to a
child process (a fresh interpreter running `threadline.ingestion.child`, which limits its own
address space, CPU time, file writes and descriptors before reading anything) and waits for
the answer without blocking the event loop. What can go wrong, and what the user reads:

    the child answered           its ParsedDocument, or its ParseFailed reason
    no answer in time            "parsing took longer than N s"   (process group killed)
    ran out of memory            "the file needs more than N MB to parse (a decompression bomb?)"
    killed by SIGXCPU            "parsing took longer than N s"
    any other death              "the parser crashed on this file"
    could not start a child      "the document parser could not start ..." (retryable)

Starting an interpreter costs tens of milliseconds, and a format's libraries more, so a few
children are kept warm and reused for up to `files_per_child` files each. Every file still gets
the full limits (the CPU limit is reset per file); a child that hit a limit, met an unexpected
error, grew large, or timed out is killed and replaced. The child's environment is built from
scratch: the server's secrets (database URL, API keys) are never passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

import threadline
from threadline.domain.documents import ParsedDocument, ParseFailed
from threadline.ingestion import wire
from threadline.ingestion.detect import SUPPORTED_TYPES
from threadline.ingestion.formats.job import memory_reason

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
MAX_ANSWER_BYTES = 256 * MiB
START_TIMEOUT_SECONDS = 30.0
DECODE_IN_THREAD_BYTES = 1 * MiB
PASSED_ENVIRONMENT = ("PATH", "TESSDATA_PREFIX", "TMPDIR", "PYTHONPATH")
CHILD_ENVIRONMENT = {
    "PYTHONDONTWRITEBYTECODE": "1",  # the child may not write files
    "PYTHONIOENCODING": "utf-8",
    "LC_ALL": "C.UTF-8",
    "OMP_THREAD_LIMIT": "1",  # Tesseract: one thread per page; the machine is shared
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",  # numpy (via openpyxl): no thread pool reserving memory
    "MALLOC_ARENA_MAX": "2",  # glibc arenas reserve address space, which RLIMIT_AS counts
}
CRASHED = "the parser crashed on this file"
NOT_STARTED = "the document parser could not start (the server log says why); try again later"


class _ChildGone(Exception):
    """The child closed its end without a full answer: it died."""


class SandboxedParser:
    """A `DocumentParser` that parses each file in a limited child process."""

    def __init__(
        self,
        timeout_seconds: float,
        memory_mb: int,
        max_pages: int,
        ocr: bool,
        *,
        ocr_languages: str = "eng",
        ocr_engine: str = "rapidocr",
        pool_size: int = 2,
        files_per_child: int = 100,
        command: Sequence[str] | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.memory_mb = memory_mb
        self.max_pages = max_pages
        self.ocr = ocr
        self.ocr_languages = ocr_languages
        self.ocr_engine = ocr_engine
        self.pool_size = pool_size
        self.files_per_child = files_per_child
        base = command or (sys.executable, "-P", "-s", "-m", "threadline.ingestion.child")
        self._argv = [*base, "--memory-mb", str(memory_mb)]
        self._env = _child_environment()
        self._cwd = os.getcwd()  # where relative paths are relative to
        self._idle: list[_Child] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def parse(self, path: Path, mime_type: str, name: str) -> ParsedDocument:
        """Parse the file at `path` (of canonical `mime_type`). Raises `ParseFailed`."""
        if mime_type not in SUPPORTED_TYPES:
            raise ParseFailed(f"unsupported file type: {mime_type}")
        request = wire.Request(
            path=str(path),
            mime_type=mime_type,
            name=name,
            max_pages=self.max_pages,
            memory_mb=self.memory_mb,
            timeout_seconds=self.timeout_seconds,
            ocr=self.ocr,
            ocr_languages=self.ocr_languages,
            ocr_engine=self.ocr_engine,
        )
        child = await self._checkout()
        try:
            answer, size = await self._ask(child, request)
        except ParseFailed:
            self._refill_soon()
            raise
        if answer.get("discard") or child.files >= self.files_per_child:
            await child.close()
            self._refill_soon()
        else:
            await self._checkin(child)
        if "document" not in answer:
            reason = str(answer.get("failed") or CRASHED)
            raise ParseFailed(reason, retryable=answer.get("retryable") is True)
        try:
            return await _maybe_in_thread(size, wire.decode_document, answer["document"])
        except wire.MalformedAnswer:
            raise ParseFailed(CRASHED) from None

    async def warm_up(self) -> None:
        """Start the pool's children now rather than on the first files."""
        await self._checkout_loop()
        for _ in range(self.pool_size):
            self._refill_soon()
        await asyncio.gather(*self._starting)

    async def aclose(self) -> None:
        """Stop the idle children. Files being parsed finish (or time out) on their own."""
        await asyncio.gather(*self._starting)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(child.close() for child in idle))

    async def _ask(self, child: _Child, request: wire.Request) -> tuple[dict[str, Any], int]:
        try:
            return await asyncio.wait_for(child.ask(request), self.timeout_seconds)
        except TimeoutError:
            await child.close()
            log.warning("parse_timeout", mime_type=request.mime_type, pid=child.pid)
            raise ParseFailed(f"parsing took longer than {self.timeout_seconds:g} s") from None
        except _AnswerTooLarge:
            await child.close()
            raise ParseFailed(
                f"the file's text is too large: more than {MAX_ANSWER_BYTES // MiB} MB"
            ) from None
        except (_ChildGone, wire.MalformedAnswer):
            returncode = await child.close()
            log.warning("parse_child_died", mime_type=request.mime_type, returncode=returncode)
            raise self._death_reason(returncode) from None
        except BaseException:  # cancelled: the file's child must not run on unattended
            child.kill()
            raise

    def _death_reason(self, returncode: int | None) -> ParseFailed:
        if returncode == -signal.SIGXCPU:
            return ParseFailed(f"parsing took longer than {self.timeout_seconds:g} s")
        if returncode == -signal.SIGKILL:  # not ours: the kernel's OOM killer
            return ParseFailed(memory_reason(self.memory_mb))
        return ParseFailed(CRASHED)

    async def _checkout(self) -> _Child:
        await self._checkout_loop()
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            await child.close()
        return await self._start()

    async def _checkout_loop(self) -> None:
        """Children are bound to the event loop that started them; a new loop starts afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for child in self._idle:
                child.kill()  # the old loop would have to reap them; it may be gone
            self._idle, self._starting = [], set()
            self._loop = loop

    def _refill_soon(self) -> None:
        """Start a child in the background, so that the next file finds a warm one."""
        if len(self._idle) + len(self._starting) >= self.pool_size:
            return
        task = asyncio.create_task(self._start_idle())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_idle(self) -> None:
        try:
            child = await self._start()
        except ParseFailed:
            return  # logged; the next file tries again
        await self._checkin(child)

    async def _checkin(self, child: _Child) -> None:
        if len(self._idle) < self.pool_size and child.alive:
            self._idle.append(child)
        else:
            await child.close()

    async def _start(self) -> _Child:
        try:
            return await _Child.start(self._argv, self._env, self._cwd)
        except (OSError, _ChildGone, wire.MalformedAnswer, TimeoutError) as error:
            log.error("parse_child_start_failed", error=repr(error), argv=self._argv)
            raise ParseFailed(NOT_STARTED, retryable=True) from None


class _AnswerTooLarge(Exception):
    pass


class _Child:
    """One child process and its two pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.files = 0

    @classmethod
    async def start(cls, argv: Sequence[str], env: dict[str, str], cwd: str) -> _Child:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: Tesseract dies with it
        )
        child = cls(process)
        try:
            ready, _ = await asyncio.wait_for(child.read_answer(), START_TIMEOUT_SECONDS)
        except Exception:
            await child.close()
            raise
        except BaseException:
            child.kill()
            raise
        if not ready.get("ready"):
            await child.close()
            raise wire.MalformedAnswer("no ready message")
        return child

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def ask(self, request: wire.Request) -> tuple[dict[str, Any], int]:
        assert self.process.stdin is not None
        self.files += 1
        try:
            self.process.stdin.write(request.encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise _ChildGone from None
        return await self.read_answer()

    async def read_answer(self) -> tuple[dict[str, Any], int]:
        """One frame: its JSON object and the payload's length."""
        payload = await self._read_frame(MAX_ANSWER_BYTES)
        size = len(payload)
        answer = await _maybe_in_thread(size, json.loads, payload)
        if not isinstance(answer, dict):
            raise wire.MalformedAnswer("the answer is not an object")
        for row, count in wire.text_parts(answer):
            texts = []
            for _ in range(count):
                part = await self._read_frame(MAX_ANSWER_BYTES - size)
                size += len(part)
                texts.append(part.decode("utf-8", "replace"))  # 1 MB: a millisecond
            row[1] = "".join(texts)
        return answer, size

    async def _read_frame(self, limit: int) -> bytes:
        """One raw frame of at most `limit` bytes."""
        assert self.process.stdout is not None
        header = await self.process.stdout.readline()
        if not header.endswith(b"\n"):
            raise _ChildGone
        try:
            size = int(header)
        except ValueError:
            raise wire.MalformedAnswer("bad frame header") from None
        if size > limit:
            raise _AnswerTooLarge
        try:
            return await self.process.stdout.readexactly(size)
        except asyncio.IncompleteReadError:
            raise _ChildGone from None

    def kill(self) -> None:
        """Kill the child and whatever it started (Tesseract), if it still runs."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    async def close(self) -> int | None:
        """Kill the child (if it still runs) and reap it; its exit status, if it came."""
        self.kill()
        try:
            return await asyncio.wait_for(self.process.wait(), 5.0)
        except TimeoutError:
            return None


async def _maybe_in_thread(size: int, function: Any, argument: Any) -> Any:
    """Decoding a large answer takes a while: keep the event loop free meanwhile."""
    if size > DECODE_IN_THREAD_BYTES:
        return await asyncio.to_thread(function, argument)
    return function(argument)


def _child_environment() -> dict[str, str]:
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
    package_root = str(Path(threadline.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.update(CHILD_ENVIRONMENT)
    return env
