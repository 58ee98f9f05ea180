"""The provider registry: one table that settings, the catalog and the container read.

An unknown provider is a configuration error naming the known ones (it used to become a fake
model silently), and every registered provider has a label 1min.ai's records can carry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.helpers import Fakes, make_settings
from threadline.api.dialects.oneminai import encode
from threadline.container import create_app
from threadline.providers import build_image_model, build_model
from threadline.providers.registry import PROVIDERS, UnknownProvider
from threadline.settings import ModelConfig, Settings

KNOWN = ", ".join(PROVIDERS)
LABEL = re.compile(r"^[A-Z][A-Z0-9_]*$")  # as 1min.ai writes its providers ("OPENAI")


def test_the_registry_holds_the_three_providers_and_their_labels() -> None:
    labels = {name: provider.label for name, provider in PROVIDERS.items()}
    assert labels == {"local": "LOCAL", "openai-compatible": "OPENAI_COMPATIBLE", "fake": "FAKE"}
    assert KNOWN == "local, openai-compatible, fake"


def test_an_unknown_provider_in_the_config_file_names_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text('default_model = "gpt"\n\n[models.gpt]\nprovider = "openai"\n')
    monkeypatch.setenv("THREADLINE_CONFIG", str(config))
    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path)
    message = str(caught.value)
    assert f"unknown provider 'openai'; known providers: {KNOWN}" in message
    assert "models.gpt.provider" in message  # where in the file


def test_an_unknown_provider_is_never_built_as_a_fake() -> None:
    # A config that skipped validation (model_construct) still cannot reach a fake model.
    config = ModelConfig.model_construct(provider="lokal", kind="chat")
    with pytest.raises(
        UnknownProvider, match=f"unknown provider 'lokal'; known providers: {KNOWN}"
    ):
        build_model("typo", config)
    with pytest.raises(UnknownProvider, match="known providers"):
        build_image_model("typo", config)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"provider": "openai-compatible"}, "an openai-compatible model needs base_url"),
        ({"provider": "local", "kind": "images"}, 'serves chat models only, not kind = "images"'),
        ({"provider": "local", "vision": True}, "the local provider reads text only"),
    ],
)
def test_what_a_provider_cannot_do_is_read_from_the_registry(
    config: dict[str, object], words: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)):
        ModelConfig.model_validate(config)


def _config_for(name: str, kind: str = "chat") -> ModelConfig:
    needs = {"base_url": "http://127.0.0.1:9/v1"} if name == "openai-compatible" else {}
    return ModelConfig(provider=name, kind=kind, **needs)  # type: ignore[arg-type]


def test_every_label_renders_in_a_1minai_record() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from threadline.domain.entities import AiRecord, RecordStatus, Role, User

    now = datetime.now(UTC)
    user = User(uuid4(), uuid4(), "u", Role.ADMIN, "ACTIVE", 10, 0, now, now)
    for name, provider in PROVIDERS.items():
        assert LABEL.match(provider.label), provider
        record = AiRecord(
            uuid4(), user.org_id, user.id, None, "m", "UNIFY_CHAT_WITH_AI",
            RecordStatus.SUCCESS, {"prompt": "x"}, "y", now, now,
        )  # fmt: skip
        body = json.loads(json.dumps(encode.ai_record(record, user, provider.label)))
        assert body["modelDetail"] == {"name": "m", "provider": provider.label}, name


async def test_every_chat_provider_names_itself_in_a_reply(
    tmp_path: Path, db_url: str, fakes: Fakes
) -> None:
    """A model of each registered provider (scripted, so none loads weights or calls out)
    answers a 1min.ai chat whose record carries that provider's label."""
    chatting = [name for name, provider in PROVIDERS.items() if provider.serves("chat")]
    assert chatting == list(PROVIDERS)  # every provider chats today; add images below if not
    models = {f"m-{name}": _config_for(name) for name in chatting}
    settings = make_settings(tmp_path, db_url, models=models, default_model=f"m-{chatting[0]}")
    app = create_app(settings, model_factory=fakes.factory)
    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for name in chatting:
                fakes[f"m-{name}"].enqueue(["hi"])
                r = await client.post(
                    "/api/chat-with-ai",
                    headers={"API-KEY": key},
                    json={"model": f"m-{name}", "promptObject": {"prompt": "hello"}},
                )
                assert r.status_code == 200, r.text
                detail = r.json()["aiRecord"]["modelDetail"]
                assert detail == {"name": f"m-{name}", "provider": PROVIDERS[name].label}
