"""The SSRF-safe fetcher against a real page server on 127.0.0.1.

With the test allow list it reaches the server; with default settings every private,
loopback or link-local address is refused before any connection is made, on every redirect
hop. Nothing here touches the internet: names are `localhost` or answered by a fake resolver.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.page_server import ARTICLE_PHRASE, SECRET_ERROR, PageServer
from threadline.domain.errors import FetchFailed, FetchRefused
from threadline.settings import FetchSettings
from threadline.tools.addresses import refusal
from threadline.tools.fetcher import SafeFetcher


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


def allowed(site: PageServer, **options: object) -> SafeFetcher:
    return SafeFetcher(allow_private_hosts=[site.host_port], **options)  # type: ignore[arg-type]


def fake_resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError("no such name")
        return table[host]

    resolver.calls = calls  # type: ignore[attr-defined]
    return resolver


async def test_allow_listed_test_server_is_fetched(site):
    page = await allowed(site).fetch(site.url("/article"))
    assert page.content_type == "text/html"
    assert page.charset == "utf-8"
    assert ARTICLE_PHRASE.encode() in page.body
    assert page.url == site.url("/article")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/article",
        "http://localhost:{port}/article",
        "http://[::1]:{port}/article",
        "http://[::ffff:127.0.0.1]:{port}/article",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/article",
        "http://2130706433:{port}/article",  # 127.0.0.1 as one decimal number
        "http://10.1.2.3/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "https://127.0.0.1:{port}/article",
    ],
)
async def test_default_settings_refuse_local_and_private_addresses(site, url):
    fetcher = SafeFetcher()
    hits = len(site.hosts)
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(url.format(port=site.port))
    assert "only public addresses are fetched" in caught.value.reason
    assert len(site.hosts) == hits  # refused before connecting


async def test_a_name_resolving_to_loopback_is_refused():
    resolver = fake_resolver({"rebind.test": ["127.0.0.1"]})
    with pytest.raises(FetchRefused, match=re.escape("rebind.test resolves to a loopback address")):
        await SafeFetcher(resolver=resolver).fetch("http://rebind.test/")


async def test_a_name_with_one_private_address_among_public_ones_is_refused():
    resolver = fake_resolver({"mixed.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(FetchRefused, match="a private address"):
        await SafeFetcher(resolver=resolver).fetch("http://mixed.test/")


async def test_connects_to_the_checked_address_with_the_real_host_header(site):
    """The name is resolved once, by the fetcher; the request goes to that address and
    carries the name in Host (a second lookup could be answered differently: rebinding)."""
    resolver = fake_resolver({"pages.test": ["127.0.0.1"]})
    fetcher = SafeFetcher(allow_private_hosts=[f"pages.test:{site.port}"], resolver=resolver)
    page = await fetcher.fetch(f"http://pages.test:{site.port}/host")
    assert page.body == f"pages.test:{site.port}".encode()
    assert resolver.calls == ["pages.test"]


async def test_redirect_to_an_allowed_page_is_followed(site):
    target = site.url("/article")
    page = await allowed(site).fetch(site.url(f"/redirect?to={target}"))
    assert ARTICLE_PHRASE.encode() in page.body
    assert page.url == target


async def test_relative_redirect_is_followed(site):
    page = await allowed(site).fetch(site.url("/redirect?to=/notes.txt"))
    assert page.url == site.url("/notes.txt")


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:{port}/article",
        "http://[::ffff:127.0.0.1]:{port}/article",
    ],
)
async def test_redirect_to_a_private_address_is_refused_at_that_hop(site, target):
    fetcher = allowed(site)
    hits = len(site.hosts)
    with pytest.raises(FetchRefused, match="only public addresses"):
        await fetcher.fetch(site.url("/redirect?to=" + target.format(port=site.port)))
    assert len(site.hosts) == hits + 1  # the first hop only


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:70/"])
async def test_redirect_to_another_scheme_is_refused(site, target):
    with pytest.raises(FetchRefused, match="only http and https"):
        await allowed(site).fetch(site.url("/redirect?to=" + target))


async def test_redirect_loop_stops_after_the_hop_limit(site):
    hits = len(site.hosts)
    with pytest.raises(FetchFailed, match="redirected more than 5 times"):
        await allowed(site).fetch(site.url("/loop"))
    assert len(site.hosts) == hits + 6


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/file",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:text/html,<p>hi</p>",
    ],
)
async def test_non_http_schemes_are_refused(url):
    with pytest.raises(FetchRefused, match="only http and https"):
        await SafeFetcher().fetch(url)


async def test_credentials_in_the_url_are_refused(site):
    with pytest.raises(FetchRefused, match="user name or password"):
        await allowed(site).fetch(f"http://admin:secret@{site.host_port}/article")


async def test_slow_answer_hits_the_time_cap(site):
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=re.escape("did not load within 0.5 s")):
        await allowed(site, timeout_seconds=0.5).fetch(site.url("/slow?s=2"))
    assert time.monotonic() - started < 1.5


async def test_a_body_that_trickles_hits_the_time_cap(site):
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=re.escape("did not load within 0.6 s")):
        await allowed(site, timeout_seconds=0.6).fetch(site.url("/drip"))
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("path", ["/huge", "/huge-declared", "/gzip-bomb"])
async def test_bodies_over_the_byte_cap_are_refused(site, path):
    with pytest.raises(FetchFailed, match="larger than 64 KB"):
        await allowed(site, max_bytes=65536).fetch(site.url(path))


async def test_gzip_body_is_decoded(site):
    page = await allowed(site).fetch(site.url("/gzip"))
    assert ARTICLE_PHRASE.encode() in page.body


async def test_content_types_outside_the_allowed_ones_are_refused(site):
    with pytest.raises(FetchFailed, match="application/octet-stream, not a web page"):
        await allowed(site).fetch(site.url("/binary"))


async def test_upstream_error_text_is_never_passed_on(site):
    with pytest.raises(FetchFailed) as caught:
        await allowed(site).fetch(site.url("/missing"))
    assert caught.value.reason == "the server answered HTTP 404"
    assert SECRET_ERROR not in str(caught.value)


async def test_unreachable_port_is_a_clear_failure(site):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = SafeFetcher(allow_private_hosts=[f"127.0.0.1:{port}"])
    with pytest.raises(FetchFailed, match=re.escape("could not connect to 127.0.0.1")):
        await fetcher.fetch(f"http://127.0.0.1:{port}/")


async def test_unresolvable_name_is_a_clear_failure():
    with pytest.raises(FetchFailed, match=re.escape("nowhere.test could not be resolved")):
        await SafeFetcher(resolver=fake_resolver({})).fetch("http://nowhere.test/")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_address_kinds(address, kind):
    assert kind in (refusal(address) or "")


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address):
    assert refusal(address) is None


def test_allow_list_entries_must_be_host_and_port():
    FetchSettings(allow_private_hosts=["127.0.0.1:8080", "[::1]:8080"])
    with pytest.raises(ValueError, match="not host:port"):
        FetchSettings(allow_private_hosts=["127.0.0.1"])


def test_default_settings_allow_no_private_host():
    assert FetchSettings().allow_private_hosts == []
