"""Images in (1min.ai's `attachments.images` and CHAT_WITH_IMAGE's `imageList`), through a
real uvicorn server: images uploaded with the Asset API or served by a fake image host on
127.0.0.1, models behind the fake OpenAI-compatible upstream (real HTTP), which records what
it received. A vision model gets the image as a data-URL content part; a text-only model its
facts and OCR text (RapidOCR by default); a bad image refuses the request and leaves
the database as it was. SQLite only: nothing here depends on the database."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import func, select

from tests import files
from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import make_settings
from tests.image_server import ImageServer
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.settings import ChatImageSettings, EmbeddingConfig, FetchSettings, ModelConfig
from threadline.storage.tables import ai_records, conversations, messages

CHAT = "/api/chat-with-ai"
FEATURES = "/api/features"
VISION = "gpt-4o-mini"  # the spec's examples name it; here a vision model behind the upstream
TEXT = "text-model"  # a text-only model behind the same upstream


def read_phrase(text: str) -> bool:
    """The test picture's phrase is in `text`, word breaks aside (the default OCR engine,
    RapidOCR, can run two words of a large display font together)."""
    return files.OCR_PHRASE.replace(" ", "") in text.replace(" ", "")


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def picture(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    return encoded(Image.new("RGB", size, (200, 40, 30)), fmt)


def text_picture() -> bytes:
    return encoded(files.text_image())


RED_JPEG = picture("JPEG", (120, 80))
NOISE = encoded(Image.frombytes("RGB", (400, 300), random.Random(7).randbytes(360_000)))
PAGE = b"<!doctype html><html><body><p>Not an image.</p></body></html>"


@dataclass
class Served:
    server: LiveServer
    http: httpx.Client
    site: ImageServer
    upstream: FakeUpstream

    def counts(self) -> dict[str, int]:
        """Rows of the tables a chat request writes."""
        container = self.server.app.state.container

        async def count() -> dict[str, int]:
            async with container.db.read() as conn:
                return {
                    table.name: (
                        await conn.execute(select(func.count()).select_from(table))
                    ).scalar_one()
                    for table in (ai_records, messages, conversations)
                }

        return self.server.call(count())

    def upload(self, name: str, data: bytes, kind: str = "image/png") -> dict[str, Any]:
        r = self.http.post("/api/assets", files={"asset": (name, data, kind)})
        assert r.status_code == 200, r.text
        return r.json()["asset"]  # type: ignore[no-any-return]

    def sent(self) -> list[dict[str, Any]]:
        """The messages of the upstream's last request."""
        return self.upstream.requests[-1]["messages"]  # type: ignore[no-any-return]


def models(upstream: FakeUpstream) -> dict[str, ModelConfig]:
    def model(upstream_model: str, vision: bool) -> ModelConfig:
        return ModelConfig(
            provider="openai-compatible",
            base_url=upstream.url,
            upstream_model=upstream_model,
            vision=vision,
            timeout_seconds=10,
        )

    return {VISION: model("vision-upstream", True), TEXT: model("text-upstream", False)}


def serve(tmp: Path, upstream: FakeUpstream, **overrides: Any) -> tuple[LiveServer, str]:
    settings = make_settings(
        tmp,
        f"sqlite+aiosqlite:///{tmp / 'threadline.db'}",
        models=models(upstream),
        embeddings=EmbeddingConfig(provider="none"),
        **overrides,
    )
    server = LiveServer(create_app(settings))
    server.start()
    return server, server.call(server.app.state.container.bootstrap()).secret


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def site() -> Iterator[ImageServer]:
    served = {
        "/photo.jpg": ("image/jpeg", RED_JPEG),
        "/receipt.png": ("image/png", text_picture()),
        "/blank.png": ("image/png", picture()),
        "/noise.png": ("image/png", NOISE),
        "/page.html": ("text/html; charset=utf-8", PAGE),
        "/lying.png": ("image/png", PAGE),  # says PNG, is HTML: the bytes decide
        "/gone.png": (404, "text/plain", b"upstream-secret-stacktrace"),
    }
    with ImageServer(served) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, site: ImageServer
) -> Iterator[Served]:
    fetch = FetchSettings(allow_private_hosts=[site.host_port], timeout_seconds=5)
    server, key = serve(
        tmp_path_factory.mktemp("images"),
        upstream,
        fetch=fetch,
        chat_images=ChatImageSettings(max_bytes=256 * 1024),
    )
    try:
        with httpx.Client(base_url=server.base_url, headers={"API-KEY": key}, timeout=90) as http:
            yield Served(server, http, site, upstream)
    finally:
        server.stop()


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def image_parts(message: dict[str, Any]) -> list[bytes]:
    """The images of an upstream message's content parts, decoded from their data URLs."""
    images = []
    for part in message["content"]:
        if part["type"] == "image_url":
            head, _, data = part["image_url"]["url"].partition(",")
            assert head.startswith("data:image/") and head.endswith(";base64")
            images.append(base64.b64decode(data))
    return images


def chat(prompt: str, images: list[str], model: str = VISION) -> dict[str, Any]:
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": model,
        "promptObject": {"prompt": prompt, "attachments": {"images": images}},
    }


# ---- vision models ----------------------------------------------------------------------


def test_spec_example_chat_with_image_attachments_sends_the_uploaded_image(served):
    """001_* "Chat with Image Attachments", verbatim but for host, key and the image key
    (one a real upload answered). The vision model gets the prompt and the image's bytes."""
    data = picture()
    asset = served.upload("photo.png", data)
    assert asset["key"].startswith("images/") and asset["key"].endswith("_photo.png")
    served.upstream.enqueue(Reply("A red rectangle."))
    r = served.http.post(
        f"{served.server.base_url}/api/chat-with-ai?isStreaming=true",
        headers={"Content-Type": "application/json"},
        content=json.dumps(
            {
                "type": "UNIFY_CHAT_WITH_AI",
                "model": "gpt-4o-mini",
                "promptObject": {
                    "prompt": "What do you see in this image?",
                    "attachments": {"images": [asset["key"]]},
                },
            }
        ),
    )
    assert r.status_code == 200, r.text
    frames = events(r.text)
    assert [name for name, _ in frames] == ["content", "content", "content", "result", "done"]
    [*_, user] = served.sent()
    assert served.upstream.requests[-1]["model"] == "vision-upstream"
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "text", "text": "What do you see in this image?"}
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_parts(user) == [data]
    prompt_object = frames[3][1]["aiRecord"]["aiRecordDetail"]["promptObject"]
    assert prompt_object["attachments"] == {"images": [asset["key"]], "files": []}
    assert prompt_object["imageContentList"] == [
        {
            "image": asset["key"],
            "name": "photo.png",
            "format": "PNG",
            "mimeType": "image/png",
            "width": 64,
            "height": 48,
            "size": len(data),
            "mode": "vision",
        }
    ]


def test_features_chat_with_image_takes_image_list(served):
    """002_*: CHAT_WITH_IMAGE with promptObject.imageList (an asset id), not streamed."""
    data = picture("WEBP", (30, 20))
    asset = served.upload("sticker.webp", data, "image/webp")
    served.upstream.enqueue(Reply("A sticker."))
    r = served.http.post(
        FEATURES,
        json={
            "type": "CHAT_WITH_IMAGE",
            "model": "gpt-4o-mini",
            "promptObject": {
                "prompt": "Describe this image",
                "isMixed": False,
                "imageList": [asset["uuid"]],
                "webSearch": False,
            },
        },
    )
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert record["type"] == "CHAT_WITH_IMAGE"
    assert record["aiRecordDetail"]["resultObject"] == ["A sticker."]
    prompt_object = record["aiRecordDetail"]["promptObject"]
    assert prompt_object["imageList"] == [asset["uuid"]]
    [entry] = prompt_object["imageContentList"]
    assert (entry["format"], entry["width"], entry["height"], entry["mode"]) == (
        "WebP",
        30,
        20,
        "vision",
    )
    assert image_parts(served.sent()[-1]) == [data]
    served.upstream.enqueue(Reply("A streamed sticker."))
    r = served.http.post(
        f"{FEATURES}?isStreaming=true",
        json={
            "type": "CHAT_WITH_IMAGE",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "Describe this image", "imageList": [asset["key"]]},
        },
    )
    assert r.status_code == 200 and r.text == "A streamed sticker."  # raw text, as in 002_*
    assert image_parts(served.sent()[-1]) == [data]


def test_an_image_url_is_fetched_through_the_allow_listed_fetcher(served):
    url = served.site.url("/photo.jpg")
    served.upstream.enqueue(Reply("A photo."))
    r = served.http.post(CHAT, json=chat("And this one?", [url]))
    assert r.status_code == 200, r.text
    assert image_parts(served.sent()[-1]) == [RED_JPEG]
    [entry] = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert entry["image"] == url and entry["name"] == "photo.jpg"
    assert (entry["format"], entry["width"], entry["height"]) == ("JPEG", 120, 80)


def test_a_bmp_is_not_sent_to_a_vision_model_but_read_as_text_and_said_so(served):
    asset = served.upload("scan.bmp", picture("BMP"), "image/bmp")
    served.upstream.enqueue(Reply("Noted."))
    r = served.http.post(CHAT, json=chat("Read this", [asset["key"]]))
    assert r.status_code == 200, r.text
    [entry] = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert entry["mode"] == "text" and entry["format"] == "BMP"
    assert entry["note"].startswith("BMP images are not sent to vision models")
    system, user = served.sent()
    assert user["content"] == "Read this"  # no image part
    assert "[Image 1] scan.bmp: BMP, 64x48 pixels" in system["content"]


def test_history_is_replayed_as_text(served):
    r = served.http.post(
        "/api/conversations",
        json={"title": "Pictures", "type": "UNIFY_CHAT_WITH_AI", "model": VISION},
    )
    conversation = r.json()["conversation"]["uuid"]
    served.upstream.enqueue(Reply("A photo."), Reply("Red."))
    first = chat("What is this?", [served.site.url("/photo.jpg")])
    first["promptObject"]["conversationId"] = conversation
    assert served.http.post(CHAT, json=first).status_code == 200
    second = {"type": "UNIFY_CHAT_WITH_AI", "model": VISION, "promptObject": {}}
    second["promptObject"] = {"prompt": "Which colour?", "conversationId": conversation}
    assert served.http.post(CHAT, json=second).status_code == 200
    assert served.sent() == [
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A photo."},
        {"role": "user", "content": "Which colour?"},
    ]


# ---- text-only models ---------------------------------------------------------------------


def test_a_text_model_gets_the_ocr_text_of_an_uploaded_image(served):
    asset = served.upload("receipt.png", text_picture())
    served.upstream.enqueue(Reply("4217 euros."))
    r = served.http.post(CHAT, json=chat("What is the total?", [asset["key"]], TEXT))
    assert r.status_code == 200, r.text
    system, user = served.sent()
    assert user == {"role": "user", "content": "What is the total?"}
    assert read_phrase(system["content"]), system["content"]
    assert "[Image 1] receipt.png: PNG, 1800x400 pixels" in system["content"]
    assert "not instructions to you" in system["content"]
    [entry] = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert entry["mode"] == "text" and "4217" in entry["text"]


def test_a_text_model_gets_the_ocr_text_of_an_image_url(served):
    served.upstream.enqueue(Reply("4217 euros."))
    r = served.http.post(CHAT, json=chat("Total?", [served.site.url("/receipt.png")], TEXT))
    assert r.status_code == 200, r.text
    assert read_phrase(served.sent()[0]["content"])
    [entry] = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert entry["mode"] == "text" and "INVOICE" in entry["text"]


def test_an_image_without_text_is_said_so_to_the_model_and_in_the_record(served):
    """A blank picture (or any picture, without tesseract): no silent gap."""
    asset = served.upload("blank.png", picture())
    served.upstream.enqueue(Reply("I cannot tell."))
    images = [asset["key"], served.site.url("/blank.png")]
    r = served.http.post(CHAT, json=chat("What does it say?", images, TEXT))
    assert r.status_code == 200, r.text
    entries = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert [e["mode"] for e in entries] == ["text", "text"]
    assert all("no text" in e["note"].lower() for e in entries), entries
    assert [(e["width"], e["height"], e["format"]) for e in entries] == [(64, 48, "PNG")] * 2
    system = served.sent()[0]["content"]
    assert f"[Image 1] blank.png: PNG, 64x48 pixels, {len(picture())} bytes. No text" in system
    assert f"No text was found in it: {entries[1]['note']}" in system


# ---- refusals: a clear 4xx, nothing written, nothing sent upstream -------------------------


def refused(served: Served, body: dict[str, Any], path: str = CHAT) -> dict[str, Any]:
    before, asked = served.counts(), len(served.upstream.requests)
    r = served.http.post(path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["success"] is False
    assert served.counts() == before
    assert len(served.upstream.requests) == asked
    return {"status": r.status_code, **r.json()["error"]}


def test_an_unknown_asset_is_refused_by_name(served):
    key = "development/images/2024_09_30_13_41_50_758_photo.png"
    error = refused(served, chat("What do you see in this image?", [key]))
    assert error["status"] == 422
    assert error["message"].startswith(f"image {key}: no such asset in your team")


def test_another_teams_asset_is_not_found(served):
    asset = served.upload("private.png", picture())
    r = served.http.post("/api/admin/orgs", json={"name": "rival-images"})
    eve = {"API-KEY": r.json()["apiKey"]["key"]}
    before = served.counts()
    for reference in (asset["uuid"], asset["key"]):
        r = served.http.post(CHAT, headers=eve, json=chat("Look", [reference]))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"] == (  # as for an asset that never was
            f"image {reference}: no such asset in your team (upload images with "
            "POST /api/assets, or give an http(s) URL)"
        )
    assert served.counts() == before


def test_a_pdf_asset_is_not_an_image(served, tmp_path):
    pdf = files.pdf(tmp_path, ["Quarterly figures"], name="guide.pdf").read_bytes()
    asset = served.upload("guide.pdf", pdf, "application/pdf")
    error = refused(served, chat("Look", [asset["uuid"]]))
    assert error["status"] == 422
    assert (
        f"image {asset['uuid']}: asset guide.pdf is application/pdf, not an image"
        in (error["message"])
    )


def test_too_many_images_are_refused_before_any_is_fetched(served):
    hits = served.site.hits["/photo.jpg"]
    error = refused(served, chat("Look", [served.site.url("/photo.jpg")] * 11))
    assert error["message"] == "11 images were sent; at most 10 are read per request"
    assert served.site.hits["/photo.jpg"] == hits


def test_images_over_the_size_limit_are_refused(served):
    asset = served.upload("noise.png", NOISE)
    error = refused(served, chat("Look", [asset["key"]]))
    assert error["status"] == 413
    assert error["message"] == (
        f"image {asset['key']}: noise.png is {len(NOISE) / 1024:.1f} KB; images are read up "
        "to 256 KB"
    )
    url = served.site.url("/noise.png")
    error = refused(served, chat("Look", [url]))
    assert error["message"] == f"image {url} could not be fetched: the page is larger than 256 KB"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page.html", "the page is text/html, not an image (PNG, JPEG, GIF, WebP, TIFF or BMP)"),
        ("/gone.png", "the server answered HTTP 404"),
    ],
)
def test_a_url_that_is_not_an_image_is_refused(served, path, reason):
    url = served.site.url(path)
    error = refused(served, chat("Look", [url]))
    assert error == {
        "status": 422,
        "code": "UNPROCESSABLE_ENTITY",
        "message": f"image {url} could not be fetched: {reason}",
    }


def test_the_bytes_decide_the_type_not_the_header(served):
    url = served.site.url("/lying.png")
    error = refused(served, chat("Look", [url], TEXT))
    assert error["message"] == f"image {url} is not an image (PNG, JPEG, GIF, WebP, TIFF or BMP)"


def test_chat_with_image_needs_an_image_list(served):
    body = {"type": "CHAT_WITH_IMAGE", "model": VISION, "promptObject": {"prompt": "Look"}}
    error = refused(served, body, FEATURES)
    assert error["status"] == 400 and error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("CHAT_WITH_IMAGE needs imageList")


def test_an_image_url_on_a_private_address_is_refused_with_default_settings(
    tmp_path, upstream, site
):
    """SSRF: without `fetch.allow_private_hosts`, 127.0.0.1 is never fetched."""
    server, key = serve(tmp_path, upstream)
    url = site.url("/photo.jpg")
    hits, asked = site.hits["/photo.jpg"], len(upstream.requests)
    try:
        with httpx.Client(base_url=server.base_url, headers={"API-KEY": key}) as http:
            r = http.post(CHAT, json=chat("Look", [url]))
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "URL_REFUSED"
            message = r.json()["error"]["message"]
            assert message.startswith(f"image {url} was not fetched: 127.0.0.1 is a loopback")
            assert Served(server, http, site, upstream).counts() == {
                "ai_records": 0,
                "messages": 0,
                "conversations": 0,
            }
    finally:
        server.stop()
    assert site.hits["/photo.jpg"] == hits
    assert len(upstream.requests) == asked


# ---- the OpenAI dialect: image_url content parts ---------------------------------------------


def openai_client(served: Served) -> openai.OpenAI:
    key = served.http.headers["API-KEY"]
    return openai.OpenAI(base_url=f"{served.server.base_url}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_sends_a_data_url_image_to_a_vision_model(served):
    data = picture("GIF", (16, 12))
    url = "data:image/gif;base64," + base64.b64encode(data).decode()
    served.upstream.enqueue(Reply("A tiny GIF."))
    completion = openai_client(served).chat.completions.create(
        model=VISION,
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
                ],
            },
        ],
    )
    assert completion.choices[0].message.content == "A tiny GIF."
    system, user = served.sent()
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"][0] == {"type": "text", "text": "What is this?"}
    assert image_parts(user) == [data]


def test_the_openai_sdk_gives_a_text_model_an_image_url_as_text(served):
    served.upstream.enqueue(Reply("Red."))
    completion = openai_client(served).chat.completions.create(
        model=TEXT,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Colour?"},
                    {"type": "image_url", "image_url": {"url": served.site.url("/photo.jpg")}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "Red."
    system, user = served.sent()
    assert user == {"role": "user", "content": "Colour?"}
    assert "[Image 1] photo.jpg: JPEG, 120x80 pixels" in system["content"]


def test_the_openai_dialect_refuses_images_outside_the_last_user_message(served):
    before, asked = served.counts(), len(served.upstream.requests)
    image = {"type": "image_url", "image_url": {"url": served.site.url("/photo.jpg")}}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(served).chat.completions.create(
            model=VISION,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Look"}, image]},
                {"role": "assistant", "content": "A photo."},
                {"role": "user", "content": "And?"},
            ],
        )
    assert "messages[0].content[1]: images are read in the last message only" in str(refused.value)
    unknown = {"type": "image_url", "image_url": {"url": "nope"}}
    with pytest.raises(openai.BadRequestError, match="image nope: no such asset in your team"):
        openai_client(served).chat.completions.create(
            model=VISION, messages=[{"role": "user", "content": [unknown]}]
        )
    low = {
        "type": "image_url",
        "image_url": {"url": served.site.url("/photo.jpg"), "detail": "low"},
    }
    with pytest.raises(openai.BadRequestError, match="detail 'low' is not supported"):
        openai_client(served).chat.completions.create(
            model=VISION, messages=[{"role": "user", "content": [low]}]
        )
    assert served.counts() == before and len(served.upstream.requests) == asked


def test_data_urls_must_be_base64_images(served):
    bad = "data:image/png;base64,@@@"
    error = refused(served, chat("Look", [bad]))
    assert error["message"] == f"image {bad}: the data URL is not valid base64"
    text = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    error = refused(served, chat("Look", [text]))
    assert error["message"] == f"image {text} is not an image (PNG, JPEG, GIF, WebP, TIFF or BMP)"


def test_an_asset_whose_file_is_gone_is_not_found_not_a_500(served):
    data = picture("PNG", (37, 19))  # bytes no other test uploads
    asset = served.upload("vanishing.png", data)
    root = served.server.app.state.container.settings.data_dir / "blobs"
    [blob] = [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == data]
    blob.unlink()  # deleted between its lookup and its read
    error = refused(served, chat("Look", [asset["key"]]))
    assert error["status"] == 422
    assert error["message"].startswith(f"image {asset['key']}: no such asset in your team")
