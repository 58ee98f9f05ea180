"""The parts of images in: facts from image headers, an uploaded image's text rebuilt from
its chunks, the image fetcher beside the link fetcher, and providers and settings that
take (or refuse) images. See test_images.py for the feature through the API."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from tests.image_server import ImageServer
from threadline.domain.documents import ParsedDocument, ParsedPage
from threadline.domain.errors import FetchFailed, Unprocessable
from threadline.domain.fetching import FetchedPage
from threadline.domain.images import ImageFacts, ImagePart
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.ingestion.chunking import chunk_pages
from threadline.ingestion.image_facts import inspect_image
from threadline.providers.local import _request_body
from threadline.providers.openai_compat import OpenAICompatibleModel
from threadline.services.images import ImageLimits, ImageReader, ImageReading, ReadImage, joined
from threadline.settings import ModelConfig
from threadline.tools.fetcher import IMAGE_CONTENT_TYPES, IMAGES, IMAGES_ACCEPT, SafeFetcher


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "options", "mime", "name"),
    [
        ("PNG", "L", {}, "image/png", "PNG"),
        ("JPEG", "RGB", {}, "image/jpeg", "JPEG"),
        (
            "JPEG",
            "RGB",
            {"progressive": True, "exif": b"Exif\0\0" + bytes(64)},
            "image/jpeg",
            "JPEG",
        ),
        ("GIF", "P", {}, "image/gif", "GIF"),
        ("WEBP", "RGB", {}, "image/webp", "WebP"),
        ("WEBP", "RGBA", {"lossless": True}, "image/webp", "WebP"),
        ("WEBP", "RGBA", {"exif": b"Exif\0\0"}, "image/webp", "WebP"),
        ("TIFF", "RGB", {}, "image/tiff", "TIFF"),
        ("TIFF", "RGB", {"compression": "tiff_lzw"}, "image/tiff", "TIFF"),
        ("BMP", "RGB", {}, "image/bmp", "BMP"),
    ],
)
def test_facts_come_from_the_header(fmt, mode, options, mime, name):
    data = encoded(Image.new(mode, (321, 123)), fmt, **options)
    assert inspect_image(data) == ImageFacts(mime, name, 321, 123)


def test_not_an_image_has_no_facts_and_a_truncated_one_no_size():
    assert inspect_image(b"%PDF-1.7\n...") is None
    assert inspect_image(b"<html>not an image</html>") is None
    assert inspect_image(b"") is None
    assert inspect_image(b"\x89PNG\r\n\x1a\n") == ImageFacts("image/png", "PNG")
    jpeg = encoded(Image.new("RGB", (50, 40)), "JPEG")
    assert inspect_image(jpeg[:20]) == ImageFacts("image/jpeg", "JPEG")


def test_an_uploaded_images_text_is_rebuilt_from_its_overlapping_chunks():
    first = " ".join(f"word{n}" for n in range(300))
    second = " ".join(f"Sentence {n} of page two." for n in range(30))
    pages = [ParsedPage(0, first), ParsedPage(1, second)]
    chunks = chunk_pages(7, pages, size=200, overlap=40)
    assert len(chunks) > 5 and chunks[1].text.split()[0] in chunks[0].text.split()  # overlap
    assert joined(chunks, 40) == f"{first}\n\n{second}"
    assert joined([], 40) == ""


# ---- fetching images without loosening link reading ----------------------------------------


@pytest.fixture(scope="module")
def site() -> Iterator[ImageServer]:
    png = encoded(Image.new("RGB", (8, 8)), "PNG")
    with ImageServer({"/a.png": ("image/png", png), "/a.html": ("text/html", b"<p>hi</p>")}) as s:
        yield s


def image_fetcher(site: ImageServer) -> SafeFetcher:
    return SafeFetcher(allow_private_hosts=[site.host_port]).for_images(max_bytes=1024 * 1024)


async def test_the_image_fetcher_takes_images_and_the_link_fetcher_still_does_not(site):
    fetched = await image_fetcher(site).fetch(site.url("/a.png"))
    assert fetched.content_type == "image/png" and fetched.body.startswith(b"\x89PNG")
    links = SafeFetcher(allow_private_hosts=[site.host_port])
    with pytest.raises(FetchFailed, match="the page is image/png, not a web page, text or PDF"):
        await links.fetch(site.url("/a.png"))
    assert (await links.fetch(site.url("/a.html"))).content_type == "text/html"
    with pytest.raises(FetchFailed, match=r"the page is text/html, not an image \(PNG, JPEG"):
        await image_fetcher(site).fetch(site.url("/a.html"))


async def test_the_image_fetcher_refuses_private_addresses_by_default(site):
    fetcher = SafeFetcher().for_images(max_bytes=1024 * 1024)
    hits = site.hits["/a.png"]
    with pytest.raises(Unprocessable, match="loopback address"):
        await fetcher.fetch(site.url("/a.png"))
    assert site.hits["/a.png"] == hits


async def test_for_images_keeps_the_link_fetchers_rules_for_the_types_it_is_given(site):
    links = SafeFetcher(allow_private_hosts=[site.host_port], max_redirects=2, user_agent="UA")
    chat = links.for_images(max_bytes=2048)
    assert (chat.allow_private_hosts, chat.max_redirects, chat.user_agent) == (
        links.allow_private_hosts,
        2,
        "UA",
    )
    assert chat.max_bytes == 2048 and links.max_bytes == 5 * 1024 * 1024
    assert chat.content_types == IMAGE_CONTENT_TYPES and chat.accept == IMAGES_ACCEPT
    assert chat.accepted == IMAGES and links.content_types.isdisjoint(IMAGE_CONTENT_TYPES)
    variator = links.for_images(
        max_bytes=2048,
        content_types={"image/png", "image/jpeg", "image/webp"},
        accepted="a PNG, JPEG or WebP image",
    )
    assert variator.accept == "image/png,image/jpeg,image/webp"
    assert (await variator.fetch(site.url("/a.png"))).body.startswith(b"\x89PNG")
    with pytest.raises(FetchFailed, match="text/html, not a PNG, JPEG or WebP image"):
        await variator.fetch(site.url("/a.html"))
    with pytest.raises(ValueError, match="text/html"):
        links.for_images(max_bytes=2048, content_types={"image/png", "text/html"})


# ---- providers and settings ----------------------------------------------------------------


def request_with_image() -> ModelRequest:
    image = ImagePart("image/gif", b"GIF89a...")
    return ModelRequest(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "What is it?", images=(image,))]
    )


def test_the_openai_provider_sends_images_as_data_url_parts():
    config = ModelConfig(provider="openai-compatible", base_url="http://127.0.0.1:9/v1")
    body = OpenAICompatibleModel("m", config, api_key=None).request_body(request_with_image())
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlhLi4u"}},
            ],
        },
    ]


def test_the_local_model_refuses_images_and_cannot_be_marked_vision():
    with pytest.raises(Unprocessable, match="the local model reads text only"):
        _request_body(request_with_image(), 64)
    with pytest.raises(ValidationError, match="vision = true needs a model that takes images"):
        ModelConfig(provider="local", vision=True)


# ---- what a text-only model reads ------------------------------------------------------------


def test_the_images_block_fits_its_room_and_keeps_every_image():
    facts = ImageFacts("image/png", "PNG", 800, 600)
    read = [
        ReadImage(f"ref{n}", f"scan{n}.png", facts, 2048, "text", text='"""lorem ipsum ' * 3000)
        for n in range(3)
    ]
    silent = ReadImage("ref3", "blank.png", facts, 100, "text", note="OCR read no text")
    seen = ReadImage("ref4", "photo.png", facts, 100, "vision", data=b"...")
    block = ImageReading((*read, silent, seen)).system(6000)
    assert len(block) <= 6000
    assert block.count("lorem") > 300  # the room is used, shared by the three texts
    assert block.count('"""') == 1 + 6  # the instructions name the marks
    assert "[Image 1] scan0.png: PNG, 800x600 pixels, 2 KB. Its text:" in block
    assert "[Image 4] blank.png: PNG, 800x600 pixels, 100 bytes. No text was found in it: " in (
        block
    )
    assert "photo.png" not in block  # a vision model sees that one


# ---- OCR of fetched images: bounded across requests -----------------------------------


class _Pages:
    """A fetcher answering a PNG for any URL."""

    async def fetch(self, url: str) -> FetchedPage:
        return FetchedPage(url, "image/png", encoded(Image.new("L", (8, 8), 255), "PNG"))


class _SlowParser:
    """A parser that records how many parses run at once."""

    def __init__(self) -> None:
        self.running = self.most = 0

    async def parse(self, path: object, mime_type: str, name: str) -> ParsedDocument:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1
        return ParsedDocument(pages=(ParsedPage(0, "text", 8, 8, is_image_page=True),))


async def test_fetched_images_are_ocred_a_few_at_a_time_whatever_the_requests() -> None:
    parser = _SlowParser()
    reader = ImageReader(
        None,  # type: ignore[arg-type]  # assets are not read here
        None,  # type: ignore[arg-type]
        _Pages(),
        parser,
        inspect_image,
        ImageLimits(max_images=10),  # OCR two at a time by default
    )
    caller: Any = object()
    urls = [f"https://images.example/{n}.png" for n in range(10)]
    readings = await asyncio.gather(*(reader.read(caller, urls, vision=False) for _ in range(3)))
    assert all(image.text == "text" for reading in readings for image in reading.images)
    assert parser.most == 2  # 30 images: never more sandboxed parses at once
