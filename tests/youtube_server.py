"""A fake YouTube on 127.0.0.1 serving what `youtube-transcript-api` (1.2) asks for.

Real HTTP over real TCP (a `LocalSite`, tests/local_site.py). The requests
are the library's own (read from its source, `_transcripts.py`), plus oEmbed for the title:

    GET  /watch?v=ID                     the watch page, carrying "INNERTUBE_API_KEY"
    POST /youtubei/v1/player?key=KEY     {context: {client: …}, videoId} → playabilityStatus,
                                         videoDetails, captions.playerCaptionsTracklistRenderer
                                         .captionTracks[{baseUrl, name, languageCode, kind}]
    GET  /api/timedtext?v=ID&lang=LL     the transcript: <transcript><text start dur>…
    GET  /oembed?url=…&format=json       {title, author_name, …}

Videos are `Video` entries in `videos` by id; an unknown id plays as "This video is
unavailable", as YouTube's player answers. A caption track's baseUrl names www.youtube.com,
as YouTube's do (the client's transport sends it here), unless the video sets `caption_url`.

    with FakeYouTube() as yt:
        yt.videos["dQw4w9WgXcQ"] = Video("Title", ["line one", "line two"])
        yt.url          # "http://127.0.0.1:PORT": [youtube] base_url
        yt.paths        # every request's method and path, in order
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from tests.local_site import LocalSite, OnSite, SiteHandler

INNERTUBE_KEY = "AIzaFakeInnertubeKey_0123456789"
RICK_TITLE = "Rick Astley - Never Gonna Give You Up (Official Video)"
RICK_LINES = [
    "This is the fake transcript of a famous music video.",
    "A singer in a trench coat promises loyalty & honesty to a friend,",
    "dancing beside a brick wall while the band plays on.",
]


@dataclass
class Video:
    title: str
    lines: list[str] = field(default_factory=list)
    captions: bool = True  # False: the player answers without captions (subtitles off)
    language: str = "en"
    language_name: str = "English"
    generated: bool = False
    others: dict[str, list[str]] = field(default_factory=dict)  # more manual tracks by language
    caption_url: str | None = None  # overrides the www.youtube.com timedtext URL
    delay: float = 0.0  # seconds before the transcript is sent


class FakeYouTube(OnSite):
    def __init__(self) -> None:
        self.videos: dict[str, Video] = {"dQw4w9WgXcQ": Video(RICK_TITLE, list(RICK_LINES))}
        self.paths: list[str] = []
        self.player_bodies: list[dict[str, Any]] = []
        self.site = LocalSite(_handler(self))

    @property
    def url(self) -> str:
        return self.site.url("")


def _watch_page(video_id: str) -> bytes:
    config = {"INNERTUBE_API_KEY": INNERTUBE_KEY, "VISITOR_DATA": "fake"}
    return (
        "<!DOCTYPE html><html><head><title>YouTube</title></head><body>"
        f"<script>ytcfg.set({json.dumps(config)});</script>"
        f'<div id="player" data-video="{video_id}"></div></body></html>'
    ).encode()


def _player(video_id: str, video: Video | None) -> dict[str, Any]:
    if video is None:
        return {"playabilityStatus": {"status": "ERROR", "reason": "This video is unavailable"}}
    answer: dict[str, Any] = {
        "playabilityStatus": {"status": "OK", "playableInEmbed": True},
        "videoDetails": {"videoId": video_id, "title": video.title, "author": "Fake channel"},
    }
    if video.captions:
        tracks = [_track(video_id, video.language, video.language_name, video.caption_url)]
        tracks += [_track(video_id, code, code.upper(), None) for code in video.others]
        if video.generated:
            tracks[0]["kind"] = "asr"
        answer["captions"] = {
            "playerCaptionsTracklistRenderer": {"captionTracks": tracks, "audioTracks": []}
        }
    return answer


def _track(video_id: str, language: str, name: str, url: str | None) -> dict[str, Any]:
    base = url or f"https://www.youtube.com/api/timedtext?v={video_id}&lang={language}&fmt=srv3"
    return {
        "baseUrl": base,
        "name": {"runs": [{"text": name}]},
        "vssId": f".{language}",
        "languageCode": language,
        "isTranslatable": False,
    }


def _timedtext(video: Video, language: str) -> bytes:
    lines = video.others.get(language, video.lines)
    texts = "".join(
        f'<text start="{4.0 * n:.1f}" dur="4.0">{escape(line)}</text>'
        for n, line in enumerate(lines)
    )
    return f'<?xml version="1.0" encoding="utf-8" ?><transcript>{texts}</transcript>'.encode()


def _handler(yt: FakeYouTube) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            yt.paths.append(f"GET {parts.path}")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/watch":
                self.send(200, _watch_page(query.get("v", "")), "text/html; charset=utf-8")
            elif parts.path == "/api/timedtext" and query.get("v") in yt.videos:
                video = yt.videos[query["v"]]
                yt.site.stopping.wait(video.delay)
                body = _timedtext(video, query.get("lang", ""))
                self.send(200, body, "text/xml; charset=UTF-8")
            elif parts.path == "/oembed":
                self._oembed(query.get("url", ""))
            else:
                self.send(404, b"Not Found", "text/plain")

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            yt.paths.append(f"POST {parts.path}")
            body = json.loads(self.body())
            yt.player_bodies.append(body)
            key = parse_qs(parts.query).get("key", [""])[0]
            if parts.path != "/youtubei/v1/player" or key != INNERTUBE_KEY:
                self.send(400, b'{"error": {"code": 400}}', "application/json")
                return
            video_id = body.get("videoId", "")
            answer = _player(video_id, yt.videos.get(video_id))
            self.send(200, json.dumps(answer).encode(), "application/json")

        def _oembed(self, url: str) -> None:
            video_id = parse_qs(urlsplit(url).query).get("v", [""])[0]
            video = yt.videos.get(video_id)
            if video is None:
                self.send(404, b"Not Found", "text/plain")
                return
            answer = {"title": video.title, "author_name": "Fake channel", "type": "video"}
            self.send(200, json.dumps(answer).encode(), "application/json")

    return Handler
