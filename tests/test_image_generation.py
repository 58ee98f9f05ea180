"""Images out (002_*: IMAGE_GENERATOR, IMAGE_VARIATOR) through a real uvicorn server, with the
image models behind a fake OpenAI-compatible images upstream on 127.0.0.1 (real HTTP, real
pictures). The spec's examples are sent as written, host, key and (where it must be) the
asset key changed; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from tests.fake_images import UPSTREAM_ERROR, BadJson, FakeImages, Garbage, Urls, picture
from tests.faults import Hang, Status
from tests.helpers import PRICED, Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.services.documents import GENERATED_NOT_READ
from threadline.settings import Credits, FetchSettings, ModelConfig, Settings
from threadline.storage.tables import ai_records, assets

FLUX = "black-forest-labs/flux-schnell"  # the spec's model names, configured here
MIDJOURNEY = "midjourney"
FLUX_PRICE, MJ_PRICE = 25, 10

GENERATOR_EXAMPLE = {
    "type": "IMAGE_GENERATOR",
    "model": FLUX,
    "promptObject": {
        "prompt": "a cat",
        "num_outputs": 1,
        "aspect_ratio": "1:1",
        "output_format": "webp",
    },
}
VARIATOR_EXAMPLE = {
    "type": "IMAGE_VARIATOR",
    "model": MIDJOURNEY,
    "promptObject": {
        "imageUrl": "development/images/2024_09_30_13_41_50_758_2023_11_10_16_27_12_416_208054.png",
        "mode": "fast",
        "n": 4,
        "isNiji6": False,
        "aspect_width": 1,
        "aspect_height": 1,
        "maintainModeration": True,
    },
}


def image_models(up: FakeImages, **flux: Any) -> dict[str, ModelConfig]:
    common: dict[str, Any] = {
        "provider": "openai-compatible",
        "kind": "images",
        "base_url": up.url,
        "api_key_env": "TEST_IMAGES_KEY",
        "timeout_seconds": 2.0,
    }
    return {
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        FLUX: ModelConfig(
            **common,
            upstream_model="flux-1-schnell",
            image_request="output_format",  # a GPT-image-style server: it makes the format
            credits=Credits(per_image=FLUX_PRICE),
            **flux,
        ),
        MIDJOURNEY: ModelConfig(
            **common, upstream_model="dall-e-2", credits=Credits(per_image=MJ_PRICE)
        ),
    }


@dataclass
class Live:
    server: LiveServer
    container: Container
    http: httpx.Client
    up: FakeImages

    def features(self, body: dict[str, Any], headers: dict[str, str] | None = None, **kw: Any):
        return self.http.post("/api/features", json=body, headers=headers, **kw)

    def used_credit(self, headers: dict[str, str] | None = None) -> int:
        return int(self.http.get("/api/me", headers=headers).json()["user"]["usedCredit"])

    def rows(self, table: Any) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            async with self.container.db.read() as conn:
                return [dict(r) for r in (await conn.execute(select(table))).mappings()]

        return self.server.call(read())

    def blobs(self) -> list[str]:
        root = self.container.settings.data_dir / "blobs"
        return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def upload_png(self, data: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
        files = {"asset": ("cat.png", data, "image/png")}
        r = self.http.post("/api/assets", files=files, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["asset"]  # type: ignore[no-any-return]


@pytest.fixture
def upstream() -> Iterator[FakeImages]:
    with FakeImages(api_key="sk-img") as up:
        yield up


@pytest.fixture
def settings(tmp_path, db_url, upstream, monkeypatch) -> Settings:
    monkeypatch.setenv("TEST_IMAGES_KEY", "sk-img")
    return make_settings(
        tmp_path,
        db_url,
        models=image_models(upstream),
        fetch=FetchSettings(allow_private_hosts=[upstream.host_port]),
    )


def serve(settings: Settings, up: FakeImages) -> Iterator[Live]:
    app = create_app(settings, model_factory=Fakes().factory)
    server = LiveServer(app)
    server.start()
    try:
        container = app.state.container
        key = server.call(container.bootstrap()).secret
        with httpx.Client(base_url=server.base_url, headers={"API-KEY": key}, timeout=30) as c:
            yield Live(server, container, c, up)
    finally:
        server.stop()


@pytest.fixture
def live(settings: Settings, upstream: FakeImages) -> Iterator[Live]:
    yield from serve(settings, upstream)


def other_org(live: Live, credit_limit: int | None = None) -> dict[str, str]:
    body: dict[str, Any] = {"name": "globex"}
    if credit_limit is not None:
        body["creditLimit"] = credit_limit
    created = live.http.post("/api/admin/orgs", json=body)
    assert created.status_code == 201, created.text
    return {"API-KEY": created.json()["apiKey"]["key"]}


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ---- IMAGE_GENERATOR ------------------------------------------------------------------


def test_the_generator_example_makes_stored_downloadable_charged_images(live):
    before = live.used_credit()
    r = live.features(GENERATOR_EXAMPLE)
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert (record["type"], record["model"], record["status"]) == (
        "IMAGE_GENERATOR",
        FLUX,
        "SUCCESS",
    )
    assert record["aiRecordDetail"]["promptObject"] == GENERATOR_EXAMPLE["promptObject"]
    assert record["conversationId"] is None and record["additionalData"] is None
    keys = record["aiRecordDetail"]["resultObject"]
    assert len(keys) == 1 and keys[0].startswith("images/") and keys[0].endswith(".webp")
    assert record["usage"]["credits"] == FLUX_PRICE
    assert record["teamUser"]["usedCredit"] == before + FLUX_PRICE
    assert live.used_credit() == before + FLUX_PRICE

    sent = live.up.requests[-1]
    assert sent["path"] == "/v1/images/generations"
    assert sent["headers"]["Authorization"] == "Bearer sk-img"
    assert sent["json"] == {
        "model": "flux-1-schnell",
        "prompt": "a cat",
        "n": 1,
        "size": "1024x1024",
        "output_format": "webp",
    }
    download = live.http.get(f"/api/assets/{keys[0]}/content")
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/webp"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-disposition"].startswith("inline;")
    assert download.content == live.up.made[-1][0]  # the upstream's bytes, as they were
    assert opened(download.content).format == "WEBP"

    described = live.http.get(f"/api/assets/{keys[0]}").json()["asset"]
    assert described["key"] == keys[0] and described["mimeType"] == "image/webp"
    assert described["status"] == "COMPLETE" and described["pageCount"] == 1
    assert described["size"] == len(download.content)


def test_a_png_only_upstream_is_converted_to_the_format_asked(live):
    body = {
        "type": "IMAGE_GENERATOR",
        "model": MIDJOURNEY,  # image_request = "response_format": the upstream answers PNG
        "promptObject": {"prompt": "two dogs", "num_outputs": 2, "output_format": "jpeg"},
    }
    r = live.features(body)
    assert r.status_code == 200, r.text
    keys = r.json()["aiRecord"]["aiRecordDetail"]["resultObject"]
    assert len(keys) == 2 and all(k.endswith(".jpeg") for k in keys)
    assert live.up.requests[-1]["json"]["response_format"] == "b64_json"
    assert "output_format" not in live.up.requests[-1]["json"]
    for key, original in zip(keys, live.up.made[-1], strict=True):
        data = live.http.get(f"/api/assets/{key}/content").content
        image = opened(data)
        assert image.format == "JPEG"
        want = opened(original).convert("RGB").getpixel((5, 5))
        got = image.convert("RGB").getpixel((5, 5))
        assert all(abs(a - b) <= 8 for a, b in zip(want, got, strict=True))
    assert live.used_credit() == 2 * MJ_PRICE


def test_generator_options_the_model_cannot_serve_are_refused(live):
    cases = [
        ({"prompt": "x", "aspect_ratio": "16:9"}, 422, "aspect_ratio 16:9 is not supported"),
        ({"prompt": "x", "num_outputs": 5}, 422, "at most 4 images"),
        ({"prompt": "x", "output_format": "gif"}, 422, "output_format"),
        ({"prompt": "x", "negative_prompt": "dogs"}, 422, "negative_prompt"),
        ({"num_outputs": 1}, 422, "prompt"),
    ]
    for prompt, status, words in cases:
        r = live.features({"type": "IMAGE_GENERATOR", "model": FLUX, "promptObject": prompt})
        assert r.status_code == status, (prompt, r.text)
        assert words in r.text, (prompt, r.text)
    r = live.features({**GENERATOR_EXAMPLE, "promptObject": {"prompt": "x", "style": "vivid"}})
    assert r.json()["error"]["code"] == "PROMPT_OBJECT_VALIDATION_FAILED"
    assert r.json()["error"]["details"] == [
        {"field": "style", "message": "style is not a known field"}
    ]
    r = live.features(GENERATOR_EXAMPLE, params={"isStreaming": "true"})
    assert r.status_code == 422 and "does not stream" in r.text
    assert live.up.requests == [] and live.used_credit() == 0 and live.rows(ai_records) == []


def test_an_equal_ratio_in_other_numbers_is_the_same_ratio(live):
    body = {
        "type": "IMAGE_GENERATOR",
        "model": FLUX,
        "promptObject": {"prompt": "x", "aspect_ratio": "6:4"},
    }
    assert live.features(body).status_code == 200
    assert live.up.requests[-1]["json"]["size"] == "1536x1024"


# ---- IMAGE_VARIATOR -------------------------------------------------------------------


def test_the_variator_example_names_the_asset_it_cannot_find(live):
    r = live.features(VARIATOR_EXAMPLE)
    assert r.status_code == 404
    assert "development/images/2024_09_30" in r.json()["error"]["message"]
    assert live.up.requests == []


def test_the_variator_example_varies_an_uploaded_asset(live):
    asset = live.upload_png(live.up.source_png)
    body = {
        **VARIATOR_EXAMPLE,
        "promptObject": {**VARIATOR_EXAMPLE["promptObject"], "imageUrl": asset["key"]},
    }
    r = live.features(body)
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert (record["type"], record["status"]) == ("IMAGE_VARIATOR", "SUCCESS")
    assert record["aiRecordDetail"]["promptObject"] == body["promptObject"]
    keys = record["aiRecordDetail"]["resultObject"]
    assert len(keys) == 4 and all(k.startswith("images/") and k.endswith(".png") for k in keys)
    assert len(set(keys)) == 4
    sent = live.up.requests[-1]
    assert sent["path"] == "/v1/images/variations"
    assert sent["fields"] == {
        "model": "dall-e-2",
        "n": "4",
        "size": "1024x1024",
        "response_format": "b64_json",
    }
    assert sent["image"]["data"] == live.up.source_png
    assert sent["image"]["content_type"] == "image/png"
    downloaded = [live.http.get(f"/api/assets/{k}/content").content for k in keys]
    assert downloaded == live.up.made[-1]
    assert live.used_credit() == 4 * MJ_PRICE
    # by the asset's uuid as well
    by_id = {**body["promptObject"], "imageUrl": asset["uuid"], "n": 1}
    assert live.features({**body, "promptObject": by_id}).status_code == 200


def test_a_source_asset_whose_file_is_gone_is_not_found_not_a_500(live):
    asset = live.upload_png(live.up.source_png)
    [blob] = live.blobs()
    Path(blob).unlink()  # deleted between its lookup and its read
    body = {
        **VARIATOR_EXAMPLE,
        "promptObject": {**VARIATOR_EXAMPLE["promptObject"], "imageUrl": asset["key"]},
    }
    r = live.features(body)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["message"].startswith(f"imageUrl: asset {asset['key']} not found")
    assert live.rows(ai_records) == [] and live.up.requests == []


def test_the_variator_reads_an_allow_listed_url_as_an_image(live):
    body = {
        "type": "IMAGE_VARIATOR",
        "model": MIDJOURNEY,
        "promptObject": {"imageUrl": live.up.file_url("cat.png")},
    }
    r = live.features(body)
    assert r.status_code == 200, r.text
    assert live.up.requests[-1]["image"]["data"] == live.up.source_png
    page = {**body, "promptObject": {"imageUrl": live.up.file_url("page.html")}}
    r = live.features(page)
    assert r.status_code == 502
    assert "imageUrl" in r.text and "not a PNG, JPEG or WebP image" in r.text


def test_the_same_url_is_refused_with_default_fetch_settings(
    tmp_path, db_url, upstream, monkeypatch
):
    monkeypatch.setenv("TEST_IMAGES_KEY", "sk-img")
    settings = make_settings(tmp_path, db_url, models=image_models(upstream))
    for live in serve(settings, upstream):
        body = {
            "type": "IMAGE_VARIATOR",
            "model": MIDJOURNEY,
            "promptObject": {"imageUrl": upstream.file_url("cat.png")},
        }
        r = live.features(body)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "URL_REFUSED"
        assert "imageUrl" in r.json()["error"]["message"]
        assert upstream.requests == [] and live.rows(ai_records) == []


def test_variator_values_the_server_cannot_honour_are_refused_by_name(live):
    asset = live.upload_png(live.up.source_png)
    for field, value in (("isNiji6", True), ("mode", "relax"), ("maintainModeration", False)):
        prompt = {**VARIATOR_EXAMPLE["promptObject"], "imageUrl": asset["key"], field: value}
        r = live.features({**VARIATOR_EXAMPLE, "promptObject": prompt})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "PROMPT_OBJECT_VALIDATION_FAILED"
        assert error["details"][0]["field"] == field
        assert "not supported" in error["details"][0]["message"]
    wide = {
        **VARIATOR_EXAMPLE["promptObject"],
        "imageUrl": asset["key"],
        "aspect_width": 16,
        "aspect_height": 9,
    }
    r = live.features({**VARIATOR_EXAMPLE, "promptObject": wide})
    assert r.status_code == 422 and "aspect_width:aspect_height 16:9" in r.text
    assert live.up.requests == [] and live.used_credit() == 0


def test_a_pdf_asset_is_not_an_image_to_vary(live):
    files = {"asset": ("notes.txt", b"plain words", "text/plain")}
    key = live.http.post("/api/assets", files=files).json()["asset"]["key"]
    body = {"type": "IMAGE_VARIATOR", "model": MIDJOURNEY, "promptObject": {"imageUrl": key}}
    r = live.features(body)
    assert r.status_code == 422 and "not a PNG, JPEG or WebP image" in r.text


def test_an_image_url_that_is_neither_an_asset_nor_http_is_refused_as_such(live):
    for source in ("data:image/png;base64," + "A" * 300, "ftp://127.0.0.1/x.png"):
        body = {"type": "IMAGE_VARIATOR", "model": MIDJOURNEY, "promptObject": {"imageUrl": source}}
        r = live.features(body)
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert "imageUrl must be an asset id or key" in message and len(message) < 200
    assert live.up.requests == [] and live.used_credit() == 0


def test_another_orgs_asset_is_not_found_as_image_or_download(live):
    stranger = other_org(live)
    theirs = live.upload_png(picture((1, 2, 3)), headers=stranger)
    body = {
        "type": "IMAGE_VARIATOR",
        "model": MIDJOURNEY,
        "promptObject": {"imageUrl": theirs["key"]},
    }
    r = live.features(body)
    assert r.status_code == 404 and "not found in your team" in r.text
    assert live.http.get(f"/api/assets/{theirs['key']}/content").status_code == 404
    assert live.http.get(f"/api/assets/{theirs['uuid']}/content").status_code == 404
    own = live.http.get(f"/api/assets/{theirs['key']}/content", headers=stranger)
    assert own.status_code == 200 and own.content == picture((1, 2, 3))
    assert live.up.requests == []


def test_an_uploaded_file_downloads_as_an_attachment_with_a_safe_name(live):
    files = {"asset": ('résumé "final"; v=2.txt', b"plain words", "text/plain")}
    asset = live.http.post("/api/assets", files=files).json()["asset"]
    r = live.http.get(f"/api/assets/{asset['key']}/content")
    assert r.status_code == 200 and r.content == b"plain words"
    assert r.headers["content-type"].startswith("text/plain")
    # the stored name, percent-escaped (RFC 5987): no quote or semicolon gets through raw
    disposition = r.headers["content-disposition"]
    assert disposition == f"attachment; filename*=utf-8''{quote(asset['name'])}"
    assert asset["name"].startswith("r") and '"' not in disposition and disposition.count(";") == 1
    assert live.http.get("/api/assets/files/nothing-here/content").status_code == 404


# ---- models, credits, failures ----------------------------------------------------------


def test_no_image_model_configured_names_none(tmp_path, db_url, upstream):
    settings = make_settings(tmp_path, db_url)
    for live in serve(settings, upstream):
        r = live.features(GENERATOR_EXAMPLE)
        assert r.status_code == 422
        assert "image-capable models configured: (none)" in r.json()["error"]["message"]


def test_chat_and_image_models_refuse_each_others_work(live):
    body = {**GENERATOR_EXAMPLE, "model": "gpt-4o-mini"}
    r = live.features(body)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "is a chat model" in message and f"{FLUX}, {MIDJOURNEY}" in message
    chat = {"model": FLUX, "promptObject": {"prompt": "hello"}}
    r = live.http.post("/api/chat-with-ai", json=chat)
    assert r.status_code == 422
    assert "makes images" in r.text and "chat models configured: gpt-4o-mini" in r.text
    models = {m["name"]: m for m in live.http.get("/api/models").json()["models"]}
    assert models[FLUX]["capabilities"] == ["images", "image-variations"]
    assert models[FLUX]["kind"] == "images" and models[FLUX]["credits"] == {"perImage": FLUX_PRICE}
    assert "chat" in models["gpt-4o-mini"]["capabilities"]


def test_exhausted_credits_are_403_before_anything_runs(live):
    poor = other_org(live, credit_limit=FLUX_PRICE - 1)
    r = live.features(GENERATOR_EXAMPLE, headers=poor)
    assert r.status_code == 403
    assert "Quota exceeded" in r.json()["error"]["message"]
    assert live.up.requests == [] and live.rows(ai_records) == [] and live.rows(assets) == []
    assert live.used_credit(poor) == 0


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        (Status(500), 502, f"upstream returned 500: {UPSTREAM_ERROR}"),
        (
            Status(400, {"error": {"message": "Your prompt sk-img was rejected"}}),
            502,
            "Your prompt *** was rejected",
        ),
        (Hang(10), 504, "did not answer within 2s"),
        (BadJson(), 502, "not JSON"),
        (Urls(), 502, "image URLs, not base64"),
        (Garbage(), 502, "an image that cannot be used"),
    ],
)
def test_upstream_failures_are_clear_errors_and_failed_records(live, fault, status, words):
    live.up.enqueue(fault)
    r = live.features(GENERATOR_EXAMPLE)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and FLUX in error["message"]
    assert "sk-img" not in r.text
    (record,) = live.rows(ai_records)
    assert (record["type"], record["status"], record["credits"]) == ("IMAGE_GENERATOR", "FAILED", 0)
    assert words in record["error"] and record["result_text"] == ""
    assert live.rows(assets) == [] and live.blobs() == []
    assert live.used_credit() == 0
    # the upstream recovers: the next request works
    assert live.features(GENERATOR_EXAMPLE).status_code == 200


# ---- images out meet images in ------------------------------------------------------------


def test_a_generated_image_is_a_chat_image_and_an_image_model_cannot_read_one(live):
    made = live.features(GENERATOR_EXAMPLE).json()["aiRecord"]["aiRecordDetail"]["resultObject"]
    body = {
        "type": "CHAT_WITH_IMAGE",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": "What is in it?", "imageList": made},
    }
    r = live.features(body)
    assert r.status_code == 200, r.text
    [entry] = r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["imageContentList"]
    assert (entry["image"], entry["format"], entry["mimeType"], entry["mode"]) == (
        made[0],
        "WebP",
        "image/webp",
        "text",
    )
    assert (entry["width"], entry["height"]) == opened(live.up.made[-1][0]).size
    assert entry["note"] == GENERATED_NOT_READ  # no OCR ran: the note says so, not "no text"
    r = live.features({**body, "model": FLUX})
    assert r.status_code == 422
    assert "makes images" in r.text and "chat models configured: gpt-4o-mini" in r.text


# ---- the official openai SDK: POST /v1/images/generations --------------------------------


def test_the_openai_sdk_generates_images_onto_the_same_store(live):
    import base64

    import openai

    key = live.http.headers["API-KEY"]
    client = openai.OpenAI(base_url=f"{live.server.base_url}/v1", api_key=key, max_retries=0)
    result = client.images.generate(
        model=FLUX, prompt="a cat", n=2, size="1536x1024", output_format="webp"
    )
    assert [base64.b64decode(d.b64_json or "") for d in result.data] == live.up.made[-1]
    assert result.output_format == "webp"
    assert live.up.requests[-1]["json"]["size"] == "1536x1024"
    (record,) = live.rows(ai_records)
    assert (record["type"], record["status"], record["credits"]) == (
        "IMAGE_GENERATOR",
        "SUCCESS",
        2 * FLUX_PRICE,
    )
    stored = [
        live.http.get(f"/api/assets/{k}/content").content for k in record["result_text"].split("\n")
    ]
    assert stored == live.up.made[-1]
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=FLUX, prompt="a cat", response_format="url")
    assert "b64_json" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=FLUX, prompt="a cat", size="1792x1024")
    assert "size 1792x1024 is not supported" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-4o-mini", prompt="a cat")
    assert "image-capable models configured" in caught.value.message
    live.up.enqueue(Status(500))
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=FLUX, prompt="a cat")
    assert UPSTREAM_ERROR in caught.value.message
