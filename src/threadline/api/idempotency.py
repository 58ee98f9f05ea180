"""The `Idempotency-Key` header on the POSTs that create or charge (the rules are in
services/idempotency.py).

A route takes part by listing `IDEMPOTENT` in its `dependencies=` (which also documents the
header in `/openapi.json`); the dialect's route class then sends its requests that carry the
header through `handle()`, before FastAPI parses anything: the caller is authenticated (the
key is the API key's), the request fingerprinted, the key claimed, and the handler runs (or
the stored answer is sent, marked `Idempotent-Replayed: true`). Handlers know nothing of it.

The fingerprint is what makes "the same request": method, path, query parameters (in any
order), the `IB-Context` header, and the body; a JSON body as its canonical JSON (so key
order and spacing do not matter), a multipart body with its boundary blanked out (a client
draws a new one for every attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

import structlog
from fastapi import Depends, Header, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.responses import StreamingResponse

from threadline.api.deps import get_principal
from threadline.services.idempotency import KEY_MAX_CHARS, KEY_PATTERN, acting, check_key

if TYPE_CHECKING:
    from threadline.container import Container

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
IN_THREAD_BYTES = 64 * 1024  # a bigger body is canonicalised and hashed off the event loop

Handler = Callable[[Request], Awaitable[Response]]


async def _declared(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=KEY_MAX_CHARS,
            pattern=KEY_PATTERN,
            description="Send the request again with the same key (printable ASCII, at most "
            f"{KEY_MAX_CHARS} characters; a UUID is a good key) and get the first answer "
            "instead of a second run, for 24 hours. Scoped to your API key.",
        ),
    ] = None,
) -> None:
    """Declares the header; `handle()` does the work before the route's dependencies run."""


IDEMPOTENT = Depends(_declared)


def responses(error: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The statuses an idempotent route may add, with the dialect's error body `error`."""
    return {
        409: {**error, "description": "A request with this Idempotency-Key is still running"},
        422: {**error, "description": "The Idempotency-Key was used for a different request"},
    }


def takes_part(dependencies: Sequence[Any] | None) -> bool:
    return any(
        isinstance(d, DependsParam) and d.dependency is _declared for d in dependencies or ()
    )


async def handle(request: Request, handler: Handler) -> Response:
    raw = request.headers.get(HEADER)
    if raw is None:
        return await handler(request)
    key = check_key(raw)
    container: Container = request.app.state.container
    principal = await get_principal(request)
    fingerprint = await _fingerprint(request)
    service = container.idempotency
    ticket = await service.begin(
        principal.key_id, key, fingerprint, f"{request.method} {request.url.path}"
    )
    if ticket.answer is not None:
        answer = ticket.answer
        headers = {REPLAYED: "true"}
        if answer.content_type:
            headers["content-type"] = answer.content_type
        return Response(answer.body, status_code=answer.status_code, headers=headers)
    with acting(ticket):
        try:
            response = await handler(request)
        except BaseException:
            with _logged("releasing"):  # the request's own error is what the caller gets
                await asyncio.shield(service.abandoned(ticket))
            raise
    if not ticket.held:
        response.headers[REPLAYED] = "true"
        return response
    body = None if isinstance(response, StreamingResponse) else bytes(response.body)
    # the answer is sent even if it cannot be kept: a retry then waits for the key's lock
    with _logged("storing"):
        content_type = response.headers.get("content-type")
        await service.answered(ticket, response.status_code, content_type, body)
    return response


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception(f"idempotency key: {what} the answer failed")


async def _fingerprint(request: Request) -> str:
    body = await request.body()
    query = sorted(parse_qsl(request.url.query, keep_blank_values=True))
    head = [request.method, request.url.path, query, request.headers.get("ib-context")]
    content_type = request.headers.get("content-type", "")
    if len(body) > IN_THREAD_BYTES:
        return await asyncio.to_thread(_digest, head, content_type, body)
    return _digest(head, content_type, body)


def _digest(head: list[Any], content_type: str, body: bytes) -> str:
    digest = hashlib.sha256(json.dumps(head).encode())
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    digest.update(b"\0" + media_type.encode("latin-1", "replace") + b"\0")
    digest.update(_canonical(media_type, params, body))
    return digest.hexdigest()


def _canonical(media_type: str, params: str, body: bytes) -> bytes:
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            value = json.loads(body)
        except ValueError:
            return body
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    if media_type == "multipart/form-data":
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "boundary" and value.strip('"'):
                return body.replace(value.strip('"').encode("latin-1", "replace"), b"")
    return body
