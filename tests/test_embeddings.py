"""Embedders: the bundled local model for real, and the openai-compatible one against a fake
upstream over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fake_embeddings import FakeEmbeddings, Vectors, fake_vector
from tests.faults import Disconnect, Hang, Raw, Status
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.providers.embeddings import (
    HashingEmbedder,
    LocalEmbedder,
    OpenAICompatibleEmbedder,
    build_embedder,
)
from threadline.settings import EmbeddingConfig

KEY = "sk-embed-secret-456"
KEY_ENV = "TEST_EMBEDDINGS_KEY"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def unit(vector: list[float]) -> list[float]:
    n = norm(vector)
    return [x / n for x in vector]


# ---- the local embedder, for real ------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder()
    yield embedder
    asyncio.run(embedder.aclose())


def test_local_embedder_loads_nothing_until_first_used():
    embedder = LocalEmbedder()
    assert not embedder.loaded
    assert embedder.name == "local:all-minilm-l6-v2"
    assert embedder.dim == 384
    assert not embedder.loaded


async def test_local_embedder_ranks_a_paraphrase_above_an_unrelated_sentence(local):
    query, paraphrase, unrelated = await local.embed(
        [
            "How do I reset my password?",
            "Steps to change the password of your account when you forgot it",
            "The train to Lisbon leaves at seven in the morning.",
        ],
        "passage",
    )
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3


async def test_local_embedder_retrieves_the_answering_passage_for_a_query(local):
    passages = [
        "Water boils at 100 degrees Celsius at sea level.",
        "The invoice is due thirty days after delivery.",
        "Python lists keep their items in insertion order.",
    ]
    (question,) = await local.embed(["When do I have to pay the bill?"], "query")
    vectors = await local.embed(passages, "passage")
    scores = [cosine(question, v) for v in vectors]
    assert scores.index(max(scores)) == 1


async def test_local_embedder_returns_unit_vectors_of_its_dim_in_order(local):
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(70)] + ["", "x" * 20000]
    vectors = await local.embed(texts, "passage")

    assert len(vectors) == len(texts)
    assert all(len(v) == local.dim == 384 for v in vectors)
    assert all(abs(norm(v) - 1.0) < 1e-4 for v in vectors)
    assert all(isinstance(x, float) for x in vectors[0])
    # batching does not change a text's vector: same text alone and in a batch of 70
    (alone,) = await local.embed([texts[42]], "passage")
    assert cosine(alone, vectors[42]) > 0.999
    assert await local.embed([], "query") == []


async def test_local_embedder_runs_off_the_event_loop(local):
    await local.embed(["warm"], "query")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await local.embed(
        [f"a longer passage to keep the model busy {i} " * 20 for i in range(12)], "passage"
    )
    elapsed = time.perf_counter() - started
    ticker.cancel()
    assert elapsed > 0.05 and ticks >= 3  # the loop kept running while the model worked


async def test_local_embedder_answers_a_query_while_it_embeds_passages(local):
    await local.embed(["warm"], "query")
    passages = asyncio.create_task(
        local.embed(
            [f"passage {i}: " + "some words of a long chunk " * 30 for i in range(16)], "passage"
        )
    )
    await asyncio.sleep(0.05)  # the passages have started
    (vector,) = await local.embed(["a question"], "query")
    assert not passages.done()  # the query did not wait for the document's chunks
    assert len(await passages) == 16 and len(vector) == 384


async def test_local_embedder_loads_and_runs_with_the_network_cut_off(monkeypatch):
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    embedder = LocalEmbedder()
    try:
        (vector,) = await embedder.embed(["offline"], "query")
    finally:
        await embedder.aclose()
    assert len(vector) == 384 and abs(norm(vector) - 1) < 1e-4


async def test_local_embedder_refuses_a_weights_file_that_is_not_the_pinned_one():
    embedder = LocalEmbedder()
    embedder.spec = dataclasses.replace(embedder.spec, weights_sha256="0" * 64)
    try:
        with pytest.raises(ModelError, match="is not the expected all-minilm-l6-v2 model file"):
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()


# ---- build_embedder --------------------------------------------------------------------


def test_build_embedder_follows_the_provider(monkeypatch):
    assert build_embedder(EmbeddingConfig(provider="none")) is None
    local = build_embedder(EmbeddingConfig())
    assert isinstance(local, LocalEmbedder) and not local.loaded

    monkeypatch.setenv(KEY_ENV, KEY)
    remote = build_embedder(
        EmbeddingConfig(
            provider="openai-compatible",
            base_url="http://127.0.0.1:9/v1",
            model="emb-1",
            api_key_env=KEY_ENV,
        )
    )
    assert isinstance(remote, OpenAICompatibleEmbedder)
    assert remote.name == "openai-compatible:emb-1"
    asyncio.run(remote.aclose())


def test_build_embedder_refuses_what_it_cannot_honour(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ModelError, match=f"environment variable {KEY_ENV}"):
        build_embedder(
            EmbeddingConfig(
                provider="openai-compatible",
                base_url="http://127.0.0.1:9/v1",
                model="emb-1",
                api_key_env=KEY_ENV,
            )
        )
    with pytest.raises(ValueError, match="bundled model"):
        build_embedder(EmbeddingConfig(model="bge-large"))


async def test_hashing_embedder_is_deterministic_and_lexical():
    embedder = HashingEmbedder(dim=64)
    a, b, c = await embedder.embed(["red apple pie", "apple pie red", "blue ocean"], "query")
    assert embedder.name == "hashing-test:64"
    assert abs(norm(a) - 1) < 1e-9 and cosine(a, b) > 0.99 and cosine(a, c) < 0.5


# ---- the openai-compatible embedder ----------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings(api_key=KEY, dim=8) as up:
        yield up


def make_remote(url: str, api_key: str | None = KEY, **config: object) -> OpenAICompatibleEmbedder:
    settings = EmbeddingConfig.model_validate(
        {
            "provider": "openai-compatible",
            "base_url": url,
            "model": "emb-1",
            "api_key_env": KEY_ENV,
            **config,
        }
    )
    return OpenAICompatibleEmbedder(settings, api_key=api_key)


@pytest.fixture
async def remote(upstream: FakeEmbeddings) -> AsyncIterator[OpenAICompatibleEmbedder]:
    embedder = make_remote(upstream.url, batch_size=3)
    yield embedder
    await embedder.aclose()


async def test_remote_sends_batches_and_returns_unit_vectors_in_order(upstream, remote):
    texts = [f"text {i}" for i in range(7)]
    assert remote.dim == 0  # not configured: learned from the first answer

    vectors = await remote.embed(texts, "passage")

    assert [r["input"] for r in upstream.requests] == [texts[0:3], texts[3:6], texts[6:7]]
    (first, *_) = upstream.requests
    assert first.path == "/v1/embeddings"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first == {"model": "emb-1", "input": texts[0:3], "encoding_format": "float"}
    assert remote.dim == 8
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(unit(fake_vector(text, 8)))
        assert abs(norm(vector) - 1) < 1e-9


async def test_remote_puts_vectors_back_in_index_order(upstream, remote):
    upstream.enqueue(Vectors(shuffle=True))
    vectors = await remote.embed(["a", "b", "c"], "query")
    assert vectors == [pytest.approx(unit(fake_vector(t, 8))) for t in "abc"]


async def test_remote_learns_dim_by_probing(upstream, remote):
    assert await remote.probe_dim() == 8
    assert len(upstream.requests) == 1
    assert await remote.probe_dim() == 8
    assert len(upstream.requests) == 1


async def test_remote_refuses_vectors_of_another_length(upstream):
    embedder = make_remote(upstream.url, dim=16)
    try:
        with pytest.raises(
            ModelError, match=r"8-dimensional vectors, but \[embeddings\] dim is 16"
        ):
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (Status(500, {"error": {"message": "GPU on fire"}}), "upstream returned 500: GPU on fire"),
        (Status(404), "upstream returned 404: failed"),
        (Status(404, {}), r"404: Not Found \(check base_url and model\)"),
        (Status(429, {"error": {"message": "slow down"}}), "429: slow down"),
        (Raw(b"<html>oops</html>", "text/html"), "not JSON"),
        (Raw(b'{"object": "list"}'), "not an embeddings list"),
        (Raw(b'{"data": [{"index": 0, "embedding": "AAAA"}]}'), "base64 answers"),
        (Raw(b'{"data": [{"index": 0, "embedding": [0, 0]}]}'), "zero or non-finite vector"),
        (Raw(b'{"data": [{"index": 0, "embedding": [1, "x"]}]}'), "not a list of numbers"),
        (Raw(b'{"data": [{"index": 3, "embedding": [1, 2]}]}'), "missing or repeated indexes"),
        (Vectors(drop=1), "returned 0 vectors for 1 texts"),
        (Disconnect(), "closed the connection unanswered"),
    ],
)
async def test_remote_failures_are_model_errors(upstream, remote, script, expected):
    upstream.enqueue(script)
    with pytest.raises(ModelError, match=expected) as caught:
        await remote.embed(["a"], "query")
    assert type(caught.value) is ModelError
    assert caught.value.message.startswith("embeddings 'openai-compatible:emb-1': ")
    assert KEY not in caught.value.message


async def test_remote_wrong_key_is_reported_without_the_key(upstream):
    embedder = make_remote(upstream.url, api_key="sk-wrong-key-789")
    try:
        with pytest.raises(ModelError) as caught:
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()
    message = caught.value.message
    assert (
        f"upstream returned 401: it rejected the configured API key (check the key in ${KEY_ENV})"
        in message
    )
    assert "sk-wrong-key-789" not in message and KEY not in message


async def test_remote_masks_a_key_the_upstream_echoes(upstream, remote):
    upstream.enqueue(Status(400, {"error": {"message": f"bad request from key {KEY}"}}))
    with pytest.raises(ModelError) as caught:
        await remote.embed(["a"], "query")
    assert "bad request from key ***" in caught.value.message
    assert KEY not in caught.value.message


async def test_remote_times_out_when_the_upstream_hangs(upstream):
    embedder = make_remote(upstream.url, timeout_seconds=0.3)
    upstream.enqueue(Hang(10))
    started = time.perf_counter()
    try:
        with pytest.raises(ModelTimeout, match=r"did not answer within 0.3s") as caught:
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()
    assert time.perf_counter() - started < 3
    assert caught.value.status == 504 and KEY not in caught.value.message


async def test_remote_reports_a_refused_connection():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = make_remote(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ModelError, match=f"cannot connect to upstream 127.0.0.1:{port}"):
            await embedder.embed(["a"], "query")
    finally:
        await embedder.aclose()


async def test_remote_needs_no_request_for_no_texts(upstream, remote):
    assert await remote.embed([], "passage") == []
    assert upstream.requests == []
