"""Links in the prompt (1min.ai chat-with-ai): the linked pages are fetched through the
SSRF-safe fetcher from a real page server on 127.0.0.1, parsed in the sandbox, given to the
model, and listed in the record's `promptObject.linkContentList`. SQLite only: nothing here
depends on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import files
from tests.helpers import make_settings, sse_events
from tests.page_server import ARTICLE_PHRASE, SECRET_ERROR, PageServer
from threadline.domain.documents import ParsedDocument, ParsedPage
from threadline.domain.errors import FetchFailed
from threadline.domain.fetching import FetchedPage
from threadline.services.links import LinkReader, LinkReading, links_in
from threadline.services.pages import PageReader, ReadPage
from threadline.settings import FetchSettings, Settings

CHAT = "/api/chat-with-ai"
PDF_PHRASE = "Tide tables for the river Deben"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    pdf = files.pdf(tmp_path_factory.mktemp("pdf"), [PDF_PHRASE])
    with PageServer(pdf=pdf.read_bytes()) as server:
        yield server


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, site: PageServer) -> Settings:
    fetch = FetchSettings(allow_private_hosts=[site.host_port], timeout_seconds=5)
    return make_settings(tmp_path, db_url, fetch=fetch)


def chat(prompt: str) -> dict:
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt},
    }


async def ask(client, admin, fakes, prompt: str) -> tuple[str, list[dict]]:
    """Send the prompt; the model's system message and the record's linkContentList."""
    fakes["gpt-4o-mini"].enqueue(["Noted."])
    r = await client.post(CHAT, headers=admin, json=chat(prompt))
    assert r.status_code == 200, r.text
    messages = fakes["gpt-4o-mini"].requests[-1].messages
    assert messages[0].role == "system"
    assert messages[-1].content == prompt
    prompt_object = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]
    return messages[0].content, prompt_object["linkContentList"]


async def test_linked_page_goes_to_the_model_and_into_link_content_list(client, admin, fakes, site):
    url = site.url("/article")
    system, links = await ask(client, admin, fakes, f"What does this say? {url}")
    assert ARTICLE_PHRASE in system
    assert f"[W1] The Tide Mill — {url}" in system
    assert "cite the ones you use as [W1]" in system
    assert "Copyright the mill trust" not in system  # main text only, not the footer
    [entry] = links
    assert entry["url"] == url
    assert entry["type"] == "page"
    assert entry["status"] == "ok"
    assert entry["title"] == "The Tide Mill"
    assert entry["wordCount"] > 40
    assert entry["content"].startswith("The Tide Mill") or ARTICLE_PHRASE[:20] in entry["content"]


async def test_linked_pdf_is_read(client, admin, fakes, site):
    url = site.url("/report.pdf")
    system, [entry] = await ask(client, admin, fakes, f"Summarise {url}, please.")
    assert PDF_PHRASE in system
    assert entry["status"] == "ok" and entry["url"] == url  # the trailing comma is prose


async def test_unreadable_page_is_an_entry_with_its_reason_and_a_note_to_the_model(
    client, admin, fakes, site
):
    url = site.url("/missing")
    system, [entry] = await ask(client, admin, fakes, f"Read {url}")
    assert entry == {
        "type": "page",
        "url": url,
        "status": "error",
        "reason": "the server answered HTTP 404",
    }
    assert f"The page at {url} could not be read: the server answered HTTP 404" in system
    assert SECRET_ERROR not in system


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://localhost:{port}/article", "resolves to a loopback address"),
        ("http://127.0.0.1:{port}/redirect?to=http://10.0.0.1/", "10.0.0.1 is a private address"),
    ],
)
async def test_private_addresses_are_refused_with_a_reason(
    client, admin, fakes, site, link, reason
):
    url = link.format(port=site.port)
    hits = len(site.hosts)
    system, [entry] = await ask(client, admin, fakes, f"Fetch {url}")
    assert entry["status"] == "error" and reason in entry["reason"]
    assert f"The page at {url} could not be read" in system
    assert ARTICLE_PHRASE not in system
    assert len(site.hosts) <= hits + 1  # at most the allowed first hop


async def test_links_over_the_limit_are_skipped_and_said_so(client, admin, fakes, site):
    urls = [site.url(p) for p in ("/article", "/notes.txt", "/missing", "/host")]
    system, links = await ask(client, admin, fakes, "Compare " + " and ".join(urls))
    assert [e["status"] for e in links] == ["ok", "ok", "error", "skipped"]
    assert links[3]["reason"] == "only the first 3 links of a message are read"
    assert f"[W4] The page at {urls[3]} was not read" in system
    assert "Plain notes about the tide mill." in system


async def test_a_prompt_without_links_records_an_empty_link_content_list(client, admin, fakes):
    fakes["gpt-4o-mini"].enqueue(["Hi."])
    r = await client.post(CHAT, headers=admin, json=chat("Hello there"))
    assert r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["linkContentList"] == []
    assert fakes["gpt-4o-mini"].requests[-1].messages[0].role == "user"


# ---- the use case, with a scripted fetcher and parser ----------------------------------


class ScriptedFetcher:
    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages

    async def fetch(self, url: str) -> FetchedPage:
        if url not in self.pages:
            raise FetchFailed("could not connect to example.org")
        return FetchedPage(url, "text/plain", self.pages[url].encode())


class PlainParser:
    async def parse(self, path: Path, mime_type: str, name: str) -> ParsedDocument:
        text = await asyncio.to_thread(path.read_text)
        return ParsedDocument((ParsedPage(0, text),), metadata={"title": "T"})


async def test_page_text_is_capped_at_max_words():
    url = "https://example.org/long"
    pages = PageReader(ScriptedFetcher({url: "word " * 500}), PlainParser())
    reader = LinkReader(pages, max_words=100)
    reading = await reader.read(f"read {url}")
    assert reading is not None
    [page] = reading.pages
    assert page.word_count == 100 and page.truncated
    assert page.text.split() == ["word"] * 100
    assert reading.sources()[0].truncated is True


async def test_a_prompt_without_links_reads_nothing():
    reader = LinkReader(PageReader(ScriptedFetcher({}), PlainParser()))
    assert await reader.read("no links here, only ftp://example.org/file") is None


def test_system_block_fits_the_room_it_is_given():
    pages = tuple(
        ReadPage(f"https://example.org/{n}", "ok", "T", "lorem ipsum " * 2000, 4000)
        for n in range(3)
    )
    note = ReadPage("https://example.org/x", "error", reason="could not connect")
    block = LinkReading((*pages, note)).system(6000)
    assert len(block) <= 6000
    assert block.count("lorem") > 300  # the room is used, shared by the pages
    assert "[W4] The page at https://example.org/x could not be read: could not connect" in block


@pytest.mark.parametrize(
    ("prompt", "links"),
    [
        ("see https://example.org/a.", ["https://example.org/a"]),
        (
            "(https://en.wikipedia.org/wiki/Mill_(grinding))",
            ["https://en.wikipedia.org/wiki/Mill_(grinding)"],
        ),
        ("https://a.org/x and again https://a.org/x!", ["https://a.org/x"]),
        ('"HTTP://A.org/q?x=1&y=2", ok', ["HTTP://A.org/q?x=1&y=2"]),
        ("https://www.youtube.com/watch?v=abc https://b.org/", ["https://b.org/"]),
        ("file:///etc/passwd ftp://a.org/ http:// nothing", []),
    ],
)
def test_links_in_a_prompt(prompt, links):
    assert links_in(prompt) == links


async def test_the_links_read_are_the_records_citations_numbered_as_the_model_saw_them(
    client, admin, fakes, site
):
    urls = [site.url(p) for p in ("/missing", "/article", "/notes.txt", "/host")]
    fakes["gpt-4o-mini"].enqueue(["Per [W2] and [W3], ", "a mill."])
    r = await client.post(
        CHAT + "?isStreaming=true", headers=admin, json=chat("Compare " + " and ".join(urls))
    )
    events = sse_events(r.text)
    assert [name for name, _ in events][-2:] == ["result", "done"]
    detail = events[-2][1]["aiRecord"]["aiRecordDetail"]
    links = detail["promptObject"]["linkContentList"]
    assert [e["status"] for e in links] == ["error", "ok", "ok", "skipped"]
    citations = detail["citations"]
    # the page that failed (W1) and the one skipped (W4) are not sources
    assert [(c["sourceId"], c["title"], c["url"]) for c in citations] == [
        ("W2", "The Tide Mill", urls[1]),
        ("W3", "127.0.0.1", urls[2]),
    ]
    assert citations[0]["excerpt"] == links[1]["content"]
    assert citations[1]["excerpt"] == "Plain notes about the tide mill."
    system = fakes["gpt-4o-mini"].requests[-1].messages[0].content
    assert f"[W2] The Tide Mill — {urls[1]}" in system and f"[W3] 127.0.0.1 — {urls[2]}" in system
    stored = await client.post(CHAT, headers=admin, json=chat(f"Again {urls[0]}"))
    assert "citations" not in stored.json()["aiRecord"]["aiRecordDetail"]  # nothing was read
