"""Web search's pieces without a server: the ddgs adapter (offline, over a stand-in for the
DDGS class: the real one goes to the internet), word shares and the search query
(tests/test_web_search.py: through the API, against fake search services)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from threadline.domain.errors import SearchFailed, SearchTimeout
from threadline.domain.web import SearchResult
from threadline.services.web_search import search_query, share_words
from threadline.settings import SearchSettings
from threadline.tools.search import DdgsSearcher, build_searcher

# ---- ddgs: offline, so its adapter runs over a stand-in for the DDGS class ------------------


class StandInDDGS:
    """Replaces `ddgs.DDGS` (the real one goes to the internet): answers `behaviour`."""

    behaviour: Any = None
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, timeout: int | None = 5) -> None:
        self.timeout = timeout

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        StandInDDGS.calls.append((query, {"timeout": self.timeout, **kwargs}))
        behaviour = StandInDDGS.behaviour
        if isinstance(behaviour, Exception):
            raise behaviour
        if isinstance(behaviour, float):
            import time

            time.sleep(behaviour)
            return []
        return list(behaviour)


@pytest.fixture
def stand_in_ddgs(monkeypatch: pytest.MonkeyPatch) -> type[StandInDDGS]:
    import ddgs

    monkeypatch.setattr(ddgs, "DDGS", StandInDDGS)
    StandInDDGS.calls = []
    return StandInDDGS


def test_ddgs_is_configured_without_a_key():
    searcher = build_searcher(SearchSettings(provider="ddgs", timeout_seconds=3))
    assert isinstance(searcher, DdgsSearcher) and searcher.timeout_seconds == 3


async def test_ddgs_results_become_search_results(stand_in_ddgs):
    stand_in_ddgs.behaviour = [
        {"title": "Tide mill", "href": "https://example.org/mill", "body": "A mill."},
        {"title": "No link", "href": "", "body": "dropped"},
        {"title": "Second", "href": "https://example.org/2", "body": "Two."},
    ]
    results = await DdgsSearcher(timeout_seconds=2.5).search("tide mills", 2)
    assert results == [
        SearchResult("Tide mill", "https://example.org/mill", "A mill."),
        SearchResult("Second", "https://example.org/2", "Two."),
    ]
    assert stand_in_ddgs.calls == [("tide mills", {"timeout": 3, "max_results": 2})]


async def test_ddgs_failures_are_domain_errors(stand_in_ddgs):
    from ddgs.exceptions import DDGSException, TimeoutException

    searcher = DdgsSearcher(timeout_seconds=0.5)
    stand_in_ddgs.behaviour = DDGSException("No results found.")
    assert await searcher.search("nothing", 3) == []
    stand_in_ddgs.behaviour = DDGSException("https://html.duckduckgo.com 202 Ratelimit")
    with pytest.raises(SearchFailed, match=r"^the web search provider \(ddgs\) failed$"):
        await searcher.search("tide", 3)
    stand_in_ddgs.behaviour = TimeoutException("timed out")
    with pytest.raises(SearchTimeout):
        await searcher.search("tide", 3)
    stand_in_ddgs.behaviour = 2.0  # slower than the searcher's own limit
    with pytest.raises(SearchTimeout, match=r"within 0\.5 s"):
        await searcher.search("tide", 3)


# ---- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "total", "shares"),
    [
        ([100, 100, 100], 90, [30, 30, 30]),
        ([6, 200, 0], 60, [6, 54, 0]),
        ([10, 10], 1000, [10, 10]),
        ([7, 7, 7], 10, [3, 3, 4]),
        ([], 100, []),
    ],
)
def test_share_words(counts, total, shares):
    assert share_words(counts, total) == shares
    assert sum(shares) <= total


def test_search_query_is_cut_at_a_word():
    assert search_query("a " * 300).endswith("a") and len(search_query("a " * 300)) <= 400
    assert search_query("tide\tmill\n") == "tide mill"
