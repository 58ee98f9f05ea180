"""A fake web site on 127.0.0.1 for the fetcher and link tests: real HTTP over real TCP.

A `LocalSite` (tests/local_site.py). Paths:

    /article            an HTML article (title "The Tide Mill", text about tide mills)
    /notes.txt          plain text            /report.pdf   a PDF (if `pdf` bytes given)
    /binary             application/octet-stream
    /missing            404 with an upstream error body that must never reach a caller
    /host               echoes the request's Host header (text/plain)
    /redirect?to=URL    302 to URL            /loop         302 to itself, forever
    /slow?s=N           waits N seconds before answering
    /drip               answers at once, then one byte per 0.2 s for ever (almost)
    /huge               streams 8 MB with no Content-Length
    /huge-declared      declares a 8 MB Content-Length
    /gzip-bomb          a small gzip body that inflates to 8 MB
    /gzip               the article, gzip-encoded

    with PageServer() as site:
        site.url("/article")  # "http://127.0.0.1:PORT/article"
        site.host_port        # "127.0.0.1:PORT" (for fetch.allow_private_hosts)
"""

from __future__ import annotations

import gzip
from urllib.parse import parse_qs, urlsplit

from tests.local_site import LocalSite, SiteHandler

ARTICLE_PHRASE = "The tide mill at Woodbridge ground grain with the ebb of the river Deben"
ARTICLE = f"""<!doctype html>
<html><head><title>The Tide Mill</title></head>
<body>
<nav>Home | About | Contact</nav>
<article>
<h1>The Tide Mill</h1>
<p>{ARTICLE_PHRASE}. Water was held back behind a dam at high tide and released through the
wheel as the tide fell, so the miller worked by the tide table rather than by the clock.</p>
<p>The mill worked until 1957 and is now a museum. Its wheel was restored in 2011 and turns
on open days when the tide allows.</p>
</article>
<footer>Copyright the mill trust</footer>
</body></html>"""
SECRET_ERROR = "upstream-secret-stacktrace at /srv/internal/app.py line 42"
HUGE = 8 * 1024 * 1024


class PageServer(LocalSite):
    def __init__(self, *, pdf: bytes = b"") -> None:
        self.pdf = pdf
        self.hosts: list[str] = []  # the Host header of every request, in order
        super().__init__(_handler(self))


def _handler(site: PageServer) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_GET(self) -> None:
            site.hosts.append(self.headers.get("Host", ""))
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            route = ROUTES.get(parts.path)
            if route is None:
                self.send(404, b"no such page", "text/plain")
                return
            route(self, site, query)

    return Handler


Route = SiteHandler


def _article(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, ARTICLE, "text/html; charset=utf-8")


def _notes(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, b"Plain notes about the tide mill.\n", "text/plain; charset=utf-8")


def _pdf(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, site.pdf, "application/pdf")


def _binary(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, b"\x7fELF" + bytes(100), "application/octet-stream")


def _missing(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(404, SECRET_ERROR, "text/plain")


def _host(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, h.headers.get("Host", ""), "text/plain")


def _redirect(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(302, b"", "text/plain", {"Location": q["to"]})


def _loop(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(302, b"", "text/plain", {"Location": "/loop"})


def _slow(h: Route, site: PageServer, q: dict[str, str]) -> None:
    site.stopping.wait(float(q.get("s", "3")))
    h.send(200, b"late", "text/plain")


def _drip(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(25):  # 5 s at most
        h.wfile.write(b"x")
        h.wfile.flush()
        if site.stopping.wait(0.2):
            return


def _huge(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Connection", "close")
    h.end_headers()
    block = b"a" * 65536
    for _ in range(HUGE // len(block)):
        h.wfile.write(block)
    h.close_connection = True


def _huge_declared(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(HUGE))
    h.end_headers()
    h.close_connection = True


def _gzip_bomb(h: Route, site: PageServer, q: dict[str, str]) -> None:
    h.send(200, gzip.compress(b"\0" * HUGE), "text/plain", {"Content-Encoding": "gzip"})


def _gzipped(h: Route, site: PageServer, q: dict[str, str]) -> None:
    body = gzip.compress(ARTICLE.encode())
    h.send(200, body, "text/html", {"Content-Encoding": "gzip"})


ROUTES = {
    "/article": _article,
    "/notes.txt": _notes,
    "/report.pdf": _pdf,
    "/binary": _binary,
    "/missing": _missing,
    "/host": _host,
    "/redirect": _redirect,
    "/loop": _loop,
    "/slow": _slow,
    "/drip": _drip,
    "/huge": _huge,
    "/huge-declared": _huge_declared,
    "/gzip-bomb": _gzip_bomb,
    "/gzip": _gzipped,
}
