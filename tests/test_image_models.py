"""Image models: their configuration (kind = "images", per_image), the catalog's refusals, the
`fake` image provider through the in-process app, and `threadline models`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import select

from tests.helpers import PRICED, make_settings, threadline
from threadline.domain.entities import RecordStatus
from threadline.domain.errors import ModelTimeout
from threadline.settings import Credits, ModelConfig, Settings
from threadline.storage.tables import ai_records, assets

IMAGES = {"provider": "fake", "kind": "images"}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    models = {
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        "sketcher": ModelConfig(**IMAGES, credits=Credits(per_image=2.5), max_images=3),
        "keyless": ModelConfig(
            provider="openai-compatible",
            kind="images",
            base_url="http://127.0.0.1:9/v1",
            api_key_env="THREADLINE_TEST_UNSET_IMAGE_KEY",
        ),
    }
    return make_settings(tmp_path, db_url, models=models)


def generate(prompt: dict[str, Any], model: str = "sketcher") -> dict[str, Any]:
    return {"type": "IMAGE_GENERATOR", "model": model, "promptObject": prompt}


# ---- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({**IMAGES, "quality": "hd"}, "quality"),  # unknown keys stay errors
        (
            {"provider": "fake", "image_sizes": {"1:1": "512x512"}},
            "image_sizes does not apply to a chat model",
        ),
        ({**IMAGES, "vision": True}, "vision does not apply to an image model"),
        ({**IMAGES, "max_output_tokens": 10}, "max_output_tokens"),
        ({"provider": "local", "kind": "images"}, "chat models only"),
        ({**IMAGES, "image_sizes": {"square": "1024x1024"}}, "aspect ratios"),
        ({**IMAGES, "variation_sizes": {"1:1": "big"}}, "upstream sizes"),
        ({**IMAGES, "credits": {"per_image": -1}}, "per_image"),
    ],
)
def test_bad_image_model_configs_are_errors(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelConfig.model_validate(config)
    assert words in str(caught.value)


def test_the_default_and_memory_models_must_chat(tmp_path: Path) -> None:
    models = {"chat": ModelConfig(provider="fake"), "img": ModelConfig(**IMAGES)}
    with pytest.raises(ValidationError, match="default_model 'img' is an image model; chat"):
        Settings(data_dir=tmp_path, models=models, default_model="img")
    with pytest.raises(ValidationError, match=r"\[memories\] model 'img' is an image model"):
        Settings(
            data_dir=tmp_path,
            models=models,
            default_model="chat",
            memories={"extractor": "model", "model": "img"},
        )


def test_threadline_models_lists_image_models_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text(
        'default_model = "echo"\n'
        '[models.echo]\nprovider = "fake"\n'
        '[models."dall-e-3"]\nprovider = "openai-compatible"\nkind = "images"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "OPENAI_API_KEY"\n'
        'upstream_model = "dall-e-3"\nimage_request = "response_format"\n'
        'image_sizes = { "1:1" = "1024x1024", "7:4" = "1792x1024" }\nmax_images = 1\n'
        "credits = { per_image = 40 }\n"
    )
    listed = threadline("models", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if "dall-e-3" in row)
    assert "images, image-variations" in line and "openai-compatible" in line


# ---- the fake image provider through the app ----------------------------------------------


async def test_the_fake_image_model_makes_downloadable_pictures(client, admin, container):
    r = await client.post(
        "/api/features", headers=admin, json=generate({"prompt": "a boat", "num_outputs": 3})
    )
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    keys = record["aiRecordDetail"]["resultObject"]
    assert len(keys) == 3 and all(k.startswith("images/") and k.endswith(".png") for k in keys)
    assert record["usage"]["credits"] == 8  # 3 x 2.5, rounded up
    assert record["modelDetail"] == {"name": "sketcher", "provider": "FAKE"}
    colours = set()
    for key in keys:
        download = await client.get(f"/api/assets/{key}/content", headers=admin)
        image = Image.open(io.BytesIO(download.content))
        assert (image.format, image.size) == ("PNG", (64, 64))
        colours.add(image.convert("RGB").getpixel((0, 0)))
    assert len(colours) == 3
    me = (await client.get("/api/me", headers=admin)).json()["user"]
    assert me["usedCredit"] == 8
    model = container.catalog.image_model("sketcher", "IMAGE_GENERATOR")
    assert [(q.prompt, q.n, q.size, q.output_format) for q in model.requests] == [
        ("a boat", 3, "1024x1024", "png")
    ]


async def test_a_model_failure_is_a_failed_record_and_no_charge(client, admin, container):
    model = container.catalog.image_model("sketcher", "IMAGE_GENERATOR")
    model.fail_next(ModelTimeout("model 'sketcher': too slow"))
    r = await client.post("/api/features", headers=admin, json=generate({"prompt": "x"}))
    assert r.status_code == 504
    assert r.json()["error"] == {"code": "MODEL_TIMEOUT", "message": "model 'sketcher': too slow"}
    async with container.db.read() as conn:
        rows = (await conn.execute(select(ai_records))).mappings().all()
    assert [(row["status"], row["error"], row["credits"]) for row in rows] == [
        ("FAILED", "model 'sketcher': too slow", 0)
    ]
    assert (await client.get("/api/me", headers=admin)).json()["user"]["usedCredit"] == 0


async def test_a_failed_final_write_leaves_no_images_and_charges_nothing(
    client, admin, container, monkeypatch
):
    real_finish = container.record_store.finish

    async def finish(record: Any, *args: Any) -> Any:
        if record.status is RecordStatus.SUCCESS:
            raise RuntimeError("the database went away")
        return await real_finish(record, *args)

    monkeypatch.setattr(container.record_store, "finish", finish)
    r = await client.post(
        "/api/features", headers=admin, json=generate({"prompt": "x", "num_outputs": 2})
    )
    assert r.status_code == 500
    assert r.json()["error"]["message"] == (
        "the images could not be stored; nothing was charged, try again"
    )
    async with container.db.read() as conn:
        records = (await conn.execute(select(ai_records))).mappings().all()
        stored = (await conn.execute(select(assets))).all()
    assert [(row["status"], row["credits"]) for row in records] == [("FAILED", 0)]
    assert stored == []
    blobs = container.settings.data_dir / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]
    assert (await client.get("/api/me", headers=admin)).json()["user"]["usedCredit"] == 0


async def test_the_models_own_limits_apply(client, admin):
    r = await client.post(
        "/api/features", headers=admin, json=generate({"prompt": "x", "num_outputs": 4})
    )
    assert r.status_code == 422
    assert (
        r.json()["error"]["message"]
        == "num_outputs is 4; 'sketcher' makes at most 3 images per request"
    )


async def test_a_missing_api_key_is_named_before_anything_is_recorded(client, admin, container):
    r = await client.post("/api/features", headers=admin, json=generate({"prompt": "x"}, "keyless"))
    assert r.status_code == 502
    assert "THREADLINE_TEST_UNSET_IMAGE_KEY" in r.json()["error"]["message"]
    async with container.db.read() as conn:
        assert (await conn.execute(select(ai_records))).all() == []


async def test_conversation_and_openai_chat_refuse_image_models(client, admin):
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "t", "type": "CHAT_WITH_AI", "model": "sketcher"},
    )
    assert r.status_code == 422 and "makes images" in r.text
    bearer = {"Authorization": f"Bearer {admin['API-KEY']}"}
    r = await client.post(
        "/v1/chat/completions",
        headers=bearer,
        json={"model": "sketcher", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400 and "makes images" in r.json()["error"]["message"]
    r = await client.get("/v1/models/sketcher", headers=bearer)
    assert r.status_code == 200 and r.json()["id"] == "sketcher"
