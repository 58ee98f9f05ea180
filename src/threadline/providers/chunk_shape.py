"""The usual streamed chunk read without parsing all of it.

Why it exists: an OpenAI-compatible server sends one `chat.completion.chunk` per token, and
within one stream they are byte for byte the same but for the text they carry
(`{"id":"chatcmpl-1",...,"choices":[{"index":0,"delta":{"content":"word"},...}]}`). Decoding
each with `json.loads` was a good part of a stream's CPU. `ChunkShape` learns that shape from
a chunk the full parser has read, proves it, and then reads a chunk of the same shape by
checking its two fixed ends and decoding only the JSON string between them, with the same
string scanner `json.loads` uses. Anything else (another shape, an escape the scanner refuses,
a finish reason, usage, an error) goes to the full parser, so the text read is always the
one `json.loads` would give.

    shape = ChunkShape()
    text = shape.read(payload)            # None: not the learnt shape, parse it fully
    shape.learn(payload, chunk, text)     # after a full parse of a plain text chunk
"""

from __future__ import annotations

import json
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

LEARN_AT_MOST = 4  # shapes learnt per stream (a server whose chunks all differ: give up)
_KEY = '"content"'


class ChunkShape:
    __slots__ = ("_head", "_learnt", "_size", "_tail")

    def __init__(self) -> None:
        self._head = b""
        self._tail = b""
        self._size = 0  # len(head) + len(tail); 0: nothing learnt
        self._learnt = 0

    def read(self, payload: bytes) -> str | None:
        """The text of a chunk of the learnt shape; None when it is not one."""
        size = self._size
        if not size or len(payload) < size + 2:
            return None
        if not (payload.startswith(self._head) and payload.endswith(self._tail)):
            return None
        middle = payload[len(self._head) : len(payload) - len(self._tail)]
        if middle[:1] != b'"':
            return None
        try:
            literal = middle.decode("utf-8", "surrogatepass")  # as json.loads decodes bytes
            text, end = scanstring(literal, 1)
        except ValueError:  # UnicodeDecodeError is one
            return None
        return text if end == len(literal) else None

    def learn(self, payload: bytes, chunk: dict[str, Any], text: str) -> None:
        """Learn the shape of `payload`, a chunk the full parser read as `chunk` with `text`
        at `choices[0].delta.content` and nothing else that counts (no error, usage or
        finish reason: the caller checks). The shape is kept only once a probe proves that the
        span found holds that text and nothing else."""
        if self._learnt >= LEARN_AT_MOST or not text:
            return
        self._learnt += 1
        try:
            doc = payload.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return
        at = doc.find(_KEY)
        if at < 0 or doc.find(_KEY, at + 1) >= 0:
            return
        start = at + len(_KEY)
        while start < len(doc) and doc[start] in " \t\r\n":
            start += 1
        if doc[start : start + 1] != ":":
            return
        start += 1
        while start < len(doc) and doc[start] in " \t\r\n":
            start += 1
        if doc[start : start + 1] != '"':
            return
        try:
            value, end = scanstring(doc, start + 1)
        except ValueError:
            return
        if value != text:
            return
        head = doc[:start].encode("utf-8", "surrogatepass")
        tail = doc[end:].encode("utf-8", "surrogatepass")
        if not _proven(head, tail, chunk, text):
            return
        self._head, self._tail, self._size = head, tail, len(head) + len(tail)


def _proven(head: bytes, tail: bytes, chunk: dict[str, Any], text: str) -> bool:
    """Whether another string between `head` and `tail` parses as `chunk` with only its
    text changed: then the span is that text's string and nothing else."""
    probe = "probe" if text != "probe" else "other"
    try:
        parsed = json.loads(head + f'"{probe}"'.encode() + tail)
        choice = parsed["choices"][0]
        if choice["delta"]["content"] != probe:
            return False
        choice["delta"]["content"] = text
    except (ValueError, LookupError, TypeError):
        return False
    return bool(parsed == chunk)
