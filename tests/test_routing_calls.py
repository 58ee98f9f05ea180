"""Routing for the models that answer in one call: an image model and the embedder with
several upstreams (providers/routed_calls.py), on the fake images and embeddings servers
over real HTTP. A failure worth another attempt goes to the other upstream; a refusal of
the request does not; the state is what GET /api/admin/upstreams shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_embeddings import FakeEmbeddings
from tests.fake_images import FakeImages
from tests.faults import Hang, Status
from threadline.domain.errors import ModelError
from threadline.domain.image_generation import GenerationRequest
from threadline.providers.embeddings import build_embedder
from threadline.providers.registry import REGISTRY
from threadline.settings import EmbeddingConfig, ModelConfig


@pytest.fixture
def images() -> Iterator[tuple[FakeImages, FakeImages]]:
    with FakeImages(api_key=None) as one, FakeImages(api_key=None) as two:
        yield one, two


@pytest.fixture
def vectors() -> Iterator[tuple[FakeEmbeddings, FakeEmbeddings]]:
    with FakeEmbeddings(dim=8) as one, FakeEmbeddings(dim=8) as two:
        yield one, two


def _image_model(one: FakeImages, two: FakeImages) -> ModelConfig:
    return ModelConfig(
        provider="openai-compatible",
        kind="images",
        upstreams=[
            {"base_url": one.url, "name": "one", "weight": 1},
            {"base_url": two.url, "name": "two", "weight": 1},
        ],
        retry={"attempts": 1},
        circuit={"failures": 1, "open_seconds": 60},
    )


async def test_an_image_request_failing_on_one_upstream_is_made_by_the_other(images):
    one, two = images
    one.enqueue(Status(503))
    model = REGISTRY.image_model("pics", _image_model(one, two))
    try:
        made = await model.generate(GenerationRequest("a cat", 2, "1024x1024", "png"))
        again = await model.generate(GenerationRequest("a dog", 1, "1024x1024", "png"))
        state = {up["name"]: up for up in model.snapshot()}  # type: ignore[attr-defined]
    finally:
        await model.aclose()
    assert len(made) == 2 and len(again) == 1
    assert (len(one.requests), len(two.requests)) == (1, 2)  # its circuit opened: skipped
    assert state["one"]["circuit"] == "open" and state["two"]["circuit"] == "closed"
    assert (state["one"]["failures"], state["two"]["requests"]) == (1, 2)


async def test_an_image_request_the_upstream_refuses_is_not_retried(images):
    one, two = images
    one.enqueue(Status(400, {"error": {"message": "bad prompt"}}))
    model = REGISTRY.image_model("pics", _image_model(one, two))
    try:
        with pytest.raises(ModelError, match="upstream returned 400: bad prompt"):
            await model.generate(GenerationRequest("a cat", 1, "1024x1024", "png"))
    finally:
        await model.aclose()
    assert (len(one.requests), len(two.requests)) == (1, 0)


def _embeddings(one: FakeEmbeddings, two: FakeEmbeddings, **extra: object) -> EmbeddingConfig:
    return EmbeddingConfig(
        provider="openai-compatible",
        model="emb",
        upstreams=[{"base_url": one.url}, {"base_url": two.url}],  # named by host:port
        **extra,  # type: ignore[arg-type]
    )


async def test_embeddings_go_on_on_the_other_upstream_and_share_one_space(vectors):
    one, two = vectors
    one.enqueue(Status(500))
    two.enqueue(Hang(10))
    embedder = build_embedder(_embeddings(one, two, timeout_seconds=0.5))
    assert embedder is not None
    try:
        first = await embedder.embed(["hello", "world"], "passage")
        second = await embedder.embed(["hello"], "query")
        state = embedder.snapshot()  # type: ignore[attr-defined]
    finally:
        await embedder.aclose()
    assert first[0] == second[0] and len(first[0]) == 8 and embedder.dim == 8
    assert embedder.name == "openai-compatible:emb"
    # one: 500; two: hung (timed out); one again: vectors; then the next request
    assert len(one.requests) + len(two.requests) == 4
    assert [up["name"] for up in state] == [one.url.split("/")[2], two.url.split("/")[2]]
    assert sum(up["failures"] for up in state) == 2


def test_upstreams_are_named_by_host_and_port_and_told_apart():
    from threadline.providers.routed_calls import labels
    from threadline.settings import UpstreamConfig

    ups = [
        UpstreamConfig(base_url="http://gpu:8000/v1"),
        UpstreamConfig(base_url="http://gpu:8000/v2"),
        UpstreamConfig(base_url="https://api.example/v1", name="hosted"),
    ]
    assert labels(ups) == ["gpu:8000", "gpu:8000#2", "hosted"]


def test_embedding_upstreams_are_configured_like_a_models():
    with pytest.raises(ValueError, match="not both"):
        EmbeddingConfig(
            provider="openai-compatible",
            model="emb",
            base_url="http://a.example/v1",
            upstreams=[{"base_url": "http://b.example/v1"}],
        )
    with pytest.raises(ValueError, match='upstreams need provider = "openai-compatible"'):
        EmbeddingConfig(provider="local", upstreams=[{"base_url": "http://b.example/v1"}])


def test_an_image_model_refuses_what_only_chat_does():
    base = {"provider": "openai-compatible", "kind": "images", "base_url": "http://x/v1"}
    with pytest.raises(ValueError, match="fallbacks does not apply to an image model"):
        ModelConfig(**base, fallbacks=["other"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"timeout\.first_token_seconds does not apply"):
        ModelConfig(**base, timeout={"first_token_seconds": 5})  # type: ignore[arg-type]


async def test_the_memory_job_asks_its_model_through_routing_and_fallbacks():
    """The background extractor (`memories.model`) is routed like a reply: here the model's
    only upstream fails and its fallback reads the fact."""
    from tests.fake_upstream import FakeUpstream, Reply
    from threadline.domain.memories import Fact
    from threadline.services.catalog import ModelCatalog
    from threadline.services.memory_model import ModelExtractor

    with FakeUpstream() as one, FakeUpstream() as two:
        one.default = Status(500)
        two.default = Reply('["User\'s name is Bob."]')
        models = {
            "routed": ModelConfig(
                provider="openai-compatible",
                upstreams=[{"base_url": one.url}],
                fallbacks=["backup"],
            ),
            "backup": ModelConfig(provider="openai-compatible", base_url=two.url),
        }
        catalog = ModelCatalog(models, "routed", REGISTRY)
        try:
            facts = await ModelExtractor(catalog, "routed").extract("I am Bob", "Hi Bob")
        finally:
            await catalog.aclose()
    assert facts == [Fact("User's name is Bob.")]
    assert (len(one.requests), len(two.requests)) == (2, 1)  # retry.attempts = 2, then backup
