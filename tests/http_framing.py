"""HTTP/1.1 on asyncio streams, for the fake servers that speak it themselves: reading a
request (Content-Length or chunked body) and writing a response head or a JSON response.

Why it exists: tests/fake_upstream.py answers at the level of bytes (keep-alive, chunked
streams cut short, bodies shorter than their Content-Length), which a web framework would
not let it do; this is the framing it needs, apart from the OpenAI wire format it speaks.
"""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return connection != "close"
        return connection == "keep-alive"


class BadRequest(Exception):
    pass


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection, or None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("truncated request head") from exc
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest("bad request line") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await read_body(reader, headers)
    return Request(method, target.split("?", 1)[0], version, headers, body)


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


def response_head(
    status: int,
    content_type: str,
    *,
    keep_alive: bool,
    length: int | None = None,
    chunked: bool = False,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """A response head. Without `length` or `chunked` the body ends when the connection does."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {content_type}"]
    if length is not None:
        lines.append(f"content-length: {length}")
    elif chunked:
        lines.append("transfer-encoding: chunked")
    if not keep_alive:
        lines.append("connection: close")
    lines.extend(f"{name}: {value}" for name, value in (extra or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(
    status: int, payload: Any, keep_alive: bool, extra: Mapping[str, str] | None = None
) -> bytes:
    if isinstance(payload, bytes | str):
        data = payload.encode() if isinstance(payload, str) else payload
    else:
        data = json.dumps(payload).encode()
    head = response_head(
        status, "application/json", keep_alive=keep_alive, length=len(data), extra=extra
    )
    return head + data
