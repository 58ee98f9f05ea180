"""A fake OpenAI-compatible images upstream on 127.0.0.1: real HTTP, real pictures, faults on cue.

A `LocalSite` (tests/local_site.py) speaking OpenAI's images API:

    POST /v1/images/generations   JSON {model, prompt, n, size, response_format|output_format}
    POST /v1/images/variations    multipart {image (file), model, n, size, response_format}
        -> {"created": ..., "data": [{"b64_json": ...}, ...]}: n solid-colour pictures made
           with Pillow, PNG unless the request named an output_format
    GET  /files/cat.png           a PNG to vary (`source_png`), served as image/png
    GET  /files/page.html         an HTML page (the wrong type for an image)

    with FakeImages(api_key="sk-img") as up:
        up.url                     # "http://127.0.0.1:PORT/v1" (a model's base_url)
        up.host_port               # "127.0.0.1:PORT" (for fetch.allow_private_hosts)
        up.enqueue(Status(500))    # the next images request fails so (tests/faults.py;
                                   # body None: OpenAI's error shape); also Hang(s),
                                   # BadJson(), Urls() (urls instead of b64_json),
                                   # Garbage() (base64 of bytes that are no picture)
        up.requests[0]             # {"path", "headers", "json" | "fields" + "image"}
        up.made[0]                 # the picture bytes that request answered
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.faults import Hang, Status
from tests.local_site import LocalSite, OnSite, SiteHandler

SIDE = 48
COLOURS = ((200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 170, 30), (140, 50, 180))
UPSTREAM_ERROR = "the flux capacitor is out of flux"


def picture(colour: tuple[int, int, int], fmt: str = "png", side: int = SIDE) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format=fmt.upper())
    return out.getvalue()


@dataclass(frozen=True)
class BadJson:
    pass


@dataclass(frozen=True)
class Urls:
    pass


@dataclass(frozen=True)
class Garbage:
    """Valid base64 of bytes that are no picture."""


Fault = Status | Hang | BadJson | Urls | Garbage


@dataclass
class FakeImages(OnSite):
    api_key: str | None = "sk-img"
    source_png: bytes = field(default_factory=lambda: picture((10, 120, 200), "png", 64))
    requests: list[dict[str, Any]] = field(default_factory=list)
    made: list[list[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._count = 0
        self.site = LocalSite(_handler(self))

    @property
    def host_port(self) -> str:
        return self.site.host_port

    @property
    def url(self) -> str:
        return self.site.url("/v1")

    def file_url(self, name: str) -> str:
        return self.site.url(f"/files/{name}")

    def enqueue(self, fault: Fault) -> None:
        self._faults.append(fault)

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def pictures(self, n: int, fmt: str) -> list[bytes]:
        with self._lock:
            start, self._count = self._count, self._count + n
        made = [picture(COLOURS[(start + i) % len(COLOURS)], fmt) for i in range(n)]
        self.made.append(made)
        return made


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if part.get_filename():
            files[name] = {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "data": data,
            }
        else:
            fields[name] = data.decode()
    return fields, files


def _handler(up: FakeImages) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_GET(self) -> None:
            if self.path == "/files/cat.png":
                self.send(200, up.source_png, "image/png")
            elif self.path == "/files/page.html":
                self.send(200, b"<html><body>not a picture</body></html>", "text/html")
            else:
                self.send(404, {"error": {"message": "no such file"}})

        def do_POST(self) -> None:
            body = self.body()
            record: dict[str, Any] = {"path": self.path, "headers": dict(self.headers)}
            if self.path.endswith("/images/generations"):
                record["json"] = json.loads(body)
                options = record["json"]
            elif self.path.endswith("/images/variations"):
                fields, files = _parse_multipart(self.headers["Content-Type"], body)
                record["fields"], record["image"] = fields, files.get("image")
                options = fields
            else:
                self.send(404, {"error": {"message": f"unknown path {self.path}"}})
                return
            up.requests.append(record)
            if up.api_key and self.headers.get("Authorization") != f"Bearer {up.api_key}":
                self.send(401, {"error": {"message": "Incorrect API key provided"}})
                return
            if self._fault():
                return
            made = up.pictures(int(options.get("n", 1)), options.get("output_format", "png"))
            data = [{"b64_json": base64.b64encode(p).decode()} for p in made]
            self.send(200, {"created": int(time.time()), "data": data})

        def _fault(self) -> bool:
            fault = up.next_fault()
            if fault is None:
                return False
            if isinstance(fault, Status):
                body = fault.body
                if body is None:
                    body = {"error": {"message": UPSTREAM_ERROR, "type": "server_error"}}
                self.send(fault.status, body)
            elif isinstance(fault, Hang):
                up.site.stopping.wait(fault.seconds)
                with contextlib.suppress(OSError):
                    self.connection.close()
            elif isinstance(fault, BadJson):
                self.send(200, b'{"created": 1, "data": [')
            elif isinstance(fault, Garbage):
                junk = base64.b64encode(b"\x89PNG but not really" * 10).decode()
                self.send(200, {"created": 1, "data": [{"b64_json": junk}]})
            else:
                self.send(200, {"created": 1, "data": [{"url": "http://10.0.0.7/x.png"}]})
            return True

    return Handler
