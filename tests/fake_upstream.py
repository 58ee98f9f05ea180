"""A fake OpenAI-compatible upstream: a real, scripted HTTP/1.1 server that fails on cue.

Why it exists: the `openai-compatible` provider, the API tests behind a real uvicorn server and
the streaming benchmark all need an upstream that speaks OpenAI's wire format over real TCP
(keep-alive, chunked streaming, dropped connections, stalls), without the network and without a
web framework's per-request cost. It is written directly on asyncio streams (the HTTP framing
is tests/http_framing.py's) and runs on its own event loop in a background thread, so a test's
loop (or a benchmark's) is never blocked by it.

    up = FakeUpstream(api_key="sk-test")           # or: with FakeUpstream() as up: ...
    up.start()                                     # -> up.url == "http://127.0.0.1:PORT/v1"
    up.enqueue(Reply("Hello world"))               # the next request gets this
    up.enqueue(Status(500, {"error": {"message": "boom", "type": "server_error"}}))
    up.enqueue(Hang(5))                            # reads the request, answers nothing
    up.enqueue(Disconnect(after_chunks=2))         # two deltas, then the TCP connection drops
    up.enqueue(ErrorEvent(after_chunks=2))         # two deltas, then `data: {"error": ...}`
    up.default = Reply(tokens=32, delay=0.02)      # used whenever the queue is empty
    up.requests[0]["model"], up.requests[0].headers["authorization"]
    up.stop()

Run `python tests/fake_upstream.py --tokens 32 --delay 0.02` to serve it from its own process
(a benchmark then measures the server under test, not this one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.faults import Disconnect, ErrorEvent, Hang, Raw, Status
from tests.http_framing import BadRequest, Request, json_response, read_request, response_head

__all__ = ["Disconnect", "ErrorEvent", "FakeUpstream", "Hang", "Raw", "Reply", "Status"]

_WORD = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class Reply:
    """A normal answer. `chunks` defaults to the text split into words (one word = one token);
    `tokens=N` synthesises an N-token text; chunk i is sent `(i + 1) * delay` seconds after
    the response starts (a fixed schedule, so event-loop lag does not pile up per token)."""

    text: str = ""
    chunks: Sequence[str] | None = None
    delay: float = 0.0
    tokens: int | None = None
    send_usage: bool = True
    finish_reason: str = "stop"

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        if self.tokens is not None:
            return [("" if i == 0 else " ") + f"word{i}" for i in range(self.tokens)]
        return _WORD.findall(self.text)


INTERRUPTED = Reply("one two three four five six seven eight")
"""What a `Hang` or `Disconnect` without a `reply` streams before it cuts in."""


ScriptItem = Reply | Status | Hang | Disconnect | Raw | ErrorEvent


class ReceivedRequest(dict[str, Any]):
    """The JSON body of a received request (a dict), plus its method, path and headers."""

    def __init__(self, body: dict[str, Any], method: str, path: str, headers: dict[str, str]):
        super().__init__(body)
        self.method = method
        self.path = path
        self.headers = headers  # names in lower case


@dataclass
class _Plan:
    """What one chat completion will send, after `max_tokens` and `stop` are applied."""

    id: str
    model: str
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    delay: float
    send_usage: bool
    stop_reason: str | None = None  # the stop string that cut the text (as vLLM reports it)


def _error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# ---------------------------------------------------------------------------- OpenAI shapes


def _prompt_tokens(messages: list[Any]) -> int:
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        words += len(str(content or "").split())
    return max(words, 1)


def _plan(reply: Reply, body: dict[str, Any], request_id: str) -> _Plan:
    """Apply `stop` (cut the text at the first stop string) and `max_tokens` (cut the pieces)."""
    pieces, finish = reply.pieces(), reply.finish_reason
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
    text = "".join(pieces)
    found = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    cut, matched = min(found) if found else (-1, None)
    if cut >= 0:
        kept, used = [], 0
        for piece in pieces:
            if used + len(piece) >= cut:
                kept.append(piece[: cut - used])
                break
            kept.append(piece)
            used += len(piece)
        pieces, finish = [p for p in kept if p], "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and len(pieces) > limit:
        pieces, finish = pieces[:limit], "length"
    prompt = _prompt_tokens(body["messages"])
    plan = _Plan(request_id, body["model"], pieces, finish, prompt, reply.delay, reply.send_usage)
    plan.stop_reason = matched if finish == "stop" else None
    return plan


def _usage(plan: _Plan) -> dict[str, int]:
    completion = len(plan.pieces)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }


def _completion(plan: _Plan) -> dict[str, Any]:
    message = {"role": "assistant", "content": "".join(plan.pieces), "refusal": None}
    result: dict[str, Any] = {
        "id": plan.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
        ],
    }
    if plan.stop_reason is not None:
        result["choices"][0]["stop_reason"] = plan.stop_reason
    if plan.send_usage:
        result["usage"] = _usage(plan)
    return result


class _ChunkWriter:
    """Encodes one stream's SSE frames; a content frame costs one json.dumps of its text."""

    def __init__(self, plan: _Plan, include_usage: bool, chunked: bool) -> None:
        self.plan, self.include_usage, self.chunked = plan, include_usage, chunked
        self._base = {
            "id": plan.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": None,
        }
        head = json.dumps(self._base)[:-1]
        self._prefix = head + ', "choices": [{"index": 0, "delta": {"content": '
        tail = ', "usage": null' if include_usage else ""
        self._suffix = '}, "logprobs": null, "finish_reason": null}]' + tail + "}"

    def frame(self, data: str) -> bytes:
        raw = f"data: {data}\n\n".encode()
        return b"%x\r\n%s\r\n" % (len(raw), raw) if self.chunked else raw

    def content(self, piece: str) -> bytes:
        return self.frame(self._prefix + json.dumps(piece) + self._suffix)

    def event(self, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if finish is not None and self.plan.stop_reason is not None:
            choice["stop_reason"] = self.plan.stop_reason
        chunk: dict[str, Any] = {**self._base, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return self.frame(json.dumps(chunk))

    def usage(self) -> bytes:
        return self.frame(json.dumps({**self._base, "choices": [], "usage": _usage(self.plan)}))

    def end(self) -> bytes:
        done = self.frame("[DONE]")
        return done + b"0\r\n\r\n" if self.chunked else done


# ---------------------------------------------------------------------------- the server


class FakeUpstream:
    """The scripted server. Thread-safe to script from a test while it serves."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("fake-upstream-model",),
        default: ScriptItem | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.models = list(models)
        self.default: ScriptItem = default or Reply("Hello from the fake upstream.")
        self.requests: list[ReceivedRequest] = []
        self.connections_opened = 0
        # Every `fail_every`-th chat completion left to the default is answered 500 (0: none):
        # a flaky upstream for the routing benchmark (bench/failover.py).
        self.fail_every = 0
        self._defaults = 0
        self._script: deque[ScriptItem] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        self._start_error: BaseException | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def enqueue(self, *items: ScriptItem) -> None:
        """Script the next request(s): each item answers one chat completion, in order."""
        self._script.extend(items)

    # -- lifecycle

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fake-upstream", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, backlog=2048)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._start_error = exc
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    # -- one connection: requests in turn while the client keeps it alive

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_opened += 1
        try:
            while (request := await read_request(reader)) is not None:
                if not await self._respond(request, writer):
                    break
        except BadRequest as exc:
            writer.write(json_response(400, _error(str(exc), "invalid_request_error"), False))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): ending quietly keeps asyncio from logging every cancelled connection
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _respond(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close (or be dropped)."""
        body = self._record(request)
        keep = request.keep_alive
        path = request.path.rstrip("/")
        if path == "/v1/models" and request.method == "GET":
            writer.write(json_response(200, self._model_list(), keep))
            return keep
        if path != "/v1/chat/completions":
            message = f"Unknown request URL: {request.method} {request.path}"
            writer.write(json_response(404, _error(message, "invalid_request_error"), keep))
            return keep
        problem = self._auth_problem(request) or _validation_problem(request.method, body)
        if problem is not None or body is None:
            status, payload = problem or (400, None)
            writer.write(json_response(status, payload, keep))
            return keep
        item = self._script.popleft() if self._script else self._default_item()
        return await self._answer(item, request, body, writer)

    def _default_item(self) -> ScriptItem:
        self._defaults += 1
        if self.fail_every and self._defaults % self.fail_every == 0:
            return Status(500, _error("flaky upstream: planned failure", "server_error"))
        return self.default

    def _record(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            body = None
        received = body if isinstance(body, dict) else {}
        self.requests.append(
            ReceivedRequest(received, request.method, request.path, request.headers)
        )
        return body if isinstance(body, dict) else None

    def _model_list(self) -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake-upstream"}
            for name in self.models
        ]
        return {"object": "list", "data": data}

    def _auth_problem(self, request: Request) -> tuple[int, dict[str, Any]] | None:
        if self.api_key is None:
            return None
        given = request.headers.get("authorization", "")
        if given == f"Bearer {self.api_key}":
            return None
        message = (
            "Incorrect API key provided."
            if given
            else "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return 401, _error(message, "invalid_request_error", "invalid_api_key")

    # -- one chat completion, following the script item

    async def _answer(
        self,
        item: ScriptItem,
        request: Request,
        body: dict[str, Any],
        writer: asyncio.StreamWriter,
    ) -> bool:
        keep = request.keep_alive
        if isinstance(item, Status):
            payload = item.body
            if payload is None:
                payload = _error(f"fake upstream status {item.status}", "server_error")
            writer.write(json_response(item.status, payload, keep, item.headers))
            return keep
        if isinstance(item, Raw):
            kind = item.content_type or "text/event-stream"
            head = response_head(item.status, kind, keep_alive=keep, length=len(item.body))
            writer.write(head + item.body)
            return keep
        if isinstance(item, Hang) and (item.after_chunks == 0 or not body.get("stream")):
            await asyncio.sleep(item.seconds)
            return False
        if isinstance(item, Disconnect) and item.after_chunks == 0:
            return False
        self._counter += 1
        reply = item if isinstance(item, Reply) else item.reply or INTERRUPTED
        plan = _plan(reply, body, f"chatcmpl-fake{self._counter}")
        if not body.get("stream"):
            await asyncio.sleep(plan.delay * len(plan.pieces))
            return _send_completion(plan, item, keep, writer)
        interrupt = None if isinstance(item, Reply) else item
        return await _send_stream(plan, request, body, writer, interrupt)


def _validation_problem(method: str, body: dict[str, Any] | None) -> tuple[int, Any] | None:
    """The 4xx OpenAI would answer to this request, if any."""
    if method != "POST":
        return 405, _error("Method not allowed", "invalid_request_error")
    if body is None:
        return 400, _error(
            "We could not parse the JSON body of your request.", "invalid_request_error"
        )
    if not isinstance(body.get("model"), str):
        return 400, _error("you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, _error("'messages' must be a non-empty array", "invalid_request_error")
    limit = body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return 400, _error("max_tokens must be a positive integer", "invalid_request_error")
    return None


def _send_completion(
    plan: _Plan, item: ScriptItem, keep: bool, writer: asyncio.StreamWriter
) -> bool:
    data = json_response(200, _completion(plan), keep)
    if isinstance(item, Disconnect):  # a body shorter than its content-length, then a close
        writer.write(data[: len(data) - len(data) // 3])
        return False
    writer.write(data)
    return keep


async def _send_stream(
    plan: _Plan,
    request: Request,
    body: dict[str, Any],
    writer: asyncio.StreamWriter,
    interrupt: Hang | Disconnect | ErrorEvent | None,
) -> bool:
    """Stream SSE frames; a Hang, Disconnect or ErrorEvent cuts in after its `after_chunks`
    deltas."""
    chunked = request.version == "HTTP/1.1"  # else the stream is delimited by closing
    keep = request.keep_alive and chunked
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    frames = _ChunkWriter(plan, include_usage, chunked)
    head = response_head(200, "text/event-stream", keep_alive=keep, chunked=chunked)
    writer.write(head + frames.event({"role": "assistant", "content": "", "refusal": None}, None))
    pieces = plan.pieces if interrupt is None else plan.pieces[: interrupt.after_chunks]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for sent, piece in enumerate(pieces, 1):
        if plan.delay:
            await asyncio.sleep(max(0.0, started + sent * plan.delay - loop.time()))
        writer.write(frames.content(piece))
        await writer.drain()
    if isinstance(interrupt, Disconnect):
        return False  # the chunked body never ends: the client sees a truncated stream
    if isinstance(interrupt, Hang):
        await asyncio.sleep(interrupt.seconds)
        return False
    if isinstance(interrupt, ErrorEvent):
        error = _error(interrupt.message, "server_error")
        writer.write(frames.frame(json.dumps(error)) + frames.end())
        await writer.drain()
        return keep
    tail = frames.event({}, plan.finish_reason)
    if include_usage and plan.send_usage:
        tail += frames.usage()
    writer.write(tail + frames.end())
    await writer.drain()
    return keep


def main() -> None:
    """Serve from this process until interrupted (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--fail-every", type=int, default=0, help="answer every Nth with 500")
    args = parser.parse_args()
    upstream = FakeUpstream(api_key=args.api_key, port=args.port)
    upstream.default = Reply(tokens=args.tokens, delay=args.delay)
    upstream.fail_every = args.fail_every
    with upstream:
        print(upstream.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
