"""A fake image host on 127.0.0.1 for the image tests: real HTTP over real TCP.

A `LocalSite` (tests/local_site.py) that serves whatever `files` maps a
path to: `(content type, body)`, or `(status, content type, body)`. Any other path is a 404.
It counts the requests of each path, so a test can tell a refused URL was never fetched.

    with ImageServer({"/cat.png": ("image/png", png_bytes)}) as site:
        site.url("/cat.png")   # "http://127.0.0.1:PORT/cat.png"
        site.host_port         # "127.0.0.1:PORT" (for fetch.allow_private_hosts)
        site.hits["/cat.png"]  # requests served for that path
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from tests.local_site import LocalSite, SiteHandler

File = tuple[str, bytes] | tuple[int, str, bytes]


class ImageServer(LocalSite):
    def __init__(self, files: Mapping[str, File]) -> None:
        self.files = dict(files)
        self.hits: Counter[str] = Counter()
        super().__init__(_handler(self))


def _handler(site: ImageServer) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            site.hits[path] += 1
            entry = site.files.get(path)
            status, kind, body = (
                (404, "text/plain", b"no such image")
                if entry is None
                else entry
                if len(entry) == 3
                else (200, *entry)
            )
            self.send(status, body, kind)

    return Handler
