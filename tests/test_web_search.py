"""Web search (1min.ai `webSearchSettings`, 001_*, and the AI Feature API's flat `webSearch`,
002_*): a fake search service on 127.0.0.1 speaking SearXNG's, Brave's and Tavily's real
protocols (and failing on cue), result pages served by a real page server and fetched through
the SSRF-safe fetcher, the model's grounding, and the record's `searchContentList`. The spec's
examples are sent verbatim (host and key changed). Tests that check what is stored run on
SQLite and PostgreSQL; the rest on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import requests
from sqlalchemy import select

from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import count, make_settings, sse_events
from tests.live_server import LiveServer, free_port
from tests.page_server import ARTICLE_PHRASE, SECRET_ERROR, PageServer
from tests.search_server import Hit, SearchEngine
from threadline.api.dialects.oneminai.encode import citation, search_content
from threadline.container import create_app
from threadline.domain.errors import SearchFailed
from threadline.settings import FetchSettings, ModelConfig, SearchSettings, Settings
from threadline.storage.tables import ai_records
from threadline.tools.search import SearxngSearcher, build_searcher

CHAT = "/api/chat-with-ai"
KEY_ENV = "THREADLINE_TEST_SEARCH_KEY"
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# 001_*, "Chat with Web Search" (cURL), verbatim
WEB_SEARCH_EXAMPLE = {
    "type": "UNIFY_CHAT_WITH_AI",
    "model": "gpt-4o-mini",
    "promptObject": {
        "prompt": "What are the latest developments in AI?",
        "settings": {"webSearchSettings": {"webSearch": True, "numOfSite": 3, "maxWord": 1000}},
    },
}
# 002_*, "Chat Without Context", verbatim
FEATURE_EXAMPLE = {
    "type": "CHAT_WITH_AI",
    "model": "gpt-4o-mini",
    "promptObject": {
        "prompt": "Tell me about artificial intelligence",
        "isMixed": False,
        "webSearch": True,
        "numOfSite": 1,
        "maxWord": 500,
    },
}


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


@pytest.fixture(scope="module")
def engine() -> Iterator[SearchEngine]:
    with SearchEngine() as server:
        yield server


@pytest.fixture(autouse=True)
def hits(engine: SearchEngine, site: PageServer) -> list[Hit]:
    """Every test starts with these four results and no cues."""
    engine.results = [
        Hit("The Tide Mill", site.url("/article"), "A tide mill on the river Deben."),
        Hit("Mill notes", site.url("/notes.txt"), "Notes about the mill."),
        Hit("Gone", site.url("/missing"), "A page that is gone."),
        Hit("Fourth", site.url("/host"), "Not asked for with numOfSite 3."),
    ]
    engine.requests.clear()
    while engine.next_cue():
        pass
    return engine.results


@pytest.fixture
def search_config(
    request: pytest.FixtureRequest, engine: SearchEngine, monkeypatch: pytest.MonkeyPatch
) -> SearchSettings:
    """`[search]` for the fake engine: searxng unless a test asks for another (or None)."""
    provider = getattr(request, "param", "searxng")
    if provider is None:
        return SearchSettings()
    monkeypatch.setenv(KEY_ENV, engine.api_key)
    key_env = KEY_ENV if provider in ("brave", "tavily") else None
    return SearchSettings(
        provider=provider, base_url=engine.url, api_key_env=key_env, timeout_seconds=2
    )


@pytest.fixture
def settings(
    tmp_path: Path, db_url: str, site: PageServer, search_config: SearchSettings
) -> Settings:
    fetch = FetchSettings(allow_private_hosts=[site.host_port], timeout_seconds=5)
    return make_settings(tmp_path, db_url, fetch=fetch, search=search_config)


def with_search(prompt: str, **web: Any) -> dict[str, Any]:
    settings = {"webSearchSettings": {"webSearch": True, **web}}
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt, "settings": settings},
    }


async def ask(client, admin, fakes, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Send a chat; the model's system message and the aiRecord."""
    fakes["gpt-4o-mini"].enqueue(["Per [S1], the mill ground grain."])
    r = await client.post(CHAT, headers=admin, json=body)
    assert r.status_code == 200, r.text
    messages = fakes["gpt-4o-mini"].requests[-1].messages
    assert messages[0].role == "system"
    return messages[0].content, r.json()["aiRecord"]


# ---- the spec's examples ---------------------------------------------------------------


async def test_web_search_example_grounds_the_reply_and_fills_search_content_list(
    client, admin, fakes, container, engine, site
):
    fakes["gpt-4o-mini"].enqueue(["The mill ", "ground grain [S1]."])
    r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=WEB_SEARCH_EXAMPLE)
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["content", "content", "result", "done"]
    record = events[2][1]["aiRecord"]
    assert record["aiRecordDetail"]["resultObject"] == ["The mill ground grain [S1]."]

    [seen] = engine.requests
    assert (seen.method, seen.path) == ("GET", "/search")
    assert seen.query == {"q": "What are the latest developments in AI?", "format": "json"}

    prompt_object = record["aiRecordDetail"]["promptObject"]
    assert prompt_object["prompt"] == "What are the latest developments in AI?"
    sent = WEB_SEARCH_EXAMPLE["promptObject"]["settings"]["webSearchSettings"]
    assert prompt_object["settings"]["webSearchSettings"] == sent
    assert prompt_object["linkContentList"] == []
    first, second, third = prompt_object["searchContentList"]  # numOfSite 3: not the 4th
    assert first["title"] == "The Tide Mill" and first["url"] == site.url("/article")
    assert first["snippet"] == "A tide mill on the river Deben."
    assert first["status"] == "ok" and first["wordCount"] > 40 and not first["truncated"]
    assert ARTICLE_PHRASE[:30] in first["content"]
    assert second["status"] == "ok" and second["content"] == "Plain notes about the tide mill."
    assert third == {
        "title": "Gone",
        "url": site.url("/missing"),
        "snippet": "A page that is gone.",
        "status": "error",
        "reason": "the server answered HTTP 404",
    }

    system = fakes["gpt-4o-mini"].requests[-1].messages[0].content
    assert "cite the ones you use as [S1], [S2]" in system
    assert f"[S1] The Tide Mill — {site.url('/article')}" in system and ARTICLE_PHRASE in system
    assert f"[S2] Mill notes — {site.url('/notes.txt')}" in system
    assert (
        f"[S3] Gone — {site.url('/missing')}: the page could not be read (the server answered "
        "HTTP 404). The search engine's snippet of it: A page that is gone."
    ) in system
    assert SECRET_ERROR not in system and "Fourth" not in system

    stored = await container.record_store.get(UUID(record["teamId"]), UUID(record["uuid"]))
    assert stored is not None
    assert stored.sources.search is not None
    searched = [search_content(s) for s in stored.sources.search]
    assert searched == prompt_object["searchContentList"]

    # Every result the model was given is a citation, numbered as the model was told: the two
    # pages read, and the snippet of the one that could not be read.
    citations = record["aiRecordDetail"]["citations"]
    assert [(c["sourceId"], c["title"], c["url"]) for c in citations] == [
        ("S1", "The Tide Mill", site.url("/article")),
        ("S2", "Mill notes", site.url("/notes.txt")),
        ("S3", "Gone", site.url("/missing")),
    ]
    assert citations[0]["excerpt"] == first["content"] and ARTICLE_PHRASE[:30] in first["content"]
    assert citations[1]["excerpt"] == "Plain notes about the tide mill."
    assert citations[2]["excerpt"] == "A page that is gone."
    assert {c["page"] for c in citations} == {None}
    assert [citation(c) for c in stored.citations] == citations


async def test_feature_api_web_search_example(client, admin, fakes, container, engine, site):
    fakes["gpt-4o-mini"].enqueue(["Artificial intelligence, per [S1], ..."])
    r = await client.post("/api/features?isStreaming=true", headers=admin, json=FEATURE_EXAMPLE)
    assert r.status_code == 200, r.text
    assert r.text == "Artificial intelligence, per [S1], ..."
    assert engine.requests[-1].query["q"] == "Tell me about artificial intelligence"
    system = fakes["gpt-4o-mini"].requests[-1].messages[0].content
    assert f"[S1] The Tide Mill — {site.url('/article')}" in system
    assert "[S2] Mill notes" not in system  # numOfSite 1
    async with container.db.read() as conn:
        [sources] = (await conn.execute(select(ai_records.c.sources))).scalars()
    [entry] = sources["search"]
    assert entry["url"] == site.url("/article") and entry["status"] == "ok"
    assert entry["word_count"] <= 500


@sqlite_only
async def test_migration_guide_examples_search_alike(client, admin, fakes, engine):
    """001_*'s migration guide: the legacy request and its Chat with AI equivalent."""
    before = {
        "type": "CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {
            "prompt": "Hello!",
            "isMixed": False,
            "webSearch": True,
            "numOfSite": 3,
            "maxWord": 500,
        },
    }
    after = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {
            "prompt": "Hello!",
            "settings": {
                "historySettings": {"isMixed": False},
                "webSearchSettings": {"webSearch": True, "numOfSite": 3, "maxWord": 500},
            },
        },
    }
    lists, systems = [], []
    for path, body in (("/api/features", before), (CHAT, after)):
        fakes["gpt-4o-mini"].enqueue(["Hi!"])
        r = await client.post(path, headers=admin, json=body)
        assert r.status_code == 200, r.text
        lists.append(r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["searchContentList"])
        systems.append(fakes["gpt-4o-mini"].requests[-1].messages[0].content)
    assert [seen.query["q"] for seen in engine.requests] == ["Hello!", "Hello!"]
    assert lists[0] == lists[1] and len(lists[0]) == 3
    assert sum(e.get("wordCount", 0) for e in lists[0]) <= 500
    assert systems[0] == systems[1]


def test_spec_python_example_against_a_live_server(tmp_path, site, engine, search_config):
    """001_*'s Python `requests` example, verbatim but for host and key, against a real
    uvicorn whose model is a real OpenAI-compatible upstream on 127.0.0.1."""
    with FakeUpstream() as upstream:
        upstream.enqueue(Reply("Recent work, per [S1], includes tide mills."))
        model = ModelConfig(provider="openai-compatible", base_url=upstream.url)
        fetch = FetchSettings(allow_private_hosts=[site.host_port], timeout_seconds=5)
        settings = make_settings(
            tmp_path,
            f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
            models={"gpt-4o-mini": model},
            fetch=fetch,
            search=search_config,
        )
        server = LiveServer(create_app(settings))
        base = server.start()
        try:
            key = server.call(server.app.state.container.bootstrap()).secret
            url = f"{base}/api/chat-with-ai?isStreaming=true"
            headers = {"Content-Type": "application/json", "API-KEY": key}
            data = {
                "type": "UNIFY_CHAT_WITH_AI",
                "model": "gpt-4o-mini",
                "promptObject": {
                    "prompt": "What are the latest developments in AI?",
                    "settings": {
                        "webSearchSettings": {"webSearch": True, "numOfSite": 3, "maxWord": 1000}
                    },
                },
            }
            response = requests.post(url, headers=headers, json=data)
        finally:
            server.stop()
        events = sse_events(response.text)
        assert [name for name, _ in events][-2:] == ["result", "done"]
        record = events[-2][1]["aiRecord"]
        entries = record["aiRecordDetail"]["promptObject"]["searchContentList"]
        assert [e["status"] for e in entries] == ["ok", "ok", "error"]
        system = upstream.requests[-1]["messages"][0]
        assert system["role"] == "system" and ARTICLE_PHRASE in system["content"]


# ---- the providers ----------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("search_config", ["brave"], indirect=True)
async def test_brave_is_asked_with_its_token_and_count(client, admin, fakes, engine, site):
    system, record = await ask(client, admin, fakes, with_search("tide mills", numOfSite=2))
    [seen] = engine.requests
    assert (seen.method, seen.path) == ("GET", "/res/v1/web/search")
    assert seen.query == {"q": "tide mills", "count": "2"}
    assert seen.headers["x-subscription-token"] == engine.api_key
    assert seen.headers["accept"] == "application/json"
    entries = record["aiRecordDetail"]["promptObject"]["searchContentList"]
    assert [e["title"] for e in entries] == ["The Tide Mill", "Mill notes"]
    assert entries[0]["snippet"] == "A tide mill on the river Deben."  # Brave's description
    assert ARTICLE_PHRASE in system


@sqlite_only
@pytest.mark.parametrize("search_config", ["tavily"], indirect=True)
async def test_tavily_is_asked_with_a_bearer_key(client, admin, fakes, engine):
    system, record = await ask(client, admin, fakes, with_search("tide mills", numOfSite=1))
    [seen] = engine.requests
    assert (seen.method, seen.path) == ("POST", "/search")
    assert seen.body == {"query": "tide mills", "max_results": 1, "search_depth": "basic"}
    assert seen.headers["authorization"] == f"Bearer {engine.api_key}"
    assert engine.api_key not in json.dumps(seen.body)  # the key travels in the header only
    [entry] = record["aiRecordDetail"]["promptObject"]["searchContentList"]
    assert entry["title"] == "The Tide Mill" and entry["status"] == "ok"
    assert ARTICLE_PHRASE in system


@sqlite_only
@pytest.mark.parametrize("search_config", ["brave"], indirect=True)
async def test_a_wrong_api_key_is_a_502_that_shows_no_key(client, admin, fakes, engine, container):
    key, engine.api_key = engine.api_key, "another-key"
    try:
        r = await client.post(CHAT, headers=admin, json=with_search("tide mills"))
    finally:
        engine.api_key = key
    assert r.status_code == 502
    assert r.json()["error"] == {
        "code": "SEARCH_FAILED",
        "message": "the web search provider (brave) answered HTTP 401; check its API key",
    }
    assert "SUBSCRIPTION_TOKEN_INVALID" not in r.text
    assert fakes["gpt-4o-mini"].requests == [] and await count(container, ai_records) == 0


# ---- failures on cue: the request fails in the dialect's shape, nothing is stored ----------


@sqlite_only
@pytest.mark.parametrize(
    ("cue", "status", "code", "message"),
    [
        (
            lambda e: e.fail_next(500),
            502,
            "SEARCH_FAILED",
            "the web search provider (searxng) answered HTTP 500",
        ),
        (
            lambda e: e.garble_next(),
            502,
            "SEARCH_FAILED",
            "the web search provider (searxng) answered with something other than its JSON "
            "search results",
        ),
        (
            lambda e: e.stall_next(4),
            504,
            "SEARCH_TIMEOUT",
            "the web search provider (searxng) did not answer within 2 s",
        ),
    ],
)
async def test_search_provider_failure_fails_the_request(
    client, admin, fakes, container, engine, cue, status, code, message
):
    cue(engine)
    r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=WEB_SEARCH_EXAMPLE)
    assert r.status_code == status
    assert r.json() == {"success": False, "error": {"code": code, "message": message}}
    assert "internal detail" not in r.text
    assert fakes["gpt-4o-mini"].requests == [] and await count(container, ai_records) == 0


async def test_an_unreachable_provider_is_a_502():
    searcher = SearxngSearcher(f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    with pytest.raises(SearchFailed) as caught:
        await searcher.search("tide mills", 3)
    assert caught.value.status == 502
    assert caught.value.message == "the web search provider (searxng) could not be reached"
    await searcher.aclose()


# ---- what is searched, read and given -----------------------------------------------------


@sqlite_only
async def test_web_search_off_searches_nothing(client, admin, fakes, engine):
    body = with_search("Hi")
    body["promptObject"]["settings"]["webSearchSettings"]["webSearch"] = False
    fakes["gpt-4o-mini"].enqueue(["Hello."])
    r = await client.post(CHAT, headers=admin, json=body)
    assert r.status_code == 200
    assert r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["searchContentList"] == []
    assert engine.requests == []
    assert fakes["gpt-4o-mini"].requests[-1].messages[0].role == "user"


@sqlite_only
async def test_max_word_is_shared_by_all_pages(client, admin, fakes):
    system, record = await ask(client, admin, fakes, with_search("mills", maxWord=30))
    entries = record["aiRecordDetail"]["promptObject"]["searchContentList"]
    words = [e.get("wordCount", 0) for e in entries]
    assert sum(words) == 30
    assert words[1] == 6  # the short notes page keeps all its words; the article gets the rest
    assert entries[0]["truncated"] is True and entries[1]["truncated"] is False
    assert "(first words only)" in system
    assert "restored in 2011" not in system  # past the article's share


@sqlite_only
async def test_no_results_is_said_to_the_model(client, admin, fakes, engine):
    engine.results = []
    system, record = await ask(client, admin, fakes, with_search("nothing like this exists"))
    assert record["aiRecordDetail"]["promptObject"]["searchContentList"] == []
    assert "found nothing" in system


@sqlite_only
async def test_result_pages_at_private_addresses_are_refused_and_noted(
    client, admin, fakes, engine, site
):
    engine.results = [
        Hit("Metadata", "http://169.254.169.254/latest/meta-data/", "Cloud secrets."),
        Hit("Loopback", f"http://localhost:{site.port}/article", "The same article."),
        Hit("Not web", "ftp://example.org/file", "An FTP link is no web result."),
    ]
    served = len(site.hosts)
    system, record = await ask(client, admin, fakes, with_search("instance metadata"))
    first, second = record["aiRecordDetail"]["promptObject"]["searchContentList"]
    assert first["status"] == "error"
    assert first["reason"] == (
        "169.254.169.254 is a link-local address; only public addresses are fetched"
    )
    assert second["status"] == "error" and "resolves to a loopback address" in second["reason"]
    assert len(site.hosts) == served  # neither was fetched
    assert "[S1] Metadata — http://169.254.169.254/latest/meta-data/: the page could not" in system
    assert ARTICLE_PHRASE not in system
    # The model was given their snippets only: those are what the citations quote.
    citations = record["aiRecordDetail"]["citations"]
    assert [(c["sourceId"], c["excerpt"]) for c in citations] == [
        ("S1", "Cloud secrets."),
        ("S2", "The same article."),
    ]


@sqlite_only
async def test_a_result_with_no_page_and_no_snippet_is_no_citation(
    client, admin, fakes, engine, site
):
    engine.results = [
        Hit("Gone", site.url("/missing"), ""),
        Hit("Mill notes", site.url("/notes.txt"), "Notes about the mill."),
    ]
    _, record = await ask(client, admin, fakes, with_search("mill notes"))
    [cited] = record["aiRecordDetail"]["citations"]
    assert cited["sourceId"] == "S2" and cited["url"] == site.url("/notes.txt")


@sqlite_only
async def test_the_query_is_the_prompt_on_one_line(client, admin, fakes, engine):
    await ask(client, admin, fakes, with_search("  What is\n a tide   mill?  "))
    assert engine.requests[-1].query["q"] == "What is a tide mill?"


# ---- bad input and configuration ----------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("search_config", [None], indirect=True)
async def test_web_search_without_a_provider_is_422_saying_how_to_configure_one(
    client, admin, fakes, container
):
    r = await client.post(CHAT, headers=admin, json=WEB_SEARCH_EXAMPLE)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "UNPROCESSABLE_ENTITY"
    assert error["message"].startswith("Web search (webSearch) is not configured on this server")
    assert '[search]\nprovider = "searxng"' in error["message"]
    assert "api_key_env" in error["message"]
    r = await client.post("/api/features", headers=admin, json=FEATURE_EXAMPLE)
    assert r.status_code == 422 and "[search]" in r.json()["error"]["message"]
    assert fakes["gpt-4o-mini"].requests == [] and await count(container, ai_records) == 0


@sqlite_only
@pytest.mark.parametrize(
    ("web", "field"),
    [
        ({"numOfSite": 0}, "numOfSite"),
        ({"numOfSite": 11}, "numOfSite"),
        ({"maxWord": 0}, "maxWord"),
        ({"maxWord": 20001}, "maxWord"),
        ({"numOfSite": "three"}, "numOfSite"),
    ],
)
async def test_num_of_site_and_max_word_out_of_bounds_are_422(
    client, admin, container, engine, web, field
):
    r = await client.post(CHAT, headers=admin, json=with_search("Hi", **web))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "PROMPT_OBJECT_VALIDATION_FAILED"
    [detail] = error["details"]
    assert detail["field"] == f"settings.webSearchSettings.{field}"
    legacy = {**FEATURE_EXAMPLE, "promptObject": {**FEATURE_EXAMPLE["promptObject"], **web}}
    r = await client.post("/api/features", headers=admin, json=legacy)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == field
    assert engine.requests == [] and await count(container, ai_records) == 0


def test_search_settings_name_what_is_missing():
    with pytest.raises(ValueError, match="needs base_url"):
        SearchSettings(provider="searxng")
    with pytest.raises(ValueError, match="needs api_key_env"):
        SearchSettings(provider="brave")
    with pytest.raises(ValueError, match="http:// or https://"):
        SearchSettings(provider="searxng", base_url="ftp://search.local")
    with pytest.raises(ValueError, match="Input should be"):
        SearchSettings(provider="google")


def test_an_unset_api_key_variable_stops_the_server_with_its_name(monkeypatch):
    monkeypatch.delenv("UNSET_SEARCH_KEY", raising=False)
    config = SearchSettings(provider="tavily", api_key_env="UNSET_SEARCH_KEY")
    with pytest.raises(ValueError, match="environment variable UNSET_SEARCH_KEY, which is not"):
        build_searcher(config)


@sqlite_only
async def test_a_link_and_a_web_search_are_both_read(client, admin, fakes, site):
    body = with_search(f"Compare {site.url('/notes.txt')} with the web", numOfSite=1)
    system, record = await ask(client, admin, fakes, body)
    prompt_object = record["aiRecordDetail"]["promptObject"]
    assert [e["status"] for e in prompt_object["linkContentList"]] == ["ok"]
    assert [e["status"] for e in prompt_object["searchContentList"]] == ["ok"]
    assert "[W1]" in system and "[S1]" in system
    assert system.index("[W1]") < system.index("[S1]")
    citations = record["aiRecordDetail"]["citations"]
    assert [(c["sourceId"], c["url"]) for c in citations] == [
        ("W1", site.url("/notes.txt")),
        ("S1", site.url("/article")),
    ]
