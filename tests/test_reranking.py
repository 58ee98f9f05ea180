"""Retrieval's second stage (issue 18, item 3): a reranker behind Cohere's and Jina's rerank
API reorders the fused candidates (`[rerank]`, `documents.rerank` = off / on / auto).

What a user would see go wrong: the reranker's favourite page not cited first; a reranker
that is down failing every document chat in "auto"; a document the question names pushed
below its twin; the API key in an error; a setting that does nothing. The upstream is a
real HTTP server on 127.0.0.1 (tests/fake_reranker.py); searches run on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.fake_reranker import FakeReranker, Scores
from tests.faults import Disconnect, Hang, Raw, Status
from tests.files import pdf
from tests.helpers import make_settings, make_tenant, texts_as_chunks, until_done
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.providers.rerankers import CohereCompatibleReranker, build_reranker
from threadline.services.reranking import SecondStage
from threadline.services.retrieval import Retriever
from threadline.settings import RerankConfig
from threadline.startup import features
from threadline.storage.chunks import SqlChunkIndex

KEY = "sk-rerank-test-123"
KEY_ENV = "THREADLINE_TEST_RERANK_KEY"


@pytest.fixture
def upstream() -> Iterator[FakeReranker]:
    with FakeReranker(api_key=KEY) as up:
        yield up


def config(url: str, **values: object) -> RerankConfig:
    return RerankConfig.model_validate(
        {
            "provider": "cohere-compatible",
            "base_url": url,
            "model": "rr-1",
            "api_key_env": KEY_ENV,
            **values,
        }
    )


def reranker(url: str, **values: object) -> CohereCompatibleReranker:
    return CohereCompatibleReranker(config(url, **values), api_key=KEY)


@pytest.fixture
async def scorer(upstream: FakeReranker) -> AsyncIterator[CohereCompatibleReranker]:
    """A reranker of the default settings against `upstream`."""
    client = reranker(upstream.url)
    yield client
    await client.aclose()


# ---- the provider ----------------------------------------------------------------------


async def test_scores_come_back_in_the_passages_order_whatever_the_answers_order(upstream, scorer):
    upstream.enqueue(Scores(shuffle=True))
    scores = await scorer.score("red apple", ["blue sea", "red apple pie", "an apple"])
    assert scores == [0.0, 1.0, 0.5]
    assert upstream.paths == ["/v1/rerank"]
    assert upstream.requests == [
        {
            "model": "rr-1",
            "query": "red apple",
            "documents": ["blue sea", "red apple pie", "an apple"],
            "top_n": 3,
            "return_documents": False,
        }
    ]


async def test_long_texts_are_cut_and_no_passages_need_no_request(upstream):
    client = reranker(upstream.url, max_passage_chars=100)
    try:
        assert await client.score("q", []) == []
        assert upstream.requests == []
        await client.score("q" * 1_000_000, ["x" * 5000, "short"])
    finally:
        await client.aclose()
    [request] = upstream.requests
    assert [len(d) for d in request["documents"]] == [100, 5]
    assert len(request["query"]) == 100


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (Status(500, {"error": {"message": "GPU on fire"}}), "upstream returned 500: GPU on fire"),
        (Status(401), "rejected the configured API key"),
        (Raw(b"<html>oops</html>", "text/html"), "not JSON"),
        (Raw(b'{"data": []}'), "holds no results list"),
        (Scores(drop=1), "scored 1 of 2 passages"),
        (
            Raw(b'{"results": [{"index": 0, "relevance_score": 1}, {"index": 0}]}'),
            "missing or repeated indexes",
        ),
        (Raw(b'{"results": [{"index": 0, "relevance_score": "high"}]}'), "not a number"),
        (Raw(b'{"results": [{"index": 0, "relevance_score": NaN}]}'), "not finite"),
        (Disconnect(), "closed the connection unanswered"),
        (Raw(b'{"results": [' + b" " * (2 << 20) + b"]}"), "answered more than 1 MB"),
    ],
)
async def test_failures_are_model_errors_that_name_the_reranker(upstream, scorer, script, expected):
    upstream.enqueue(script)
    with pytest.raises(ModelError, match=expected) as caught:
        await scorer.score("q", ["a", "b"])
    assert caught.value.message.startswith("reranker 'cohere-compatible:rr-1': ")
    assert KEY not in caught.value.message


async def test_a_hanging_reranker_times_out(upstream):
    client = reranker(upstream.url, timeout_seconds=0.3)
    upstream.enqueue(Hang(10))
    started = time.perf_counter()
    try:
        with pytest.raises(ModelTimeout, match=r"did not answer within 0.3s"):
            await client.score("q", ["a"])
    finally:
        await client.aclose()
    assert time.perf_counter() - started < 3


def test_settings_refuse_what_they_cannot_honour(monkeypatch, tmp_path):
    assert build_reranker(RerankConfig()) is None
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ModelError, match=f"environment variable {KEY_ENV}, which is not set"):
        build_reranker(config("http://127.0.0.1:9/v1"))
    with pytest.raises(ValidationError, match="needs base_url and model"):
        RerankConfig(provider="cohere-compatible", model="rr-1")
    with pytest.raises(ValidationError, match=r'documents\.rerank = "on" needs a reranker'):
        make_settings(tmp_path, "sqlite+aiosqlite:///x.db", documents={"rerank": "on"})


def test_the_startup_lines_say_whether_search_is_reranked(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    url = "sqlite+aiosqlite:///x.db"
    rerank = {"provider": "cohere-compatible", "base_url": "http://r:1/v1", "model": "rr-1"}
    lines = features(make_settings(tmp_path, url, rerank=rerank))
    assert "reranking    on, cohere-compatible rr-1 (documents.rerank = auto)" in lines
    off = make_settings(tmp_path, url, rerank=rerank, documents={"rerank": "off"})
    assert any(
        line.startswith("reranking    off (documents.rerank = off") for line in features(off)
    )


# ---- the stage in retrieval -------------------------------------------------------------

MANUAL = [
    "Rotate the frobnicator: rotate, rotate the frobnicator and rotate it again.",
    "Cleaning the frobnicator with a dry cloth.",
    "Unrelated licence terms.",
    "To rotate the frobnicator quietly, hold the hush key while it turns.",
]
QUESTION = "How do I rotate the frobnicator?"


async def manual_index(db, name: str = "org-rerank"):
    tenant = await make_tenant(db, name)
    index = SqlChunkIndex(db)
    document = await tenant.document("manual.pdf")
    await index.replace_chunks(tenant.org, document, texts_as_chunks(document, MANUAL), None, None)
    return tenant, index, document


async def test_the_reranker_puts_its_best_candidate_first(db, upstream, scorer):
    tenant, index, document = await manual_index(db)
    upstream.favour("hush")
    fused = await Retriever(index, None).search(tenant.org, [document], QUESTION, limit=3)
    assert fused[0].ordinal == 0  # the fusion: the chunk saying "rotate" most
    stage = SecondStage(scorer, "auto", candidates=30)
    retriever = Retriever(index, None, stage)
    hits = await retriever.search(tenant.org, [document], QUESTION, limit=3)
    assert hits[0].ordinal == 3
    [request] = upstream.requests
    assert request["query"] == QUESTION
    assert request["documents"][0] == f"manual.pdf\n{MANUAL[0]}"  # the name, then the text
    off = await retriever.search(tenant.org, [document], QUESTION, limit=3, rerank=False)
    assert [h.ordinal for h in off] == [h.ordinal for h in fused]
    assert len(upstream.requests) == 1


async def test_only_the_first_candidates_are_scored_and_off_sends_nothing(db, upstream, scorer):
    tenant, index, document = await manual_index(db)
    stage = SecondStage(scorer, "auto", candidates=2)
    await Retriever(index, None, stage).search(tenant.org, [document], QUESTION, limit=3)
    assert len(upstream.requests[0]["documents"]) == 2
    off = SecondStage(scorer, "off", candidates=30)
    await Retriever(index, None, off).search(tenant.org, [document], QUESTION, limit=3)
    assert len(upstream.requests) == 1


async def test_auto_keeps_the_fused_order_when_the_reranker_fails_and_rests_it(
    db, upstream, scorer
):
    tenant, index, document = await manual_index(db)
    upstream.favour("hush")
    upstream.enqueue(Status(503, {"error": {"message": "overloaded"}}))
    now = [1000.0]
    stage = SecondStage(scorer, "auto", candidates=30, cool_down=30, clock=lambda: now[0])
    auto = Retriever(index, None, stage)
    with capture_logs() as logs:
        hits = await auto.search(tenant.org, [document], QUESTION, limit=3)
    assert hits[0].ordinal == 0
    [warning] = [e for e in logs if e["event"].startswith("rerank failed")]
    assert "overloaded" in warning["error"] and KEY not in str(warning)
    # a reranker that failed is left alone for the cool-down, then asked again
    now[0] += 29
    assert (await auto.search(tenant.org, [document], QUESTION, limit=3))[0].ordinal == 0
    assert len(upstream.requests) == 1
    now[0] += 2
    assert (await auto.search(tenant.org, [document], QUESTION, limit=3))[0].ordinal == 3
    assert len(upstream.requests) == 2


async def test_on_fails_the_search_when_the_reranker_fails(db, upstream, scorer):
    tenant, index, document = await manual_index(db)
    upstream.enqueue(Status(503, {"error": {"message": "overloaded"}}))
    on = Retriever(index, None, SecondStage(scorer, "on", candidates=30))
    with pytest.raises(ModelError, match="overloaded"):
        await on.search(tenant.org, [document], QUESTION, limit=3)


async def test_a_named_documents_pages_stay_above_its_twins_whatever_the_scores(
    db, upstream, scorer
):
    tenant = await make_tenant(db, "org-rerank-named")
    index = SqlChunkIndex(db)
    ids = {}
    for name in ("alpha-guide.pdf", "beta-guide.pdf"):
        ids[name] = await tenant.document(name)
        await index.replace_chunks(
            tenant.org, ids[name], texts_as_chunks(ids[name], MANUAL), None, None
        )
    upstream.favour("beta")  # every beta chunk's passage starts with its name
    retriever = Retriever(index, None, SecondStage(scorer, "auto", candidates=30))
    question = "In alpha-guide.pdf, how do I rotate the frobnicator quietly?"
    hits = await retriever.search(tenant.org, list(ids.values()), question, limit=6)
    documents = [h.document_id for h in hits]
    first_beta = documents.index(ids["beta-guide.pdf"])
    assert set(documents[:first_beta]) == {ids["alpha-guide.pdf"]}
    assert hits[0].ordinal == 3  # within alpha's pages the reranker's order holds


# ---- through the API ---------------------------------------------------------------------

PAGES = [
    "Rotate the frobnicator: rotate, rotate the frobnicator and rotate it again.",
    "Cleaning the frobnicator with a dry cloth and rotate it.",
    "To rotate the frobnicator quietly, hold the hush key while it turns.",
]


@pytest.fixture
def rerank_mode() -> str:
    return "auto"


@pytest.fixture
def settings(tmp_path, db_url, upstream, monkeypatch, rerank_mode):
    monkeypatch.setenv(KEY_ENV, KEY)
    rerank = {
        "provider": "cohere-compatible",
        "base_url": upstream.url,
        "model": "rr-1",
        "api_key_env": KEY_ENV,
    }
    return make_settings(
        tmp_path,
        db_url,
        rerank=rerank,
        embeddings={"provider": "none"},
        documents={"rerank": rerank_mode},
    )


async def ask_about_a_pdf(client, admin, tmp_path):
    data = pdf(tmp_path, PAGES, name="frob.pdf").read_bytes()
    files = {"asset": ("frob.pdf", data, "application/pdf")}
    r = await client.post("/api/assets", headers={"API-KEY": admin["API-KEY"]}, files=files)
    asset_id = r.json()["asset"]["uuid"]
    assert (await until_done(client, admin, asset_id))["status"] == "COMPLETE"
    return await client.post(
        "/api/chat-with-ai",
        headers=admin,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": QUESTION, "attachments": {"files": [asset_id]}},
        },
    )


async def test_a_document_chat_cites_the_reranked_page_first(
    client, admin, fakes, upstream, tmp_path
):
    upstream.favour("hush")
    fakes["gpt-4o-mini"].enqueue(["Hold the hush key."])
    r = await ask_about_a_pdf(client, admin, tmp_path)
    assert r.status_code == 200, r.text
    citations = r.json()["aiRecord"]["aiRecordDetail"]["citations"]
    assert citations[0]["page"] == 3 and "hush key" in citations[0]["excerpt"]
    request = upstream.requests[-1]
    assert request["query"] == QUESTION
    # each passage opens with its chunk's context line: file name · title (· heading)
    assert all(d.startswith("frob.pdf · Quarterly report") for d in request["documents"])


@pytest.mark.parametrize("rerank_mode", ["on"])
async def test_with_rerank_on_a_failing_reranker_fails_the_chat_saying_why(
    client, admin, fakes, upstream, tmp_path
):
    upstream.enqueue(Status(503, {"error": {"message": "overloaded"}}))
    fakes["gpt-4o-mini"].enqueue(["never sent"])
    r = await ask_about_a_pdf(client, admin, tmp_path)
    assert r.status_code == 502
    assert "reranker 'cohere-compatible:rr-1'" in r.text and "overloaded" in r.text
    assert KEY not in r.text
