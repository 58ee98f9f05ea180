"""YouTube links in the prompt (001_* "Chat with YouTube Video", and the AI Feature API's
CHAT_WITH_YOUTUBE_VIDEO): transcripts read by the real `youtube-transcript-api` library from
a fake YouTube on 127.0.0.1 (the client's transport sends www.youtube.com there), given to the
model and listed in the record's `linkContentList`. The spec's example runs on SQLite and
PostgreSQL (the record is stored); the rest on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.helpers import count, make_settings, sse_events
from tests.page_server import PageServer
from tests.youtube_server import RICK_LINES, RICK_TITLE, FakeYouTube, Video
from threadline.api.dialects.oneminai.encode import citation, link_content
from threadline.domain.errors import TranscriptUnavailable
from threadline.domain.web import Transcript
from threadline.services.links import LinkReader, video_id_of, videos_in
from threadline.services.pages import PageReader
from threadline.settings import FetchSettings, Settings, YouTubeSettings
from threadline.storage.tables import ai_records
from threadline.tools.youtube import YouTubeTranscripts

CHAT = "/api/chat-with-ai"
RICK = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# 001_*, "Chat with YouTube Video" (cURL), verbatim
YOUTUBE_EXAMPLE = {
    "type": "UNIFY_CHAT_WITH_AI",
    "model": "gpt-4o-mini",
    "promptObject": {"prompt": "Summarize this video https://www.youtube.com/watch?v=dQw4w9WgXcQ"},
}


@pytest.fixture(scope="module")
def youtube() -> Iterator[FakeYouTube]:
    with FakeYouTube() as server:
        yield server


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


@pytest.fixture(autouse=True)
def videos(youtube: FakeYouTube) -> dict[str, Video]:
    """Every test starts with these videos and no requests seen."""
    youtube.videos = {
        "dQw4w9WgXcQ": Video(RICK_TITLE, list(RICK_LINES)),
        "NoSubtitles": Video("A silent film", captions=False),
        "GermanOnly1": Video(
            "Ein Video", ["Guten Tag und willkommen."], language="de", language_name="Deutsch"
        ),
        "Bilingual01": Video("Both", ["Hello everyone."], others={"de": ["Hallo zusammen."]}),
        "LongTalk123": Video("A long talk", [f"sentence {n} of the talk" for n in range(400)]),
        "ElsewhereCp": Video("Off", ["x"], caption_url="http://169.254.169.254/timedtext?v=1"),
        "SlowCaption": Video("Slow", ["late words"], delay=3.0),
    }
    youtube.paths.clear()
    youtube.player_bodies.clear()
    return youtube.videos


@pytest.fixture
def youtube_config(request: pytest.FixtureRequest, youtube: FakeYouTube) -> YouTubeSettings:
    overrides = getattr(request, "param", {})
    return YouTubeSettings(base_url=youtube.url, timeout_seconds=2, **overrides)


@pytest.fixture
def settings(
    tmp_path: Path, db_url: str, site: PageServer, youtube_config: YouTubeSettings
) -> Settings:
    fetch = FetchSettings(allow_private_hosts=[site.host_port], timeout_seconds=5)
    return make_settings(tmp_path, db_url, fetch=fetch, youtube=youtube_config)


async def ask(client, admin, fakes, prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """Send the prompt; the model's system message and the record's linkContentList."""
    fakes["gpt-4o-mini"].enqueue(["Noted."])
    body = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt},
    }
    r = await client.post(CHAT, headers=admin, json=body)
    assert r.status_code == 200, r.text
    messages = fakes["gpt-4o-mini"].requests[-1].messages
    assert messages[0].role == "system" and messages[-1].content == prompt
    return messages[0].content, r.json()["aiRecord"]["aiRecordDetail"]["promptObject"][
        "linkContentList"
    ]


async def test_youtube_example_gives_the_transcript_to_the_model(
    client, admin, fakes, container, youtube
):
    fakes["gpt-4o-mini"].enqueue(["A singer promises ", "loyalty [W1]."])
    r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=YOUTUBE_EXAMPLE)
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["content", "content", "result", "done"]
    record = events[2][1]["aiRecord"]
    [entry] = record["aiRecordDetail"]["promptObject"]["linkContentList"]
    assert entry == {
        "type": "youtube",
        "url": RICK,
        "status": "ok",
        "videoId": "dQw4w9WgXcQ",
        "title": RICK_TITLE,
        "wordCount": len(" ".join(RICK_LINES).split()),
        "truncated": False,
        "content": " ".join(" ".join(RICK_LINES).split()),  # under 40 words: all of it
    }
    system = fakes["gpt-4o-mini"].requests[-1].messages[0].content
    assert f"[W1] YouTube video “{RICK_TITLE}” — {RICK} (transcript)" in system
    assert "promises loyalty & honesty to a friend" in system  # XML entities decoded
    # the library's own requests, all sent to the fake through the client's transport
    assert youtube.paths == [
        "GET /watch",
        "POST /youtubei/v1/player",
        "GET /api/timedtext",
        "GET /oembed",
    ]
    assert youtube.player_bodies[0]["videoId"] == "dQw4w9WgXcQ"
    stored = await container.record_store.get(UUID(record["teamId"]), UUID(record["uuid"]))
    assert stored is not None and stored.sources.links is not None
    assert [link_content(s) for s in stored.sources.links] == [entry]
    cited = {"sourceId": "W1", "title": RICK_TITLE, "excerpt": entry["content"], "page": None}
    assert record["aiRecordDetail"]["citations"] == [{**cited, "url": RICK}]
    assert [citation(c) for c in stored.citations] == record["aiRecordDetail"]["citations"]


@sqlite_only
@pytest.mark.parametrize(
    ("video_id", "reason"),
    [
        ("NoSubtitles", "the video has no transcript (its subtitles are turned off)"),
        ("Unknown1234", "the video is unavailable"),
        ("ElsewhereCp", "YouTube's answer pointed outside YouTube; it was not followed"),
        ("SlowCaption", "YouTube did not answer within 2 s"),
    ],
)
async def test_a_video_without_a_transcript_is_noted(client, admin, fakes, video_id, reason):
    url = f"https://youtu.be/{video_id}"
    system, [entry] = await ask(client, admin, fakes, f"What is said in {url}?")
    assert entry == {
        "type": "youtube",
        "url": url,
        "status": "error",
        "videoId": video_id,
        "reason": reason,
    }
    assert f"[W1] The YouTube video at {url} could not be read: {reason}." in system


@sqlite_only
async def test_a_fourth_video_is_skipped_and_the_model_told(client, admin, fakes, youtube):
    links = [
        RICK,
        "https://youtu.be/GermanOnly1",
        "https://www.youtube.com/shorts/NoSubtitles",
        "https://m.youtube.com/watch?v=LongTalk123&t=42",
    ]
    system, entries = await ask(client, admin, fakes, "Compare " + " and ".join(links))
    assert [e["status"] for e in entries] == ["ok", "ok", "error", "skipped"]
    assert entries[3]["reason"] == "only the first 3 YouTube videos of a message are read"
    assert f"[W4] The YouTube video at {links[3]} was not read: only the first 3" in system
    assert "Guten Tag und willkommen." in system  # no English transcript: the one there is
    assert youtube.paths.count("POST /youtubei/v1/player") == 3


@sqlite_only
async def test_pages_and_videos_are_read_together_in_the_prompts_order(client, admin, fakes, site):
    page = site.url("/notes.txt")
    system, entries = await ask(client, admin, fakes, f"See {RICK} and {page}")
    assert [(e["type"], e["url"], e["status"]) for e in entries] == [
        ("youtube", RICK, "ok"),
        ("page", page, "ok"),
    ]
    assert "[W1] YouTube video" in system and f"[W2] 127.0.0.1 — {page}" in system


@sqlite_only
@pytest.mark.parametrize("youtube_config", [{"max_words": 50}], indirect=True)
async def test_transcripts_are_capped_at_max_words(client, admin, fakes):
    system, [entry] = await ask(client, admin, fakes, "Summarize https://youtu.be/LongTalk123")
    assert entry["wordCount"] == 50 and entry["truncated"] is True
    assert "(transcript) (first words only)" in system
    assert "sentence 9 of" in system and "sentence 13 of" not in system


@sqlite_only
async def test_legacy_youtube_chat_type_reads_the_video(client, admin, fakes):
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "A video", "type": "CHAT_WITH_YOUTUBE_VIDEO", "model": "gpt-4o-mini"},
    )
    conversation_id = r.json()["conversation"]["uuid"]
    fakes["gpt-4o-mini"].enqueue(["It is about loyalty."])
    r = await client.post(
        "/api/features?isStreaming=true",
        headers=admin,
        json={
            "type": "CHAT_WITH_YOUTUBE_VIDEO",
            "model": "gpt-4o-mini",
            "conversationId": conversation_id,
            "promptObject": {"prompt": f"What is this video about? {RICK}", "isMixed": False},
        },
    )
    assert r.status_code == 200 and r.text == "It is about loyalty."
    system = fakes["gpt-4o-mini"].requests[-1].messages[0].content
    assert "promises loyalty & honesty" in system


@sqlite_only
@pytest.mark.parametrize("youtube_config", [{"enabled": False}], indirect=True)
async def test_youtube_turned_off_refuses_youtube_links_by_name(
    client, admin, fakes, container, youtube
):
    r = await client.post(CHAT, headers=admin, json=YOUTUBE_EXAMPLE)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "Not supported by this server yet: YouTube links in the prompt "
        "(YouTube transcripts are turned off)"
    )
    assert youtube.paths == [] and await count(container, ai_records) == 0


# ---- the adapter and the pieces ----------------------------------------------------------


@pytest.mark.parametrize(
    ("languages", "text", "language"),
    [
        (["de", "en"], "Hallo zusammen.", "DE"),
        (["en", "de"], "Hello everyone.", "English"),
        (["fr"], "Hello everyone.", "English"),  # none of them: the video's first
    ],
)
async def test_the_library_adapter_prefers_the_configured_languages(
    youtube, languages, text, language
):
    source = YouTubeTranscripts(base_url=youtube.url, languages=languages, timeout_seconds=5)
    transcript = await source.transcript("Bilingual01")
    assert transcript == Transcript("Bilingual01", text, "Both", language)


async def test_the_library_adapter_refuses_hosts_other_than_youtube(youtube):
    source = YouTubeTranscripts(base_url=youtube.url, timeout_seconds=5)
    with pytest.raises(TranscriptUnavailable, match="pointed outside YouTube"):
        await source.transcript("ElsewhereCp")
    assert "GET /api/timedtext" not in youtube.paths


def test_youtube_settings_are_checked():
    with pytest.raises(ValueError, match="base_url must be an http"):
        YouTubeSettings(base_url="www.youtube.com")
    with pytest.raises(ValueError, match="less than or equal to 10"):
        YouTubeSettings(max_videos=11)


@pytest.mark.parametrize(
    ("url", "video_id"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://youtube.com/watch?feature=share&v=dQw4w9WgXcQ&t=10", "dQw4w9WgXcQ"),
        ("https://m.youtube.com/watch?v=dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ?si=abc", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/shorts/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/live/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/embed/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/watch?v=short", None),
        ("https://www.youtube.com/watch", None),
    ],
)
def test_video_ids_of_youtube_links(url, video_id):
    assert videos_in(f"see {url}.") == [url]
    assert video_id_of(url) == video_id


async def test_a_link_without_a_video_id_is_noted():
    reader = LinkReader(PageReader(NoFetcher(), NoParser()), transcripts=ScriptedTranscripts())
    reading = await reader.read("see https://www.youtube.com/watch?list=PL123")
    assert reading is not None
    assert [link_content(s) for s in reading.sources()] == [
        {
            "type": "youtube",
            "url": "https://www.youtube.com/watch?list=PL123",
            "status": "error",
            "reason": "the link names no YouTube video id",
        }
    ]


async def test_the_reader_uses_the_transcript_port():
    source = ScriptedTranscripts()
    reader = LinkReader(PageReader(NoFetcher(), NoParser()), transcripts=source, max_videos=1)
    reading = await reader.read(f"{RICK} and https://youtu.be/aaaaaaaaaaa")
    assert reading is not None
    assert source.asked == ["dQw4w9WgXcQ"]
    assert [p.status for p in reading.pages] == ["ok", "skipped"]
    assert reading.pages[0].title == "YouTube video dQw4w9WgXcQ"  # no title known
    assert "[W1] YouTube video “YouTube video dQw4w9WgXcQ”" in reading.system(2000)


class ScriptedTranscripts:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def transcript(self, video_id: str) -> Transcript:
        self.asked.append(video_id)
        return Transcript(video_id, "words of the video")


class NoFetcher:
    async def fetch(self, url: str) -> Any:
        raise AssertionError("no page is fetched here")


class NoParser:
    async def parse(self, path: Path, mime_type: str, name: str) -> Any:
        raise AssertionError("no page is parsed here")
