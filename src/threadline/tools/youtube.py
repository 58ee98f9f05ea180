"""YouTube transcripts: the `TranscriptSource` port over the `youtube-transcript-api` library.

The library (1.2) makes these requests, in a `requests.Session` it is given:

    GET  https://www.youtube.com/watch?v=ID       the watch page, for its INNERTUBE_API_KEY
                                                  (on a consent page: a cookie, then again)
    POST https://www.youtube.com/youtubei/v1/player?key=KEY    {context, videoId}
         → playabilityStatus, captions.playerCaptionsTracklistRenderer.captionTracks
    GET  the chosen caption track's baseUrl       timedtext XML: <text start dur>…</text>

and this adapter adds one for the title: `GET https://www.youtube.com/oembed?url=…` → title.

The session's transport adapter (`_YouTubeOnly`) is where this is made safe and bounded:
every request, redirects included, must be for YouTube's own hosts (a caption URL in
YouTube's answer that names another host is refused); it is sent to `base_url` (YouTube
itself, or a fake one on 127.0.0.1 in tests) with a connect and read timeout (the library
sets none). The video id comes from our own parsing of the link (11 characters), so a prompt
cannot steer these requests anywhere else. The library is synchronous: one transcript runs
in a worker thread, with its own session (the library is not thread-safe), under
`timeout_seconds` in all.

A transcript in one of `languages` is preferred (manual before auto-generated), else the
first the video has. Every failure is `TranscriptUnavailable` with a reason a person reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError

import requests
import structlog
from requests.adapters import HTTPAdapter
from youtube_transcript_api import (
    AgeRestricted,
    CouldNotRetrieveTranscript,
    InvalidVideoId,
    NoTranscriptFound,
    PoTokenRequired,
    RequestBlocked,
    TranscriptsDisabled,
    VideoUnavailable,
    VideoUnplayable,
    YouTubeRequestFailed,
    YouTubeTranscriptApi,
)

from threadline.domain.errors import TranscriptUnavailable
from threadline.domain.web import Transcript

log = structlog.get_logger(__name__)

YOUTUBE = "https://www.youtube.com"
YOUTUBE_HOSTS = frozenset({"www.youtube.com", "youtube.com", "m.youtube.com"})
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (TranscriptsDisabled, "the video has no transcript (its subtitles are turned off)"),
    (VideoUnavailable, "the video is unavailable"),
    (InvalidVideoId, "the video is unavailable"),
    (AgeRestricted, "the video is age-restricted; its transcript needs a signed-in viewer"),
    (VideoUnplayable, "the video cannot be played here"),
    (RequestBlocked, "YouTube refused this server's requests (rate limit or blocked address)"),
    (PoTokenRequired, "YouTube asks for a proof-of-origin token for this transcript"),
    (YouTubeRequestFailed, "YouTube answered with an HTTP error"),
)
_UNREADABLE = (CouldNotRetrieveTranscript, requests.RequestException, ParseError, ValueError)
_MALFORMED = (LookupError, TypeError)  # an answer not shaped as the library expects


class _OffYouTube(requests.RequestException):
    """A request for a host that is not YouTube's."""


class _YouTubeOnly(HTTPAdapter):
    """Sends requests for YouTube's hosts to `base_url`, with timeouts; refuses the rest."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        super().__init__(max_retries=0)
        self._base = urlsplit(base_url)
        self._timeout = timeout_seconds

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url or "")
        if not self._allowed(url.scheme, url.netloc, url.hostname or ""):
            raise _OffYouTube(f"not a YouTube address: {url.hostname}")
        request.url = url._replace(scheme=self._base.scheme, netloc=self._base.netloc).geturl()
        kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)

    def _allowed(self, scheme: str, netloc: str, hostname: str) -> bool:
        """YouTube's own hosts over https, or `base_url` itself (a redirect on the fake)."""
        if scheme == "https" and hostname.lower() in YOUTUBE_HOSTS:
            return True
        return (scheme, netloc) == (self._base.scheme, self._base.netloc)


class YouTubeTranscripts:
    """A `TranscriptSource` reading YouTube through `youtube-transcript-api`."""

    def __init__(
        self,
        *,
        languages: Sequence[str] = ("en",),
        timeout_seconds: float = 15.0,
        base_url: str = YOUTUBE,
    ) -> None:
        self.languages = tuple(languages)
        self.timeout_seconds = timeout_seconds
        self.base_url = base_url

    async def transcript(self, video_id: str) -> Transcript:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._transcript, video_id), self.timeout_seconds
            )
        except TimeoutError:
            raise TranscriptUnavailable(self._too_slow()) from None

    def _transcript(self, video_id: str) -> Transcript:
        with self._session() as session:
            try:
                fetched = self._choose(YouTubeTranscriptApi(http_client=session), video_id)
                snippets = fetched.fetch()
            except requests.Timeout:  # one request's timeout: the same limit as the whole
                raise TranscriptUnavailable(self._too_slow()) from None
            except (*_UNREADABLE, *_MALFORMED) as error:
                raise TranscriptUnavailable(_reason(error)) from None
            text = " ".join(" ".join(s.text.split()) for s in snippets if s.text.strip())
            if not text:
                raise TranscriptUnavailable("the video's transcript is empty")
            return Transcript(video_id, text, _title(session, video_id), fetched.language)

    def _choose(self, api: YouTubeTranscriptApi, video_id: str) -> Any:
        """The transcript in the first of `languages` the video has, else its first one."""
        listing = api.list(video_id)
        try:
            return listing.find_transcript(self.languages)
        except NoTranscriptFound:
            for transcript in listing:
                return transcript
        raise TranscriptsDisabled(video_id)

    def _too_slow(self) -> str:
        return f"YouTube did not answer within {self.timeout_seconds:g} s"

    def _session(self) -> requests.Session:
        session = requests.Session()
        adapter = _YouTubeOnly(self.base_url, self.timeout_seconds)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session


def _title(session: requests.Session, video_id: str) -> str:
    """The video's title from YouTube's oEmbed answer; "" when it cannot be had."""
    watch = f"{YOUTUBE}/watch?v={video_id}"
    try:
        response = session.get(f"{YOUTUBE}/oembed", params={"url": watch, "format": "json"})
        response.raise_for_status()
        title = response.json().get("title")
    except (requests.RequestException, ValueError, AttributeError):
        return ""
    return " ".join(str(title).split())[:300] if title else ""


def _reason(error: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    if isinstance(error, _OffYouTube):
        return "YouTube's answer pointed outside YouTube; it was not followed"
    if isinstance(error, ParseError | ValueError):  # XML or JSON (requests' JSON error too)
        return "YouTube's answer could not be parsed"
    log.info("youtube_transcript_failed", error=type(error).__name__)
    if isinstance(error, requests.RequestException):
        return "YouTube could not be reached"
    return "YouTube's answer could not be read"
