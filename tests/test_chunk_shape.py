"""The provider's fast read of the usual streamed chunk gives the text `json.loads` gives, and
leaves every other chunk to the full parser."""

from __future__ import annotations

import json

import pytest

from threadline.providers.chunk_shape import LEARN_AT_MOST, ChunkShape


def _chunk(text: object, **extra: object) -> dict[str, object]:
    choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice], **extra}


def _payload(chunk: object, **dumps: object) -> bytes:
    return b" " + json.dumps(chunk, **dumps).encode()  # as after `data:`


def _learnt(**dumps: object) -> ChunkShape:
    shape = ChunkShape()
    shape.learn(_payload(_chunk("Hello"), **dumps), _chunk("Hello"), "Hello")
    return shape


@pytest.mark.parametrize(
    "text",
    [" world", "", "é ünïcode 漢字 🙂", 'quote " and \\ backslash', "line\nbreak\ttab", "\u2028"],
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_chunk_of_the_learnt_shape_reads_as_json_loads_reads_it(text, ascii_only):
    shape = _learnt(ensure_ascii=ascii_only)
    payload = _payload(_chunk(text), ensure_ascii=ascii_only)
    assert shape.read(payload) == json.loads(payload)["choices"][0]["delta"]["content"] == text


@pytest.mark.parametrize(
    "payload",
    [
        _payload(_chunk("x", usage={"prompt_tokens": 1})),  # another shape: usage
        _payload({**_chunk("x"), "id": "chatcmpl-2"}),  # another stream's id
        _payload(_chunk(None)),  # no text
        _payload(_chunk(1)),
        b' {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        b'"delta": {"content": "a" "b"}, "logprobs": null, "finish_reason": null}]}',
        b' {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        b'"delta": {"content": "a", "b": "c"}, "logprobs": null, "finish_reason": null}]}',
        b' {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        b'"delta": {"content": "raw\ncontrol"}, "logprobs": null, "finish_reason": null}]}',
        b' {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        b'"delta": {"content": "bad \\x escape"}, "logprobs": null, "finish_reason": null}]}',
        b' {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, '
        b'"delta": {"content": "\xff\xfe"}, "logprobs": null, "finish_reason": null}]}',
        b" [DONE]",
    ],
)
def test_anything_else_is_left_to_the_full_parser(payload):
    assert _learnt().read(payload) is None


def test_nothing_is_read_before_a_shape_is_learnt_nor_learnt_from_an_ambiguous_chunk():
    assert ChunkShape().read(_payload(_chunk("x"))) is None
    # "content" twice: which one holds the text is not told by the bytes alone
    twice = {**_chunk("Hello"), "meta": {"content": "Hello"}}
    shape = ChunkShape()
    shape.learn(_payload(twice), twice, "Hello")
    assert shape.read(_payload({**_chunk("x"), "meta": {"content": "Hello"}})) is None
    # the span must hold the parsed text
    shape = ChunkShape()
    shape.learn(_payload(_chunk("Hello")), _chunk("Hello"), "Bye")
    assert shape.read(_payload(_chunk("x"))) is None


def test_a_stream_whose_shape_changes_is_learnt_again_a_few_times_only():
    shape = ChunkShape()
    for n in range(LEARN_AT_MOST + 1):  # `created` differs in every chunk
        chunk = {**_chunk("t"), "created": n}
        assert shape.read(_payload(chunk)) is None
        shape.learn(_payload(chunk), chunk, "t")
    assert shape.read(_payload({**_chunk("u"), "created": LEARN_AT_MOST - 1})) == "u"
    assert shape.read(_payload({**_chunk("u"), "created": LEARN_AT_MOST})) is None
