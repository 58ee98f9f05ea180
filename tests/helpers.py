"""Helpers the test modules share: settings, the scripted fake models, stream parsers, polling
and the CLI. Test modules import from here (and from the fake servers' modules), never from
each other or from conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from threadline.providers.fake import FakeModel
from threadline.settings import Credits, ModelConfig, Settings

PRICED = Credits(input_per_1k=1000, output_per_1k=2000)  # 1 credit per input token, 2 per output


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    models = {
        "fake": ModelConfig(provider="fake"),
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        "other-model": ModelConfig(provider="fake"),
    }
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "models": models,
        "default_model": "gpt-4o-mini",
        "rate_limit_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(**values)


class Fakes(dict[str, FakeModel]):
    """One FakeModel per model name, made on first use."""

    def factory(self, name: str, config: ModelConfig) -> FakeModel:
        return self.setdefault(name, FakeModel(name, config))

    def __missing__(self, name: str) -> FakeModel:
        return self.setdefault(name, FakeModel(name))
